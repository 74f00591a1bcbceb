"""Google GenAI (Veo videos, Imagen / Gemini images, Gemini speech) through the official ``google-genai`` SDK.

Two kinds of key are supported:

* enterprise (Vertex express mode or project + location): the SDK's ``generate_videos`` and
  ``generate_images`` work directly;
* a plain Gemini API key (Developer API): google-genai 3.x refuses ``generate_videos`` client-side,
  so the video is started with one REST call (``:predictLongRunning``) on our own aiohttp session and
  then polled with the SDK's ``operations.get``; thumbnails use a Gemini image model through
  ``generate_content``. Speech (Gemini text-to-speech) is ``generate_content`` with an AUDIO
  response in both modes.

Both the SDK client and the aiohttp session are lazy per-process singletons. Retries are the SDK's
``HttpRetryOptions``; the paid start call in Developer mode is deliberately not retried (a lost reply
to a retried start would pay twice). Video bytes are fetched with a size cap, checked to be MP4, and
the API key is sent only to the API's own host, never along a redirect to another one. In Developer
mode a finished video names its file on Google's host; like the SDK's ``files.download`` it is asked
of the configured base URL (a proxy or gateway), not of that host.

The SDK is imported only where it is used (it costs about half a second and tens of MB): a bot
that has made no media call has not loaded it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from connectors.errors import (
    AuthenticationFailed,
    ContentBlocked,
    InvalidResponse,
    ModelNotFound,
    OutOfCredits,
    RateLimited,
    UpstreamError,
    UpstreamUnavailable,
    unreachable_reason,
)
from connectors.resilience import UpstreamGuardConfig, configure_guard, guarded

if TYPE_CHECKING:
    from google import genai
    from google.genai import types

log = logging.getLogger(__name__)

PROVIDER = "google"
GOOGLE_DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEVELOPER_API_VERSION = "v1beta"
MAX_REDIRECTS = 5
RETRYABLE_STATUS = [408, 429, 500, 502, 503, 504]
#: A Files API URI's path, e.g. ``/v1beta/files/abc123:download``; the id rule is the SDK's own.
_FILES_PATH = re.compile(r"/files/(?P<id>[a-z0-9]+)(?::download)?$")
#: Gemini TTS answers raw 16-bit little-endian mono PCM, e.g. ``audio/L16;codec=pcm;rate=24000``.
_PCM_MIME = re.compile(r"^audio/(?:l16|pcm)\b", re.IGNORECASE)
_PCM_RATE = re.compile(r"\brate=(?P<rate>\d+)", re.IGNORECASE)
DEFAULT_SPEECH_SAMPLE_RATE = 24_000


@dataclass(frozen=True)
class GenAIConfig:
    """What the connector needs; built from ``Settings`` by the composition root."""

    api_key: str | None
    base_url: str | None = None
    enterprise: bool = False
    project: str | None = None
    location: str | None = None
    timeout_seconds: float = 120.0
    retry_attempts: int = 3
    retry_initial_delay: float = 1.0
    retry_max_delay: float = 8.0
    video_max_bytes: int = 200 * 1024 * 1024
    #: Per-attempt timeouts by call type; None: ``timeout_seconds``.
    video_start_timeout_seconds: float | None = None
    video_poll_timeout_seconds: float | None = None
    image_timeout_seconds: float | None = None
    #: Circuit breaker and bounded line for Google media calls (connectors/resilience.py).
    guard: UpstreamGuardConfig = field(default_factory=lambda: UpstreamGuardConfig(max_concurrent=32, max_waiting=200))


def _request_options(seconds: float | None) -> types.HttpOptions | None:
    """Per-request HTTP options carrying a call type's timeout (the SDK counts milliseconds)."""
    from google.genai import types

    return types.HttpOptions(timeout=int(seconds * 1000)) if seconds else None


@dataclass(frozen=True)
class VideoOperationStatus:
    """One poll of a Veo long-running operation, SDK types already unpacked."""

    name: str
    done: bool
    video_bytes: bytes | None = None
    video_uri: str | None = None
    error: str | None = None
    filtered_reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GeneratedImage:
    image_bytes: bytes
    mime_type: str


@dataclass(frozen=True)
class SynthesizedSpeech:
    """Speech as the API sent it: signed 16-bit little-endian mono PCM, with the call's token counts."""

    pcm: bytes = field(repr=False)
    sample_rate: int
    mime_type: str
    prompt_tokens: int = 0
    output_tokens: int = 0


