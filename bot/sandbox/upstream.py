"""The loopback HTTP plumbing shared by the sandbox's fake upstreams.

Both fakes need the same things: an aiohttp server on a free port, counters a benchmark in another
process reads (requests per route, accepted TCP connections, to show that a client reuses its pool),
and artificial latency. Memory stays bounded however long the sandbox runs: only the last few
requests are kept.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["LoopbackUpstream", "RecordedRequest", "ReplyShape", "json_response"]

#: Requests a long-running sandbox keeps for inspection; older ones only count.
RECENT_REQUESTS = 32


@dataclass
class RecordedRequest:
    """What a client sent."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    time: float
    route: str | None = None
    connection: int = 0
    body: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class ReplyShape:
    """How a normal answer should differ from the made-up default (all None: the default).

    ``content`` replaces the text, ``refusal`` answers with a refusal instead, ``finish_reason``
    ends the answer differently, ``max_items`` caps the first list of a structured answer.
    """

    content: str | None = None
    refusal: str | None = None
    finish_reason: str | None = None
    max_items: int | None = None


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON with Content-Type exactly ``application/json`` (no charset), like the real upstreams."""
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        content_type="application/json",
        headers=headers,
    )


class LoopbackUpstream:
    """Base class: an aiohttp server on 127.0.0.1 that counts what it serves."""

    #: Path prefix of the API on this server, e.g. "/api/v1"; ``/_stats`` also answers under it.
    root_path: str = ""

    def __init__(self, latency: float = 0.0, *, shutdown_timeout: float = 0.25) -> None:
        self.latency: float = latency
        self.shutdown_timeout: float = shutdown_timeout
        self.recent_requests: deque[RecordedRequest] = deque(maxlen=RECENT_REQUESTS)
        self.request_count: int = 0
        self.route_counts: Counter[str] = Counter()
        self.connections_accepted: int = 0
        #: Connections that carried at least one API request (``/_stats`` probes excluded).
        self.api_connections: int = 0
        self._conn_ids: dict[int, int] = {}
        self._conns_used: set[int] = set()
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
            self._conns_used.discard(self._conn_ids.pop(id(handler), 0))
            lost(handler, exc)

        # aiohttp's Server has no public hook; instance attributes shadow its methods.
        setattr(server, "connection_made", connection_made)  # noqa: B010
        setattr(server, "connection_lost", connection_lost)  # noqa: B010

    # -- request handling ----------------------------------------------------------------------------

    def error_body(self, code: int, message: str) -> dict[str, Any]:
        """The upstream's error JSON; subclasses override."""
        return {"error": {"code": code, "message": message}}

    def route_of(self, request: web.Request) -> str | None:
        """Name of the API route a request hits; subclasses override."""
        return None

    async def intercept(self, request: web.Request, route: str | None) -> web.StreamResponse | ReplyShape | None:
        """Called once a request is valid: an answer that replaces the normal one, or how to shape
        the normal one. The sandbox answers normally; tests override this to inject faults."""
        return None

    async def dispatch(self, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        """Produce the answer; subclasses override."""
        return json_response(self.error_body(404, "Not found"), 404)

    def record(self, recorded: RecordedRequest) -> None:
        """Count a request and keep it among the recent ones."""
        self.request_count += 1
        self.route_counts[recorded.route or "other"] += 1
        if recorded.connection and recorded.connection not in self._conns_used:
            self._conns_used.add(recorded.connection)
            self.api_connections += 1
        self.recent_requests.append(recorded)

    def stats(self) -> dict[str, Any]:
        """Counters a benchmark in another process reads through ``GET /_stats``."""
        return {
            "requests": self.request_count,
            "connections": self.connections_accepted,
            "api_connections": self.api_connections,
            "routes": dict(self.route_counts),
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
        self.record(recorded)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        return await self.dispatch(request, recorded)
