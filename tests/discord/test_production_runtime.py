"""The Discord adapter on the production runtime (``start_runtime``: guards, usage ledger, jobs,
schedules): who may run admin commands, the role and guild allow-lists, and a costly /video that
asks first and goes ahead with the "Go ahead" button. The real discord.py client, the fake Discord."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.runtime import Runtime, start_runtime
from connectors.settings import load_settings
from tests.bot.helpers import HandlerSaw, record_handler_contexts
from tests.discord.conftest import DiscordBot, start_bot, stop_bot
from tests.fakes import FakeGenAI, FakeOpenRouter
from tests.fakes.discord_api import MEMBER_PERMISSIONS, FakeDiscord

MANAGE_SERVER = str(1 << 5)
ADMINISTRATOR = str(1 << 3)
ALLOWED_ROLE = "1500000000000000001"
STRANGER = {
    "id": "1400000000000000099",
    "username": "stranger",
    "discriminator": "0",
    "global_name": "Stranger",
    "avatar": None,
}

StartBot = Callable[..., Awaitable[DiscordBot]]


@pytest.fixture
async def production(
    tmp_path: Path, fake_discord: FakeDiscord, fake_openrouter: FakeOpenRouter, fake_genai: FakeGenAI
) -> AsyncIterator[StartBot]:
    """Start the Discord bot on ``start_runtime`` with the given settings (one per test)."""
    started: list[tuple[Runtime, Any, Any]] = []

    async def start(**overrides: Any) -> DiscordBot:
        values: dict[str, Any] = {
            "_env_file": None,
            "discord_bot_token": fake_discord.token,
            "discord_api_base_url": fake_discord.api_base,
            "discord_gateway_url": fake_discord.gateway_url,
            "openrouter_api_key": "test-openrouter-key",
            "openrouter_base_url": fake_openrouter.base_url,
            "google_api_key": "test-google-key",
            "genai_base_url": fake_genai.base_url,
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'discord.sqlite3'}",
            "media_dir": tmp_path / "media",
            "video_poll_initial_seconds": 0.01,
            "video_poll_max_seconds": 0.05,
            "text_max_retries": 0,
        }
        values.update(overrides)
        runtime = await start_runtime(load_settings(**values))
        stop, task = await start_bot(fake_discord, runtime)
        started.append((runtime, stop, task))
        return DiscordBot(fake_discord, runtime, stop, task, fake_openrouter, fake_genai)

    yield start
    for runtime, stop, task in reversed(started):
        await stop_bot(stop, task)
        await runtime.close()


async def answer(bot: DiscordBot, d: dict[str, Any]) -> str:
    final = await bot.final(d)
    assert final.payload["allowed_mentions"] == {"parse": []}
    return str(final.payload["content"])


async def test_schedule_needs_manage_server(production: StartBot) -> None:
    bot = await production()
    member = await answer(bot, await bot.fake.slash("schedule", {"request": "list"}, member={"permissions": "0"}))
    assert member == "⚠️ Only admins of this chat can use /schedule."
    plain = {"permissions": MEMBER_PERMISSIONS}  # everything but Manage Server and Administrator
    assert (await answer(bot, await bot.fake.slash("schedule", {"request": "list"}, member=plain))).startswith("⚠️")

    manager = await answer(
        bot, await bot.fake.slash("schedule", {"request": "list"}, member={"permissions": MANAGE_SERVER})
    )
    assert manager.startswith("This chat has no trend schedules.")
    admin = await answer(
        bot, await bot.fake.slash("schedule", {"request": "list"}, member={"permissions": ADMINISTRATOR})
    )
    assert admin.startswith("This chat has no trend schedules.")
    # The user's own DM with the bot is theirs to schedule, as a private chat is on Telegram.
    dm = await answer(bot, await bot.fake.slash("schedule", {"request": "list"}, dm=True))
    assert dm.startswith("This chat has no trend schedules.")


async def test_allowed_roles_and_guilds(production: StartBot) -> None:
    bot = await production(allowed_roles=ALLOWED_ROLE, allowed_guilds=FakeDiscord().guild_id)
    outsider = await answer(bot, await bot.fake.slash("help", {}, member={"roles": ["1500000000000000002"]}))
    assert outsider == "⚠️ You need one of the roles allowed to use this bot."
    nobody = await answer(bot, await bot.fake.slash("meme", {"topic": "mondays"}, member={"roles": []}))
    assert nobody == "⚠️ You need one of the roles allowed to use this bot."
    assert bot.openrouter.requests == []

    allowed = {"roles": ["1500000000000000002", ALLOWED_ROLE]}
    assert "/story" in await answer(bot, await bot.fake.slash("help", {}, member=allowed))
    assert (await answer(bot, await bot.fake.slash("meme", {"topic": "mondays"}, member=allowed))).startswith("😂")

    dm = await answer(bot, await bot.fake.slash("help", {}, dm=True))
    assert dm == "⚠️ This bot is not enabled on this server."


async def test_a_costly_video_is_confirmed_with_the_go_ahead_button(production: StartBot) -> None:
    bot = await production(confirm_above_usd=0.01)
    d = await bot.fake.slash("video", {"prompt": "a cat surfing", "duration": "8"})
    asked = await bot.final(d)
    assert asked.payload["content"].startswith("💸 /video will cost about")
    assert asked.payload["allowed_mentions"] == {"parse": []}
    [row] = asked.payload["components"]
    [button] = row["components"]
    assert button["label"] == "✅ Go ahead"
    code = button["custom_id"].removeprefix("rw:confirm:")
    assert f"/confirm {code}" in asked.payload["content"]
    assert bot.genai.video_generation_requests == []
    assert asked.message is not None
    message = asked.message
    shown = copy.deepcopy(message)  # the question as a client showed it, button included

    # Someone else pressing gets the core's refusal, shown to them only, and nothing is generated.
    stranger = await bot.fake.press(message, button["custom_id"], user=STRANGER)
    refused = await bot.final(stranger)
    deferral = next(c for c in bot.fake.calls_to("callback") if stranger["id"] in c.path)
    assert deferral.payload == {"type": 5, "data": {"flags": 64}}
    assert refused.payload["content"].startswith("⚠️ Nothing to confirm with that code")
    assert bot.genai.video_generation_requests == []

    press = await bot.fake.press(message, button["custom_id"])
    final = await bot.final(press)
    assert next(c for c in bot.fake.calls_to("callback") if press["id"] in c.path).payload == {"type": 5}
    # One press only, as on Telegram: the asker's press took the button off the question.
    [removed] = bot.fake.calls_to("edit_message")
    assert removed.path.endswith(f"/channels/{bot.fake.channel_id}/messages/{message['id']}")
    assert removed.payload["components"] == []
    assert bot.fake.messages[message["id"]]["components"] == []
    assert [f.filename.endswith(".mp4") for f in final.files] == [True]
    assert final.payload["allowed_mentions"] == {"parse": []}
    assert len(bot.genai.video_generation_requests) == 1
    assert "a cat surfing" in json.dumps(bot.genai.video_generation_requests[0].json)
    # Spend is counted for the user and for the guild (the budget's "chat" on Discord).
    assert bot.runtime.ledger is not None
    guild_spend = await bot.runtime.ledger.spent("chat", f"discord:guild:{bot.fake.guild_id}")
    assert guild_spend.today > 0

    # A second press (one that raced the removal, from a client still showing the button) is
    # refused by the core and generates nothing.
    again = await bot.fake.press(shown, button["custom_id"])
    assert (await answer(bot, again)).startswith("⚠️ Nothing to confirm with that code")
    assert len(bot.genai.video_generation_requests) == 1


async def test_handlers_see_the_interactions_upload_limit(production: StartBot) -> None:
    """A handler sizes what it makes to what this interaction may answer with (a boosted server's
    limit here); a confirmed command is answered through the press, so the press's limit counts."""
    bot = await production(confirm_above_usd=0.01)
    seen = record_handler_contexts(bot.runtime.core)
    await answer(bot, await bot.fake.slash("usage", {}, attachment_size_limit=50 << 20))
    assert seen == [HandlerSaw("usage", 50 << 20, confirmed=False)]

    asked = await bot.final(await bot.fake.slash("video", {"prompt": "a cat", "duration": "8"}))
    [row] = asked.payload["components"]
    assert asked.message is not None
    press = await bot.fake.press(asked.message, row["components"][0]["custom_id"], attachment_size_limit=100 << 20)
    await bot.final(press)
    assert seen[-1] == HandlerSaw("video", 100 << 20, confirmed=True)
    assert HandlerSaw("confirm", 100 << 20, confirmed=False) in seen


