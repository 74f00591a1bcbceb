"""A loopback Google GenAI endpoint (Veo, Imagen, Gemini) for the sandbox, benchmarks and tests.

Serves both the enterprise (Vertex, ``v1beta1``) and the developer (Gemini API, ``v1beta``/``v1``)
wire formats the google-genai SDK uses, with long-running video operations whose timing and outcome
the caller controls, so paid video jobs can be exercised without paying.

Like Google, a finished Developer-API video names its file on Google's own host
(``https://generativelanguage.googleapis.com/v1beta/files/<id>:download?alt=media``) whatever base URL
the client used; the fake serves that download at its own base URL, as a proxy or gateway would.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from bot.sandbox.fake_openrouter import synthesize_json
from bot.sandbox.media import NOT_MP4_HTML, padded_mp4, speech_pcm, tiny_mp4, tiny_png
from bot.sandbox.upstream import LoopbackUpstream, RecordedRequest, ReplyShape, json_response

__all__ = ["ImageOutcome", "SandboxGenAI", "VideoOutcome"]

VideoOutcome = Literal["ok", "filtered", "error", "gcs", "oversize", "not_mp4"]
ImageOutcome = Literal["ok", "filtered"]

_VERSION = r"(?P<ver>v1beta1|v1beta|v1alpha|v1)"
_PREFIX = r"(?P<prefix>(?:projects/[^/]+/locations/[^/]+/)?(?:publishers/google/)?)"
_MODEL_ACTION = re.compile(rf"^/{_VERSION}/{_PREFIX}models/(?P<model>[^/:]+):(?P<action>[A-Za-z]+)$")
_OPERATION = re.compile(
    rf"^/{_VERSION}/(?P<name>(?:projects/[^/]+/locations/[^/]+/)?(?:publishers/google/)?"
    r"models/[^/:]+/operations/[^/:]+)$"
)
_DOWNLOAD = re.compile(rf"^(?:/download)?/{_VERSION}/files/(?P<file>[^/:]+):download$")

_ACTION_ROUTES = {
    "predictLongRunning": "predictLongRunning",
    "fetchPredictOperation": "operation",
    "predict": "predict",
    "generateContent": "generateContent",
}

_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

#: Where Google's Developer API says a generated file can be downloaded, whatever the client's base URL.
GOOGLE_FILES_ORIGIN = "https://generativelanguage.googleapis.com"

#: Video jobs (with their files) a long-running sandbox keeps; older ones are gone, like expired files.
KEPT_VIDEO_JOBS = 1024

#: The longest clip the sandbox makes, whatever the request says.
MAX_CLIP_SECONDS = 30

#: Sandbox speech lasts this long per character of text, up to ``MAX_SPEECH_SECONDS``.
SPEECH_SECONDS_PER_CHAR = 0.06
MAX_SPEECH_SECONDS = 30.0
#: Gemini TTS's sample rate and wire format for speech, and the audio tokens it bills per second.
SPEECH_SAMPLE_RATE = 24_000
SPEECH_MIME_TYPE = f"audio/L16;codec=pcm;rate={SPEECH_SAMPLE_RATE}"
AUDIO_TOKENS_PER_SECOND = 25

_FILTER_REASON = "Sandbox: the prompt was blocked by the safety filter."
_VERTEX_VIDEO_TYPE = "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse"
_MLDEV_VIDEO_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"

_ASPECT_SIZES = {
    "16:9": (64, 36),
    "9:16": (36, 64),
    "1:1": (48, 48),
    "4:3": (64, 48),
    "3:4": (48, 64),
}


@dataclass
class _Operation:
    """A video job: its outcome is fixed when it is created, like the real service."""

    name: str
    model: str
    enterprise: bool
    created: float
    outcome: VideoOutcome
    samples: int
    storage_uri: str | None
    render_seconds: float = 0.0
    file_ids: list[str] = field(default_factory=list)
    polls: int = 0


def google_status(code: int) -> str:
    """The canonical gRPC status name Google puts next to an HTTP code."""
    return _GOOGLE_STATUS.get(code, "UNKNOWN")


class SandboxGenAI(LoopbackUpstream):
    """Google GenAI (Veo ``predictLongRunning``, Imagen ``predict``, Gemini ``generateContent``).

    Attributes a caller may change at run time: ``latency``, ``video_seconds``, ``polls_until_done``,
    ``video_outcome``, ``image_outcome``, ``oversize_bytes``, ``download_redirect_to``,
    ``video_uri_origin`` (the host finished Developer-API videos name).
    """

    root_path = ""

    def __init__(
        self,
        latency: float = 0.0,
        *,
        video_seconds: float = 0.0,
        polls_until_done: int = 1,
        video_outcome: VideoOutcome = "ok",
        image_outcome: ImageOutcome = "ok",
        oversize_bytes: int = 3 * 1024 * 1024,
        download_redirect_to: str | None = None,
        shutdown_timeout: float = 0.25,
    ) -> None:
        super().__init__(latency, shutdown_timeout=shutdown_timeout)
        self.video_seconds: float = video_seconds
        self.polls_until_done: int = polls_until_done
        self.video_outcome: VideoOutcome = video_outcome
        self.image_outcome: ImageOutcome = image_outcome
        self.oversize_bytes: int = oversize_bytes
        self.download_redirect_to: str | None = download_redirect_to
        self.video_uri_origin: str = GOOGLE_FILES_ORIGIN
        self.operations: dict[str, _Operation] = {}
        self.files: dict[str, bytes] = {}

    # -- URLs ---------------------------------------------------------------------------------------

    def download_url(self, file_id: str) -> str:
        """Where this fake serves a generated video."""
        return f"{self.origin}/v1beta/files/{file_id}:download?alt=media"

    def video_uri(self, file_id: str) -> str:
        """The URI a finished Developer-API operation names for a video: on Google's host, like Google."""
        return f"{self.video_uri_origin.rstrip('/')}/v1beta/files/{file_id}:download?alt=media"

    def error_body(self, code: int, message: str) -> dict[str, Any]:
        """Google's error shape."""
        return {"error": {"code": code, "message": message, "status": google_status(code)}}

    # -- routing ------------------------------------------------------------------------------------

    def route_of(self, request: web.Request) -> str | None:
        """One of "predictLongRunning", "operation", "predict", "generateContent", "download"."""
        path = request.path
        match = _MODEL_ACTION.match(path)
        if match:
            return _ACTION_ROUTES.get(match.group("action"))
        if _OPERATION.match(path):
            return "operation"
        if _DOWNLOAD.match(path):
            return "download"
        return None

    @staticmethod
    def _authenticated(request: web.Request) -> bool:
        if request.headers.get("x-goog-api-key", "").strip():
            return True
        if request.query.get("key", "").strip():
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(token.strip())

    def _error(self, code: int, message: str) -> web.Response:
        return json_response(self.error_body(code, message), code)

    async def dispatch(self, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        """Authenticate (downloads excepted: they model signed URLs), then answer (shaped by ``intercept``)."""
        route = recorded.route
        if route is None:
            return self._error(404, f"Sandbox: no route for {request.method} {request.path}")
        if route != "download" and not self._authenticated(request):
            return self._error(
                401,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        shape = await self.intercept(request, route)
        if isinstance(shape, web.StreamResponse):
            return shape
        shape = shape or ReplyShape()
        body = recorded.json if isinstance(recorded.json, dict) else {}

        if route == "download":
            return await self._download(request)
        if route == "operation":
            return self._poll(request, body)
        match = _MODEL_ACTION.match(request.path)
        assert match is not None
        if request.method != "POST":
            return self._error(405, f"Sandbox: {request.method} not allowed here")
        model = match.group("model")
        prefix = match.group("prefix")
        if route == "predictLongRunning":
            return self._create_operation(model, prefix, body)
        if route == "predict":
            return self._predict(body)
        return self._generate_content(model, body, shape.content, shape.finish_reason, shape.refusal is not None)

    # -- Veo ----------------------------------------------------------------------------------------

    def _video_bytes(self, outcome: VideoOutcome, parameters: dict[str, Any]) -> bytes:
        """A real clip as long as the request's ``durationSeconds`` and in its ``aspectRatio``."""
        if outcome == "oversize":
            return padded_mp4(self.oversize_bytes)
        if outcome == "not_mp4":
            return NOT_MP4_HTML
        seconds = parameters.get("durationSeconds")
        seconds = seconds if isinstance(seconds, int | float) and not isinstance(seconds, bool) else 8
        aspect = parameters.get("aspectRatio")
        return self.clip(float(min(max(seconds, 1), MAX_CLIP_SECONDS)), aspect if isinstance(aspect, str) else "16:9")

    def clip(self, seconds: float, aspect: str) -> bytes:
        """The MP4 a finished video contains: a tiny real clip (benchmarks make bigger ones)."""
        return tiny_mp4(seconds, aspect)

    def next_video_outcome(self, prompt: str) -> VideoOutcome:
        """How the video asked for with ``prompt`` will end (the same for every video in the sandbox)."""
        return self.video_outcome

    def render_seconds(self, prompt: str) -> float:
        """How long the video asked for with ``prompt`` takes to render (``video_seconds`` for all)."""
        return self.video_seconds

    def _create_operation(self, model: str, prefix: str, body: dict[str, Any]) -> web.Response:
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            return self._error(400, "Sandbox: instances[0] is required.")
        instance = instances[0]
        image = instance.get("image")
        if not instance.get("prompt") and not image:
            return self._error(400, "Sandbox: a prompt or an image is required.")
        if isinstance(image, dict) and "gcsUri" not in image and not _valid_b64(image.get("bytesBase64Encoded")):
            return self._error(400, "Sandbox: image.bytesBase64Encoded is not valid base64.")
        parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        assert isinstance(parameters, dict)
        samples = parameters.get("sampleCount", 1)
        samples = samples if isinstance(samples, int) and 1 <= samples <= 4 else 1
        enterprise = "publishers/google/" in prefix
        op_id = uuid.uuid4().hex if enterprise else uuid.uuid4().hex[:12]
        name = f"{prefix}models/{model}/operations/{op_id}"
        storage = parameters.get("storageUri")
        operation = _Operation(
            name=name,
            model=model,
            enterprise=enterprise,
            created=time.monotonic(),
            outcome=self.next_video_outcome(str(instance.get("prompt") or "")),
            samples=samples,
            storage_uri=storage if isinstance(storage, str) and storage else None,
            render_seconds=self.render_seconds(str(instance.get("prompt") or "")),
        )
        if operation.outcome in ("ok", "gcs", "oversize", "not_mp4"):
            data = self._video_bytes(operation.outcome, parameters)
            for _ in range(samples):
                file_id = uuid.uuid4().hex[:16]
                operation.file_ids.append(file_id)
                self.files[file_id] = data
        self.operations[name] = operation
        while len(self.operations) > KEPT_VIDEO_JOBS:
            expired = self.operations.pop(next(iter(self.operations)))
            for file_id in expired.file_ids:
                self.files.pop(file_id, None)
        return json_response({"name": name})

    def _poll(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        if request.method == "POST":
            name = str(body.get("operationName", ""))
        else:
            match = _OPERATION.match(request.path)
            name = match.group("name") if match else ""
        operation = self.operations.get(name)
        if operation is None:
            return self._error(404, f"Sandbox: operation {name!r} not found.")
        operation.polls += 1
        rendered = time.monotonic() - operation.created >= operation.render_seconds
        done = operation.polls >= self.polls_until_done and rendered
        if not done:
            return json_response({"name": name, "done": False})
        return json_response(self._done_body(operation))

    def _done_body(self, op: _Operation) -> dict[str, Any]:
        result: dict[str, Any] = {"name": op.name, "done": True}
        if op.outcome == "error":
            result["error"] = {"code": 3, "message": "Sandbox: video generation failed."}
            return result
        filtered = op.outcome == "filtered"
        if op.enterprise:
            videos: list[dict[str, Any]] = []
            for i, file_id in enumerate(op.file_ids):
                if op.outcome == "gcs" or op.storage_uri:
                    base = (op.storage_uri or "gs://sandbox-bucket/veo").rstrip("/")
                    videos.append({"gcsUri": f"{base}/{file_id}/sample_{i}.mp4", "mimeType": "video/mp4"})
                else:
                    encoded = base64.b64encode(self.files[file_id]).decode()
                    videos.append({"bytesBase64Encoded": encoded, "mimeType": "video/mp4"})
            response: dict[str, Any] = {"@type": _VERTEX_VIDEO_TYPE, "videos": videos}
            response["raiMediaFilteredCount"] = 1 if filtered else 0
            if filtered:
                response["raiMediaFilteredReasons"] = [_FILTER_REASON]
        else:
            generated: dict[str, Any] = {}
            if filtered:
                generated["raiMediaFilteredCount"] = 1
                generated["raiMediaFilteredReasons"] = [_FILTER_REASON]
            else:
                generated["generatedSamples"] = [{"video": {"uri": self.video_uri(file_id)}} for file_id in op.file_ids]
            response = {"@type": _MLDEV_VIDEO_TYPE, "generateVideoResponse": generated}
        result["response"] = response
        return result

    async def _download(self, request: web.Request) -> web.StreamResponse:
        match = _DOWNLOAD.match(request.path)
        assert match is not None
        file_id = match.group("file")
        if self.download_redirect_to:
            target = f"{self.download_redirect_to.rstrip('/')}/v1beta/files/{file_id}:download?alt=media"
            return web.Response(status=302, headers={"Location": target})
        data = self.stored_file(file_id)
        if data is None:
            return self._error(404, f"Sandbox: file {file_id!r} not found.")
        return await self.send_file(request, data)

    def stored_file(self, file_id: str) -> bytes | None:
        """The bytes of a generated file, or None when there is no such file."""
        return self.files.get(file_id)

    async def send_file(self, request: web.Request, data: bytes) -> web.StreamResponse:
        """The answer to a download of ``data``."""
        return web.Response(body=data, content_type="video/mp4")

    # -- Imagen -------------------------------------------------------------------------------------

    def _predict(self, body: dict[str, Any]) -> web.Response:
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            return self._error(400, "Sandbox: instances[0] is required.")
        parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        assert isinstance(parameters, dict)
        count = parameters.get("sampleCount", 1)
        count = count if isinstance(count, int) and 1 <= count <= 8 else 1
        if self.image_outcome == "filtered":
            return json_response({"predictions": [{"raiFilteredReason": "Sandbox: blocked."}]})
        width, height = _ASPECT_SIZES.get(str(parameters.get("aspectRatio", "16:9")), (64, 36))
        png = base64.b64encode(tiny_png(width, height)).decode()
        predictions = [{"bytesBase64Encoded": png, "mimeType": "image/png"} for _ in range(count)]
        return json_response({"predictions": predictions})

    # -- Gemini -------------------------------------------------------------------------------------

    def _generate_content(
        self,
        model: str,
        body: dict[str, Any],
        text: str | None,
        finish: str | None,
        refused: bool,
    ) -> web.Response:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return self._error(400, "Sandbox: contents is required.")
        prompt_parts: list[str] = []
        for content in contents:
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else []:
                if not isinstance(part, dict):
                    continue
                if isinstance(part.get("text"), str):
                    prompt_parts.append(part["text"])
                inline = part.get("inlineData") or part.get("inline_data")
                if isinstance(inline, dict):
                    mime = inline.get("mimeType") or inline.get("mime_type")
                    if not mime or not _valid_b64(inline.get("data")):
                        return self._error(400, "Sandbox: inlineData needs mimeType and base64 data.")
        prompt = " ".join(prompt_parts)
        config = body.get("generationConfig") if isinstance(body.get("generationConfig"), dict) else {}
        assert isinstance(config, dict)
        modalities = [str(m).upper() for m in config.get("responseModalities") or []]
        if "AUDIO" in modalities and not refused:
            return self._speech(model, prompt)
        wants_image = "IMAGE" in modalities or "image" in model.lower()
        usage = {
            "promptTokenCount": len(prompt.split()),
            "candidatesTokenCount": 0,
            "totalTokenCount": len(prompt.split()),
        }
        if refused:
            candidate: dict[str, Any] = {"finishReason": "SAFETY", "index": 0}
            return json_response({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model})
        parts_out: list[dict[str, Any]] = []
        if text is not None:
            parts_out.append({"text": text})
        elif wants_image:
            parts_out.append({"text": "Sandbox thumbnail"})
        else:
            parts_out.append({"text": self._text_reply(config, prompt)})
        if wants_image:
            parts_out.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(tiny_png()).decode()}})
        out_tokens = sum(len(str(p.get("text", "")).split()) for p in parts_out)
        usage["candidatesTokenCount"] = out_tokens
        usage["totalTokenCount"] += out_tokens
        candidate = {
            "content": {"role": "model", "parts": parts_out},
            "finishReason": (finish or "STOP").upper(),
            "index": 0,
        }
        return json_response({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model})

    @staticmethod
    def _speech(model: str, prompt: str) -> web.Response:
        """Real PCM (a tone) as long as reading ``prompt`` aloud might take, shaped like Gemini TTS."""
        seconds = round(min(max(len(prompt), 1) * SPEECH_SECONDS_PER_CHAR, MAX_SPEECH_SECONDS), 3)
        audio = base64.b64encode(speech_pcm(seconds, SPEECH_SAMPLE_RATE)).decode()
        prompt_tokens = len(prompt.split())
        audio_tokens = round(seconds * AUDIO_TOKENS_PER_SECOND)
        candidate = {
            "content": {"role": "model", "parts": [{"inlineData": {"mimeType": SPEECH_MIME_TYPE, "data": audio}}]},
            "finishReason": "STOP",
            "index": 0,
        }
        usage = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": audio_tokens,
            "totalTokenCount": prompt_tokens + audio_tokens,
        }
        return json_response({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model})

    @staticmethod
    def _text_reply(config: dict[str, Any], prompt: str) -> str:
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        if isinstance(schema, dict):
            return json.dumps(synthesize_json(schema, prompt), ensure_ascii=False)
        return "Sandbox reply: " + " ".join(prompt.split()[:12])


def _valid_b64(value: Any) -> bool:
    """True when ``value`` is a non-empty base64 string (standard or URL-safe alphabet)."""
    if not isinstance(value, str) or not value:
        return False
    try:
        base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True
