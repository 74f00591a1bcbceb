"""/character and /video with an image: photo caption, reply to a photo, image as a document, and the
ways an upload goes wrong (0 bytes, not an image, over Telegram's 20 MB bot download limit)."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from services.config import configure_services, service_config
from tests.bot.helpers import png_bytes
from tests.fakes.telegram_api import ApiCall
from tests.telegram.conftest import TelegramBot

CHAT = 300


def shown(calls: list[ApiCall]) -> list[str]:
    return [c.params["text"] for c in calls if c.method in ("sendMessage", "editMessageText")]


def downloads(tg: TelegramBot) -> int:
    return len([r for r in tg.api.requests if r.path.startswith("/file/bot")])


@pytest.mark.usefixtures("sqlite_database")  # the character book
async def test_character_as_a_photo_caption(tg: TelegramBot) -> None:
    image = png_bytes(64, 64)
    calls = await tg.push(tg.api.message(CHAT, caption="/character Captain", photo=tg.api.photo(image)))
    answer = shown(calls)
    assert answer[0] == "🔍 Looking at your character…"
    assert answer[1].startswith("🧑\u200d🎨 Captain") and "character=Captain" in answer[-1]
    assert downloads(tg) == 1
    # The vision model got the full-size photo (the last PhotoSize), not the thumbnail.
    sent = str(tg.text.chat_requests[-1].json["messages"])
    assert base64.b64encode(image).decode()[:40] in sent
    # The character is remembered for later commands of the same user.
    story = await tg.run(CHAT, "/story a heist character=Captain segments=2")
    assert not any("⚠️" in t for t in shown(story))


@pytest.mark.usefixtures("sqlite_database")  # the character book
async def test_character_as_a_reply_to_a_photo(tg: TelegramBot) -> None:
    photo_message = tg.api.message(CHAT, photo=tg.api.photo(png_bytes()))
    await tg.push(photo_message)  # a photo without a command: no answer
    assert tg.api.sent_to(CHAT) == []
    calls = await tg.run(CHAT, "/character Hero", reply_to=photo_message)
    assert shown(calls)[1].startswith("🧑\u200d🎨 Hero")


@pytest.mark.usefixtures("sqlite_database")  # the character book
async def test_an_image_sent_as_a_document(tg: TelegramBot) -> None:
    document = tg.api.document(png_bytes(), "hero.png", "image/png")
    calls = await tg.push(tg.api.message(CHAT, caption="/character Doc", document=document))
    assert shown(calls)[1].startswith("🧑\u200d🎨 Doc")


async def test_a_zero_byte_photo_is_refused_before_any_paid_call(tg: TelegramBot) -> None:
    calls = await tg.push(tg.api.message(CHAT, caption="/character", photo=tg.api.photo(b"")))
    assert shown(calls)[-1] == "⚠️ The image is empty (0 bytes). Please send the picture again."
    assert not tg.text.chat_requests


async def test_a_text_file_as_character_is_refused(tg: TelegramBot) -> None:
    document = tg.api.document(b"just some notes, not a picture\n", "notes.txt", "text/plain")
    calls = await tg.push(tg.api.message(CHAT, caption="/character", document=document))
    assert shown(calls)[-1] == "⚠️ That file is not an image I can read. Please send a PNG, JPEG or WebP."
    assert not tg.text.chat_requests


async def test_over_the_20_mb_bot_download_limit(tg: TelegramBot) -> None:
    """With MAX_IMAGE_BYTES above Telegram's cloud limit, the cloud limit is the one that binds."""
    configure_services(replace(service_config(), max_image_bytes=30 * 1024 * 1024))
    photo = tg.api.photo(png_bytes(), file_size=25 * 1024 * 1024)
    calls = await tg.push(tg.api.message(CHAT, caption="/character Big", photo=photo))
    assert shown(calls)[-1].startswith("⚠️ That file is 25.0 MB; Telegram lets bots download files up to 20 MB.")
    assert not tg.api.calls_of("getFile") and not tg.text.chat_requests


async def test_a_file_too_big_without_a_declared_size(tg: TelegramBot) -> None:
    document = tg.api.document(png_bytes(), "big.png", "image/png", file_size=30 * 1024 * 1024)
    document.pop("file_size")
    calls = await tg.push(tg.api.message(CHAT, caption="/character", document=document))
    assert "too big for a bot to download" in shown(calls)[-1]
    assert len(tg.api.calls_of("getFile")) == 1 and not tg.text.chat_requests


async def test_character_without_an_image_gets_its_usage(tg: TelegramBot) -> None:
    calls = await tg.run(CHAT, "/character Nobody")
    assert shown(calls)[0].startswith("⚠️ /character needs an image.")
    assert "Usage: /character (attach an image) [name]" in shown(calls)[0]


async def test_video_from_an_image_caption_and_a_reply(tg: TelegramBot) -> None:
    image = png_bytes(48, 48)
    calls = await tg.push(tg.api.message(CHAT, caption="/video the hero waves duration=4", photo=tg.api.photo(image)))
    assert len([c for c in calls if c.method == "sendVideo"]) == 1
    instance = tg.media.video_generation_requests[-1].json["instances"][0]
    assert base64.b64decode(instance["image"]["bytesBase64Encoded"]) == image
    original = tg.api.message(CHAT, photo=tg.api.photo(image))
    calls = await tg.run(CHAT, "/video the hero jumps", reply_to=original)
    assert len([c for c in calls if c.method == "sendVideo"]) == 1
    assert "image" in tg.media.video_generation_requests[-1].json["instances"][0]
