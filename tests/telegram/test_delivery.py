"""Media out: the right Bot API method, its fallback, Telegram's upload limits, order within a chat,
and flood control (429 with retry_after) retried by the rate limiter."""

from __future__ import annotations

import asyncio

import pytest

from bot.core.context import ChatRef
from bot.core.replies import Media, Reply
from bot.telegram.app import is_self_hosted
from bot.telegram.delivery import MB, UploadLimits
from tests.bot.helpers import png_bytes
from tests.fakes import Fault
from tests.telegram.conftest import TelegramBot

CHAT = ChatRef("telegram", "500")


def methods(tg: TelegramBot) -> list[str]:
    return [c.method for c in tg.api.sent_to(500)]


async def send(tg: TelegramBot, reply: Reply) -> None:
    await tg.runtime.senders["telegram"].send(CHAT, reply)


async def test_a_photo_over_10_mb_goes_as_a_document(tg: TelegramBot) -> None:
    big = png_bytes() + b"\0" * (10 * MB)
    await send(tg, Reply(blocks=[], media=[Media("image", big, "thumb.png", "🖼️ big", "image/png")]))
    assert methods(tg) == ["sendDocument"]
    assert tg.api.sent_to(500)[0].files["document"].filename == "thumb.png"


async def test_a_refused_video_falls_back_to_a_document(tg: TelegramBot) -> None:
    tg.api.inject_method_fault(Fault.status(400, "Bad Request: wrong file type"), method="sendVideo")
    await send(tg, Reply(blocks=[], media=[Media("video", b"\0\0\0\x18ftypmp42", "v.mp4", "🎬", "video/mp4")]))
    assert methods(tg) == ["sendVideo", "sendDocument"]


async def test_a_video_over_the_upload_limit_gets_a_clear_message(tg: TelegramBot) -> None:
    huge = b"\0" * (50 * MB + 1)
    await send(tg, Reply(blocks=["🎬 8 s · 9:16"], media=[Media("video", huge, "v.mp4", "🎬 8 s · 9:16", "video/mp4")]))
    posted = tg.api.sent_to(500)
    assert [c.method for c in posted] == ["sendMessage"]
    assert (
        posted[0]
        .params["text"]
        .startswith(
            "⚠️ The video (v.mp4, 50.0 MB) is over Telegram's upload limit of 50.0 MB, so it cannot be posted here."
        )
    )
    assert "self-hosted Bot API server" in posted[0].params["text"]


def test_a_self_hosted_server_lifts_the_limits() -> None:
    assert not is_self_hosted("https://api.telegram.org/bot")
    assert is_self_hosted("http://bot-api.internal:8081/bot")
    assert UploadLimits.for_server(True).other == 2000 * MB
    assert UploadLimits.for_server(False).other == 50 * MB


async def test_a_long_caption_is_cut_to_telegram_limit(tg: TelegramBot) -> None:
    await send(tg, Reply(blocks=[], media=[Media("image", png_bytes(), "t.png", "x" * 2000, "image/png")]))
    caption = tg.api.sent_to(500)[0].params["caption"]
    assert len(caption) == 1024 and caption.endswith("…")


async def test_replies_to_one_chat_do_not_interleave(tg: TelegramBot) -> None:
    first = Reply(blocks=[f"A{n} " + "a" * 3000 for n in range(4)])
    second = Reply(blocks=[f"B{n} " + "b" * 3000 for n in range(4)])
    await asyncio.gather(send(tg, first), send(tg, second))
    order = [c.params["text"][0] for c in tg.api.sent_to(500) if c.method == "sendMessage"]
    assert order in (["A"] * 4 + ["B"] * 4, ["B"] * 4 + ["A"] * 4)


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_flood_control_429_is_retried_after_retry_after(tg: TelegramBot) -> None:
    tg.api.inject_method_fault(Fault.status(429, "Too Many Requests: retry after 1", retry_after=1), "sendMessage")
    calls = await tg.run(600, "/write a caption")
    sends = tg.api.calls_of("sendMessage", 600)
    assert len(sends) == 2 and sends[0].answered is None  # refused, then retried
    assert sends[1].answered is not None
    edits = [c.params["text"] for c in calls if c.answered and c.method == "editMessageText"]
    assert len(edits) == 1 and edits[0].startswith("✍️ Caption")
