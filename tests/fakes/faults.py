"""What only tests add to a loopback upstream: the full request history and fault injection.

Every fake a test drives (the AI upstreams, the Bot API, Discord) builds on ``InstrumentedUpstream``,
so faults are queued the same way everywhere: ``fake.inject(Fault.status(503), route="chat")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from bot.sandbox.upstream import LoopbackUpstream, RecordedRequest, ReplyShape, json_response

__all__ = ["Fault", "FaultKind", "InstrumentedUpstream", "RecordedRequest"]

FaultKind = Literal[
    "status",
    "timeout",
    "reset",
    "malformed_json",
    "error_body_200",
    "content",
    "finish_reason",
    "refusal",
    "lazy",
]

#: The faults a fake answers by itself; the rest change the content of an otherwise normal answer.
TRANSPORT_FAULTS: frozenset[str] = frozenset({"status", "timeout", "reset", "malformed_json", "error_body_200"})

MALFORMED_JSON_BODY: bytes = b'{"choices": ['


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour; build it with the classmethods, queue it with ``fake.inject``."""

    kind: FaultKind
    code: int = 0
    message: str = ""
    retry_after: float | None = None
    body: Any = None
    seconds: float = 0.0
    text: str | None = None
    items: int = 0

    @classmethod
    def status(
        cls,
        code: int,
        message: str = "Sandbox: injected upstream error.",
        retry_after: float | None = None,
        body: Any = None,
    ) -> Fault:
        """HTTP ``code`` with the upstream's error JSON (or ``body`` verbatim) and optional Retry-After."""
        return cls(kind="status", code=code, message=message, retry_after=retry_after, body=body)

    @classmethod
    def timeout(cls, seconds: float) -> Fault:
        """Wait ``seconds`` before answering normally, so a client with a shorter timeout gives up."""
        return cls(kind="timeout", seconds=seconds)

    @classmethod
    def reset(cls) -> Fault:
        """Abort the TCP connection without any response."""
        return cls(kind="reset")

    @classmethod
    def malformed_json(cls) -> Fault:
        """HTTP 200, ``application/json``, body cut off mid-document."""
        return cls(kind="malformed_json")

    @classmethod
    def error_body_200(cls, code: int = 502, message: str = "upstream error") -> Fault:
        """HTTP 200 whose body is an error object and nothing else (OpenRouter really does this)."""
        return cls(kind="error_body_200", code=code, message=message)

    @classmethod
    def content(cls, text: str) -> Fault:
        """A normal completion whose message content is exactly ``text``."""
        return cls(kind="content", text=text)

    @classmethod
    def finish_reason(cls, reason: str) -> Fault:
        """A normal completion that ends with ``reason`` ("length", "content_filter", ...)."""
        return cls(kind="finish_reason", text=reason)

    @classmethod
    def refusal(cls, text: str) -> Fault:
        """A completion whose message has ``content: null`` and ``refusal: text``."""
        return cls(kind="refusal", text=text)

    @classmethod
    def lazy(cls, items: int) -> Fault:
        """A lazy model: a normal structured answer whose list has at most ``items`` entries,
        however many the prompt asked for."""
        return cls(kind="lazy", items=items)

    @property
    def is_transport(self) -> bool:
        """True when the fake answers the fault itself instead of altering a normal answer."""
        return self.kind in TRANSPORT_FAULTS

    def reply_shape(self) -> ReplyShape:
        """How a content fault alters the normal answer."""
        if self.kind == "content":
            return ReplyShape(content=self.text or "")
        if self.kind == "finish_reason":
            return ReplyShape(finish_reason=self.text or "stop")
        if self.kind == "refusal":
            return ReplyShape(refusal=self.text or "")
        if self.kind == "lazy":
            return ReplyShape(max_items=self.items)
        return ReplyShape()


def _format_seconds(value: float) -> str:
    """Retry-After as an integer when whole, else a float (the openai SDK accepts both)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class InstrumentedUpstream(LoopbackUpstream):
    """A loopback upstream that keeps every request (tests assert on headers, bodies and retries)
    and answers queued faults instead of its normal replies."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[RecordedRequest] = []
        self._faults: deque[tuple[str | None, Fault]] = deque()

    def record(self, recorded: RecordedRequest) -> None:
        """Count the request and keep it for the whole test."""
        super().record(recorded)
        self.requests.append(recorded)

    def requests_on(self, route: str) -> list[RecordedRequest]:
        """Requests that hit ``route``, oldest first."""
        return [r for r in self.requests if r.route == route]

    # -- faults ------------------------------------------------------------------------------------

    def inject(self, *faults: Fault, route: str | None = None) -> None:
        """Queue faults (FIFO); each later request on ``route`` (None = any) consumes one."""
        for fault in faults:
            self._faults.append((route, fault))

    @property
    def pending_faults(self) -> list[Fault]:
        """Faults still waiting for a request."""
        return [fault for _, fault in self._faults]

    def take_fault(self, route: str | None) -> Fault | None:
        """Pop the first queued fault whose scope matches ``route``."""
        for index, (scope, fault) in enumerate(self._faults):
            if scope is None or scope == route:
                del self._faults[index]
                return fault
        return None

    async def intercept(self, request: web.Request, route: str | None) -> web.StreamResponse | ReplyShape | None:
        """The next fault for ``route``: a transport fault is answered here (None after a timeout's
        delay: the normal answer follows); a content fault shapes the normal answer."""
        fault = self.take_fault(route)
        if fault is None:
            return None
        if fault.is_transport:
            return await self.apply_transport_fault(request, fault)
        return fault.reply_shape()

    async def apply_transport_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        """Answer a transport fault; None means "carry on with the normal answer"."""
        if fault.kind == "timeout":
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind == "status":
            headers = {"Retry-After": _format_seconds(fault.retry_after)} if fault.retry_after else None
            if fault.body is None:
                return json_response(self.error_body(fault.code, fault.message), fault.code, headers)
            raw = fault.body
            if isinstance(raw, str):
                raw = raw.encode()
            if not isinstance(raw, bytes):
                raw = json.dumps(raw).encode()
            return web.Response(status=fault.code, body=raw, content_type="application/json", headers=headers)
        if fault.kind == "malformed_json":
            return web.Response(status=200, body=MALFORMED_JSON_BODY, content_type="application/json")
        if fault.kind == "error_body_200":
            return json_response(self.error_body(fault.code, fault.message), 200)
        if fault.kind == "reset":
            transport = request.transport
            if transport is not None:
                transport.abort()
            # Let the abort reach the socket; handler cancellation then ends this task.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)
            raise asyncio.CancelledError
        return None
