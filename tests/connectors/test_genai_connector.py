"""The Google GenAI connector against the loopback fake, through the real google-genai SDK:
both kinds of key (enterprise / Vertex express, and a plain Gemini Developer API key)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.sandbox.media import tiny_png
from connectors import genai_connector
from connectors.errors import (
    AuthenticationFailed,
    ContentBlocked,
    InvalidResponse,
    RateLimited,
    UpstreamUnavailable,
)
from connectors.genai_connector import (
    fetch_video,
    generate_image,
    get_genai_client,
    is_mp4,
    poll_video,
    start_video,
    synthesize_speech,
)
from tests.conftest import genai_config
from tests.fakes import FakeGenAI, Fault

MODEL = "veo-3.0-fast-generate-001"


@pytest.fixture(params=["developer", "enterprise"])
async def mode(request: pytest.FixtureRequest, fake_genai: FakeGenAI):
    enterprise = request.param == "enterprise"
    genai_connector.configure_genai(genai_config(fake_genai, enterprise=enterprise))
    yield request.param
    await genai_connector.close_genai_client()


async def finish(name: str) -> genai_connector.VideoOperationStatus:
    for _ in range(50):
        status = await poll_video(name)
        if status.done:
            return status
    raise AssertionError("operation never finished")


async def test_video_is_started_polled_and_fetched_as_mp4(fake_genai: FakeGenAI, mode: str) -> None:
    fake_genai.polls_until_done = 2
    name = await start_video(model=MODEL, prompt="a cat surfing", duration_seconds=8, aspect_ratio="9:16")
    assert "operations/" in name
    assert not (await poll_video(name)).done
    status = await finish(name)
    video = await fetch_video(status)
    assert is_mp4(video)
    [generation] = fake_genai.video_generation_requests
    body = generation.json
    assert body["instances"][0]["prompt"] == "a cat surfing"
    assert body["parameters"]["durationSeconds"] == 8
    assert body["parameters"]["aspectRatio"] == "9:16"
    assert generation.headers["x-goog-api-key"] == "test-google-key"
    expected_prefix = "/v1beta1/" if mode == "enterprise" else "/v1beta/"
    assert generation.path.startswith(expected_prefix)


async def test_image_to_video_sends_the_image(fake_genai: FakeGenAI, mode: str) -> None:
    png = tiny_png()
    await start_video(model=MODEL, prompt="animate", duration_seconds=4, aspect_ratio="16:9", image=png)
    image = fake_genai.video_generation_requests[0].json["instances"][0]["image"]
    assert image["mimeType"] == "image/png"
    assert image["bytesBase64Encoded"]


async def test_an_operation_can_be_polled_again_from_its_name_alone(fake_genai: FakeGenAI, mode: str) -> None:
    name = await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9")
    await genai_connector.close_genai_client()  # as after a restart: only the stored name survives
    status = await finish(name)
    assert is_mp4(await fetch_video(status))
    assert len(fake_genai.video_generation_requests) == 1


async def test_filtered_video_reports_reasons(fake_genai: FakeGenAI, mode: str) -> None:
    fake_genai.video_outcome = "filtered"
    status = await finish(await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9"))
    assert status.filtered_reasons
    assert status.video_bytes is None and status.video_uri is None


async def test_failed_operation_reports_its_error(fake_genai: FakeGenAI, mode: str) -> None:
    fake_genai.video_outcome = "error"
    status = await finish(await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9"))
    assert status.error and "failed" in status.error


async def test_oversize_video_is_refused(fake_genai: FakeGenAI, mode: str) -> None:
    fake_genai.video_outcome = "oversize"
    fake_genai.oversize_bytes = 200_000
    status = await finish(await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9"))
    with pytest.raises(InvalidResponse, match="cap"):
        await fetch_video(status, max_bytes=100_000)


async def test_non_mp4_bytes_are_refused(fake_genai: FakeGenAI, mode: str) -> None:
    fake_genai.video_outcome = "not_mp4"
    status = await finish(await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9"))
    with pytest.raises(InvalidResponse, match="not an MP4"):
        await fetch_video(status)


async def test_rate_limit_and_auth_errors_are_translated(fake_genai: FakeGenAI, mode: str) -> None:
    fake_genai.inject(Fault.status(429, message="Resource exhausted"), route="predictLongRunning")
    with pytest.raises(RateLimited):
        await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9")
    fake_genai.inject(Fault.status(403, message="Permission denied"), route="predictLongRunning")
    with pytest.raises(AuthenticationFailed):
        await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9")
    assert len(fake_genai.video_generation_requests) == 2


async def test_poll_500_is_retried_by_the_sdk(fake_genai: FakeGenAI) -> None:
    genai_connector.configure_genai(genai_config(fake_genai, retry_attempts=3))
    name = await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9")
    fake_genai.inject(Fault.status(500), route="operation")
    status = await poll_video(name)
    assert status.done
    assert len(fake_genai.poll_requests) == 2
    await genai_connector.close_genai_client()


async def test_developer_start_is_not_retried_so_it_is_never_paid_twice(fake_genai: FakeGenAI) -> None:
    genai_connector.configure_genai(genai_config(fake_genai, retry_attempts=3))
    fake_genai.inject(Fault.status(503), route="predictLongRunning")
    with pytest.raises(UpstreamUnavailable):
        await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9")
    assert len(fake_genai.video_generation_requests) == 1
    await genai_connector.close_genai_client()


async def test_timeout_and_reset_are_unavailable(fake_genai: FakeGenAI) -> None:
    genai_connector.configure_genai(genai_config(fake_genai, timeout_seconds=0.3))
    fake_genai.inject(Fault.timeout(2), route="predictLongRunning")
    with pytest.raises(UpstreamUnavailable):
        await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9")
    fake_genai.inject(Fault.reset(), route="predictLongRunning")
    with pytest.raises(UpstreamUnavailable):
        await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9")
    await genai_connector.close_genai_client()


async def test_download_redirect_to_another_host_does_not_carry_the_key(fake_genai: FakeGenAI) -> None:
    other = FakeGenAI()
    await other.start()
    try:
        fake_genai.download_redirect_to = other.origin
        other.serve_files_of(fake_genai)
        genai_connector.configure_genai(genai_config(fake_genai))
        status = await finish(await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9"))
        assert is_mp4(await fetch_video(status))
        [first_hop] = fake_genai.download_requests
        [second_hop] = other.download_requests
        assert first_hop.headers.get("x-goog-api-key") == "test-google-key"
        assert "x-goog-api-key" not in second_hop.headers
    finally:
        await genai_connector.close_genai_client()
        await other.stop()


async def test_developer_video_named_on_googles_host_is_fetched_from_the_base_url(fake_genai: FakeGenAI) -> None:
    genai_connector.configure_genai(genai_config(fake_genai))
    try:
        status = await finish(await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9"))
        assert status.video_uri is not None
        assert status.video_uri.startswith("https://generativelanguage.googleapis.com/v1beta/files/")
        assert is_mp4(await fetch_video(status))
        [download] = fake_genai.download_requests
        file_id = status.video_uri.split("files/")[1].split(":")[0]
        assert download.path == f"/v1beta/files/{file_id}:download"
        assert download.query == {"alt": "media"}
        assert download.headers.get("x-goog-api-key") == "test-google-key"
    finally:
        await genai_connector.close_genai_client()


async def test_developer_download_url_is_built_like_the_sdks_files_download() -> None:
    config = genai_connector.GenAIConfig(api_key="k", base_url="https://gateway.example/google/")
    uri = "https://generativelanguage.googleapis.com/v1beta/files/abc123:download?alt=media"
    assert (
        genai_connector.developer_download_url(uri, config)
        == "https://gateway.example/google/v1beta/files/abc123:download?alt=media"
    )
    plain = genai_connector.GenAIConfig(api_key="k")
    assert genai_connector.developer_download_url(uri, plain) == uri
    assert genai_connector.developer_download_url("https://cdn.example/video.mp4", config) is None
    enterprise = genai_connector.GenAIConfig(api_key="k", base_url="https://gateway.example", enterprise=True)
    assert genai_connector.developer_download_url(uri, enterprise) is None


async def test_oversized_streamed_download_is_refused_without_reading_it_all(fake_genai: FakeGenAI) -> None:
    size, cap = 48 * 1024 * 1024, 1024 * 1024
    fake_genai.video_outcome, fake_genai.oversize_bytes = "oversize", size
    fake_genai.download_chunked = True  # no Content-Length: only reading tells the size
    genai_connector.configure_genai(genai_config(fake_genai))
    try:
        status = await finish(await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9"))
        with pytest.raises(InvalidResponse, match="cap"):
            await fetch_video(status, max_bytes=cap)
        await genai_connector.close_genai_client()
        for _ in range(500):
            if fake_genai.download_bytes_sent:
                break
            await asyncio.sleep(0.01)
        [sent] = fake_genai.download_bytes_sent
        assert cap < sent < size // 2
    finally:
        await genai_connector.close_genai_client()


async def test_enterprise_thumbnail_uses_imagen(fake_genai: FakeGenAI) -> None:
    genai_connector.configure_genai(genai_config(fake_genai, enterprise=True))
    image = await generate_image(model="imagen-4.0-generate-001", prompt="a dragon", aspect_ratio="16:9")
    assert image.image_bytes.startswith(b"\x89PNG")
    assert [r.route for r in fake_genai.requests] == ["predict"]
    fake_genai.image_outcome = "filtered"
    with pytest.raises(ContentBlocked):
        await generate_image(model="imagen-4.0-generate-001", prompt="a dragon")
    await genai_connector.close_genai_client()


async def test_developer_thumbnail_uses_a_gemini_image_model(fake_genai: FakeGenAI) -> None:
    genai_connector.configure_genai(genai_config(fake_genai))
    image = await generate_image(
        model="gemini-2.5-flash-image", prompt="a dragon", reference_image=tiny_png(), reference_mime_type="image/png"
    )
    assert image.image_bytes.startswith(b"\x89PNG")
    [request] = fake_genai.requests
    assert request.route == "generateContent"
    assert request.json["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
    await genai_connector.close_genai_client()


async def test_one_sdk_client_under_concurrent_first_use(fake_genai: FakeGenAI) -> None:
    genai_connector.configure_genai(genai_config(fake_genai))
    clients = await asyncio.gather(*(get_genai_client() for _ in range(1000)))
    assert len({id(client) for client in clients}) == 1
    await genai_connector.close_genai_client()


async def test_gcs_uri_result_is_explained(fake_genai: FakeGenAI) -> None:
    genai_connector.configure_genai(genai_config(fake_genai, enterprise=True))
    fake_genai.video_outcome = "gcs"
    status = await finish(await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9"))
    with pytest.raises(InvalidResponse, match="gs://"):
        await fetch_video(status)
    await genai_connector.close_genai_client()


@pytest.mark.parametrize("enterprise", [False, True], ids=["developer", "enterprise"])
async def test_a_refused_connection_is_reported_as_refused(fake_genai: FakeGenAI, enterprise: bool) -> None:
    await fake_genai.stop()
    genai_connector.configure_genai(genai_config(fake_genai, enterprise=enterprise))
    try:
        with pytest.raises(UpstreamUnavailable, match=r"^unreachable: connection refused \(") as caught:
            await start_video(model=MODEL, prompt="x", duration_seconds=4, aspect_ratio="16:9")
        assert "timed out" not in str(caught.value)
        with pytest.raises(UpstreamUnavailable, match=r"^unreachable: connection refused \("):
            await generate_image(model="imagen-4.0-generate-001", prompt="a cat", aspect_ratio="16:9")
    finally:
        await genai_connector.close_genai_client()


TTS_MODEL = "gemini-2.5-flash-preview-tts"


def _field(message: dict[str, Any], camel: str) -> Any:
    """A JSON field by its camelCase name or its proto name: the SDK sends the speech config's inner
    fields in snake_case to the Developer API (protobuf JSON accepts both) and camelCase to Vertex."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return message[camel] if camel in message else message[snake]


