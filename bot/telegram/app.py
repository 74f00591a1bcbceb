"""The Telegram application: python-telegram-bot wired to the chat core, in polling or webhook mode.

Everything a command needs comes from the core's declarations: the command list for
``setMyCommands``, the usage in /help, the parsing of ``/story a dragon segments=8``. This module only
plugs PTB's parts together (rate limiter, concurrency, transport) and runs them until ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from telegram import BotCommand, Message, Update
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    ExtBot,
    MessageHandler,
    filters,
)
from telegram.request import BaseRequest

from bot.core.dispatcher import ChatCore
from bot.core.progress import ProgressPolicy
from bot.runtime import PlatformStartError, Runtime
from bot.telegram.delivery import CONFIRM_PREFIX, ReplyDelivery, TelegramSender, UploadLimits
from bot.telegram.flood import FloodLimiter
from bot.telegram.incoming import CLOUD_DOWNLOAD_LIMIT, ParsedCommand, invocation_for, parse_command
from bot.telegram.request import AiohttpRequest
from bot.telegram.responder import TelegramResponder
from connectors.settings import Settings

log = logging.getLogger(__name__)

CLOUD_API_HOST = "api.telegram.org"
ALLOWED_UPDATES = ["message", "callback_query"]


@dataclass(frozen=True)
class TelegramOptions:
    """Knobs that are not settings: tests and the benchmark tune them, production uses the defaults.

    ``transport``: "aiohttp" (``AiohttpRequest``, the lighter default) or "httpx" (PTB's own);
    ``request`` / ``updates_request`` replace the aiohttp transports altogether.
    """

    transport: Literal["aiohttp", "httpx"] = "aiohttp"
    progress: ProgressPolicy = field(default_factory=ProgressPolicy)
    max_retries: int = 3
    poll_timeout: int = 10
    request: BaseRequest | None = None
    updates_request: BaseRequest | None = None
    storyboards: bool = True


class TelegramAdapter:
    """Turns command messages into chat-core invocations, each with its own responder."""

    def __init__(self, core: ChatCore, delivery: ReplyDelivery, options: TelegramOptions, self_hosted: bool) -> None:
        self.core = core
        self.delivery = delivery
        self.options = options
        self.download_limit = None if self_hosted else CLOUD_DOWNLOAD_LIMIT
        self.username = ""

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A command (text or caption): one core invocation, answered under the message."""
        message = update.effective_message
        if message is None:
            return
        parsed = parse_command(message, self.username)
        if parsed is None:
            return
        command = self.core.commands.get(parsed.name)
        if command is None and message.chat.type != "private" and not parsed.addressed:
            return  # "/something" in a group may be for another bot
        responder = TelegramResponder(
            self.delivery,
            message.chat.id,
            reply_to=message.message_id,
            action=command.upload_action if command is not None else "typing",
            policy=self.options.progress,
        )
        invocation = invocation_for(
            message, parsed, download_limit=self.download_limit, upload_limit=self.delivery.limits.other
        )
        await self.core.handle(invocation, responder)

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The "✅ Go ahead" button under a cost question: it goes (one press only), then ``/confirm``."""
        query = update.callback_query
        if query is None or query.data is None or not query.data.startswith(CONFIRM_PREFIX):
            return
        await query.answer()
        message = query.message
        if not isinstance(message, Message):
            return  # too old for Telegram to show: nothing to answer under
        try:
            await query.edit_message_reply_markup(None)
        except TelegramError as exc:
            log.info("could not remove the confirm button in %s: %s", message.chat.id, exc)
        invocation = invocation_for(
            message,
            ParsedCommand("confirm", query.data.removeprefix(CONFIRM_PREFIX), addressed=True),
            download_limit=self.download_limit,
            upload_limit=self.delivery.limits.other,
            sender=query.from_user,
        )
        responder = TelegramResponder(
            self.delivery, message.chat.id, reply_to=message.message_id, action="typing", policy=self.options.progress
        )
        await self.core.handle(invocation, responder)


async def _log_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    log.error("telegram handler failed", exc_info=context.error)


def is_self_hosted(api_base_url: str) -> bool:
    """A Bot API server other than Telegram's cloud one lifts the 20 MB / 50 MB file limits."""
    return urlsplit(api_base_url).hostname != CLOUD_API_HOST


def _self_hosted(settings: Settings) -> bool:
    return (
        is_self_hosted(str(settings.telegram_api_base_url))
        if settings.telegram_local_api is None
        else settings.telegram_local_api
    )


async def build_send_only_sender(runtime: Runtime) -> TelegramSender:
    """A sender with no polling or webhook, for ``reelwright worker`` processes that only deliver jobs.

    Its ``Bot`` is closed with the runtime.
    """
    settings = runtime.settings
    if settings.telegram_bot_token is None:
        raise PlatformStartError("Telegram: TELEGRAM_BOT_TOKEN is not set")
    updates = AiohttpRequest(1)  # never polls; PTB opens one anyway
    bot: ExtBot[int] = ExtBot(
        settings.telegram_bot_token.get_secret_value(),
        base_url=str(settings.telegram_api_base_url),
        base_file_url=str(settings.telegram_file_base_url),
        request=AiohttpRequest(64),
        get_updates_request=updates,
        rate_limiter=FloodLimiter(settings.telegram_rate_limit_per_second, TelegramOptions.max_retries),
    )
    await _initialize(bot.initialize(), [bot.request, updates])
    runtime.stack.push_async_callback(bot.shutdown)
    return TelegramSender(ReplyDelivery(bot, UploadLimits.for_server(_self_hosted(settings))))


async def _initialize(initialize: Awaitable[None], transports: list[BaseRequest]) -> None:
    """Run PTB's initialisation (getMe); on failure close the transports it opened, and say why."""
    try:
        await initialize
    except (InvalidToken, NetworkError) as exc:
        for transport in transports:
            await transport.shutdown()
        if isinstance(exc, InvalidToken):
            raise PlatformStartError("Telegram refused TELEGRAM_BOT_TOKEN (getMe failed: check the token)") from exc
        raise PlatformStartError(
            f"Telegram: cannot reach the Bot API at TELEGRAM_API_BASE_URL ({exc.message})"
        ) from exc


def build_application(runtime: Runtime, options: TelegramOptions | None = None) -> Application:  # type: ignore[type-arg]
    """A PTB application for ``runtime`` (not yet initialised); registers the ``ChatSender`` too."""
    options = options or TelegramOptions()
    settings = runtime.settings
    if settings.telegram_bot_token is None:
        raise PlatformStartError("Telegram: TELEGRAM_BOT_TOKEN is not set")
    api_base = str(settings.telegram_api_base_url)
    builder = (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(api_base)
        .base_file_url(str(settings.telegram_file_base_url))
        .concurrent_updates(settings.telegram_concurrent_updates)
        .rate_limiter(FloodLimiter(settings.telegram_rate_limit_per_second, options.max_retries))
        .job_queue(None)  # trend schedules run in the core, not in PTB
    )
    pool_size = max(256, settings.telegram_concurrent_updates)
    transports: list[BaseRequest] = []
    if options.transport == "aiohttp":
        transports = [
            options.request or AiohttpRequest(pool_size),
            options.updates_request or AiohttpRequest(1, read_timeout=options.poll_timeout + 10.0),
        ]
        builder = builder.request(transports[0]).get_updates_request(transports[1])
    else:
        builder = builder.connection_pool_size(pool_size).get_updates_read_timeout(options.poll_timeout + 10.0)
    application = builder.build()
    self_hosted = _self_hosted(settings)
    delivery = ReplyDelivery(application.bot, UploadLimits.for_server(self_hosted), storyboards=options.storyboards)
    adapter = TelegramAdapter(runtime.core, delivery, options, self_hosted)
    application.add_handler(CallbackQueryHandler(adapter.on_button, pattern=f"^{CONFIRM_PREFIX}"))
    application.add_handler(
        MessageHandler(filters.UpdateType.MESSAGE & (filters.COMMAND | filters.CaptionRegex(r"^/")), adapter.on_message)
    )
    application.add_error_handler(_log_error)
    application.bot_data["adapter"] = adapter
    application.bot_data["transports"] = transports or [application.bot.request]
    runtime.senders["telegram"] = TelegramSender(
        delivery, ready=lambda: application.running and application.updater is not None and application.updater.running
    )
    return application


async def register_commands(application: Application, core: ChatCore) -> None:  # type: ignore[type-arg]
    """``setMyCommands`` from the core's catalogue, so Telegram clients offer the same commands."""
    await application.bot.set_my_commands([BotCommand(c.name, c.summary) for c in core.commands])


class TelegramService:
    """One running Telegram bot: ``start`` (initialise, register commands, poll or listen), ``stop``.

    ``application`` is PTB's; its ``update_queue.join()`` tells when every received update is handled.
    """

    def __init__(self, runtime: Runtime, options: TelegramOptions | None = None) -> None:
        self.runtime = runtime
        self.options = options or TelegramOptions()
        self.application: Application | None = None  # type: ignore[type-arg]

    async def start(self) -> None:
        settings = self.runtime.settings
        webhook_url = str(settings.telegram_webhook_url) if settings.telegram_webhook_url else None
        if webhook_url and settings.telegram_webhook_secret is None:
            raise PlatformStartError("Telegram: TELEGRAM_WEBHOOK_SECRET must be set when TELEGRAM_WEBHOOK_URL is")
        application = build_application(self.runtime, self.options)
        try:
            await _initialize(application.initialize(), application.bot_data["transports"])
        except PlatformStartError:
            self.runtime.senders.pop("telegram", None)
            raise
        self.application = application
        adapter: TelegramAdapter = application.bot_data["adapter"]
        adapter.username = application.bot.username
        updater = application.updater
        assert updater is not None
        try:
            await register_commands(application, self.runtime.core)
            if webhook_url:
                assert settings.telegram_webhook_secret is not None
                await updater.start_webhook(
                    listen=settings.telegram_webhook_listen,
                    port=settings.telegram_webhook_port,
                    url_path=urlsplit(webhook_url).path.lstrip("/"),
                    webhook_url=webhook_url,
                    secret_token=settings.telegram_webhook_secret.get_secret_value(),
                    allowed_updates=ALLOWED_UPDATES,
                )
                log.info("Telegram: @%s receives updates by webhook", adapter.username)
            else:
                await updater.start_polling(timeout=self.options.poll_timeout, allowed_updates=ALLOWED_UPDATES)
                log.info("Telegram: @%s is polling for updates", adapter.username)
            await application.start()
        except TelegramError as exc:
            await self.stop()
            raise PlatformStartError(f"Telegram: could not start ({exc.message})") from exc

    async def stop(self) -> None:
        """Stop receiving, let handlers in flight finish, then close the transport."""
        application, self.application = self.application, None
        self.runtime.senders.pop("telegram", None)
        if application is None:
            return
        if application.updater is not None and application.updater.running:
            await application.updater.stop()
        if application.running:
            await application.stop()
        await application.shutdown()


async def serve_telegram(runtime: Runtime, stop: asyncio.Event, options: TelegramOptions | None = None) -> None:
    """Serve Telegram until ``stop`` is set (long polling, or a webhook when TELEGRAM_WEBHOOK_URL is set)."""
    service = TelegramService(runtime, options)
    await service.start()
    try:
        await stop.wait()
    finally:
        await service.stop()
