"""Start-up, sync, delivery paths and failure handling of the Discord adapter, end to end."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from bot.core.commands import OptionKind
from bot.core.context import ChatRef
from bot.core.progress import ProgressPolicy
from bot.core.replies import Reply
from bot.discord.app import serve_discord
from bot.discord.responder import DISCORD_PROGRESS
from bot.runtime import PlatformStartError
from tests.discord.conftest import DiscordBot, RuntimeFactory, start_bot, stop_bot
from tests.fakes import FakeGenAI, FakeOpenRouter, Fault
from tests.fakes.discord_api import FakeDiscord

OPTION_TYPE = {OptionKind.TEXT: 3, OptionKind.CHOICE: 3, OptionKind.INTEGER: 4, OptionKind.IMAGE: 11}


async def test_login_syncs_every_declared_command_globally(bot: DiscordBot) -> None:
    routes = [call.route for call in bot.fake.calls]
    assert routes[:3] == ["users/@me", "oauth2/applications/@me", "sync_global"]
    synced = {command["name"]: command for command in bot.fake.calls_to("sync_global")[0].payload}
    catalogue = bot.runtime.core.commands  # the production catalogue, /usage and /confirm included
    assert list(synced) == [command.name for command in catalogue]
    for command in catalogue:
        options = {opt["name"]: opt for opt in synced[command.name].get("options", [])}
        assert set(options) == {opt.name for opt in command.options}
        for declared in command.options:
            option = options[declared.name]
            assert option["type"] == OPTION_TYPE[declared.kind]
            assert option["required"] == declared.required
            assert len(option["description"]) <= 100
            if declared.kind is OptionKind.INTEGER:
                assert (option["min_value"], option["max_value"]) == (declared.min_value, declared.max_value)
            if declared.kind is OptionKind.CHOICE:
                assert [c["value"] for c in option["choices"]] == list(declared.choices)
            if declared.max_length is not None:
                assert option["max_length"] == declared.max_length
        required = [opt["required"] for opt in synced[command.name].get("options", [])]
        assert required == sorted(required, reverse=True)  # Discord wants required options first
    assert synced["character"]["options"][0] == {
        "type": 11,
        "name": "image",
        "description": "the character image",
        "required": True,
    }
    assert bot.runtime.senders["discord"] is not None


async def test_guild_ids_sync_to_each_guild_and_stop_closes_cleanly(
    fake_discord: FakeDiscord, upstreams: tuple[FakeOpenRouter, FakeGenAI], make_runtime: RuntimeFactory
) -> None:
    runtime = await make_runtime(discord_guild_ids="111, 222")
    stop, task = await start_bot(fake_discord, runtime)
    assert [c.path.split("/")[-2] for c in fake_discord.calls_to("sync_guild")] == ["111", "222"]
    assert fake_discord.calls_to("sync_global") == []
    await stop_bot(stop, task)
    assert task.exception() is None
    assert "discord" not in runtime.senders
    assert fake_discord.sockets == []


async def test_a_refused_token_is_a_clear_start_error(fake_discord: FakeDiscord, make_runtime: RuntimeFactory) -> None:
    runtime = await make_runtime(discord_bot_token="not-the-token")
    with pytest.raises(PlatformStartError, match="refused DISCORD_BOT_TOKEN"):
        await asyncio.wait_for(serve_discord(runtime, asyncio.Event()), 10)


async def test_a_429_on_the_deferral_is_retried_after_retry_after(bot: DiscordBot) -> None:
    bot.fake.inject(Fault.status(429, retry_after=0.05), route="callback")
    d = await bot.fake.slash("help", {})
    final = await bot.final(d)
    callbacks = [c for c in bot.fake.calls_to("callback") if d["id"] in c.path]
    assert len(callbacks) == 2
    assert callbacks[1].time - callbacks[0].time >= 0.05
    assert "/story" in final.payload["content"]


async def test_a_malformed_interaction_is_dropped_and_the_bot_keeps_serving(
    bot: DiscordBot, caplog: pytest.LogCaptureFixture
) -> None:
    broken = bot.fake.interaction_payload(2, {"id": "1", "name": "help", "type": 1})
    del broken["attachment_size_limit"]
    del broken["member"]["flags"]
    await bot.fake.dispatch_event("INTERACTION_CREATE", broken)
    await bot.fake.dispatch_event("INTERACTION_CREATE", {"garbage": True})
    d = await bot.fake.slash("help", {})
    final = await bot.final(d)
    assert "/story" in final.payload["content"]
    assert not bot.task.done()
    assert "dropped a malformed INTERACTION_CREATE" in caplog.text
    assert [c for c in bot.fake.calls if broken["token"] in c.path] == []


async def test_tree_on_error_answers_an_unknown_command_ephemerally(bot: DiscordBot) -> None:
    d = bot.fake.interaction_payload(2, {"id": "9", "name": "retired", "type": 1, "options": []})
    await bot.fake.dispatch_event("INTERACTION_CREATE", d)
    call = await bot.fake.wait_for(lambda c: c.route == "callback" and d["id"] in c.path)
    assert call.payload["type"] == 4
    assert call.payload["data"]["flags"] == 64
    assert call.payload["data"]["allowed_mentions"] == {"parse": []}
    assert "not available" in call.payload["data"]["content"]


async def test_a_failing_deferral_reaches_tree_on_error_and_the_bot_survives(bot: DiscordBot) -> None:
    bot.fake.inject(Fault.status(400, body={"message": "Invalid Form Body", "code": 50035}), route="callback")
    d = await bot.fake.slash("help", {})
    second = await bot.fake.wait_for(
        lambda c: c.route == "callback" and d["id"] in c.path and c.payload.get("type") == 4
    )
    assert second.payload["data"]["flags"] == 64
    assert second.payload["data"]["content"].startswith("⚠️ Something went wrong")
    d2 = await bot.fake.slash("help", {})
    assert "/story" in (await bot.final(d2)).payload["content"]


async def test_after_the_15_minute_token_the_answer_is_posted_to_the_channel(bot: DiscordBot) -> None:
    d = await bot.fake.slash("meme", {"topic": "mondays"}, age_seconds=15 * 60)
    posted = await bot.fake.wait_for(lambda c: c.route == "channel_message")
    assert posted.path.endswith(f"/channels/{bot.fake.channel_id}/messages")
    assert posted.payload["content"].startswith("😂")
    assert posted.payload["allowed_mentions"] == {"parse": []}
    assert [c.route for c in bot.fake.calls if d["token"] in c.path] == ["callback"]  # the deferral only


async def test_the_chat_sender_posts_to_a_channel_without_an_interaction(bot: DiscordBot) -> None:
    sender = bot.runtime.senders["discord"]
    await sender.send(ChatRef("discord", bot.fake.channel_id, is_private=False), Reply(blocks=["@everyone trends"]))
    posted = await bot.fake.wait_for(lambda c: c.route == "channel_message")
    assert posted.payload["content"] == "@everyone trends"
    assert posted.payload["allowed_mentions"] == {"parse": []}


async def test_a_long_text_answer_continues_in_follow_ups(bot: DiscordBot) -> None:
    bot.openrouter.inject(Fault.content(json.dumps({"content": "\n\n".join(["word " * 300] * 3)})))
    d = await bot.fake.slash("write", {"brief": "a long script", "kind": "script"})
    final = await bot.final(d)
    follow_ups = await bot.fake.wait_for(lambda c: c.route == "followup" and d["token"] in c.path)
    everything = [final, follow_ups]
    assert all(0 < len(c.payload["content"]) <= 2000 for c in everything)
    assert all(c.payload["allowed_mentions"] == {"parse": []} for c in everything)


async def test_a_very_long_text_answer_is_attached_as_a_file(bot: DiscordBot) -> None:
    text = "\n\n".join(["word " * 300] * 8)
    bot.openrouter.inject(Fault.content(json.dumps({"content": text})))
    d = await bot.fake.slash("write", {"brief": "a very long script", "kind": "script"})
    final = await bot.final(d)
    assert len(final.payload["content"]) <= 2000
    assert "reply.txt" in final.payload["content"]
    assert [f.filename for f in final.files] == ["reply.txt"]
    assert text.strip() in final.files[0].data.decode()
    assert [c for c in bot.fake.calls_to("followup") if d["token"] in c.path] == []


async def story_message(bot: DiscordBot) -> dict[str, Any]:
    d = await bot.fake.slash("story", {"idea": "a dragon learns to fly", "segments": 3})
    final = await bot.final(d)
    assert final.message is not None
    return final.message


async def test_video_button_survives_a_restart(
    fake_discord: FakeDiscord, upstreams: tuple[FakeOpenRouter, FakeGenAI], make_runtime: RuntimeFactory
) -> None:
    first = await make_runtime()
    stop, task = await start_bot(fake_discord, first)
    message = await story_message(DiscordBot(fake_discord, first, stop, task, *upstreams))
    await stop_bot(stop, task)
    await first.close()

    restarted = await make_runtime()  # a new process: empty memory, no stored views
    stop, task = await start_bot(fake_discord, restarted)
    bot = DiscordBot(fake_discord, restarted, stop, task, *upstreams)
    try:
        press = await fake_discord.press(message, "rw:video:2")
        final = await bot.final(press)
        assert [f.filename.endswith(".mp4") for f in final.files] == [True]
        assert fake_discord.calls_to("callback")[-1].payload == {"type": 5}
        started = json.dumps(upstreams[1].video_generation_requests[-1].json)
        assert "Sandbox visual prompt 2" in started
    finally:
        await stop_bot(stop, task)


async def test_thumbnail_and_regenerate_buttons(bot: DiscordBot) -> None:
    message = await story_message(bot)
    press = await bot.fake.press(message, "rw:thumb:")
    thumb = await bot.final(press)
    assert thumb.files[0].filename.endswith((".png", ".jpg"))
    assert thumb.payload["content"] == f"🖼️ {message['embeds'][0]['title']}"

    before = len(bot.openrouter.requests)
    press = await bot.fake.press(message, "rw:regen:story.3")
    again = await bot.final(press)
    assert len(again.payload["embeds"][0]["fields"]) == 3
    prompt = json.dumps(bot.openrouter.requests[before].json)
    assert "a dragon learns to fly" in prompt


async def test_the_bot_token_never_reaches_the_logs(
    fake_discord: FakeDiscord,
    upstreams: tuple[FakeOpenRouter, FakeGenAI],
    caplog: pytest.LogCaptureFixture,
    make_runtime: RuntimeFactory,
) -> None:
    for name in ("", "discord", "bot", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    runtime = await make_runtime()
    stop, task = await start_bot(fake_discord, runtime)
    bot = DiscordBot(fake_discord, runtime, stop, task, *upstreams)
    await story_message(bot)
    fake_discord.inject(Fault.status(429, retry_after=0.01), route="edit_original")
    d = await fake_discord.slash("help", {})
    await bot.final(d)
    await stop_bot(stop, task)
    assert len(caplog.records) > 10
    for record in caplog.records:
        assert fake_discord.token not in record.getMessage()
        assert fake_discord.token not in (record.exc_text or "")
    assert fake_discord.token not in caplog.text


async def test_a_fast_command_needs_no_progress_edit_in_production(
    fake_discord: FakeDiscord, upstreams: tuple[FakeOpenRouter, FakeGenAI], make_runtime: RuntimeFactory
) -> None:
    runtime = await make_runtime()
    stop, task = await start_bot(fake_discord, runtime, progress=DISCORD_PROGRESS)
    try:
        d = await fake_discord.slash("meme", {"topic": "mondays"})
        await DiscordBot(fake_discord, runtime, stop, task, *upstreams).final(d)
        assert [c.route for c in fake_discord.calls if d["token"] in c.path] == ["callback", "edit_original"]
    finally:
        await stop_bot(stop, task)


async def test_a_slow_command_shows_its_progress_line_before_the_answer(
    fake_discord: FakeDiscord, upstreams: tuple[FakeOpenRouter, FakeGenAI], make_runtime: RuntimeFactory
) -> None:
    runtime = await make_runtime()
    stop, task = await start_bot(fake_discord, runtime, progress=ProgressPolicy(status_delay=0.01, edit_interval=0.0))
    upstreams[0].latency = 1.0  # far longer than the status delay
    try:
        d = await fake_discord.slash("meme", {"topic": "mondays"})
        final = await DiscordBot(fake_discord, runtime, stop, task, *upstreams).final(d)
        routes = [(c.route, "embeds" in c.payload) for c in fake_discord.calls if d["token"] in c.path]
        assert routes == [("callback", False), ("edit_original", False), ("edit_original", True)]
        assert final.payload["content"].startswith("😂")
    finally:
        await stop_bot(stop, task)


async def test_an_expired_token_on_the_answer_itself_posts_it_to_the_channel(
    fake_discord: FakeDiscord, upstreams: tuple[FakeOpenRouter, FakeGenAI], make_runtime: RuntimeFactory
) -> None:
    runtime = await make_runtime()
    stop, task = await start_bot(fake_discord, runtime, progress=DISCORD_PROGRESS)
    fake_discord.inject(Fault.status(404, body={"message": "Unknown Webhook", "code": 10015}), route="edit_original")
    try:
        d = await fake_discord.slash("story", {"idea": "a dragon learns to fly", "segments": 2})
        posted = await fake_discord.wait_for(lambda c: c.route == "channel_message")
        assert posted.payload["embeds"][0]["fields"]
        assert [f.filename for f in posted.files] == ["storyboard.jpg"]
        assert posted.payload["components"]  # the buttons travel with the story
        assert [c.route for c in fake_discord.calls if d["token"] in c.path] == ["callback", "edit_original"]
    finally:
        await stop_bot(stop, task)


async def test_a_failing_button_gets_the_same_ephemeral_error(bot: DiscordBot) -> None:
    message = await story_message(bot)
    message["components"][0]["components"][0]["custom_id"] = "rw:video:abc"  # the template, but no number
    press = await bot.fake.press(message, "rw:video:abc")
    call = await bot.fake.wait_for(lambda c: c.route == "callback" and press["id"] in c.path)
    assert call.payload["type"] == 4
    assert call.payload["data"]["flags"] == 64
    assert call.payload["data"]["content"].startswith("⚠️ Something went wrong")


async def test_stop_lets_a_command_in_flight_deliver_its_answer(
    fake_discord: FakeDiscord, upstreams: tuple[FakeOpenRouter, FakeGenAI], make_runtime: RuntimeFactory
) -> None:
    runtime = await make_runtime()
    stop, task = await start_bot(fake_discord, runtime)
    upstreams[0].latency = 0.3
    d = await fake_discord.slash("meme", {"topic": "mondays"})
    await fake_discord.wait_for(lambda c: c.route == "callback" and d["id"] in c.path)
    await stop_bot(stop, task)  # stop while the model is still "thinking"
    answers = [c for c in fake_discord.calls_to("edit_original") if d["token"] in c.path and "embeds" in c.payload]
    assert len(answers) == 1
    assert answers[0].payload["content"].startswith("😂")


async def test_malformed_guild_ids_or_a_refused_sync_are_clear_start_errors(
    fake_discord: FakeDiscord, make_runtime: RuntimeFactory
) -> None:
    with pytest.raises(PlatformStartError, match="DISCORD_GUILD_IDS"):
        await serve_discord(await make_runtime(discord_guild_ids="123,abc"), asyncio.Event())
    fake_discord.inject(Fault.status(400, body={"message": "Invalid Form Body", "code": 50035}), route="sync_global")
    with pytest.raises(PlatformStartError, match="HTTP 400"):
        await serve_discord(await make_runtime(), asyncio.Event())