_config: GenAIConfig | None = None
_client: genai.Client | None = None
_session: aiohttp.ClientSession | None = None
_lock: asyncio.Lock | None = None


def configure_genai(config: GenAIConfig) -> None:
    """Set the configuration used by the next ``get_genai_client``; drops any client built before."""
    global _config
    reset_genai_client()
    _config = config
    configure_guard(PROVIDER, config.guard)


def _require_config() -> GenAIConfig:
    if _config is None:
        raise RuntimeError("configure_genai() must be called before the GenAI client is used")
    return _config


def _build_client(config: GenAIConfig) -> genai.Client:
    from google import genai
    from google.genai import types

    http_options = types.HttpOptions(
        base_url=config.base_url,
        timeout=int(config.timeout_seconds * 1000),
        retry_options=types.HttpRetryOptions(
            attempts=config.retry_attempts,
            initial_delay=config.retry_initial_delay,
            max_delay=config.retry_max_delay,
            http_status_codes=RETRYABLE_STATUS,
        ),
    )
    if config.enterprise:
        if config.api_key:
            return genai.Client(enterprise=True, api_key=config.api_key, http_options=http_options)
        return genai.Client(
            enterprise=True, project=config.project, location=config.location, http_options=http_options
        )
    http_options.api_version = DEVELOPER_API_VERSION
    return genai.Client(api_key=config.api_key, http_options=http_options)


async def get_genai_client() -> genai.Client:
    """The process-wide SDK client, created on first use; safe under concurrent first use."""
    global _client, _lock
    if _client is not None:
        return _client
    config = _require_config()
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _client is None:
            _client = _build_client(config)
        return _client


async def _get_session() -> aiohttp.ClientSession:
    """Our own session for the Developer-mode start call and for video downloads."""
    global _session
    if _session is None or _session.closed:
        config = _require_config()
        _session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=config.timeout_seconds, connect=10),
            connector=aiohttp.TCPConnector(limit=200),
        )
    return _session


async def close_genai_client() -> None:
    """Close the SDK's and our own HTTP sessions (at shutdown)."""
    global _client, _session
    client, _client = _client, None
    session, _session = _session, None
    if client is not None:
        await client.aio.aclose()
    if session is not None:
        await session.close()


def reset_genai_client() -> None:
    """Forget clients without closing them (tests switch event loops between cases)."""
    global _client, _session, _lock
    _client = None
    _session = None
    _lock = None


def translate_genai_error(exc: Exception) -> UpstreamError:
    """Map google-genai and transport exceptions to the project's error tree."""
    from google.genai import errors as genai_errors

    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, genai_errors.APIError):
        code = int(exc.code or 0)
        message = str(exc.message or exc)
        detail = f"HTTP {code} {exc.status}: {message}"
        lowered = message.lower()
        if code == 429:
            if "billing" in lowered or "credit" in lowered:
                return OutOfCredits(detail, provider=PROVIDER, status=code)
            return RateLimited(detail, provider=PROVIDER, status=code)
        if code in (401, 403):
            return AuthenticationFailed(detail, provider=PROVIDER, status=code)
        if code == 402:
            return OutOfCredits(detail, provider=PROVIDER, status=code)
        if code == 404:
            return ModelNotFound(detail, provider=PROVIDER, status=code)
        if code == 400 and ("safety" in lowered or "blocked" in lowered or "responsible ai" in lowered):
            return ContentBlocked(detail, provider=PROVIDER, status=code)
        if code >= 500 or code == 408:
            return UpstreamUnavailable(detail, provider=PROVIDER, status=code)
        return InvalidResponse(detail, provider=PROVIDER, status=code)
    if unreachable := unreachable_reason(exc):
        return UpstreamUnavailable(f"unreachable: {unreachable}", provider=PROVIDER)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return UpstreamUnavailable(f"timed out: {exc!r}", provider=PROVIDER)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return UpstreamUnavailable(f"connection failed: {exc!r}", provider=PROVIDER)
    if isinstance(exc, ValueError) and "only supported" in str(exc):
        return InvalidResponse(f"unsupported in this mode: {exc}", provider=PROVIDER)
    return InvalidResponse(f"{type(exc).__name__}: {exc}", provider=PROVIDER)


