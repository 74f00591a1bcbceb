"""The Telegram adapter on the production runtime (``start_runtime``: guards, usage ledger, jobs):
a costly /video asks first, and the "Go ahead" button under the question runs it."""

from __future__ import annotations

import pytest

from bot.core.delivery import MB
from tests.bot.helpers import HandlerSaw, record_handler_contexts
from tests.telegram.conftest import StartBot, TelegramBot

CHAT = 700


@pytest.fixture
async def production_bot(start_bot: StartBot) -> TelegramBot:
    """The default money settings: a $3.20 video asks first."""
    return await start_bot(confirm_above_usd=1.0, rate_limit="20/minute")


async def test_a_costly_video_is_confirmed_with_the_button(production_bot: TelegramBot) -> None:
    tg = production_bot
    asked = await tg.run(CHAT, "/video a cat surfing duration=8")
    question = next(c for c in asked if "/confirm" in c.params.get("text", ""))
    button = question.json_param("reply_markup")["inline_keyboard"][0][0]
    assert button["text"] == "✅ Go ahead" and button["callback_data"].startswith("confirm:")
    assert tg.media.video_generation_requests == []
    message = tg.api.bot_message(CHAT, question.answered["result"]["message_id"])  # type: ignore[index]
    await tg.api.press(message, button["callback_data"], user_id=CHAT)
    await tg.settle()
    await tg.api.wait_for_call("sendVideo", CHAT)
    assert len(tg.media.video_generation_requests) == 1
    assert len(tg.api.calls_of("answerCallbackQuery")) == 1
    assert "reply_markup" not in tg.api.bot_message(CHAT, message["message_id"])  # one press only


async def test_handlers_see_the_bot_api_servers_upload_limit(start_bot: StartBot) -> None:
    """A handler sizes what it makes to what Telegram will take: 50 MB from the cloud Bot API,
    2,000 MB from a self-hosted one."""
    cloud = await start_bot()
    seen = record_handler_contexts(cloud.runtime.core)
    await cloud.run(CHAT, "/usage")
    assert seen == [HandlerSaw("usage", 50 * MB, confirmed=False)]

    local = await start_bot(telegram_local_api=True)
    seen = record_handler_contexts(local.runtime.core)
    await local.run(CHAT, "/usage")
    assert seen == [HandlerSaw("usage", 2000 * MB, confirmed=False)]


async def test_a_confirmed_command_keeps_the_upload_limit(production_bot: TelegramBot) -> None:
    tg = production_bot
    seen = record_handler_contexts(tg.runtime.core)
    asked = await tg.run(CHAT, "/video a cat surfing duration=8")
    question = next(c for c in asked if "/confirm" in c.params.get("text", ""))
    button = question.json_param("reply_markup")["inline_keyboard"][0][0]
    message = tg.api.bot_message(CHAT, question.answered["result"]["message_id"])  # type: ignore[index]
    await tg.api.press(message, button["callback_data"], user_id=CHAT)
    await tg.settle()
    await tg.api.wait_for_call("sendVideo", CHAT)
    assert HandlerSaw("video", 50 * MB, confirmed=True) in seen
    assert {saw.upload_limit for saw in seen} == {50 * MB}


async def test_a_story_through_the_production_core(production_bot: TelegramBot) -> None:
    calls = await production_bot.run(CHAT, "/story a dragon learns to fly segments=3")
    texts = [c.params["text"] for c in calls if c.method in ("sendMessage", "editMessageText")]
    assert any("3 segments" in t for t in texts) and not any("⚠️" in t for t in texts)
    assert calls[-1].method == "sendPhoto"


async def test_five_concurrent_videos_from_one_user_pay_for_one(start_bot: StartBot) -> None:
    """With a $5 daily budget, five 8 s clips ($3.20 each) sent at once: one is made, four are refused."""
    tg = await start_bot(budget_user_daily_usd=5.0)
    tg.media.video_seconds = 0.3
    chats = [CHAT + n for n in range(5)]
    await tg.api.push_many(
        [tg.api.message(chat, f"/video a cat surfing {chat} duration=8", user_id=CHAT) for chat in chats]
    )
    await tg.settle()
    await tg.api.wait_for_call("sendVideo")
    refusals = [
        call for chat in chats for call in tg.api.sent_to(chat) if "daily budget" in str(call.params.get("text", ""))
    ]
    assert len(tg.api.calls_of("sendVideo")) == 1
    assert len(refusals) == 4
    assert len(tg.media.video_generation_requests) == 1


async def test_without_google_credentials_media_commands_are_not_set_up(start_bot: StartBot) -> None:
    """A text key and no Google credentials: /video and /thumbnail say so, and are not offered."""
    tg = await start_bot(google_api_key=None, genai_base_url=None)
    [registered] = tg.api.calls_of("setMyCommands")
    offered = [command["command"] for command in registered.json_param("commands")]
    assert "story" in offered and "video" not in offered and "thumbnail" not in offered
    for command in ("/video a cat surfing duration=4", "/thumbnail My Dragon"):
        [answer] = [c.params["text"] for c in await tg.run(CHAT, command) if c.method == "sendMessage"]
        name = command.split()[0]
        assert answer == (
            f"⚠️ {name} is not set up on this bot: its operator has to set GOOGLE_API_KEY (or "
            "GOOGLE_CLOUD_PROJECT for Vertex AI) first."
        )
    [listing] = [c.params["text"] for c in await tg.run(CHAT, "/help") if c.method == "sendMessage"]
    assert "/story" in listing and "/video" not in listing and "/thumbnail" not in listing
    assert tg.media.requests == [] and tg.runtime.sandbox_upstreams == frozenset()
