"""The real PTB application against the loopback fake Bot API, on the runtime ``reelwright run``
builds (``start_runtime``: guards, usage ledger, durable jobs, budgets), with the AI fakes behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.core.progress import ProgressPolicy
from bot.runtime import Runtime
from bot.telegram.app import TelegramOptions, TelegramService
from connectors.settings import Settings, load_settings
from tests.conftest import RuntimeFactory, production_runtimes
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


def production_settings(
    api: FakeTelegramAPI, home: Path, text: FakeOpenRouter, media: FakeGenAI, **overrides: Any
) -> Settings:
    """``reelwright run``'s settings pointing at the fakes. Tests send many commands from one user
    and are not about money: no cost question and a high rate limit (the guard tests set them)."""
    values: dict[str, Any] = {
        "openrouter_api_key": "test-openrouter-key",
        "openrouter_base_url": text.base_url,
        "text_max_retries": 0,
        "google_api_key": "test-google-key",
        "genai_base_url": media.base_url,
        "media_max_retries": 1,
        "database_url": f"sqlite+aiosqlite:///{home / 'telegram.sqlite3'}",
        "media_dir": home / "media",
        "video_poll_initial_seconds": 0.01,
        "video_poll_max_seconds": 0.05,
        "confirm_above_usd": 0,
        "rate_limit": "10000/minute",
    }
    values.update(overrides)
    return telegram_settings(api, **values)


@pytest.fixture
async def make_runtime(
    tmp_path: Path, telegram_api: FakeTelegramAPI, fake_openrouter: FakeOpenRouter, fake_genai: FakeGenAI
) -> AsyncIterator[RuntimeFactory]:
    """``await make_runtime(**settings)``: a production runtime on the fakes, closed after the test."""
    async with production_runtimes(
        lambda **settings: production_settings(telegram_api, tmp_path, fake_openrouter, fake_genai, **settings)
    ) as make:
        yield make


@pytest.fixture
async def telegram_api() -> AsyncIterator[FakeTelegramAPI]:
    api = FakeTelegramAPI(TOKEN)
    await api.start()
    yield api
    await api.stop()


StartBot = Callable[..., Any]


@pytest.fixture
async def start_bot(
    telegram_api: FakeTelegramAPI,
    make_runtime: RuntimeFactory,
    fake_openrouter: FakeOpenRouter,
    fake_genai: FakeGenAI,
) -> AsyncIterator[StartBot]:
    """Start the Telegram service (settings and options overridable); stopped after the test."""
    started: list[TelegramService] = []

    async def start(options: TelegramOptions | None = None, **settings: Any) -> TelegramBot:
        runtime = await make_runtime(**settings)
        service = TelegramService(runtime, options or TelegramOptions(progress=EAGER_PROGRESS, poll_timeout=5))
        await service.start()
        started.append(service)
        return TelegramBot(service, telegram_api, runtime, fake_openrouter, fake_genai)

    yield start
    for service in started:
        await service.stop()


@pytest.fixture
async def tg(start_bot: StartBot) -> TelegramBot:
    bot: TelegramBot = await start_bot()
    return bot