def _api_base(config: GenAIConfig) -> str:
    return (config.base_url or GOOGLE_DEFAULT_BASE_URL).rstrip("/")


def _status_error(status: int, payload: Any) -> UpstreamError:
    """Raise what the SDK would for an error answer to our own REST call."""
    from google.genai import errors as genai_errors

    error = payload.get("error", {}) if isinstance(payload, dict) else {}
    return translate_genai_error(
        genai_errors.APIError(status, {"error": error} if error else {"error": {"message": str(payload)}})
    )


@guarded(PROVIDER, "video_start")
async def start_video(
    *,
    model: str,
    prompt: str,
    duration_seconds: int,
    aspect_ratio: str,
    image: bytes | None = None,
    image_mime_type: str = "image/png",
    negative_prompt: str | None = None,
) -> str:
    """Submit a Veo generation (the paid call) and return its operation name at once."""
    config = _require_config()
    try:
        if config.enterprise:
            from google.genai import types

            client = await get_genai_client()
            source = types.GenerateVideosSource(
                prompt=prompt,
                image=types.Image(image_bytes=image, mime_type=image_mime_type) if image else None,
            )
            video_config = types.GenerateVideosConfig(
                number_of_videos=1,
                duration_seconds=duration_seconds,
                aspect_ratio=aspect_ratio,
                negative_prompt=negative_prompt,
                http_options=_request_options(config.video_start_timeout_seconds),
            )
            operation = await client.aio.models.generate_videos(model=model, source=source, config=video_config)
            if not operation.name:
                raise InvalidResponse("Veo returned no operation name", provider=PROVIDER)
            return operation.name
        return await _start_video_developer(
            config, model, prompt, duration_seconds, aspect_ratio, image, image_mime_type, negative_prompt
        )
    except Exception as exc:
        raise translate_genai_error(exc) from exc


async def _start_video_developer(
    config: GenAIConfig,
    model: str,
    prompt: str,
    duration_seconds: int,
    aspect_ratio: str,
    image: bytes | None,
    image_mime_type: str,
    negative_prompt: str | None,
) -> str:
    instance: dict[str, Any] = {"prompt": prompt}
    if image:
        instance["image"] = {
            "bytesBase64Encoded": base64.b64encode(image).decode(),
            "mimeType": image_mime_type,
        }
    parameters: dict[str, Any] = {
        "sampleCount": 1,
        "durationSeconds": duration_seconds,
        "aspectRatio": aspect_ratio,
    }
    if negative_prompt:
        parameters["negativePrompt"] = negative_prompt
    model_path = model if model.startswith("models/") else f"models/{model}"
    url = f"{_api_base(config)}/{DEVELOPER_API_VERSION}/{model_path}:predictLongRunning"
    session = await _get_session()
    async with session.post(
        url,
        json={"instances": [instance], "parameters": parameters},
        headers={"x-goog-api-key": config.api_key or ""},
        allow_redirects=False,
        timeout=aiohttp.ClientTimeout(total=config.video_start_timeout_seconds or config.timeout_seconds, connect=10),
    ) as response:
        try:
            payload = await response.json(content_type=None)
        except ValueError as exc:
            raise InvalidResponse(f"start: HTTP {response.status} with a non-JSON body", provider=PROVIDER) from exc
        if response.status != 200:
            raise _status_error(response.status, payload)
    name = payload.get("name") if isinstance(payload, dict) else None
    if not isinstance(name, str) or not name:
        raise InvalidResponse("Veo returned no operation name", provider=PROVIDER)
    return name


