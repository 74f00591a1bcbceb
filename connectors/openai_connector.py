"""OpenRouter (or any OpenAI-compatible server) through the official ``openai`` SDK.

One ``AsyncOpenAI`` per process, built lazily on first use: it owns the only connection pool, so
N concurrent calls open at most N connections and sequential calls reuse one. Retries are the SDK's
own (``max_retries``), never a loop of ours on top; a response hook marks answers that can never
succeed by waiting (402, ``insufficient_quota``) so the SDK does not retry them either.

The SDK itself is imported when the client is built (it costs about a second and tens of MB): a
bot that has served no text command has not loaded it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
from connectors.resilience import UpstreamGuardConfig, configure_guard, guard_for

if TYPE_CHECKING:
    import httpx2
    import openai
    from openai import AsyncOpenAI

log = logging.getLogger(__name__)

PROVIDER = "openrouter"


@dataclass(frozen=True)
class OpenRouterConfig:
    """What the connector needs to know; built from ``Settings`` by the composition root."""

    api_key: str
    base_url: str
    timeout_seconds: float = 60.0
    max_retries: int = 2
    site_url: str = ""
    app_name: str = "Reelwright"
    extra_headers: dict[str, str] = field(default_factory=dict)
    #: Per-attempt timeout for calls with an image part (vision); None: ``timeout_seconds``.
    vision_timeout_seconds: float | None = None
    #: Circuit breaker and bounded line for OpenRouter (connectors/resilience.py).
    guard: UpstreamGuardConfig = field(default_factory=UpstreamGuardConfig)


@dataclass(frozen=True)
class TextCompletion:
    """A model answer with the usage a cost ledger needs."""

    text: str
    model: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


_config: OpenRouterConfig | None = None
_client: AsyncOpenAI | None = None
_lock: asyncio.Lock | None = None


def configure_openai(config: OpenRouterConfig) -> None:
    """Set the configuration used by the next ``get_openai_client``; drops any client built before."""
    global _config
    reset_openai_client()
    _config = config
    configure_guard(PROVIDER, config.guard)


async def _mark_unrecoverable(response: httpx2.Response) -> None:
    """Tell the SDK not to retry answers that waiting cannot fix (out of credits)."""
    if response.status_code == 402:
        response.headers["x-should-retry"] = "false"
    elif response.status_code == 429:
        await response.aread()
        if b"insufficient_quota" in response.content:
            response.headers["x-should-retry"] = "false"


def _build_client(config: OpenRouterConfig) -> AsyncOpenAI:
    import httpx2
    import openai

    headers = {"X-Title": config.app_name, **config.extra_headers}
    if config.site_url:
        headers["HTTP-Referer"] = config.site_url
    http_client = openai.DefaultAioHttpClient(
        timeout=httpx2.Timeout(config.timeout_seconds, connect=min(5.0, config.timeout_seconds)),
        limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=1000, keepalive_expiry=30),
        event_hooks={"response": [_mark_unrecoverable]},
    )
    return openai.AsyncOpenAI(
        api_key=config.api_key,
        base_url=config.base_url,
        max_retries=config.max_retries,
        default_headers=headers,
        http_client=http_client,
    )


async def get_openai_client() -> AsyncOpenAI:
    """The process-wide client, created on first use; safe when many coroutines ask at once."""
    global _client, _lock
    if _client is not None:
        return _client
    if _config is None:
        raise RuntimeError("configure_openai() must be called before the OpenRouter client is used")
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _client is None:
            _client = _build_client(_config)
        return _client


async def close_openai_client() -> None:
    """Close the connection pool (at shutdown)."""
    global _client
    client, _client = _client, None
    if client is not None:
        await client.close()


def reset_openai_client() -> None:
    """Forget the client without closing it (tests switch event loops between cases)."""
    global _client, _lock
    _client = None
    _lock = None


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if "retry-after" in headers:
            return float(headers["retry-after"])
    except ValueError:
        return None
    return None


def _body_text(body: object) -> str:
    if isinstance(body, dict):
        return json.dumps(body)
    return str(body or "")


def translate_openai_error(exc: Exception) -> UpstreamError:
    """Map an ``openai`` exception to the project's error tree; the one place that knows both."""
    import openai

    if isinstance(exc, openai.APIConnectionError) and (unreachable := unreachable_reason(exc)):
        return UpstreamUnavailable(f"unreachable: {unreachable}", provider=PROVIDER)
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamUnavailable(f"timed out: {exc}", provider=PROVIDER)
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamUnavailable(f"connection failed: {exc}", provider=PROVIDER)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = _body_text(exc.body)
        detail = f"HTTP {status}: {exc.message}"
        if status == 402 or "insufficient_quota" in body:
            return OutOfCredits(detail, provider=PROVIDER, status=status)
        if status == 429:
            return RateLimited(detail, provider=PROVIDER, status=status, retry_after=_retry_after(exc))
        if status in (401, 403):
            return AuthenticationFailed(detail, provider=PROVIDER, status=status)
        if status == 404 or (status == 400 and "model" in body.lower() and "valid" in body.lower()):
            return ModelNotFound(detail, provider=PROVIDER, status=status)
        if status >= 500 or status in (408, 409):
            return UpstreamUnavailable(detail, provider=PROVIDER, status=status)
        return InvalidResponse(detail, provider=PROVIDER, status=status)
    if isinstance(exc, openai.APIError):
        return UpstreamUnavailable(f"stream error: {exc}", provider=PROVIDER)
    return InvalidResponse(f"{type(exc).__name__}: {exc}", provider=PROVIDER)


