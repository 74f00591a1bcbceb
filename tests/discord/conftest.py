"""A running Reelwright Discord bot (the real discord.py client) against the loopback fake Discord."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import discord
import pytest

from bot.core.catalog import build_commands
from bot.core.dispatcher import ChatCore
from bot.core.progress import ProgressPolicy
from bot.discord.app import serve_discord
from bot.runtime import Runtime
from connectors.settings import load_settings
from services.memory import UserMemory
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


def make_runtime(fake: FakeDiscord, **settings: Any) -> Runtime:
    values: dict[str, Any] = {
        "_env_file": None,
        "discord_bot_token": fake.token,
        "discord_api_base_url": fake.api_base,
        "discord_gateway_url": fake.gateway_url,
    }
    values.update(settings)
    return Runtime(
        settings=load_settings(**values),
        core=ChatCore(build_commands(UserMemory())),
        sandbox_upstreams=frozenset(),
    )


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
async def bot(fake_discord: FakeDiscord, upstreams: tuple[FakeOpenRouter, FakeGenAI]) -> AsyncIterator[DiscordBot]:
    runtime = make_runtime(fake_discord)
    stop, task = await start_bot(fake_discord, runtime)
    yield DiscordBot(fake_discord, runtime, stop, task, *upstreams)
    await stop_bot(stop, task)
