"""Who asked, where to answer, and the per-command context a handler receives."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bot.core.commands import Command
from services.budgets import Reservation

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
    """A platform-neutral delivery address (Telegram chat id, Discord channel id, the console)."""

    platform: str
    id: str
    is_private: bool = True


@dataclass(frozen=True)
class IncomingImage:
    """An uploaded file, read only when a handler needs it (downloads cost time and memory)."""

    filename: str
    read: Callable[[], Awaitable[bytes]]
    size: int | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Invocation:
    """One command as an adapter received it: raw text (Telegram, console) or typed options (Discord)."""

    command: str
    user: UserRef
    chat: ChatRef
    text: str | None = None
    options: dict[str, Any] | None = None
    image: IncomingImage | None = None
    is_admin: Callable[[], Awaitable[bool]] | None = None
    guild_id: str | None = None
    roles: tuple[str, ...] = ()
    confirmed: bool = False


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
    invocation: Invocation | None = None
    paid_call_gate: Callable[[], Awaitable[None]] | None = None
    reservation: Reservation | None = None
    progress_interval: float = 3.0
    _last_progress: float = field(default=float("-inf"))

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
            log.warning("[%s] progress update failed", self.correlation_id, exc_info=True)