@guarded(PROVIDER, "video_poll", counted=False)
async def poll_video(operation_name: str) -> VideoOperationStatus:
    """Poll a Veo operation by its stored name (works after a restart: nothing else is needed).

    Observed but neither refused by the circuit breaker nor held in the line: it collects a video
    already paid for, costs nothing, backs off by itself, and its failures are tolerated until the
    video's deadline (services/video.py).
    """
    from google.genai import types

    config = _require_config()
    try:
        client = await get_genai_client()
        operation = await client.aio.operations.get(
            types.GenerateVideosOperation(name=operation_name),  # type: ignore[call-arg]
            config=types.GetOperationConfig(http_options=_request_options(config.video_poll_timeout_seconds)),
        )
    except Exception as exc:
        raise translate_genai_error(exc) from exc
    if not operation.done:
        return VideoOperationStatus(name=operation_name, done=False)
    if operation.error:
        message = str(operation.error.get("message") or operation.error)
        return VideoOperationStatus(name=operation_name, done=True, error=message)
    result = operation.result or operation.response
    videos = list(result.generated_videos or []) if result else []
    reasons = list(result.rai_media_filtered_reasons or []) if result else []
    filtered = int(result.rai_media_filtered_count or 0) if result else 0
    if not videos or videos[0].video is None:
        if filtered or reasons:
            return VideoOperationStatus(
                name=operation_name, done=True, filtered_reasons=reasons or ["blocked by the safety filter"]
            )
        return VideoOperationStatus(name=operation_name, done=True, error="the operation finished without a video")
    video = videos[0].video
    return VideoOperationStatus(
        name=operation_name, done=True, video_bytes=video.video_bytes or None, video_uri=video.uri or None
    )


def is_mp4(data: bytes) -> bool:
    """MP4 / QuickTime files start with a box whose type is ``ftyp``."""
    return len(data) >= 12 and data[4:8] == b"ftyp"


def _same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


async def fetch_video(status: VideoOperationStatus, max_bytes: int | None = None) -> bytes:
    """Return the finished video's bytes: inline, or downloaded from its URI with a size cap."""
    config = _require_config()
    cap = max_bytes or config.video_max_bytes
    if status.video_bytes is not None:
        data = status.video_bytes
        if len(data) > cap:
            raise InvalidResponse(f"video is {len(data)} bytes, over the {cap} cap", provider=PROVIDER)
    elif status.video_uri:
        if not status.video_uri.startswith(("http://", "https://")):
            raise InvalidResponse(f"video stored at {status.video_uri}, which this bot cannot fetch", provider=PROVIDER)
        data = await _download(developer_download_url(status.video_uri, config) or status.video_uri, cap, config)
    else:
        raise InvalidResponse("the operation has no video", provider=PROVIDER)
    if not is_mp4(data):
        raise InvalidResponse("the downloaded video is not an MP4 file", provider=PROVIDER)
    return data


def developer_download_url(uri: str, config: GenAIConfig) -> str | None:
    """The configured endpoint's URL for a Developer-API file URI; None for any other URI.

    Google names the file on its own host whatever base URL the client used. The SDK's
    ``files.download`` takes the file id from the URI and asks ``{base_url}/{api_version}/files/
    {id}:download?alt=media``; this builds the same URL. The SDK call itself is not used: its session
    follows a redirect to another host with the API key still attached, and without a destination it
    reads the whole body before anything can check its size.
    """
    if config.enterprise:
        return None
    match = _FILES_PATH.search(urlsplit(uri).path)
    if match is None:
        return None
    return f"{_api_base(config)}/{DEVELOPER_API_VERSION}/files/{match['id']}:download?alt=media"


async def _download(url: str, cap: int, config: GenAIConfig) -> bytes:
    """GET ``url`` streamed, refusing past ``cap`` bytes (declared or read) before reading the rest."""
    session = await _get_session()
    api_base = _api_base(config)
    try:
        for _ in range(MAX_REDIRECTS + 1):
            headers = {"x-goog-api-key": config.api_key} if config.api_key and _same_origin(url, api_base) else {}
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                    url = urljoin(url, response.headers["Location"])
                    continue
                if response.status != 200:
                    raise UpstreamUnavailable(f"video download: HTTP {response.status}", provider=PROVIDER)
                declared = response.content_length
                if declared is not None and declared > cap:
                    raise InvalidResponse(f"video is {declared} bytes, over the {cap} cap", provider=PROVIDER)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > cap:
                        raise InvalidResponse(f"video exceeds the {cap}-byte cap", provider=PROVIDER)
                    chunks.append(chunk)
                return b"".join(chunks)
        raise InvalidResponse("too many redirects fetching the video", provider=PROVIDER)
    except UpstreamError:
        raise
    except Exception as exc:
        raise translate_genai_error(exc) from exc


