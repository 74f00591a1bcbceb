"""Who asked, where to answer, and the per-command context a handler receives."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.core.commands import Command
from bot.core.replies import Reply
from connectors.errors import UserInputError
from services.budgets import Reservation
from services.config import service_config
from services.images import image_too_large

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserRef:
    platform: str
    id: str
    name: str = ""

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.id}"


@dataclass(frozen=True)
class ChatRef:
    """A platform-neutral delivery address (Telegram chat id, Discord channel id, the console).

    ``is_private``: a chat between the user and the bot alone, which that user administers.
    """

    platform: str
    id: str
    is_private: bool = True


#: How an adapter streams an upload from its platform: chunks, in order, fetched as they are asked for.
ChunkStream = Callable[[], AsyncIterator[bytes]]
#: A local file is read this much at a time (one thread hop per chunk).
FILE_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class IncomingImage:
    """An uploaded file, fetched only when a handler reads it and never past the size cap.

    Adapters say how their platform streams a file (``stream``) and what size it declared (``size``);
    the cap is enforced here, so no adapter can read a file the bot would refuse anyway.
    """

    filename: str
    stream: ChunkStream
    size: int | None = None
    content_type: str | None = None

    def check_declared_size(self, max_bytes: int | None = None) -> None:
        """Refuse by the platform's declared size, before a byte is downloaded."""
        limit = max_bytes if max_bytes is not None else service_config().max_image_bytes
        if self.size is not None and self.size > limit:
            raise image_too_large(limit, self.size)

    async def read(self, max_bytes: int | None = None) -> bytes:
        """The file's bytes; refused by its declared size first, then as soon as the stream passes
        ``max_bytes`` (default ``MAX_IMAGE_BYTES``), so memory stays bounded whatever is sent."""
        limit = max_bytes if max_bytes is not None else service_config().max_image_bytes
        self.check_declared_size(limit)
        chunks: list[bytes] = []
        received = 0
        stream = self.stream()
        try:
            async for chunk in stream:
                received += len(chunk)
                if received > limit:
                    raise image_too_large(limit)
                chunks.append(chunk)
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
        return b"".join(chunks)


def bytes_image(filename: str, data: bytes, content_type: str | None = None) -> IncomingImage:
    """An upload already in memory (a re-run, a test)."""

    async def stream() -> AsyncIterator[bytes]:
        yield data

    return IncomingImage(filename=filename, stream=stream, size=len(data), content_type=content_type)


async def regular_file_chunks(path: Path) -> AsyncIterator[bytes]:
    """A local file in chunks; only a regular file (not a device like /dev/zero, a FIFO or a directory).

    Opened without blocking, so a FIFO with no writer is refused at once instead of hanging.
    """
    try:
        fd = await asyncio.to_thread(os.open, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise UserInputError(f"There is no image file at {path}.") from None
    except OSError as exc:
        raise UserInputError(f"I cannot read {path} ({exc.strerror or 'not readable'}).") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserInputError(f"{path} is not a regular file. Please name an image file.")
        while chunk := await asyncio.to_thread(os.read, fd, FILE_CHUNK_BYTES):
            yield chunk
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Invocation:
    """One command as an adapter received it: raw text (Telegram, console) or typed options (Discord)."""

    command: str
    user: UserRef
    chat: ChatRef
    text: str | None = None
    options: dict[str, Any] | None = None
    image: IncomingImage | None = None
    #: The platform's answer to "does this user administer this group chat?" (see ``is_chat_admin``).
    is_admin: Callable[[], Awaitable[bool]] | None = None
    guild_id: str | None = None
    roles: tuple[str, ...] = ()
    confirmed: bool = False
    #: The most bytes this chat accepts in one file from the bot, as the platform says for this
    #: command (None when unknown, as on the console): what a handler sizes a result to.
    upload_limit: int | None = None


async def is_chat_admin(invocation: Invocation, operators: frozenset[str]) -> bool:
    """Who may run admin-only commands (/schedule) and see a chat's spend: the bot's operators
    (ADMIN_USERS, by id or platform:id) anywhere, the user of a private chat, and in a group
    whoever the platform's own check (``Invocation.is_admin``) names; a failing check means no."""
    user = invocation.user
    if user.id in operators or user.key in operators or invocation.chat.is_private:
        return True
    if invocation.is_admin is None:
        return False
    try:
        return await invocation.is_admin()
    except Exception:
        log.exception("checking admin rights for %s failed; treating as not admin", user.key)
        return False


ProgressSink = Callable[[str], Awaitable[None]]


@dataclass
class CommandContext:
    command: Command
    args: dict[str, Any]
    user: UserRef
    chat: ChatRef
    image: IncomingImage | None
    correlation_id: str
    _progress: ProgressSink
    #: Runs a context through the middlewares and its handler again (``/confirm`` does).
    rerun: Callable[[CommandContext], Awaitable[Reply]]
    invocation: Invocation | None = None
    paid_call_gate: Callable[[], Awaitable[None]] | None = None
    reservation: Reservation | None = None
    progress_interval: float = 3.0
    _last_progress: float = field(default=float("-inf"))

    @property
    def upload_limit(self) -> int | None:
        """The most bytes one file of the answer may have here (None when the platform does not say),
        so a handler can size what it makes (a video's bitrate) to what will be delivered."""
        return self.invocation.upload_limit if self.invocation else None

    @property
    def chat_key(self) -> str:
        """Whose chat budget pays: a Discord server as a whole, else the chat."""
        guild = self.invocation.guild_id if self.invocation else None
        return f"{self.chat.platform}:guild:{guild}" if guild else f"{self.chat.platform}:{self.chat.id}"

    async def before_paid_call(self) -> None:
        """Handlers of commands declared with ``confirms_late`` call this after validating their
        input and right before spending money: a guard may stop here to ask for confirmation."""
        if self.paid_call_gate is not None:
            await self.paid_call_gate()

    def take_reservation(self) -> Reservation | None:
        """Hand the budget held for this command to work that outlives it (a durable job), which
        then settles or releases it; the guards leave a reservation that was taken alone."""
        reservation, self.reservation = self.reservation, None
        return reservation

    async def progress(self, text: str, *, force: bool = False) -> None:
        """Show a status line; throttled so a platform's edit limits are never hit."""
        now = time.monotonic()
        if not force and now - self._last_progress < self.progress_interval:
            return
        self._last_progress = now
        try:
            await self._progress(text)
        except Exception:
            # A status line is a courtesy: losing one must never lose the (possibly paid) result.
            log.warning("progress update failed", exc_info=True)
