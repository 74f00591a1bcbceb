"""Helpers shared by the chat-core tests: a recording responder, invocations and real image bytes."""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from bot.core.catalog import build_commands
from bot.core.commands import CommandSet
from bot.core.context import ChatRef, CommandContext, IncomingImage, Invocation, UserRef, bytes_image
from bot.core.dispatcher import ChatCore, Next
from bot.core.jobs import JobCommands
from bot.core.replies import Reply
from bot.core.senders import ChatSenders
from services.jobs import JobOutcome, JobService
from services.memory import UserMemory
from services.queue import JobExecutor, JobQueue

USER = UserRef(platform="test", id="42", name="tester")
CHAT = ChatRef(platform="test", id="42")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class HandlerSaw:
    """What a handler's context said: the command, its upload limit, whether it was confirmed."""

    command: str
    upload_limit: int | None
    confirmed: bool


def record_handler_contexts(core: ChatCore) -> list[HandlerSaw]:
    """What each handler ``core`` runs from now on is given, recorded by an innermost middleware
    (it sees the very context the handler receives, /confirm re-runs included)."""
    seen: list[HandlerSaw] = []

    async def record(ctx: CommandContext, call_next: Next) -> Reply:
        confirmed = ctx.invocation.confirmed if ctx.invocation is not None else False
        seen.append(HandlerSaw(ctx.command.name, ctx.upload_limit, confirmed))
        return await call_next(ctx)

    core.middlewares.append(record)
    return seen


async def _nowhere(outcome: JobOutcome) -> None:
    """Interactive commands deliver their own job results; nothing is left to post later."""


def in_process_jobs(media_dir: Path) -> JobCommands:
    """Durable jobs as ``start_runtime`` wires them without Redis: run in this process. Running one
    needs a database and a started queue (the ``local_jobs`` fixture); declarations need neither."""
    jobs = JobService(media_dir)
    executor = JobExecutor(jobs, _nowhere)
    return JobCommands(jobs, JobQueue(executor), executor, ChatSenders().post)


def catalogue(memory: UserMemory | None = None, jobs: JobCommands | None = None) -> CommandSet:
    """The commands as every adapter registers them; ``jobs`` (the ``local_jobs`` fixture) for tests
    that run /video or /thumbnail. Without it no media file can be saved (its folder lies under
    /dev/null), so such a test fails instead of leaning on a database another test left configured."""
    return build_commands(memory, jobs=jobs or in_process_jobs(Path(os.devnull) / "media"))


@dataclass
class RecordingResponder:
    """Records every delivered reply and every progress line; ``fail_deliveries`` makes deliver raise."""

    delivered: list[Reply] = field(default_factory=list)
    progress: list[str] = field(default_factory=list)
    deliver_calls: int = 0
    fail_deliveries: int = 0

    async def show_progress(self, text: str) -> None:
        self.progress.append(text)

    async def deliver(self, reply: Reply) -> None:
        self.deliver_calls += 1
        if self.fail_deliveries > 0:
            self.fail_deliveries -= 1
            raise ConnectionError("the platform refused the message")
        self.delivered.append(reply)


def invocation(
    command: str, text: str | None = "", *, image: IncomingImage | None = None, **options: object
) -> Invocation:
    return Invocation(command=command, user=USER, chat=CHAT, text=text, options=dict(options) or None, image=image)


def png_bytes(width: int = 32, height: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A small, valid PNG whose IHDR (with a correct CRC) claims ``width``×``height`` pixels."""
    data = bytearray(png_bytes(8, 8))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def uploaded(data: bytes, filename: str = "upload.png") -> IncomingImage:
    return bytes_image(filename, data)
