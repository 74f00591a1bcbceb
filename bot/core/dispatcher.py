"""The chat core: one place that turns an invocation into exactly one final reply.

Parsing, validation, progress, error rendering and the sandbox label live here, wrapped around
every handler, so adapters only translate platform events in and replies out. Middlewares (quota,
rate limits, metrics) plug in around the handler without touching it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from bot.core.commands import CommandSet, parse_text_arguments, validate_arguments
from bot.core.context import CommandContext, Invocation, is_chat_admin
from bot.core.replies import Reply
from bot.logging_setup import CORRELATION_ID
from connectors.errors import ReelwrightError, UserInputError

log = logging.getLogger(__name__)

SANDBOX_FOOTER = "🧪 Sandbox output: no AI key is configured, so a local fake upstream produced this."


class Responder(Protocol):
    """What an adapter provides for one command: a progress line and the final delivery."""

    async def show_progress(self, text: str) -> None: ...

    async def deliver(self, reply: Reply) -> None: ...


Next = Callable[[CommandContext], Awaitable[Reply]]
Middleware = Callable[[CommandContext, Next], Awaitable[Reply]]


class ChatCore:
    def __init__(
        self,
        commands: CommandSet,
        *,
        sandbox_upstreams: frozenset[str] = frozenset(),
        middlewares: Sequence[Middleware] = (),
        progress_interval: float = 3.0,
        admin_users: frozenset[str] = frozenset(),
    ) -> None:
        self.admin_users = admin_users
        self.commands = commands
        self.sandbox_upstreams = sandbox_upstreams
        self.middlewares = list(middlewares)
        self.progress_interval = progress_interval

    async def handle(self, invocation: Invocation, responder: Responder) -> Reply:
        """Run one command and deliver its single final answer; never raises.

        The command's correlation id is in ``CORRELATION_ID`` meanwhile, so every log record made
        on its behalf, in any layer and in tasks it starts, carries it.
        """
        correlation_id = uuid.uuid4().hex[:8]
        token = CORRELATION_ID.set(correlation_id)
        try:
            return await self._handle(invocation, responder, correlation_id)
        finally:
            CORRELATION_ID.reset(token)

    async def _handle(self, invocation: Invocation, responder: Responder, correlation_id: str) -> Reply:
        reply = await self._run(invocation, responder, correlation_id)
        command = self.commands.get(invocation.command)
        labelled = not reply.is_error and reply.confirmation is None and reply.upstream_output
        if command is not None and command.upstream in self.sandbox_upstreams and labelled:
            reply.footer = SANDBOX_FOOTER
        try:
            await responder.deliver(reply)
        except Exception:
            log.exception("delivering /%s failed", invocation.command)
            if not reply.is_error:
                fallback = Reply.error(f"The result could not be delivered here (ref {correlation_id}).")
                try:
                    await responder.deliver(fallback)
                except Exception:
                    log.exception("delivering the error message failed too")
                return fallback
            return reply
        if reply.on_delivered is not None:
            try:
                await reply.on_delivered()
            except Exception:
                log.exception("recording the delivery of /%s failed", invocation.command)
        return reply

    async def _run(self, invocation: Invocation, responder: Responder, correlation_id: str) -> Reply:
        command = self.commands.get(invocation.command)
        if command is None:
            return Reply.error(f"Unknown command /{invocation.command}. Send /help to see what I can do.")
        not_set_up = self.commands.not_set_up(command)
        if not_set_up is not None:
            return Reply.error(not_set_up)
        try:
            raw = dict(invocation.options or {})
            if invocation.text is not None:
                raw.update(parse_text_arguments(command, invocation.text))
            args = validate_arguments(command, raw)
            image_option = command.image_option
            if image_option is not None and image_option.required and invocation.image is None:
                raise UserInputError(f"/{command.name} needs an image.")
        except UserInputError as exc:
            return Reply.error(f"{exc.user_message}\nUsage: {command.usage(invocation.chat.platform)}")
        if command.admin_only and not await is_chat_admin(invocation, self.admin_users):
            return Reply.error(f"Only admins of this chat can use /{command.name}.")
        context = CommandContext(
            command=command,
            args=args,
            user=invocation.user,
            chat=invocation.chat,
            image=invocation.image if command.image_option is not None else None,
            correlation_id=correlation_id,
            _progress=responder.show_progress,
            rerun=self.run_context,
            progress_interval=self.progress_interval,
            invocation=invocation,
        )
        log.info("/%s from %s", command.name, invocation.user.key)
        try:
            if context.image is not None:
                context.image.check_declared_size()  # before any guard, budget or download
            return await self.run_context(context)
        except UserInputError as exc:
            return Reply.error(exc.user_message)
        except ReelwrightError as exc:
            log.warning("/%s failed: %s: %s", command.name, type(exc).__name__, exc)
            return Reply.error(exc.user_message)
        except Exception:
            log.exception("/%s crashed", command.name)
            return Reply.error(f"Something went wrong on my side (ref {correlation_id}). Please try again.")

    async def run_context(self, context: CommandContext) -> Reply:
        """Run a parsed command through the middlewares and its handler (also used by /confirm)."""

        async def innermost(ctx: CommandContext) -> Reply:
            return await ctx.command.handler(ctx)

        call: Next = innermost
        for middleware in reversed(self.middlewares):
            call = _bind(middleware, call)
        return await call(context)


def _bind(middleware: Middleware, following: Next) -> Next:
    async def bound(ctx: CommandContext) -> Reply:
        return await middleware(ctx, following)

    return bound
