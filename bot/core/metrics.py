"""Chat-core middlewares for operations: command metrics, and telling a waiting user their place in line.

Both are plain ``Middleware`` functions (``async (ctx, next) -> Reply``) that the composition root
puts first in ``ChatCore.middlewares``, so what they see includes every other middleware's refusal.
"""

from __future__ import annotations

import time

from bot.core.context import CommandContext
from bot.core.dispatcher import Next
from bot.core.replies import Reply
from connectors.errors import QuotaError, ReelwrightError, UpstreamError, UserInputError
from connectors.resilience import queue_listener, service_name
from services.metrics import record_command


def outcome_of(error: BaseException | None, reply: Reply | None) -> str:
    """A small, fixed set of outcome labels (metrics must not grow a label per message)."""
    if error is None:
        return "error" if reply is not None and reply.is_error else "ok"
    if isinstance(error, UserInputError):
        return "invalid"
    if isinstance(error, QuotaError):
        return "refused"
    if isinstance(error, UpstreamError):
        return "upstream_error"
    if isinstance(error, ReelwrightError):
        return "error"
    return "crashed"


async def command_metrics(ctx: CommandContext, call_next: Next) -> Reply:
    """Count each command by name and outcome and time it to its final answer."""
    started = time.monotonic()
    error: BaseException | None = None
    reply: Reply | None = None
    try:
        reply = await call_next(ctx)
        return reply
    except BaseException as exc:
        error = exc
        raise
    finally:
        record_command(ctx.command.name, outcome_of(error, reply), time.monotonic() - started)


async def queue_position(ctx: CommandContext, call_next: Next) -> Reply:
    """While this command waits for a busy upstream, show "you are number K in line" as progress."""
    shown = False
    service = service_name("video_start" if ctx.command.upstream == "media" else "text")

    async def tell(position: int) -> None:
        nonlocal shown
        await ctx.progress(f"⏳ The {service} is busy: you are number {position} in line…", force=not shown)
        shown = True

    token = queue_listener.set(tell)
    try:
        return await call_next(ctx)
    finally:
        queue_listener.reset(token)