@guarded(PROVIDER, "image")
async def generate_image(
    *,
    model: str,
    prompt: str,
    aspect_ratio: str = "16:9",
    reference_image: bytes | None = None,
    reference_mime_type: str = "image/png",
) -> GeneratedImage:
    """One image: Imagen ``generate_images`` in enterprise mode, a Gemini image model otherwise."""
    from google.genai import types

    config = _require_config()
    try:
        client = await get_genai_client()
        if config.enterprise and model.startswith("imagen"):
            response = await client.aio.models.generate_images(
                model=model,
                prompt=prompt,
                config=types.GenerateImagesConfig(
                    number_of_images=1,
                    aspect_ratio=aspect_ratio,
                    http_options=_request_options(config.image_timeout_seconds),
                ),
            )
            images = response.generated_images or []
            if not images:
                raise ContentBlocked("Imagen returned no image", provider=PROVIDER)
            first = images[0]
            if first.image is None or not first.image.image_bytes:
                raise ContentBlocked(f"Imagen filtered the image: {first.rai_filtered_reason}", provider=PROVIDER)
            return GeneratedImage(first.image.image_bytes, first.image.mime_type or "image/png")
        contents: list[Any] = [prompt]
        if reference_image:
            contents.append(types.Part.from_bytes(data=reference_image, mime_type=reference_mime_type))
        content = await client.aio.models.generate_content(
            model=model,
            contents=contents,
            config=types.GenerateContentConfig(
                response_modalities=["TEXT", "IMAGE"],
                image_config=types.ImageConfig(aspect_ratio=aspect_ratio),
                http_options=_request_options(config.image_timeout_seconds),
            ),
        )
    except UpstreamError:
        raise
    except Exception as exc:
        raise translate_genai_error(exc) from exc
    for candidate in content.candidates or []:
        if candidate.finish_reason and str(candidate.finish_reason).endswith(("SAFETY", "PROHIBITED_CONTENT")):
            raise ContentBlocked(f"image blocked: {candidate.finish_reason}", provider=PROVIDER)
        for part in (candidate.content.parts if candidate.content else None) or []:
            if part.inline_data and part.inline_data.data:
                return GeneratedImage(part.inline_data.data, part.inline_data.mime_type or "image/png")
    raise InvalidResponse("the image model returned no image", provider=PROVIDER)


def pcm_sample_rate(mime_type: str) -> int | None:
    """The sample rate of a raw PCM mime type (24 kHz when it names none); None for anything else."""
    if not _PCM_MIME.match(mime_type.strip()):
        return None
    match = _PCM_RATE.search(mime_type)
    return int(match["rate"]) if match else DEFAULT_SPEECH_SAMPLE_RATE


@guarded(PROVIDER, "speech")
async def synthesize_speech(*, text: str, voice: str, model: str) -> SynthesizedSpeech:
    """Speak ``text`` with a prebuilt Gemini voice (the paid call); ``text`` is already cleaned."""
    from google.genai import types

    try:
        client = await get_genai_client()
        content = await client.aio.models.generate_content(
            model=model,
            contents=text,
            config=types.GenerateContentConfig(
                response_modalities=["AUDIO"],
                speech_config=types.SpeechConfig(
                    voice_config=types.VoiceConfig(prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=voice))
                ),
            ),
        )
    except UpstreamError:
        raise
    except Exception as exc:
        raise translate_genai_error(exc) from exc
    usage = content.usage_metadata
    prompt_tokens = int(usage.prompt_token_count or 0) if usage else 0
    output_tokens = int(usage.candidates_token_count or 0) if usage else 0
    for candidate in content.candidates or []:
        if candidate.finish_reason and str(candidate.finish_reason).endswith(("SAFETY", "PROHIBITED_CONTENT")):
            raise ContentBlocked(f"speech blocked: {candidate.finish_reason}", provider=PROVIDER)
        for part in (candidate.content.parts if candidate.content else None) or []:
            inline = part.inline_data
            if inline is None or not inline.data:
                continue
            mime_type = inline.mime_type or ""
            rate = pcm_sample_rate(mime_type)
            if rate is None:
                raise InvalidResponse(f"the speech model sent {mime_type or 'audio'} instead of PCM", provider=PROVIDER)
            if len(inline.data) % 2:
                raise InvalidResponse("the speech model sent a partial 16-bit sample", provider=PROVIDER)
            return SynthesizedSpeech(inline.data, rate, mime_type, prompt_tokens, output_tokens)
    raise InvalidResponse("the speech model returned no audio", provider=PROVIDER)
