"""Uploads are refused by the size Telegram declares before any download, and an undeclared one is
read only up to MAX_IMAGE_BYTES (10 MB in tests): on the cloud API and on a self-hosted Bot API."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.telegram.app import TelegramOptions
from tests.bot.helpers import PNG_SIGNATURE, png_bytes
from tests.fakes.telegram_api import ApiCall
from tests.telegram.conftest import EAGER_PROGRESS, StartBot, TelegramBot

CHAT = 310
MB = 1024 * 1024
CAP = 10 * MB


def shown(calls: list[ApiCall]) -> list[str]:
    return [c.params["text"] for c in calls if c.method in ("sendMessage", "editMessageText")]


def file_requests(tg: TelegramBot) -> int:
    return len([r for r in tg.api.requests if r.path.startswith("/file/bot")])


async def self_hosted(start_bot: StartBot) -> TelegramBot:
    """The bot against a Bot API server of its own: no 20 MB getFile limit on either side."""
    tg: TelegramBot = await start_bot(telegram_local_api=True)
    tg.api.download_limit = None
    return tg


def memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def reset_peak_memory() -> None:
    """Start VmHWM (peak resident memory) again from the current resident size."""
    Path("/proc/self/clear_refs").write_text("5")


async def test_cloud_photo_declared_over_the_cap_is_refused_without_any_download(tg: TelegramBot) -> None:
    photo = tg.api.photo(png_bytes(), file_size=15 * MB)
    calls = await tg.push(tg.api.message(CHAT, caption="/character Big", photo=photo))
    assert shown(calls)[-1] == "⚠️ The image is 15.0 MB; the limit is 10 MB."
    assert tg.api.calls_of("getFile") == [] and file_requests(tg) == 0
    assert tg.text.chat_requests == []


async def test_cloud_document_declared_over_the_cap_is_refused_for_video_too(tg: TelegramBot) -> None:
    document = tg.api.document(png_bytes(), "frame.png", "image/png", file_size=12 * MB)
    calls = await tg.push(tg.api.message(CHAT, caption="/video the hero waves", document=document))
    assert shown(calls)[-1] == "⚠️ The image is 12.0 MB; the limit is 10 MB."
    assert tg.api.calls_of("getFile") == [] and file_requests(tg) == 0
    assert tg.media.video_generation_requests == []


async def test_self_hosted_declared_200_mb_document_is_refused_without_any_download(start_bot: StartBot) -> None:
    tg = await self_hosted(start_bot)
    document = tg.api.document(PNG_SIGNATURE, "huge.png", "image/png", padded_to=200 * MB)
    calls = await tg.push(tg.api.message(CHAT, caption="/character Huge", document=document))
    assert shown(calls)[-1] == "⚠️ The image is 200.0 MB; the limit is 10 MB."
    assert tg.api.calls_of("getFile") == [] and tg.api.bytes_served == 0
    assert tg.text.chat_requests == []


async def test_self_hosted_undeclared_200_mb_document_is_cut_off_at_the_cap(start_bot: StartBot) -> None:
    """No declared size: the stream is read only until it passes the cap, and memory stays bounded."""
    tg = await self_hosted(start_bot)
    document = tg.api.document(PNG_SIGNATURE, "huge.png", "image/png", padded_to=200 * MB)
    del document["file_size"]
    message = tg.api.message(CHAT, caption="/character Huge", document=document)
    reset_peak_memory()
    before_kib = memory_kib("VmRSS")
    calls = await tg.push(message)
    growth = (memory_kib("VmHWM") - before_kib) * 1024
    assert shown(calls)[-1] == "⚠️ The image is over the 10 MB limit. Please send a smaller image."
    assert len(tg.api.calls_of("getFile")) == 1 and file_requests(tg) == 1
    assert growth < 2 * CAP, f"peak resident memory grew by {growth / MB:.1f} MB"
    assert tg.api.bytes_served < 200 * MB
    assert tg.text.chat_requests == []


@pytest.mark.usefixtures("sqlite_database")  # the character book
async def test_self_hosted_undeclared_image_under_the_cap_is_streamed_whole(start_bot: StartBot) -> None:
    tg = await self_hosted(start_bot)
    image = png_bytes(640, 480)
    document = tg.api.document(image, "hero.png", "image/png")
    del document["file_size"]
    calls = await tg.push(tg.api.message(CHAT, caption="/character Hero", document=document))
    assert shown(calls)[1].startswith("🧑\u200d🎨 Hero")
    assert tg.api.bytes_served == len(image)


async def test_httpx_transport_streams_with_the_cap_too(start_bot: StartBot) -> None:
    tg: TelegramBot = await start_bot(
        TelegramOptions(transport="httpx", progress=EAGER_PROGRESS, poll_timeout=5), telegram_local_api=True
    )
    tg.api.download_limit = None
    document = tg.api.document(PNG_SIGNATURE, "huge.png", "image/png", padded_to=200 * MB)
    del document["file_size"]
    calls = await tg.push(tg.api.message(CHAT, caption="/character Huge", document=document))
    assert shown(calls)[-1] == "⚠️ The image is over the 10 MB limit. Please send a smaller image."
    assert tg.api.bytes_served < 200 * MB


@pytest.mark.usefixtures("sqlite_database")  # the character book
async def test_a_local_bot_api_path_is_read_from_disk(start_bot: StartBot, tmp_path: Path) -> None:
    """A server run with --local answers getFile with a path on this machine: read, capped, from disk."""
    tg = await self_hosted(start_bot)
    picture = tmp_path / "hero.png"
    picture.write_bytes(png_bytes())
    document = tg.api.document(b"unused", "hero.png", "image/png")
    del document["file_size"]
    tg.api.answer_with_local_path(document["file_id"], str(picture))
    calls = await tg.push(tg.api.message(CHAT, caption="/character Hero", document=document))
    assert shown(calls)[1].startswith("🧑\u200d🎨 Hero")
    huge = tmp_path / "huge.png"
    with huge.open("wb") as sparse:
        sparse.write(PNG_SIGNATURE)
        sparse.truncate(200 * MB)
    document = tg.api.document(b"unused", "huge.png", "image/png")
    del document["file_size"]
    tg.api.answer_with_local_path(document["file_id"], str(huge))
    calls = await tg.push(tg.api.message(CHAT, caption="/character Huge", document=document))
    assert shown(calls)[-1] == "⚠️ The image is over the 10 MB limit. Please send a smaller image."
    assert tg.api.bytes_served == 0