def strict_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Make a pydantic JSON schema acceptable to strict structured output.

    Every object gets ``additionalProperties: false`` and lists all its properties as required,
    which strict json_schema mode demands; defaults are dropped as the mode rejects them.
    """

    def visit(node: Any) -> Any:
        if isinstance(node, list):
            return [visit(item) for item in node]
        if not isinstance(node, dict):
            return node
        result: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("default", "title"):
                continue
            if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
                result[key] = {name: visit(sub) for name, sub in value.items()}
            else:
                result[key] = visit(value)
        if result.get("type") == "object" and "properties" in result:
            result["additionalProperties"] = False
            result["required"] = list(result["properties"])
        return result

    strict: dict[str, Any] = visit(schema)
    return strict


_response_formats: dict[tuple[str, int], tuple[dict[str, Any], dict[str, Any]]] = {}


def response_format_for(name: str, json_schema: dict[str, Any]) -> dict[str, Any]:
    """The ``response_format`` for a schema, built once per schema object (callers pass static ones)."""
    key = (name, id(json_schema))
    entry = _response_formats.get(key)
    if entry is None or entry[0] is not json_schema:
        strict = {
            "type": "json_schema",
            "json_schema": {"name": name, "strict": True, "schema": strict_json_schema(json_schema)},
        }
        entry = (json_schema, strict)
        _response_formats[key] = entry
    return entry[1]


def _has_image(messages: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(part, dict) and part.get("type") == "image_url"
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
    )


async def complete(
    *,
    model: str,
    messages: list[dict[str, Any]],
    json_schema: dict[str, Any] | None = None,
    schema_name: str = "answer",
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> TextCompletion:
    """One chat completion through OpenRouter's circuit breaker and line (connectors/resilience.py).

    Calls with an image part are the "vision" operation, with their own timeout.
    """
    operation = "vision" if _has_image(messages) else "text"
    timeout = _config.vision_timeout_seconds if _config is not None and operation == "vision" else None
    async with guard_for(PROVIDER).call(operation):
        return await _complete(
            model=model,
            messages=messages,
            json_schema=json_schema,
            schema_name=schema_name,
            temperature=temperature,
            max_tokens=max_tokens,
            request_timeout=timeout,
        )


async def _complete(
    *,
    model: str,
    messages: list[dict[str, Any]],
    json_schema: dict[str, Any] | None = None,
    schema_name: str = "answer",
    temperature: float | None = None,
    max_tokens: int | None = None,
    request_timeout: float | None = None,
) -> TextCompletion:
    """One chat completion; structured output when ``json_schema`` is given.

    Raises only ``UpstreamError`` subclasses. OpenRouter can answer HTTP 200 with an ``error``
    object and no choices: that becomes ``InvalidResponse`` (or the error it describes).
    """
    client = await get_openai_client()
    kwargs: dict[str, Any] = {"model": model, "messages": messages}
    if json_schema is not None:
        kwargs["response_format"] = response_format_for(schema_name, json_schema)
    if temperature is not None:
        kwargs["temperature"] = temperature
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    try:
        # The SDK's generic POST keeps its transport, retries, timeouts and error types, but skips
        # the per-request type transformation and response model construction, which profiling
        # showed to be most of the client-side CPU per call (bench/bench_story.py).
        if request_timeout is None:
            raw = await client.post("/chat/completions", body=kwargs, cast_to=bytes)
        else:
            raw = await client.post(
                "/chat/completions", body=kwargs, cast_to=bytes, options={"timeout": request_timeout}
            )
    except Exception as exc:  # every SDK failure is translated here, and only here
        raise translate_openai_error(exc) from exc
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise InvalidResponse(f"malformed JSON from the model API: {raw[:200]!r}", provider=PROVIDER) from exc
    if not isinstance(payload, dict):
        raise InvalidResponse("the model API answered with something other than an object", provider=PROVIDER)
    return _payload_to_text(payload, model)


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _payload_to_text(payload: dict[str, Any], model: str) -> TextCompletion:
    choices = payload.get("choices")
    if not choices or not isinstance(choices, list):
        error = _as_dict(payload.get("error"))
        code = error.get("code")
        message = error.get("message", "no choices")
        detail = f"HTTP 200 with error body: {code} {message}"
        if code == 402:
            raise OutOfCredits(detail, provider=PROVIDER, status=402)
        if code == 429:
            raise RateLimited(detail, provider=PROVIDER, status=429)
        if isinstance(code, int) and code >= 500:
            raise UpstreamUnavailable(detail, provider=PROVIDER, status=code)
        raise InvalidResponse(detail, provider=PROVIDER)
    choice = _as_dict(choices[0])
    message = _as_dict(choice.get("message"))
    finish_reason = choice.get("finish_reason")
    content = message.get("content")
    if finish_reason == "content_filter":
        raise ContentBlocked("finish_reason content_filter", provider=PROVIDER)
    if not content and message.get("refusal"):
        raise ContentBlocked(f"model refused: {message['refusal']}", provider=PROVIDER)
    if not content or not isinstance(content, str):
        raise InvalidResponse("empty message content", provider=PROVIDER)
    usage = _as_dict(payload.get("usage"))
    return TextCompletion(
        text=content,
        model=str(payload.get("model") or model),
        finish_reason=finish_reason,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )
