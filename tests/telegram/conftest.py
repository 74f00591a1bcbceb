"""The real PTB application against the loopback fake Bot API, with the AI fakes behind the core."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bot.core.catalog import build_commands
from bot.core.dispatcher import ChatCore
from bot.core.progress import ProgressPolicy
from bot.runtime import Runtime
from bot.telegram.app import TelegramOptions, TelegramService
from connectors.settings import Settings, load_settings
from services.memory import UserMemory
from tests.fakes import FakeGenAI, FakeOpenRouter
from tests.fakes.telegram_api import ApiCall, FakeTelegramAPI

TOKEN = "123456789:AAH-telegramTestToken_0123456789abc"

#: Tests see every status message and edit: no delay before the status, no throttle between edits.
EAGER_PROGRESS = ProgressPolicy(status_delay=0.0, edit_interval=0.0)


def telegram_settings(api: FakeTelegramAPI, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "telegram_bot_token": TOKEN,
        "telegram_api_base_url": api.api_base,
        "telegram_file_base_url": api.file_base,
        "telegram_concurrent_updates": 256,
        "telegram_local_api": False,  # the fake plays Telegram's cloud API, limits included
    }
    values.update(overrides)
    return load_settings(**values)


@dataclass
class TelegramBot:
    """A started ``TelegramService`` and the fakes it talks to."""

    service: TelegramService
    api: FakeTelegramAPI
    runtime: Runtime
    text: FakeOpenRouter
    media: FakeGenAI

    async def settle(self) -> None:
        """Wait until every pushed update has been fetched and fully handled (replies included)."""
        last = self.api.last_update_id
        if last:
            await self.api.wait_fetched(last)
        assert self.service.application is not None
        await self.service.application.update_queue.join()

    async def run(self, chat_id: int, text: str, **kwargs: Any) -> list[ApiCall]:
        """Send one message from ``chat_id``, wait until it is handled, return what the bot posted there."""
        before = len(self.api.sent_to(chat_id))
        await self.api.send_command(chat_id, text, **kwargs)
        await self.settle()
        return self.api.sent_to(chat_id)[before:]

    async def push(self, message: dict[str, Any]) -> list[ApiCall]:
        chat_id = message["chat"]["id"]
        before = len(self.api.sent_to(chat_id))
        await self.api.push(message)
        await self.settle()
        return self.api.sent_to(chat_id)[before:]


def make_runtime(settings: Settings) -> Runtime:
    return Runtime(settings=settings, core=ChatCore(build_commands(UserMemory())), sandbox_upstreams=frozenset())


@pytest.fixture
async def telegram_api() -> AsyncIterator[FakeTelegramAPI]:
    api = FakeTelegramAPI(TOKEN)
    await api.start()
    yield api
    await api.stop()


StartBot = Callable[..., Any]


@pytest.fixture
async def start_bot(
    telegram_api: FakeTelegramAPI, upstreams: tuple[FakeOpenRouter, FakeGenAI]
) -> AsyncIterator[StartBot]:
    """Start the Telegram service (settings and options overridable); stopped after the test."""
    started: list[TelegramService] = []

    async def start(options: TelegramOptions | None = None, **settings: Any) -> TelegramBot:
        runtime = make_runtime(telegram_settings(telegram_api, **settings))
        service = TelegramService(runtime, options or TelegramOptions(progress=EAGER_PROGRESS, poll_timeout=5))
        await service.start()
        started.append(service)
        return TelegramBot(service, telegram_api, runtime, *upstreams)

    yield start
    for service in started:
        await service.stop()


@pytest.fixture
async def tg(start_bot: StartBot) -> TelegramBot:
    bot: TelegramBot = await start_bot()
    return bot
