"""A running Reelwright Discord bot (the real discord.py client) against the loopback fake Discord, on
the runtime ``reelwright run`` builds (``start_runtime``: guards, usage ledger, durable jobs, budgets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.core.progress import ProgressPolicy
from bot.discord.app import serve_discord
from bot.runtime import Runtime
from connectors.settings import Settings, load_settings
from tests.conftest import RuntimeFactory, production_runtimes
from tests.fakes import FakeGenAI, FakeOpenRouter
from tests.fakes.discord_api import FakeDiscord

#: Tests see every progress edit: no delay before the first, no throttle between them.
EAGER_PROGRESS = ProgressPolicy(status_delay=0.0, edit_interval=0.0)


@dataclass
class DiscordBot:
    fake: FakeDiscord
    runtime: Runtime
    stop: asyncio.Event
    task: asyncio.Task[None]
    openrouter: FakeOpenRouter
    genai: FakeGenAI

    async def final(self, interaction: dict[str, Any]) -> Any:
        """The edit of @original that carried the answer: progress edits send only ``content``,
        the answer always sets ``embeds`` and ``attachments`` too (clearing the progress line)."""
        token = interaction["token"]
        return await self.fake.wait_for(
            lambda call: (
                call.route == "edit_original"
                and call.status == 200
                and token in call.path
                and "embeds" in (call.payload or {})
            )
        )


def production_settings(
    fake: FakeDiscord, home: Path, text: FakeOpenRouter, media: FakeGenAI, **overrides: Any
) -> Settings:
    """``reelwright run``'s settings pointing at the fakes. Tests send many commands from one user
    and are not about money: no cost question and a high rate limit (the guard tests set them)."""
    values: dict[str, Any] = {
        "_env_file": None,
        "discord_bot_token": fake.token,
        "discord_api_base_url": fake.api_base,
        "discord_gateway_url": fake.gateway_url,
        "openrouter_api_key": "test-openrouter-key",
        "openrouter_base_url": text.base_url,
        "text_max_retries": 0,
        "google_api_key": "test-google-key",
        "genai_base_url": media.base_url,
        "media_max_retries": 1,
        "database_url": f"sqlite+aiosqlite:///{home / 'discord.sqlite3'}",
        "media_dir": home / "media",
        "video_poll_initial_seconds": 0.01,
        "video_poll_max_seconds": 0.05,
        "confirm_above_usd": 0,
        "rate_limit": "10000/minute",
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
async def make_runtime(
    tmp_path: Path, fake_discord: FakeDiscord, fake_openrouter: FakeOpenRouter, fake_genai: FakeGenAI
) -> AsyncIterator[RuntimeFactory]:
    """``await make_runtime(**settings)``: a production runtime on the fakes, closed after the test."""
    async with production_runtimes(
        lambda **settings: production_settings(fake_discord, tmp_path, fake_openrouter, fake_genai, **settings)
    ) as make:
        yield make


@pytest.fixture
def restore_discord_endpoints() -> Any:
    """Route.BASE and DEFAULT_GATEWAY are class attributes the adapter sets: put them back."""
    base = discord.http.Route.BASE
    gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    yield
    discord.http.Route.BASE = base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway


@pytest.fixture
async def fake_discord(restore_discord_endpoints: None) -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    yield fake
    await fake.stop()


async def start_bot(
    fake: FakeDiscord, runtime: Runtime, progress: ProgressPolicy = EAGER_PROGRESS, **options: Any
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    """Serve ``runtime`` on ``fake``; progress lines show at once unless ``progress`` says otherwise.

    ``options`` go to ``serve_discord`` (``guild_ready_timeout``)."""
    stop = asyncio.Event()
    fake.identified.clear()
    task = asyncio.create_task(serve_discord(runtime, stop, progress=progress, **options))
    identified = asyncio.create_task(fake.identified.wait())
    done, _ = await asyncio.wait({task, identified}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        identified.cancel()
        task.result()
    assert identified in done, "the bot never identified on the gateway"
    return stop, task


async def stop_bot(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.fixture
async def bot(
    fake_discord: FakeDiscord, make_runtime: RuntimeFactory, fake_openrouter: FakeOpenRouter, fake_genai: FakeGenAI
) -> AsyncIterator[DiscordBot]:
    runtime = await make_runtime()
    stop, task = await start_bot(fake_discord, runtime)
    yield DiscordBot(fake_discord, runtime, stop, task, fake_openrouter, fake_genai)
    await stop_bot(stop, task)
