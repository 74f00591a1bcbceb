"""The sandbox fakes, driven by the real openai and google-genai SDKs.

If these pass, the fakes speak the wire format the installed SDKs expect, so tests built on them
exercise the bot's real client code paths.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import aiohttp
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, Field

from tests.fakes import FakeGenAI, FakeOpenRouter, Fault

os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MP4_FTYP = b"\x00\x00\x00\x20ftypisom"
REPO_ROOT = Path(__file__).resolve().parents[2]
VEO = "veo-3.0-generate-001"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell a story about a dragon who learns to fly"}]


class Scene(BaseModel):
    narration: str
    duration_seconds: Literal[4, 6, 8]


class Storyboard(BaseModel):
    title: str
    scenes: list[Scene] = Field(description="the scenes")


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture
async def openrouter() -> AsyncIterator[FakeOpenRouter]:
    fake = FakeOpenRouter(latency=0.0)
    await fake.start(host="127.0.0.1", port=0)
    yield fake
    await fake.stop()


@pytest.fixture
async def oai(openrouter: FakeOpenRouter) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(api_key="k", base_url=openrouter.base_url, max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def google() -> AsyncIterator[FakeGenAI]:
    fake = FakeGenAI()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def vertex(google: FakeGenAI) -> AsyncIterator[genai.Client]:
    client = genai.Client(enterprise=True, api_key="k", http_options=types.HttpOptions(base_url=google.base_url))
    yield client
    await client.aio.aclose()


@pytest.fixture
async def gemini(google: FakeGenAI) -> AsyncIterator[genai.Client]:
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=google.base_url, api_version="v1beta"))
    yield client
    await client.aio.aclose()


async def _chat(client: openai.AsyncOpenAI) -> openai.types.chat.ChatCompletion:
    return await client.chat.completions.create(model="openai/gpt-4o-mini", messages=USER)


# -- 1. OpenRouter happy paths ----------------------------------------------------------------------------


async def test_json_schema_output_validates_and_honours_exactly_n(
    oai: openai.AsyncOpenAI, openrouter: FakeOpenRouter
) -> None:
    schema = Storyboard.model_json_schema()
    completion = await oai.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[
            {"role": "system", "content": "You write storyboards."},
            {"role": "user", "content": "A dragon learns to fly. Write exactly 5 scenes."},
        ],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "Storyboard", "strict": True, "schema": schema},
        },
    )
    content = completion.choices[0].message.content
    assert content is not None
    board = Storyboard.model_validate(json.loads(content))
    assert len(board.scenes) == 5
    assert {s.duration_seconds for s in board.scenes} == {6}
    assert board.scenes[1].narration.startswith("Sandbox narration 2:")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert openrouter.chat_requests[0].json["response_format"]["type"] == "json_schema"


async def test_fault_lazy_returns_fewer_items_than_asked_once(
    oai: openai.AsyncOpenAI, openrouter: FakeOpenRouter
) -> None:
    async def scenes() -> int:
        completion = await oai.chat.completions.create(
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": "A dragon learns to fly. Write exactly 5 scenes."}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "Storyboard", "strict": True, "schema": Storyboard.model_json_schema()},
            },
        )
        content = completion.choices[0].message.content
        assert content is not None and completion.choices[0].finish_reason == "stop"
        return len(Storyboard.model_validate(json.loads(content)).scenes)

    openrouter.inject(Fault.lazy(2), Fault.lazy(0))
    assert [await scenes(), await scenes(), await scenes()] == [2, 0, 5]


async def test_plain_text_and_request_recording(oai: openai.AsyncOpenAI, openrouter: FakeOpenRouter) -> None:
    completion = await _chat(oai)
    assert completion.choices[0].message.content == "Sandbox reply: Tell a story about a dragon who learns to fly"
    assert completion.model == "openai/gpt-4o-mini"
    recorded = openrouter.chat_requests[0]
    assert recorded.method == "POST" and recorded.path == "/api/v1/chat/completions"
    assert recorded.headers["authorization"] == "Bearer k"
    assert recorded.json["messages"] == USER


async def test_responder_scripts_content(oai: openai.AsyncOpenAI, openrouter: FakeOpenRouter) -> None:
    openrouter.responder = lambda body: f"scripted for {body['model']}"
    completion = await _chat(oai)
    assert completion.choices[0].message.content == "scripted for openai/gpt-4o-mini"


async def test_streaming_collects_text(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(model="m", messages=USER, stream=True)
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert len(pieces) > 2
    assert "".join(pieces) == "Sandbox reply: Tell a story about a dragon who learns to fly"


async def test_vision_content_parts(oai: openai.AsyncOpenAI, openrouter: FakeOpenRouter) -> None:
    from bot.sandbox.media import tiny_png

    url = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    completion = await oai.chat.completions.create(
        model="m",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe this character"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    )
    assert completion.choices[0].message.content == "Sandbox reply: Describe this character"
    assert openrouter.chat_requests[0].json["messages"][0]["content"][1]["image_url"]["url"] == url


async def test_auth_and_unknown_model(openrouter: FakeOpenRouter) -> None:
    openrouter.known_models = {"good/model"}
    async with openai.AsyncOpenAI(api_key="k", base_url=openrouter.base_url, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="bad/model", messages=USER)
        assert "bad/model is not a valid model ID" in str(bad.value)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            openrouter.base_url + "/chat/completions", json={"model": "good/model", "messages": USER}
        ) as response,
    ):
        assert response.status == 401
        assert (await response.json())["error"]["code"] == 401


# -- 2. Faults through openai ---------------------------------------------------------------------------


async def test_fault_statuses(oai: openai.AsyncOpenAI, openrouter: FakeOpenRouter) -> None:
    openrouter.inject(Fault.status(429, retry_after=1), Fault.status(402, "Insufficient credits"), Fault.status(500))
    with pytest.raises(openai.RateLimitError) as limited:
        await _chat(oai)
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.body == {"code": 429, "message": "Sandbox: injected upstream error.", "metadata": {}}
    with pytest.raises(openai.APIStatusError) as credits:
        await _chat(oai)
    assert credits.value.status_code == 402
    assert type(credits.value) is openai.APIStatusError
    with pytest.raises(openai.InternalServerError):
        await _chat(oai)
    assert openrouter.pending_faults == []
    assert (await _chat(oai)).choices[0].message.content


async def test_fault_malformed_json_and_error_body_200(oai: openai.AsyncOpenAI, openrouter: FakeOpenRouter) -> None:
    openrouter.inject(Fault.malformed_json(), Fault.error_body_200())
    with pytest.raises(ValueError):  # the SDK lets json.JSONDecodeError escape
        await _chat(oai)
    completion = await _chat(oai)
    assert completion.choices is None
    assert (completion.model_extra or {})["error"]["code"] == 502


async def test_fault_reset_and_timeout(oai: openai.AsyncOpenAI, openrouter: FakeOpenRouter) -> None:
    openrouter.inject(Fault.reset(), Fault.timeout(2))
    with pytest.raises(openai.APIConnectionError):
        await _chat(oai)
    with pytest.raises(openai.APITimeoutError):
        await oai.with_options(timeout=0.5).chat.completions.create(model="m", messages=USER)


async def test_fault_content_finish_reason_refusal(oai: openai.AsyncOpenAI, openrouter: FakeOpenRouter) -> None:
    fenced = '```json\n{"title": "x"}\n```'
    openrouter.inject(Fault.content(fenced), Fault.finish_reason("length"), Fault.refusal("I can't help with that."))
    assert (await _chat(oai)).choices[0].message.content == fenced
    assert (await _chat(oai)).choices[0].finish_reason == "length"
    refused = (await _chat(oai)).choices[0].message
    assert refused.content is None and refused.refusal == "I can't help with that."


async def test_sdk_retry_after_one_500(openrouter: FakeOpenRouter) -> None:
    openrouter.inject(Fault.status(500, retry_after=0.05))
    async with openai.AsyncOpenAI(api_key="k", base_url=openrouter.base_url, max_retries=2) as client:
        completion = await _chat(client)
    assert completion.choices[0].message.content
    assert [r.headers["x-stainless-retry-count"] for r in openrouter.chat_requests] == ["0", "1"]


# -- 3. GenAI enterprise (Vertex express) -----------------------------------------------------------------


async def _video(client: genai.Client) -> types.GenerateVideosOperation:
    return await client.aio.models.generate_videos(
        model=VEO,
        source=types.GenerateVideosSource(prompt="a cat"),
        config=types.GenerateVideosConfig(number_of_videos=1, duration_seconds=8, aspect_ratio="16:9"),
    )


def _operation(name: str) -> types.GenerateVideosOperation:
    """Rebuild an operation from its stored name, as the bot does after a restart."""
    return types.GenerateVideosOperation(name=name)  # type: ignore[call-arg]


async def _until_done(client: genai.Client, op: types.GenerateVideosOperation) -> types.GenerateVideosOperation:
    for _ in range(20):
        if op.done:
            return op
        op = await client.aio.operations.get(op)
    raise AssertionError("operation never finished")


async def test_veo_enterprise_round_trip(vertex: genai.Client, google: FakeGenAI) -> None:
    google.polls_until_done = 3
    op = await _video(vertex)
    assert op.name and op.name.startswith(f"publishers/google/models/{VEO}/operations/")
    assert not op.done
    sent = google.video_generation_requests[0]
    assert sent.path == f"/v1beta1/publishers/google/models/{VEO}:predictLongRunning"
    assert sent.headers["x-goog-api-key"] == "k"
    assert sent.json == {
        "instances": [{"prompt": "a cat"}],
        "parameters": {"sampleCount": 1, "durationSeconds": 8, "aspectRatio": "16:9"},
    }
    op = await _until_done(vertex, op)
    assert len(google.poll_requests) == 3
    assert google.poll_requests[0].json == {"operationName": op.name}
    assert op.error is None and op.result is not None and op.result.generated_videos
    video = op.result.generated_videos[0].video
    assert video is not None and video.video_bytes is not None
    assert video.video_bytes.startswith(MP4_FTYP)
    assert _clip_facts(video.video_bytes)[:2] == ((284, 160), 8.0)
    assert op.result.rai_media_filtered_count == 0

    assert op.name is not None
    rebuilt = await vertex.aio.operations.get(_operation(op.name))
    assert rebuilt.done and rebuilt.result is not None and rebuilt.result.generated_videos
    assert len(google.video_generation_requests) == 1


async def test_veo_enterprise_outcomes(vertex: genai.Client, google: FakeGenAI) -> None:
    google.video_outcome = "filtered"
    filtered = await _until_done(vertex, await _video(vertex))
    assert filtered.result is not None and filtered.result.rai_media_filtered_count == 1
    assert not filtered.result.generated_videos
    assert filtered.result.rai_media_filtered_reasons

    google.video_outcome = "error"
    failed = await _until_done(vertex, await _video(vertex))
    assert failed.error == {"code": 3, "message": "Sandbox: video generation failed."}

    google.video_outcome = "gcs"
    stored = await _until_done(vertex, await _video(vertex))
    assert stored.result is not None and stored.result.generated_videos
    gcs_video = stored.result.generated_videos[0].video
    assert gcs_video is not None and gcs_video.uri and gcs_video.uri.startswith("gs://")

    google.video_outcome, google.oversize_bytes = "oversize", 200_000
    big = await _until_done(vertex, await _video(vertex))
    assert big.result is not None and big.result.generated_videos
    big_video = big.result.generated_videos[0].video
    assert big_video is not None and big_video.video_bytes is not None
    assert len(big_video.video_bytes) == 200_000 and big_video.video_bytes.startswith(MP4_FTYP)

    google.video_outcome = "not_mp4"
    html = await _until_done(vertex, await _video(vertex))
    assert html.result is not None and html.result.generated_videos
    html_video = html.result.generated_videos[0].video
    assert html_video is not None and html_video.video_bytes is not None
    assert html_video.video_bytes.startswith(b"<!DOCTYPE html>")


async def test_veo_video_seconds(vertex: genai.Client, google: FakeGenAI) -> None:
    google.video_seconds = 0.2
    op = await _video(vertex)
    assert not (await vertex.aio.operations.get(op)).done
    await asyncio.sleep(0.25)
    assert (await vertex.aio.operations.get(op)).done


@pytest.mark.filterwarnings("ignore:The generate_images method is deprecated")
async def test_imagen_and_429(vertex: genai.Client, google: FakeGenAI) -> None:
    result = await vertex.aio.models.generate_images(
        model="imagen-4.0-generate-001",
        prompt="a thumbnail",
        config=types.GenerateImagesConfig(number_of_images=2, aspect_ratio="16:9"),
    )
    assert result.generated_images and len(result.generated_images) == 2
    image = result.generated_images[0].image
    assert image is not None and image.image_bytes is not None and image.image_bytes.startswith(PNG_MAGIC)

    google.image_outcome = "filtered"
    blocked = await vertex.aio.models.generate_images(model="imagen-4.0-generate-001", prompt="x")
    assert blocked.generated_images and blocked.generated_images[0].rai_filtered_reason == "Sandbox: blocked."

    google.inject(Fault.status(429, "Quota exceeded"), route="predictLongRunning")
    await vertex.aio.models.generate_images(model="imagen-4.0-generate-001", prompt="scoped fault skips me")
    with pytest.raises(genai_errors.ClientError) as limited:
        await _video(vertex)
    assert limited.value.code == 429 and limited.value.status == "RESOURCE_EXHAUSTED"
    assert len(google.video_generation_requests) == 1


async def test_unknown_operation_is_404(vertex: genai.Client) -> None:
    with pytest.raises(genai_errors.ClientError) as missing:
        await vertex.aio.operations.get(_operation(f"publishers/google/models/{VEO}/operations/nope"))
    assert missing.value.code == 404


# -- 4. GenAI developer mode ----------------------------------------------------------------------------


async def test_veo_developer_mode(gemini: genai.Client, google: FakeGenAI) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{google.base_url}/v1beta/models/{VEO}:predictLongRunning",
            json={"instances": [{"prompt": "a cat"}], "parameters": {"sampleCount": 1}},
            headers={"x-goog-api-key": "k"},
        ) as response:
            assert response.status == 200
            name = (await response.json())["name"]
        assert name.startswith(f"models/{VEO}/operations/")
        op = await _until_done(gemini, _operation(name))
        assert google.poll_requests[0].method == "GET"
        assert google.poll_requests[0].path == f"/v1beta/{name}"
        assert op.result is not None and op.result.generated_videos
        video = op.result.generated_videos[0].video
        assert video is not None and video.uri is not None
        # Like Google: the file is named on Google's host whatever base URL the client used.
        file_id = video.uri.split("files/")[1].split(":")[0]
        assert video.uri == f"https://generativelanguage.googleapis.com/v1beta/files/{file_id}:download?alt=media"
        async with session.get(google.download_url(file_id)) as response:
            assert response.status == 200 and response.content_type == "video/mp4"
            assert (await response.read()).startswith(MP4_FTYP)

        # The SDK takes the id from that URI and asks its own base URL: the fake serves it there.
        assert (await gemini.aio.files.download(file=video)).startswith(MP4_FTYP)
        assert google.download_requests[-1].path == f"/v1beta/files/{file_id}:download"
        assert (await gemini.aio.files.download(file=f"files/{file_id}")).startswith(MP4_FTYP)

        other = FakeGenAI()
        await other.start()
        try:
            google.download_redirect_to = other.base_url
            other.serve_files_of(google)
            async with session.get(google.download_url(file_id), allow_redirects=False) as response:
                assert response.status == 302
                assert response.headers["Location"] == other.download_url(file_id)
            # The SDK (aiohttp) forwards x-goog-api-key to the redirect target.
            assert (await gemini.aio.files.download(file=f"files/{file_id}")).startswith(MP4_FTYP)
            assert other.download_requests[-1].headers.get("x-goog-api-key") == "k"
        finally:
            await other.stop()
    assert len(google.video_generation_requests) == 1


async def test_developer_filtered_video(gemini: genai.Client, google: FakeGenAI) -> None:
    google.video_outcome = "filtered"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{google.base_url}/v1/models/{VEO}:predictLongRunning",
            json={"instances": [{"prompt": "x"}]},
            headers={"x-goog-api-key": "k"},
        ) as response,
    ):
        name = (await response.json())["name"]
    op = await _until_done(gemini, _operation(name))
    assert op.result is not None and op.result.rai_media_filtered_count == 1
    assert not op.result.generated_videos


async def test_gemini_image_output_and_inline_input(gemini: genai.Client, google: FakeGenAI) -> None:
    from bot.sandbox.media import tiny_png

    response = await gemini.aio.models.generate_content(
        model="gemini-2.5-flash-image",
        contents=types.Content(
            role="user",
            parts=[
                types.Part.from_bytes(data=tiny_png(), mime_type="image/png"),
                types.Part.from_text(text="Make a thumbnail for a dragon video"),
            ],
        ),
        config=types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"]),
    )
    parts = response.candidates[0].content.parts if response.candidates and response.candidates[0].content else []
    assert parts
    images = [p.inline_data for p in parts if p.inline_data is not None]
    assert images and images[0].data is not None and images[0].data.startswith(PNG_MAGIC)
    assert images[0].mime_type == "image/png"
    assert google.requests[-1].path == "/v1beta/models/gemini-2.5-flash-image:generateContent"

    text = await gemini.aio.models.generate_content(model="gemini-2.5-flash", contents="hello there")
    assert text.text == "Sandbox reply: hello there"


async def test_genai_rejects_missing_key(google: FakeGenAI) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{google.base_url}/v1beta/models/gemini-2.5-flash:generateContent", json={"contents": []}
        ) as response,
    ):
        assert response.status == 401
        assert (await response.json())["error"]["status"] == "UNAUTHENTICATED"


# -- 5. connection accounting ---------------------------------------------------------------------------


async def test_one_client_reuses_one_connection(oai: openai.AsyncOpenAI, openrouter: FakeOpenRouter) -> None:
    for _ in range(20):
        await _chat(oai)
    assert openrouter.connections_accepted == 1
    assert {r.connection for r in openrouter.chat_requests} == {1}
    async with aiohttp.ClientSession() as session, session.get(openrouter.base_url + "/_stats") as response:
        stats = await response.json()
    assert stats == {"requests": 20, "connections": 2, "api_connections": 1, "routes": {"chat": 20}}
    assert len(openrouter.requests) == 20


async def test_many_concurrent_connections(openrouter: FakeOpenRouter) -> None:
    openrouter.latency = 0.05
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.post(
                openrouter.base_url + "/chat/completions",
                json={"model": "m", "messages": USER},
                headers={"Authorization": "Bearer k"},
            ) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one() for _ in range(300)))
    assert set(statuses) == {200}
    assert openrouter.connections_accepted == 300


# -- 6. the sandbox process -----------------------------------------------------------------------------


async def test_sandbox_process() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.sandbox",
        "--latency",
        "0",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=10)
        urls = json.loads(line)
        assert urls["openrouter"].endswith("/api/v1") and urls["genai"].startswith("http://127.0.0.1:")
        async with openai.AsyncOpenAI(api_key="k", base_url=urls["openrouter"], max_retries=0) as client:
            completion = await _chat(client)
        assert completion.choices[0].message.content
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- 7. a long-running sandbox stays small --------------------------------------------------------------


async def test_sandbox_keeps_counts_and_only_recent_requests() -> None:
    from bot.sandbox.fake_openrouter import SandboxOpenRouter
    from bot.sandbox.upstream import RECENT_REQUESTS

    sandbox = SandboxOpenRouter()
    await sandbox.start()
    try:
        sent = RECENT_REQUESTS + 8
        async with openai.AsyncOpenAI(api_key="k", base_url=sandbox.base_url, max_retries=0) as client:
            for _ in range(sent):
                await _chat(client)
        assert not hasattr(sandbox, "requests"), "the sandbox keeps no full request history"
        assert len(sandbox.recent_requests) == RECENT_REQUESTS
        assert sandbox.stats() == {"requests": sent, "connections": 1, "api_connections": 1, "routes": {"chat": sent}}
    finally:
        await sandbox.stop()


async def test_video_files_belong_to_the_fake_that_made_them(google: FakeGenAI) -> None:
    other = FakeGenAI()
    await other.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{google.base_url}/v1beta/models/{VEO}:predictLongRunning",
                json={"instances": [{"prompt": "a cat"}]},
                headers={"x-goog-api-key": "k"},
            ) as response:
                assert response.status == 200
            [file_id] = google.files
            async with session.get(other.download_url(file_id)) as response:
                assert response.status == 404
            other.serve_files_of(google)
            async with session.get(other.download_url(file_id)) as response:
                assert response.status == 200 and (await response.read()).startswith(MP4_FTYP)
    finally:
        await other.stop()


async def test_sandbox_forgets_its_oldest_video_jobs(google: FakeGenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.sandbox import fake_genai

    monkeypatch.setattr(fake_genai, "KEPT_VIDEO_JOBS", 2)
    names = []
    async with aiohttp.ClientSession() as session:
        for prompt in ("one", "two", "three"):
            async with session.post(
                f"{google.base_url}/v1beta/models/{VEO}:predictLongRunning",
                json={"instances": [{"prompt": prompt}]},
                headers={"x-goog-api-key": "k"},
            ) as response:
                names.append((await response.json())["name"])
        assert list(google.operations) == names[1:] and len(google.files) == 2
        async with session.get(f"{google.base_url}/v1beta/{names[0]}", headers={"x-goog-api-key": "k"}) as response:
            assert response.status == 404


# -- building blocks ------------------------------------------------------------------------------------


class Shot(BaseModel):
    camera: Literal["wide", "close", "pan"]
    seconds: int = Field(ge=2, le=10)
    weight: float = Field(gt=0, lt=1)
    caption: str = Field(max_length=20)
    tags: list[str] = Field(min_length=2, max_length=4)
    note: str | None = None


class ShotList(BaseModel):
    title: str = Field(min_length=60)
    shots: list[Shot]
    hashtags: list[str]


def test_synthesizer_respects_constraints() -> None:
    from bot.sandbox.fake_openrouter import synthesize_json

    doc = synthesize_json(ShotList.model_json_schema(), "Write exactly 4 shots about a dragon who learns to fly")
    shots = ShotList.model_validate(doc)
    assert len(shots.shots) == 4 and len(shots.hashtags) == 3
    assert shots.shots[0].tags[0] == "Sandbox tag 1: a dragon who learns to"
    assert shots.shots[0].camera == "wide" and shots.shots[1].camera == "close"


def test_media_is_structurally_valid() -> None:
    import io

    from PIL import Image

    from bot.sandbox.media import padded_mp4, tiny_mp4, tiny_png

    with Image.open(io.BytesIO(tiny_png(32, 18))) as image:
        assert image.size == (32, 18) and image.format == "PNG"
    for mp4 in (tiny_mp4(), padded_mp4(100_000)):
        assert mp4.startswith(MP4_FTYP)
        offset, boxes = 0, []
        while offset < len(mp4):
            size = int.from_bytes(mp4[offset : offset + 4], "big")
            boxes.append(mp4[offset + 4 : offset + 8])
            offset += size
        assert b"moov" in boxes and b"mdat" in boxes and offset == len(mp4)
    assert len(padded_mp4(100_000)) == 100_000


def _clip_facts(data: bytes) -> tuple[tuple[int, int], float, float]:
    """A decoded clip's frame size, its video length in seconds and its sound's loudness (RMS)."""
    import io

    import av
    import numpy as np

    with av.open(io.BytesIO(data)) as container:
        assert [stream.type for stream in container.streams] == ["video", "audio"]
        frames = list(container.decode(video=0))
        seconds = float(sum(frame.duration * frame.time_base for frame in frames if frame.duration))
    with av.open(io.BytesIO(data)) as container:
        sound = np.concatenate([frame.to_ndarray().ravel() for frame in container.decode(audio=0)])
    return (frames[0].width, frames[0].height), seconds, float(np.sqrt(np.mean(sound**2)))


@pytest.mark.parametrize(("seconds", "aspect", "size"), [(4.0, "9:16", (160, 284)), (6.0, "16:9", (284, 160))])
def test_sandbox_clips_decode_with_the_requested_length_aspect_and_a_tone(
    seconds: float, aspect: str, size: tuple[int, int]
) -> None:
    from bot.sandbox.media import padded_mp4, tiny_mp4

    frame_size, length, loudness = _clip_facts(tiny_mp4(seconds, aspect))
    assert frame_size == size and abs(length - seconds) < 0.01 and loudness > 0.05
    assert _clip_facts(padded_mp4(len(tiny_mp4(1.0)) + 5_000))[1] > 0
