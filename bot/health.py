"""The operations endpoints on HEALTH_HOST:HEALTH_PORT (an aiohttp server; off when the port is unset).

* ``GET /healthz``: the process is alive (always 200 while the event loop runs).
* ``GET /readyz``: 200 when every expected platform has registered its sender (and, when the sender
  offers ``is_ready``, says so) and the database answers ``SELECT 1``; 503 otherwise. Circuit states
  are reported but do not fail readiness: an upstream outage is shared by every instance, and the bot
  still answers each command clearly, so taking it out of rotation would only make things worse.
* ``GET /metrics``: Prometheus text (services/metrics.py); the pending-job gauge is read at scrape time.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from bot.runtime import Runtime
from connectors import resilience
from connectors.database import get_engine
from services.metrics import JOBS_PENDING, render_metrics

log = logging.getLogger(__name__)

DATABASE_CHECK_SECONDS = 3.0


class HealthServer:
    def __init__(self, runtime: Runtime, *, expected_platforms: Iterable[str] = ()) -> None:
        self.runtime = runtime
        self.expected_platforms = sorted(set(expected_platforms))
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen (port 0 = a free one) and return the port."""
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        log.info("health and metrics on http://%s:%s (/healthz, /readyz, /metrics)", host, self.port)
        return self.port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _platforms(self) -> dict[str, bool]:
        states: dict[str, bool] = {}
        for platform in self.expected_platforms:
            sender = self.runtime.senders.get(platform)
            ready = sender is not None
            flag: Any = getattr(sender, "is_ready", None)
            if ready and flag is not None:
                try:
                    value = flag() if callable(flag) else flag
                    ready = bool(await value) if inspect.isawaitable(value) else bool(value)
                except Exception:
                    log.warning("readiness check of %s failed", platform, exc_info=True)
                    ready = False
            states[platform] = ready
        return states

    async def _database(self) -> bool:
        try:
            async with asyncio.timeout(DATABASE_CHECK_SECONDS):
                async with get_engine().connect() as connection:
                    await connection.execute(text("SELECT 1"))
            return True
        except Exception as exc:
            log.warning("readiness: the database is not reachable: %s", exc)
            return False

    async def readyz(self, request: web.Request) -> web.Response:
        platforms = await self._platforms()
        database = await self._database()
        circuits = {
            provider: {
                "state": str(guard.breaker.state),
                "retry_in_seconds": round(guard.breaker.retry_in(), 1),
                "in_flight": guard.line.in_flight,
                "waiting": guard.line.waiting,
            }
            for provider, guard in sorted(resilience.guards().items())
        }
        ready = database and all(platforms.values())
        body = {"ready": ready, "platforms": platforms, "database": database, "circuits": circuits}
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        try:
            JOBS_PENDING.set(len(await self.runtime.jobs.unfinished_job_ids(include_leased=True)))
        except Exception:
            log.warning("could not count pending jobs for /metrics", exc_info=True)
        return web.Response(body=render_metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def start_health_server(runtime: Runtime, expected_platforms: Iterable[str] = ()) -> HealthServer | None:
    """Start the server when HEALTH_PORT is set; it is closed with the runtime (first, at shutdown)."""
    settings = runtime.settings
    if not settings.health_port:
        return None
    server = HealthServer(runtime, expected_platforms=expected_platforms)
    await server.start(settings.health_host, settings.health_port)
    runtime.stack.push_async_callback(server.stop)
    return server