async def test_the_go_ahead_button_survives_a_restart(production: StartBot, fake_discord: FakeDiscord) -> None:
    """The pending code lives in the process, so after a restart the press reaches the core, which
    says clearly that there is nothing to confirm: the button is still understood (no "failed")."""
    first = await production(confirm_above_usd=0.01)
    asked = await first.final(await fake_discord.slash("video", {"prompt": "a cat surfing"}))
    assert asked.message is not None
    custom_id = asked.payload["components"][0]["components"][0]["custom_id"]
    await stop_bot(first.stop, first.task)
    await first.runtime.close()  # the process ends: its pending codes and database engine go with it

    second = await production(confirm_above_usd=0.01)
    press = await fake_discord.press(asked.message, custom_id)
    assert (await answer(second, press)).startswith("⚠️ Nothing to confirm with that code")
    assert second.genai.video_generation_requests == []


async def test_without_google_credentials_media_commands_are_not_offered(production: StartBot) -> None:
    bot = await production(google_api_key=None, genai_base_url=None)
    synced = [command["name"] for commands in bot.fake.commands.values() for command in commands]
    assert "story" in synced and "video" not in synced and "thumbnail" not in synced
    listing = await answer(bot, await bot.fake.slash("help", {}))
    assert "/story" in listing and "/video" not in listing and "/thumbnail" not in listing
    assert bot.runtime.unavailable_upstreams == frozenset({"media"}) and bot.runtime.sandbox_upstreams == frozenset()
