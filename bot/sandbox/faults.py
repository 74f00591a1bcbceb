"""Fault injection and the loopback HTTP plumbing shared by the sandbox fakes.

Both fakes need the same things: an aiohttp server on a free port, a record of every request, an
accurate count of accepted TCP connections (to show that a client reuses its pool), artificial
latency, and a FIFO queue of faults that replace the normal answer. They live here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["FakeUpstream", "Fault", "FaultKind", "RecordedRequest", "json_response"]

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


@dataclass
class RecordedRequest:
    """What a client sent, kept so tests can assert on headers, bodies and retries."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    time: float
    route: str | None = None
    connection: int = 0
    body: bytes = field(default=b"", repr=False)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON with Content-Type exactly ``application/json`` (no charset), like the real upstreams."""
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        content_type="application/json",
        headers=headers,
    )


def _format_seconds(value: float) -> str:
    """Retry-After as an integer when whole, else a float (the openai SDK accepts both)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class FakeUpstream:
    """Base class: an aiohttp server on 127.0.0.1 that records requests and applies faults."""

    #: Path prefix of the API on this server, e.g. "/api/v1"; ``/_stats`` also answers under it.
    root_path: str = ""

    def __init__(self, latency: float = 0.0, *, shutdown_timeout: float = 0.25) -> None:
        self.latency: float = latency
        self.shutdown_timeout: float = shutdown_timeout
        self.requests: list[RecordedRequest] = []
        self.connections_accepted: int = 0
        self._faults: deque[tuple[str | None, Fault]] = deque()
        self._conn_ids: dict[int, int] = {}
        self._runner: web.AppRunner | None = None
        self._origin: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        """``http://host:port`` of the running server."""
        if self._origin is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._origin

    @property
    def base_url(self) -> str:
        """What a client passes as its base URL."""
        return self.origin + self.root_path

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = a free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.shutdown_timeout,
            handler_cancellation=True,
        )
        await runner.setup()
        self._hook_connections(runner)
        site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._origin = f"http://{host}:{site.port}"
        return self.base_url

    async def stop(self) -> None:
        """Close the listener and every connection; in-flight handlers are cancelled quickly."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._on_stopped()

    def _on_stopped(self) -> None:
        """Hook for subclasses that keep process-wide state."""

    def _hook_connections(self, runner: web.AppRunner) -> None:
        """Count accepted TCP connections by wrapping the low-level server's per-connection hooks."""
        server = runner.server
        assert server is not None
        made = server.connection_made
        lost = server.connection_lost

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            self.connections_accepted += 1
            self._conn_ids[id(handler)] = self.connections_accepted
            made(handler, transport)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            self._conn_ids.pop(id(handler), None)
            lost(handler, exc)

        # aiohttp's Server has no public hook; instance attributes shadow its methods.
        setattr(server, "connection_made", connection_made)  # noqa: B010
        setattr(server, "connection_lost", connection_lost)  # noqa: B010

    # -- faults ------------------------------------------------------------------------------------

    def inject(self, *faults: Fault, route: str | None = None) -> None:
        """Queue faults (FIFO); each later request on ``route`` (None = any) consumes one."""
        for fault in faults:
            self._faults.append((route, fault))

    def clear_faults(self) -> None:
        """Drop faults that were never consumed."""
        self._faults.clear()

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

    async def take_route_fault(
        self, request: web.Request, route: str | None
    ) -> tuple[web.StreamResponse | None, Fault | None]:
        """The next fault for ``route``. A transport fault is carried out here and its answer comes
        back first (None after a timeout's delay: the normal answer follows); any other fault comes
        back second, for the route to shape its own answer with."""
        fault = self.take_fault(route)
        if fault is None or not fault.is_transport:
            return None, fault
        return await self.apply_transport_fault(request, fault), None

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

    # -- request handling ----------------------------------------------------------------------------

    def error_body(self, code: int, message: str) -> dict[str, Any]:
        """The upstream's error JSON; subclasses override."""
        return {"error": {"code": code, "message": message}}

    def route_of(self, request: web.Request) -> str | None:
        """Name of the API route a request hits (for fault scoping); subclasses override."""
        return None

    async def dispatch(self, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        """Produce the answer; subclasses override."""
        return json_response(self.error_body(404, "Not found"), 404)

    def stats(self) -> dict[str, Any]:
        """Counters a benchmark in another process reads through ``GET /_stats``."""
        used = {r.connection for r in self.requests if r.connection}
        routes: dict[str, int] = {}
        for recorded in self.requests:
            routes[recorded.route or "other"] = routes.get(recorded.route or "other", 0) + 1
        return {
            "requests": len(self.requests),
            "connections": self.connections_accepted,
            "api_connections": len(used),
            "routes": routes,
        }

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and request.path in ("/_stats", self.root_path + "/_stats"):
            return json_response(self.stats())
        body = await request.read()
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            json=parsed,
            time=time.time(),
            route=self.route_of(request),
            connection=self._conn_ids.get(id(request.protocol), 0),
            body=body,
        )
        self.requests.append(recorded)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        return await self.dispatch(request, recorded)
