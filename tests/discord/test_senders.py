"""The Discord ``ChatSender``s: the send-only one of ``reelwright worker`` (REST, no gateway) and the
gateway bot's readiness for /readyz."""

from __future__ import annotations

import asyncio

import pytest

from bot.core.context import ChatRef
from bot.core.replies import Media, Reply
from bot.discord.app import build_send_only_sender
from bot.discord.responder import ChannelSender
from bot.runtime import PlatformStartError, register_send_only_senders
from tests.discord.conftest import RuntimeFactory, start_bot, stop_bot
from tests.fakes import FakeGenAI, FakeOpenRouter
from tests.fakes.discord_api import FakeDiscord

CLIP = b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 2048


async def test_the_send_only_sender_posts_over_rest_with_no_gateway(
    fake_discord: FakeDiscord, make_runtime: RuntimeFactory
) -> None:
    runtime = await make_runtime()
    try:
        await register_send_only_senders(runtime)
        sender = runtime.senders["discord"]
        assert isinstance(sender, ChannelSender)
        assert sender.is_ready()
        chat = ChatRef("discord", fake_discord.channel_id, is_private=False)
        reply = Reply(
            blocks=["🎬 @everyone your clip"], media=[Media("video", CLIP, "clip.mp4", mime_type="video/mp4")]
        )
        await sender.send(chat, reply)
    finally:
        await runtime.close()

    posted = await fake_discord.wait_for(lambda c: c.route == "channel_message")
    assert posted.path == f"/api/v10/channels/{fake_discord.channel_id}/messages"
    assert posted.payload["content"] == "🎬 @everyone your clip"
    assert posted.payload["allowed_mentions"] == {"parse": []}
    assert [(f.filename, f.data) for f in posted.files] == [("clip.mp4", CLIP)]
    # Only REST at DISCORD_API_BASE_URL: logging in (the bot user, the application) and the post.
    assert [c.route for c in fake_discord.calls] == ["users/@me", "oauth2/applications/@me", "channel_message"]
    assert fake_discord.sockets == [] and not fake_discord.identified.is_set()
    # Closed with the runtime.
    assert not sender.is_ready()
    assert sender.client.is_closed()


async def test_the_send_only_sender_puts_go_ahead_under_a_cost_question(
    fake_discord: FakeDiscord, make_runtime: RuntimeFactory
) -> None:
    runtime = await make_runtime()
    sender = await build_send_only_sender(runtime)
    try:
        await sender.send(
            ChatRef("discord", fake_discord.channel_id, is_private=False),
            Reply(blocks=["💸 /video will cost about $3.20. Send /confirm 1a2b3c"], confirmation="1a2b3c"),
        )
        posted = await fake_discord.wait_for(lambda c: c.route == "channel_message")
        [row] = posted.payload["components"]
        assert [b["custom_id"] for b in row["components"]] == ["rw:confirm:1a2b3c"]
    finally:
        await runtime.close()


async def test_a_refused_token_is_a_clear_error_for_the_send_only_sender(
    fake_discord: FakeDiscord, make_runtime: RuntimeFactory
) -> None:
    runtime = await make_runtime(discord_bot_token="not-the-token")
    with pytest.raises(PlatformStartError, match="refused DISCORD_BOT_TOKEN"):
        await build_send_only_sender(runtime)
    await runtime.close()


async def test_the_gateway_sender_is_ready_once_connected_and_not_after_stop(
    fake_discord: FakeDiscord, upstreams: tuple[FakeOpenRouter, FakeGenAI], make_runtime: RuntimeFactory
) -> None:
    runtime = await make_runtime()
    stop, task = await start_bot(fake_discord, runtime, guild_ready_timeout=0)
    sender = runtime.senders["discord"]
    try:
        assert isinstance(sender, ChannelSender)
        await asyncio.wait_for(sender.client.wait_until_ready(), 10)
        assert sender.is_ready()
    finally:
        await stop_bot(stop, task)
    assert not sender.is_ready()
