"""/short on Telegram: the real PTB application against the fake Bot API, on the production runtime
(``start_runtime``), with the AI fakes' real clips and real FFmpeg (PyAV). The story and its storyboard
come while the clips render; the finished short arrives as a playable MP4 (sendVideo), the thumbnail
(sendPhoto), the captions (an .srt document) and the copy to paste."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

import av
import pytest
from sqlalchemy import select

from bot.core.delivery import MB, STORYBOARD_FILENAME
from connectors.database import sessions
from services.budgets import BudgetRefusal, Reservation
from services.shorts import ShortPayload
from services.store.models import JobRecord
from tests.bot.helpers import HandlerSaw, record_handler_contexts
from tests.fakes.telegram_api import UPLOAD_LIMIT, ApiCall
from tests.telegram.conftest import StartBot, TelegramBot

CHAT = 900
#: Small shorts encode quickly; budgets that a three-clip short fits in.
SHORT_SETTINGS: dict[str, Any] = {
    "short_long_side": 256,
    "budget_user_daily_usd": 100.0,
    "budget_chat_daily_usd": 100.0,
}


def probe(data: bytes) -> tuple[float, int, int]:
    """Duration, video and audio stream counts of an MP4."""
    with av.open(io.BytesIO(data)) as container:
        return float(container.duration or 0) / av.time_base, len(container.streams.video), len(container.streams.audio)


def clip_seconds(tg: TelegramBot) -> list[int]:
    """The length of every clip the short asked Veo for."""
    return [int(request.json["parameters"]["durationSeconds"]) for request in tg.media.video_generation_requests]


async def job_rows(kind: str) -> list[JobRecord]:
    async with sessions()() as session:
        return list(await session.scalars(select(JobRecord).where(JobRecord.kind == kind)))


def photos(calls: list[ApiCall], filename: str) -> list[ApiCall]:
    return [call for call in calls if call.method == "sendPhoto" and call.files["photo"].filename == filename]


def texts(calls: list[ApiCall]) -> list[str]:
    return [call.params["text"] for call in calls if call.method in ("sendMessage", "editMessageText")]


async def test_a_short_arrives_as_video_thumbnail_captions_and_copy(start_bot: StartBot) -> None:
    tg = await start_bot(**SHORT_SETTINGS)
    seen = record_handler_contexts(tg.runtime.core)
    tg.media.polls_until_done = 10**9  # the clips render until the story has been checked
    await tg.api.send_command(CHAT, "/short a lighthouse keeper befriends a storm segments=3")
    await tg.api.wait_for(lambda calls: bool(photos(calls, STORYBOARD_FILENAME)))
    await tg.api.wait_for(lambda _: len(tg.media.video_generation_requests) == 3)
    [story] = [
        call
        for call in tg.api.sent_to(CHAT)
        if call.method == "sendMessage" and "3 segments ·" in call.params["text"] and "\n1. [" in call.params["text"]
    ]
    assert {clip.state for clip in await job_rows("clip")} <= {"queued", "submitting", "running"}
    assert not tg.api.calls_of("sendVideo"), "the story came while the clips rendered"

    tg.media.polls_until_done = 1
    await tg.settle()
    calls = tg.api.sent_to(CHAT)
    [video] = [call for call in calls if call.method == "sendVideo"]
    data = video.files["video"].data
    duration, video_streams, audio_streams = probe(data)
    assert (video_streams, audio_streams) == (1, 1)
    assert abs(duration - sum(clip_seconds(tg))) <= 0.1
    assert len(data) <= UPLOAD_LIMIT
    [thumbnail] = [call for call in calls if call.method == "sendPhoto" and "Thumbnail" in call.params["caption"]]
    assert thumbnail.files["photo"].data.startswith(b"\x89PNG")
    [srt] = [call for call in calls if call.method == "sendDocument" and call.files["document"].filename == "short.srt"]
    assert srt.files["document"].data.decode().count(" --> ") == 3
    [copy] = [text for text in texts(calls) if "Ready to post" in text]
    assert "#" in copy
    [storyboard] = photos(calls, STORYBOARD_FILENAME)
    assert calls.index(story) < calls.index(storyboard) < calls.index(video)
    [short] = await job_rows("short")
    assert short.state == "delivered"
    assert ShortPayload.model_validate_json(short.payload).byte_budget == 50 * MB, "Telegram's cloud upload limit"
    assert seen == [HandlerSaw("short", 50 * MB, confirmed=False)]
    assert not any("⚠️" in text for text in texts(calls))


async def test_a_confirmed_short_asks_once_and_reserves_once(
    start_bot: StartBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    tg = await start_bot(confirm_above_usd=1.0, **SHORT_SETTINGS)
    budgets = tg.runtime.jobs.budgets
    assert budgets is not None
    reserved: list[Reservation] = []
    reserve = budgets.reserve

    async def counting_reserve(user_key: str, chat_key: str, amount: Decimal) -> Reservation | BudgetRefusal:
        outcome = await reserve(user_key, chat_key, amount)
        if isinstance(outcome, Reservation):
            reserved.append(outcome)
        return outcome

    monkeypatch.setattr(budgets, "reserve", counting_reserve)
    asked = await tg.run(CHAT, "/short a robot learns to paint segments=3")
    [question] = [call for call in asked if "/confirm" in call.params.get("text", "")]
    assert "/short will cost about" in question.params["text"]
    assert tg.media.requests == [] and await job_rows("short") == []
    button = question.json_param("reply_markup")["inline_keyboard"][0][0]
    message = tg.api.bot_message(CHAT, question.answered["result"]["message_id"])  # type: ignore[index]
    await tg.api.press(message, button["callback_data"], user_id=CHAT)
    await tg.settle()

    assert len(tg.api.calls_of("sendVideo", CHAT)) == 1
    assert len(tg.media.video_generation_requests) == 3
    [short] = await job_rows("short")
    assert short.state == "delivered"
    [reservation] = reserved
    stored = json.loads(short.payload)["reservation"]
    assert stored["id"] == reservation.id, "the short holds the one reservation the press took"
    questions = [call for call in tg.api.sent_to(CHAT) if "/confirm" in str(call.params.get("text", ""))]
    assert questions == [question]