async def test_speech_is_pcm_at_the_rate_its_mime_type_names(fake_genai: FakeGenAI, mode: str) -> None:
    speech = await synthesize_speech(text="Once upon a time", voice="Kore", model=TTS_MODEL)
    assert speech.sample_rate == 24_000
    assert speech.mime_type.lower().startswith("audio/l16")
    assert speech.pcm and len(speech.pcm) % 2 == 0
    assert speech.prompt_tokens > 0 and speech.output_tokens > 0
    [request] = fake_genai.requests
    assert request.route == "generateContent"
    assert f"models/{TTS_MODEL}:generateContent" in request.path
    generation = request.json["generationConfig"]
    assert generation["responseModalities"] == ["AUDIO"]
    assert (
        _field(_field(_field(generation["speechConfig"], "voiceConfig"), "prebuiltVoiceConfig"), "voiceName") == "Kore"
    )
    assert request.path.startswith("/v1beta1/" if mode == "enterprise" else "/v1beta/")


async def test_longer_text_gives_longer_speech(fake_genai: FakeGenAI, mode: str) -> None:
    short = await synthesize_speech(text="Hi there.", voice="Puck", model=TTS_MODEL)
    long = await synthesize_speech(text="Hi there, and welcome to a much longer line.", voice="Puck", model=TTS_MODEL)
    assert len(long.pcm) > len(short.pcm)


@pytest.mark.parametrize(("code", "error"), [(429, RateLimited), (500, UpstreamUnavailable)])
async def test_speech_errors_are_translated(
    fake_genai: FakeGenAI, mode: str, code: int, error: type[Exception]
) -> None:
    fake_genai.inject(Fault.status(code), route="generateContent")
    with pytest.raises(error):
        await synthesize_speech(text="hello", voice="Kore", model=TTS_MODEL)
    assert len(fake_genai.requests) == 1


def test_pcm_sample_rate_reads_the_mime_type() -> None:
    assert genai_connector.pcm_sample_rate("audio/L16;codec=pcm;rate=24000") == 24_000
    assert genai_connector.pcm_sample_rate("audio/L16; rate=16000") == 16_000
    assert genai_connector.pcm_sample_rate("audio/pcm") == 24_000
    assert genai_connector.pcm_sample_rate("audio/mpeg") is None
