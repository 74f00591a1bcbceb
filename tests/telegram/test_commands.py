"""Every command end to end: a Telegram update in, the core and the AI fakes, replies out on the wire."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from bot.core.context import ChatRef
from bot.core.progress import ProgressPolicy
from bot.core.replies import Reply
from bot.runtime import PlatformStartError
from bot.telegram.app import TelegramOptions, TelegramService, build_send_only_sender, serve_telegram
from tests.bot.helpers import catalogue, png_bytes
from tests.fakes import Fault
from tests.fakes.telegram_api import BOT_USERNAME, ApiCall, FakeTelegramAPI
from tests.telegram.conftest import RuntimeFactory, TelegramBot

CHAT = 100


def texts(calls: list[ApiCall]) -> list[str]:
    """What the chat shows as text, in order (sent messages and edits)."""
    return [c.params["text"] for c in calls if c.method in ("sendMessage", "editMessageText")]


def final_text(calls: list[ApiCall]) -> str:
    """The answer: the status message edited into the first part, plus any further messages."""
    shown = texts(calls)
    edits = [c for c in calls if c.method == "editMessageText"]
    assert len(edits) <= 1 or all(e.params["message_id"] == edits[0].params["message_id"] for e in edits)
    return "\n\n".join(shown[1:] if edits else shown)


def assert_one_answer(calls: list[ApiCall], progress: str) -> None:
    """A status message first, edited exactly once into the answer; no error, nothing after the media."""
    assert calls[0].method == "sendMessage" and calls[0].params["text"] == progress
    status_id = calls[0].answered["result"]["message_id"]  # type: ignore[index]
    edits = [c for c in calls if c.method == "editMessageText"]
    assert len(edits) == 1 and int(edits[0].params["message_id"]) == status_id
    assert not any("⚠️" in text for text in texts(calls))
    assert all("parse_mode" not in c.params for c in calls)


async def test_commands_are_registered_from_the_catalogue(tg: TelegramBot) -> None:
    expected = [{"command": c.name, "description": c.summary} for c in tg.runtime.core.commands]
    assert tg.api.commands == expected
    assert {"usage", "confirm"} <= {c["command"] for c in expected}  # the production catalogue
    assert [c.method for c in tg.api.calls[:3]] == ["getMe", "setMyCommands", "deleteWebhook"]
    assert tg.runtime.senders["telegram"] is not None


async def test_help_lists_commands_and_help_command_shows_usage(tg: TelegramBot) -> None:
    listing = texts(await tg.run(CHAT, "/help"))
    assert len(listing) == 1 and all(f"/{c.name}:" in listing[0] for c in catalogue())
    video = catalogue().get("video")
    assert video is not None
    detail = texts(await tg.run(CHAT, "/help video"))
    assert detail == [video.help_text()]
    assert texts(await tg.run(CHAT, "/start")) == listing


async def test_story_with_options_reply_and_storyboard(tg: TelegramBot) -> None:
    calls = await tg.run(CHAT, "/story a dragon learns to fly segments=8")
    assert_one_answer(calls, "✍️ Writing your story…")
    answer = final_text(calls)
    assert "8 segments" in answer and "8. [" in answer
    photos = [c for c in calls if c.method == "sendPhoto"]
    assert len(photos) == 1 and photos[0].files["photo"].data.startswith(b"\xff\xd8\xff")  # the storyboard is a JPEG
    assert calls[-1].method == "sendPhoto"
    prompt = json.dumps(tg.text.chat_requests[-1].json["messages"])
    assert "a dragon learns to fly" in prompt
    actions = tg.api.calls_of("sendChatAction", CHAT)
    assert actions and actions[0].params["action"] == "typing"


async def test_a_storyboard_that_cannot_be_drawn_costs_nothing_but_the_photo(
    tg: TelegramBot, storyboards_fail: None, caplog: pytest.LogCaptureFixture
) -> None:
    calls = await tg.run(CHAT, "/story a dragon learns to fly segments=3")
    assert_one_answer(calls, "✍️ Writing your story…")
    assert "3 segments" in final_text(calls)
    assert not [c for c in calls if c.method == "sendPhoto"]
    assert "could not draw the storyboard" in caplog.text


async def test_longstory_also_sends_the_json_document(tg: TelegramBot) -> None:
    calls = await tg.run(CHAT, "/longstory a heist on the moon segments=14")
    documents = [c for c in calls if c.method == "sendDocument"]
    assert len(documents) == 1 and documents[0].files["document"].filename == "story.json"
    assert len(json.loads(documents[0].files["document"].data)["segments"]) == 14
    assert "14 segments" in final_text(calls)
    assert len([c for c in calls if c.method == "sendPhoto"]) == 1


@pytest.mark.parametrize(
    ("text", "progress", "expect"),
    [
        ("/storysets a cat opens a bakery sets=2", "✍️ Writing 2 alternative takes at once…", "Take 2:"),
        ("/meme mondays at a startup count=2", "😂 Cooking up a meme…", "2. "),
        ("/write kind=hashtags a vegan ramen recipe", "✍️ Writing…", "✍️ Hashtags"),
        ("/trends indie game dev count=3", "📈 Looking for trends…", "3. "),
    ],
)
async def test_text_commands(tg: TelegramBot, text: str, progress: str, expect: str) -> None:
    calls = await tg.run(CHAT, text)
    assert_one_answer(calls, progress)
    assert expect in final_text(calls)


async def test_video_from_a_prompt_with_progress_edits(tg: TelegramBot) -> None:
    calls = await tg.run(CHAT, "/video a cat surfing duration=8 aspect=9:16")
    videos = [c for c in calls if c.method == "sendVideo"]
    assert len(videos) == 1 and videos[0].params["caption"] == "🎬 8 s · 9:16 · a cat surfing"
    assert videos[0].files["video"].data
    shown = texts(calls)
    assert re.fullmatch(r"🎬 Video job [0-9a-f]{8} created; sending it to the studio…", shown[0])
    assert "🎬 The video is queued at the studio…" in shown
    # The caption says it all: the status message is removed rather than repeating it.
    assert [c.method for c in calls][-2:] == ["deleteMessage", "sendVideo"]
    assert tg.media.video_generation_requests
    assert tg.api.calls_of("sendChatAction", CHAT)[0].params["action"] == "upload_video"


async def test_thumbnail_is_a_photo(tg: TelegramBot) -> None:
    calls = await tg.run(CHAT, "/thumbnail I survived 24 hours in a library aspect=16:9")
    photos = [c for c in calls if c.method == "sendPhoto"]
    assert len(photos) == 1 and photos[0].params["caption"] == "🖼️ I survived 24 hours in a library"
    assert not any("⚠️" in t for t in texts(calls))


async def test_malformed_command_gets_its_usage_and_no_paid_call(tg: TelegramBot) -> None:
    calls = await tg.run(CHAT, "/story a dragon segments=99")
    assert texts(calls) == [
        "⚠️ segments must be between 1 and 12 (got 99).\nUsage: /story <idea> [segments=1-12] [style=...] [character=...]"
    ]
    assert not tg.text.chat_requests
    assert not tg.api.calls_of("sendChatAction", CHAT)  # nothing started, nothing to wait for


async def test_group_commands_addressed_to_this_bot_or_to_another(tg: TelegramBot) -> None:
    group = -2001
    assert texts(await tg.run(group, f"/help@{BOT_USERNAME} story", chat_type="supergroup"))[0].startswith("/story:")
    assert await tg.run(group, "/help@some_other_bot", chat_type="supergroup") == []
    assert await tg.run(group, "/ban someone", chat_type="supergroup") == []
    assert texts(await tg.run(CHAT, "/ban someone")) == ["⚠️ Unknown command /ban. Send /help to see what I can do."]


async def test_markup_characters_arrive_verbatim_as_plain_text(tg: TelegramBot) -> None:
    tricky = "*bold* _it_ [link](http://x) <b>&amp; </i> `code` ~~s~~ ||spoiler|| \\ # + - = | { } . !"
    tg.text.responder = lambda body: json.dumps({"content": tricky})
    calls = await tg.run(CHAT, "/write a tricky caption")
    assert_one_answer(calls, "✍️ Writing…")
    assert final_text(calls) == f"✍️ Caption\n\n{tricky}"


async def test_a_6000_character_answer_is_split_and_also_sent_as_a_file(tg: TelegramBot) -> None:
    paragraphs = [f"Paragraph {n}: " + "lorem ipsum dolor sit amet " * 14 for n in range(16)]
    content = "\n\n".join(p.strip() for p in paragraphs)
    assert 6000 <= len(content) <= 6500
    tg.text.responder = lambda body: json.dumps({"content": content})
    calls = await tg.run(CHAT, "/write a very long script kind=script")
    parts = texts(calls)[1:]
    assert len(parts) == 2 and all(len(p) <= 4096 for p in parts)
    assert " ".join(" ".join(parts).split()) == " ".join(f"✍️ Script {content}".split())
    documents = [c for c in calls if c.method == "sendDocument"]
    assert len(documents) == 1 and documents[0].files["document"].data.decode() == f"✍️ Script\n\n{content}"


async def test_an_upstream_failure_is_one_clear_message(tg: TelegramBot) -> None:
    tg.text.inject(*[Fault.status(503, "overloaded")] * 3)
    calls = await tg.run(CHAT, "/meme cats")
    shown = texts(calls)
    assert shown[0] == "😂 Cooking up a meme…"
    assert len(shown) == 2 and shown[1].startswith("⚠️ ")
    assert [c.method for c in calls] == ["sendMessage", "editMessageText"]


async def test_the_chat_sender_posts_without_an_update(tg: TelegramBot) -> None:
    sender = tg.runtime.senders["telegram"]
    await sender.send(ChatRef("telegram", "777"), Reply(blocks=["🎬 Your video is ready", "second block"]))
    assert texts(tg.api.sent_to(777)) == ["🎬 Your video is ready\n\nsecond block"]


async def test_edits_are_throttled_per_status_message(start_bot: object) -> None:
    slow_edits = TelegramOptions(progress=ProgressPolicy(status_delay=0.0, edit_interval=3600.0), poll_timeout=5)
    tg: TelegramBot = await start_bot(slow_edits)  # type: ignore[operator]
    calls = await tg.run(CHAT, "/video a cat surfing")
    # Three more progress lines came within the interval: none was shown, the answer still was.
    assert [c.method for c in calls] == ["sendMessage", "deleteMessage", "sendVideo"]


async def test_fast_work_shows_no_status_message(start_bot: object) -> None:
    tg: TelegramBot = await start_bot(TelegramOptions(poll_timeout=5))  # type: ignore[operator]
    calls = await tg.run(CHAT, "/write a caption")
    assert [c.method for c in calls] == ["sendMessage"]
    assert calls[0].params["text"].startswith("✍️ Caption")


async def test_serve_telegram_runs_until_stop_and_closes(
    telegram_api: FakeTelegramAPI, make_runtime: RuntimeFactory
) -> None:
    runtime = await make_runtime()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_telegram(runtime, stop, TelegramOptions(poll_timeout=5)))
    await telegram_api.wait_for(lambda calls: any(c.method == "setMyCommands" for c in calls))
    await telegram_api.send_command(CHAT, "/help")
    await telegram_api.wait_for_call("sendMessage", CHAT)
    assert "telegram" in runtime.senders
    stop.set()
    await task
    assert "telegram" not in runtime.senders
    # The handled update was confirmed on the way out, so a restart does not answer it twice.
    assert telegram_api.confirmed_offset > telegram_api.last_update_id


async def test_a_refused_token_is_a_clear_start_error(make_runtime: RuntimeFactory) -> None:
    runtime = await make_runtime(telegram_bot_token="999:wrong-token-value")
    with pytest.raises(PlatformStartError, match="TELEGRAM_BOT_TOKEN"):
        await TelegramService(runtime).start()


async def test_an_unreachable_api_is_a_clear_start_error(make_runtime: RuntimeFactory) -> None:
    runtime = await make_runtime(telegram_api_base_url="http://127.0.0.1:9/bot")
    with pytest.raises(PlatformStartError, match="cannot reach"):
        await TelegramService(runtime).start()


@pytest.mark.usefixtures("sqlite_database")  # the character book
async def test_ptb_own_httpx_transport_works_too(start_bot: object) -> None:
    options = TelegramOptions(transport="httpx", progress=ProgressPolicy(status_delay=0.0, edit_interval=0.0))
    tg: TelegramBot = await start_bot(options, telegram_local_api=None)  # type: ignore[operator]
    assert_one_answer(await tg.run(CHAT, "/story a dragon segments=2"), "✍️ Writing your story…")
    photo = tg.api.photo(png_bytes())
    calls = await tg.push(tg.api.message(CHAT, caption="/character Httpx", photo=photo))
    assert "Use it with character=Httpx" in texts(calls)[-1]


async def test_admin_only_commands_ask_telegram_who_is_admin(tg: TelegramBot) -> None:
    group, admin, member = -3001, 11, 12
    tg.api.admins.add((group, admin))
    refused = texts(await tg.run(group, "/schedule list", user_id=member, chat_type="supergroup"))
    assert refused == ["⚠️ Only admins of this chat can use /schedule."]
    allowed = texts(await tg.run(group, "/schedule list", user_id=admin, chat_type="supergroup"))
    assert len(allowed) == 1 and "Only admins" not in allowed[0]
    assert [c.params["user_id"] for c in tg.api.calls_of("getChatMember")] == [str(member), str(admin)]


async def test_a_send_only_sender_for_worker_processes(
    telegram_api: FakeTelegramAPI, make_runtime: RuntimeFactory
) -> None:
    runtime = await make_runtime()
    sender = await build_send_only_sender(runtime)
    assert sender.is_ready()
    await sender.send(ChatRef("telegram", "4242"), Reply(blocks=["🎬 Your video is ready"]))
    assert texts(telegram_api.sent_to(4242)) == ["🎬 Your video is ready"]
    assert telegram_api.calls_of("getUpdates") == [] and not telegram_api.calls_of("setMyCommands")
    await runtime.close()


async def test_the_sender_reports_readiness(tg: TelegramBot) -> None:
    sender = tg.runtime.senders["telegram"]
    assert sender.is_ready()  # type: ignore[attr-defined]
    await tg.service.stop()
    assert not sender.is_ready()  # type: ignore[attr-defined]
