"""Character analysis, Veo video and thumbnail services against both fakes."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from bot.sandbox.media import tiny_png
from connectors import genai_connector
from connectors.errors import ContentBlocked, RateLimited, UserInputError
from services.characters import CharacterProfile, analyze_character_from_image
from services.config import configure_services
from services.images import check_image
from services.thumbnail import ThumbnailRequest, generate_thumbnail_image
from services.video import VideoFailed, VideoProgress, VideoRequest, generate_video_from_payload
from tests.conftest import TEST_SERVICE_CONFIG, genai_config
from tests.fakes import FakeGenAI, FakeOpenRouter, Fault

Upstreams = tuple[FakeOpenRouter, FakeGenAI]

HERO = CharacterProfile(
    name="Captain Whiskers",
    summary="a ginger cat",
    appearance="orange fur",
    personality="brave",
    art_style="3D",
    visual_description="a ginger tabby cat in a tiny blue pirate hat",
)


def jpeg_bytes(size: tuple[int, int] = (32, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, "JPEG")
    return out.getvalue()


def bomb_png() -> bytes:
    """A small file that claims 30,000 × 30,000 pixels."""
    out = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(out, "PNG")
    return out.getvalue()


async def test_character_analysis_sends_the_image_to_the_vision_model(upstreams: Upstreams) -> None:
    text, _ = upstreams
    analysis = await analyze_character_from_image(jpeg_bytes(), name="Captain Whiskers")
    assert analysis.profile.name == "Captain Whiskers"
    assert analysis.profile.visual_description
    assert analysis.image_mime_type == "image/jpeg"
    parts = text.chat_requests[0].json["messages"][-1]["content"]
    image_url = parts[1]["image_url"]["url"]
    assert image_url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(image_url.split(",", 1)[1]) == jpeg_bytes()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is a text file\n", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
        (bomb_png(), "megapixels|too many pixels"),
        (b"x" * (10 * 1024 * 1024 + 1), "limit is 10 MB"),
    ],
    ids=["empty", "text-file", "truncated-png", "decompression-bomb", "oversized"],
)
async def test_bad_images_are_refused_before_any_paid_call(upstreams: Upstreams, data: bytes, message: str) -> None:
    text, fake_media = upstreams
    with pytest.raises(UserInputError, match=message):
        await analyze_character_from_image(data)
    with pytest.raises(UserInputError, match=message):
        await generate_video_from_payload(VideoRequest(prompt="animate", image=data))
    assert text.chat_requests == [] and fake_media.requests == []


def test_unsupported_image_format_is_named() -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "BMP")
    with pytest.raises(UserInputError, match="BMP"):
        check_image(out.getvalue(), max_bytes=10**6, max_pixels=10**6)


@pytest.mark.parametrize("mode", ["developer", "enterprise"])
async def test_video_reports_its_operation_first_then_progress_then_mp4(upstreams: Upstreams, mode: str) -> None:
    _, fake_media = upstreams
    genai_connector.configure_genai(genai_config(fake_media, enterprise=mode == "enterprise"))
    fake_media.polls_until_done = 3
    events: list[str] = []

    async def on_operation(name: str) -> None:
        events.append(f"operation:{name}")

    async def on_progress(progress: VideoProgress) -> None:
        events.append(progress.stage)

    result = await generate_video_from_payload(
        VideoRequest(prompt="a cat surfing", duration_seconds=6, aspect_ratio="16:9", character=HERO),
        on_operation=on_operation,
        on_progress=on_progress,
    )
    assert result.video[4:8] == b"ftyp"
    assert events[0] == f"operation:{result.operation_name}"
    assert events[1:] == ["submitted", "rendering", "rendering", "downloading", "done"]
    assert result.usage.video_seconds == 6
    [generation] = fake_media.video_generation_requests
    assert "tiny blue pirate hat" in generation.json["instances"][0]["prompt"]
    await genai_connector.close_genai_client()


async def test_resuming_polls_the_stored_operation_without_paying_again(upstreams: Upstreams) -> None:
    _, fake_media = upstreams
    name = await genai_connector.start_video(model="veo", prompt="x", duration_seconds=4, aspect_ratio="16:9")
    result = await generate_video_from_payload(VideoRequest(prompt="x", duration_seconds=4), resume_operation=name)
    assert result.operation_name == name
    assert len(fake_media.video_generation_requests) == 1


async def test_transient_poll_failures_do_not_abandon_a_paid_video(upstreams: Upstreams) -> None:
    _, fake_media = upstreams
    fake_media.inject(Fault.status(503), Fault.reset(), route="operation")
    result = await generate_video_from_payload(VideoRequest(prompt="x", duration_seconds=4))
    assert result.video[4:8] == b"ftyp"
    assert len(fake_media.video_generation_requests) == 1


async def test_filtered_video_is_content_blocked(upstreams: Upstreams) -> None:
    _, fake_media = upstreams
    fake_media.video_outcome = "filtered"
    with pytest.raises(ContentBlocked) as caught:
        await generate_video_from_payload(VideoRequest(prompt="x"))
    assert "safety filter" in caught.value.user_message


async def test_failed_video_operation_is_explained(upstreams: Upstreams) -> None:
    _, fake_media = upstreams
    fake_media.video_outcome = "error"
    with pytest.raises(VideoFailed):
        await generate_video_from_payload(VideoRequest(prompt="x"))


async def test_rate_limited_start_is_reported_not_retried(upstreams: Upstreams) -> None:
    _, fake_media = upstreams
    fake_media.inject(Fault.status(429), route="predictLongRunning")
    with pytest.raises(RateLimited):
        await generate_video_from_payload(VideoRequest(prompt="x"))
    assert len(fake_media.video_generation_requests) == 1


async def test_empty_video_prompt_makes_no_call(upstreams: Upstreams) -> None:
    _, fake_media = upstreams
    with pytest.raises(UserInputError):
        await generate_video_from_payload(VideoRequest(prompt="  "))
    assert fake_media.requests == []


async def test_thumbnail_with_a_plain_key_uses_the_gemini_image_model(upstreams: Upstreams) -> None:
    _, fake_media = upstreams
    thumbnail = await generate_thumbnail_image(
        ThumbnailRequest(title="I trained a dragon", character=HERO, character_image=tiny_png())
    )
    assert thumbnail.image.startswith(b"\x89PNG")
    assert thumbnail.model == TEST_SERVICE_CONFIG.gemini_image_model
    [request] = fake_media.requests
    assert request.route == "generateContent"
    sent = request.json["contents"][0]["parts"]
    assert "tiny blue pirate hat" in sent[0]["text"]
    assert any("inlineData" in part or "inline_data" in part for part in sent)


async def test_thumbnail_in_enterprise_mode_uses_imagen(upstreams: Upstreams) -> None:
    _, fake_media = upstreams
    genai_connector.configure_genai(genai_config(fake_media, enterprise=True))
    configure_services(TEST_SERVICE_CONFIG.__class__(**{**TEST_SERVICE_CONFIG.__dict__, "genai_enterprise": True}))
    thumbnail = await generate_thumbnail_image(ThumbnailRequest(title="My Dragon"))
    assert thumbnail.model.startswith("imagen")
    assert [r.route for r in fake_media.requests] == ["predict"]
    await genai_connector.close_genai_client()
    configure_services(TEST_SERVICE_CONFIG)
