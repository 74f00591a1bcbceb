"""A loopback OpenRouter (OpenAI-compatible chat completions) for the sandbox, benchmarks and tests.

It speaks the wire format the openai SDK expects and invents plausible content that satisfies a
requested JSON schema.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from aiohttp import web

from bot.sandbox.upstream import LoopbackUpstream, RecordedRequest, ReplyShape, json_response

__all__ = ["SandboxOpenRouter", "SchemaSynthesizer", "last_user_text", "synthesize_json", "topic_words"]

_EXACTLY = re.compile(r"exactly\s+(\d+)", re.IGNORECASE)
_TOPIC = re.compile(r"(?:\babout\b|:)\s*(\S.*)", re.IGNORECASE | re.DOTALL)
_WORD_STRIP = "\"'`“”‘’()[]{}<>*_#,.;:!?"
_MAX_STRING_WORDS = 12
_DEFAULT_ITEMS = 3


def _text_of(content: Any) -> str:
    """Text of a message content that is either a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", None) and "text" in part
        ]
        return " ".join(t for t in texts if t)
    return ""


def last_user_text(messages: Any) -> str:
    """Text of the last ``user`` message (the prompt the bot built), or "" when there is none."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def topic_words(prompt: str, limit: int = 5) -> list[str]:
    """Up to ``limit`` words naming the subject: after "about" or a colon when present, else the start."""
    match = _TOPIC.search(prompt)
    text = match.group(1) if match else prompt
    text = re.split(r"(?<=[.!?])\s|\n", text.strip(), maxsplit=1)[0]
    words = [w.strip(_WORD_STRIP) for w in text.split()]
    return [w for w in words if w][:limit] or ["a", "sandbox", "story"]


def _count_words(text: str) -> int:
    return len(text.split())


class SchemaSynthesizer:
    """Builds a JSON document that validates against a (pydantic/OpenAI-style) JSON schema."""

    def __init__(self, root: dict[str, Any], prompt: str, max_items: int | None = None) -> None:
        self.root = root
        self.topic_words = topic_words(prompt)
        match = _EXACTLY.search(prompt)
        self.exact_count: int | None = int(match.group(1)) if match else None
        #: A lazy model's ceiling on the first list, whatever the prompt or the schema asks.
        self.max_items = max_items
        self._first_array_seen = False
        self._counters: dict[str, int] = {}

    def build(self) -> Any:
        """The document for the root schema."""
        return self.value(self.root, "value")

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema and seen < 32:
            ref = str(schema["$ref"])
            target: Any = self.root
            if not ref.startswith("#"):
                raise ValueError(f"only local $ref is supported, got {ref!r}")
            for part in ref.lstrip("#").split("/"):
                if part:
                    target = target[part.replace("~1", "/").replace("~0", "~")]
            merged = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **merged}
            seen += 1
        if "allOf" in schema:
            merged_all: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for sub in schema["allOf"]:
                sub_resolved = self._resolve(sub) if isinstance(sub, dict) else {}
                for key, val in sub_resolved.items():
                    if key == "properties" and isinstance(merged_all.get("properties"), dict):
                        merged_all["properties"] = {**merged_all["properties"], **val}
                    else:
                        merged_all.setdefault(key, val)
            schema = merged_all
        return schema

    @staticmethod
    def _type_of(schema: dict[str, Any]) -> str | None:
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [str(k).lower() for k in kind if str(k).lower() != "null"]
            return kinds[0] if kinds else "null"
        if isinstance(kind, str):
            return kind.lower()
        if "properties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return None

    def value(self, schema: Any, name: str, index: int = 0) -> Any:
        """A value for ``schema`` found under property ``name`` (``index`` = position in an array)."""
        if not isinstance(schema, dict):
            return self._string({}, name)
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                chosen = next(
                    (o for o in options if not (isinstance(o, dict) and self._resolve(o).get("type") == "null")),
                    options[0],
                )
                rest = {k: v for k, v in schema.items() if k != key}
                return self.value({**rest, **chosen} if isinstance(chosen, dict) else chosen, name, index)
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return self._enum(enum, index)
        kind = self._type_of(schema)
        if kind == "object":
            return self._object(schema, index)
        if kind == "array":
            return self._array(schema, name)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self._string(schema, name)

    @staticmethod
    def _enum(enum: list[Any], index: int) -> Any:
        values = [v for v in enum if v is not None] or enum
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return values[len(values) // 2]
        return values[index % len(values)]

    def _object(self, schema: dict[str, Any], index: int) -> dict[str, Any]:
        """All properties, optional ones included; ``index`` varies string enums across array items."""
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {key: self.value(sub, key, index) for key, sub in properties.items()}

    def _array(self, schema: dict[str, Any], name: str) -> list[Any]:
        first = not self._first_array_seen
        self._first_array_seen = True
        min_items = schema.get("minItems")
        max_items = schema.get("maxItems")
        if isinstance(min_items, int):
            count = min_items
        elif first and self.exact_count is not None:
            count = self.exact_count
        else:
            count = _DEFAULT_ITEMS
        if isinstance(max_items, int):
            count = min(count, max_items)
        if first and self.max_items is not None:
            count = min(count, self.max_items)
        count = max(count, 0)
        singular = name[:-1] if name.endswith("s") and len(name) > 3 else name
        prefix = schema.get("prefixItems")
        items = schema.get("items", {})
        out: list[Any] = []
        for i in range(count):
            if isinstance(prefix, list) and i < len(prefix):
                out.append(self.value(prefix[i], singular, i))
            else:
                out.append(self.value(items if isinstance(items, dict) else {}, singular, i))
        return out

    @staticmethod
    def _bounds(schema: dict[str, Any], step: float) -> tuple[float | None, float | None]:
        low: float | None = schema.get("minimum")
        high: float | None = schema.get("maximum")
        ex_low = schema.get("exclusiveMinimum")
        ex_high = schema.get("exclusiveMaximum")
        if isinstance(ex_low, int | float) and not isinstance(ex_low, bool):
            low = ex_low + step if low is None else max(low, ex_low + step)
        if isinstance(ex_high, int | float) and not isinstance(ex_high, bool):
            high = ex_high - step if high is None else min(high, ex_high - step)
        return low, high

    def _integer(self, schema: dict[str, Any]) -> int:
        low, high = self._bounds(schema, 1)
        if low is not None and high is not None:
            return int((int(low) + int(high)) // 2)
        value = 1
        if low is not None:
            value = max(value, int(low))
        if high is not None:
            value = min(value, int(high))
        multiple = schema.get("multipleOf")
        if isinstance(multiple, int) and multiple > 0:
            value = (value // multiple) * multiple
            if low is not None and value < low:
                value += multiple
        return value

    def _number(self, schema: dict[str, Any]) -> float:
        low, high = self._bounds(schema, 1e-6)
        if low is not None and high is not None:
            return (float(low) + float(high)) / 2
        value = 0.5
        if low is not None:
            value = max(value, float(low))
        if high is not None:
            value = min(value, float(high))
        return value

    def _string(self, schema: dict[str, Any], name: str) -> str:
        self._counters[name] = self._counters.get(name, 0) + 1
        n = self._counters[name]
        fmt = schema.get("format")
        if fmt == "date-time":
            text = "2025-01-01T00:00:00Z"
        elif fmt == "date":
            text = "2025-01-01"
        elif fmt == "time":
            text = "12:00:00"
        elif fmt in ("uri", "url"):
            text = f"https://example.invalid/sandbox/{name}/{n}"
        elif fmt == "email":
            text = f"sandbox{n}@example.invalid"
        elif fmt == "uuid":
            text = str(uuid.UUID(int=n))
        else:
            label = name.replace("_", " ").replace("-", " ").strip() or "text"
            words = f"Sandbox {label} {n}:".split() + self.topic_words
            text = " ".join(words[:_MAX_STRING_WORDS])
        max_len = schema.get("maxLength")
        min_len = schema.get("minLength")
        if isinstance(max_len, int) and len(text) > max_len:
            text = text[:max_len].rstrip() if max_len > 0 else ""
            if isinstance(min_len, int) and len(text) < min_len:
                text = text.ljust(min_len, "x")
        if isinstance(min_len, int) and len(text) < min_len:
            text = text + " sandbox" * ((min_len - len(text)) // 8 + 1)
            if isinstance(max_len, int):
                text = text[:max_len]
        return text


def synthesize_json(schema: dict[str, Any], prompt: str, max_items: int | None = None) -> Any:
    """A document valid against ``schema``, with strings built from the words of ``prompt``;
    ``max_items`` caps its first list (a lazy model)."""
    return SchemaSynthesizer(schema, prompt, max_items).build()


class SandboxOpenRouter(LoopbackUpstream):
    """OpenRouter's ``/api/v1/chat/completions`` on a loopback port.

    Attributes a caller may change at run time: ``latency``, ``known_models`` (None accepts any model).
    """

    root_path = "/api/v1"

    def __init__(
        self,
        latency: float = 0.0,
        *,
        known_models: set[str] | None = None,
        shutdown_timeout: float = 0.25,
    ) -> None:
        super().__init__(latency, shutdown_timeout=shutdown_timeout)
        self.known_models: set[str] | None = known_models

    def error_body(self, code: int, message: str) -> dict[str, Any]:
        """OpenRouter's error shape."""
        return {"error": {"code": code, "message": message, "metadata": {}}}

    def route_of(self, request: web.Request) -> str | None:
        """Route name: "chat" or "models"; None for anything else."""
        if request.path == f"{self.root_path}/chat/completions":
            return "chat"
        if request.path == f"{self.root_path}/models":
            return "models"
        return None

    async def dispatch(self, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        """Validate like OpenRouter, then answer (shaped by ``intercept``)."""
        route = recorded.route
        if route == "models" and request.method == "GET":
            ids = sorted(self.known_models or {"openrouter/sandbox"})
            return json_response({"data": [{"id": m, "name": m} for m in ids]})
        if route != "chat" or request.method != "POST":
            return json_response(self.error_body(404, f"Not Found: {request.method} {request.path}"), 404)
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return json_response(self.error_body(401, "No auth credentials found"), 401)
        body = recorded.json
        if not isinstance(body, dict):
            return json_response(self.error_body(400, "Invalid JSON body"), 400)
        model = str(body.get("model", ""))
        if not model or (self.known_models is not None and model not in self.known_models):
            return json_response(self.error_body(400, f"{model} is not a valid model ID"), 400)
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return json_response(self.error_body(400, "messages: Input required"), 400)

        shape = await self.intercept(request, route)
        if isinstance(shape, web.StreamResponse):
            return shape
        shape = shape or ReplyShape()
        content: str | None
        refusal: str | None = None
        if shape.refusal is not None:
            content, refusal = None, shape.refusal
        elif shape.content is not None:
            content = shape.content
        elif shape.max_items is not None:
            content = self.synthesize(body, max_items=shape.max_items)
        else:
            content = self.reply_text(body)
        finish_reason = shape.finish_reason or "stop"

        if body.get("stream"):
            return await self._stream(request, body, content, refusal, finish_reason)
        return json_response(self._completion(body, content, refusal, finish_reason))

    def reply_text(self, body: dict[str, Any]) -> str:
        """The content of a normal answer to ``body``."""
        return self.synthesize(body)

    @staticmethod
    def synthesize(body: dict[str, Any], max_items: int | None = None) -> str:
        """Invent content that honours ``response_format``; ``max_items`` caps its first list."""
        prompt = last_user_text(body.get("messages"))
        response_format = body.get("response_format")
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind == "json_schema" and isinstance(response_format, dict):
            spec = response_format.get("json_schema") or {}
            schema = spec.get("schema") if isinstance(spec, dict) else None
            document = synthesize_json(schema if isinstance(schema, dict) else {}, prompt, max_items)
            return json.dumps(document, ensure_ascii=False)
        words = prompt.split()[:12]
        if kind == "json_object":
            return json.dumps({"text": "Sandbox reply: " + " ".join(words)}, ensure_ascii=False)
        return "Sandbox reply: " + " ".join(words)

    @staticmethod
    def _usage(body: dict[str, Any], content: str | None) -> dict[str, int]:
        messages = body.get("messages") or []
        prompt_tokens = sum(_count_words(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))
        completion_tokens = _count_words(content or "")
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def _completion(
        self, body: dict[str, Any], content: str | None, refusal: str | None, finish_reason: str
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if refusal is not None:
            message["refusal"] = refusal
        return {
            "id": f"gen-sandbox-{uuid.uuid4().hex[:24]}",
            "provider": "Sandbox",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "logprobs": None,
                    "message": message,
                    "finish_reason": finish_reason,
                    "native_finish_reason": finish_reason,
                }
            ],
            "usage": self._usage(body, content),
        }

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        content: str | None,
        refusal: str | None,
        finish_reason: str,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
        await response.prepare(request)
        await response.write(b": OPENROUTER PROCESSING\n\n")
        base = {
            "id": f"gen-sandbox-{uuid.uuid4().hex[:24]}",
            "provider": "Sandbox",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model"),
        }

        async def send(delta: dict[str, Any], finish: str | None, usage: dict[str, int] | None = None) -> None:
            chunk: dict[str, Any] = {
                **base,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if usage is not None:
                chunk["usage"] = usage
            await response.write(b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n")

        if refusal is not None:
            await send({"role": "assistant", "content": None, "refusal": refusal}, None)
        else:
            words = (content or "").split(" ")
            pieces = [" ".join(words[i : i + 3]) for i in range(0, len(words), 3)]
            for i, piece in enumerate(pieces):
                text = piece if i == 0 else " " + piece
                delta: dict[str, Any] = {"content": text}
                if i == 0:
                    delta["role"] = "assistant"
                await send(delta, None)
        await send({}, finish_reason, self._usage(body, content))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
