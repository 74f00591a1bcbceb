"""/healthz, /readyz and /metrics on a real runtime (sandbox-free: the fakes are the upstreams)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.core.context import ChatRef, Invocation, UserRef
from bot.core.replies import Reply
from bot.health import HealthServer, start_health_server
from bot.runtime import Runtime, start_runtime
from connectors import resilience
from connectors.database import configure_database
from connectors.settings import load_settings
from services.metrics import record_spend
from tests.bot.helpers import RecordingResponder
from tests.fakes import FakeGenAI, FakeOpenRouter, Fault


@pytest.fixture
async def runtime(tmp_path: Path, fake_openrouter: FakeOpenRouter, fake_genai: FakeGenAI) -> AsyncIterator[Runtime]:
    values: dict[str, Any] = {
        "openrouter_api_key": "test-openrouter-key",
        "openrouter_base_url": fake_openrouter.base_url,
        "google_api_key": "test-google-key",
        "genai_base_url": fake_genai.base_url,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'health.sqlite3'}",
        "media_dir": tmp_path / "media",
        "text_max_retries": 0,
        "circuit_failure_threshold": 2,
    }
    runtime = await start_runtime(load_settings(_env_file=None, **values))
    yield runtime
    await runtime.close()


class ReadySender:
    def __init__(self, ready: bool) -> None:
        self.ready = ready

    def is_ready(self) -> bool:
        return self.ready

    async def send(self, chat: ChatRef, reply: Reply) -> None:
        return None


async def serve(runtime: Runtime, platforms: list[str]) -> tuple[HealthServer, str]:
    server = HealthServer(runtime, expected_platforms=platforms)
    port = await server.start("127.0.0.1", 0)
    runtime.stack.push_async_callback(server.stop)
    return server, f"http://127.0.0.1:{port}"


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


def command(name: str, text: str) -> Invocation:
    return Invocation(
        command=name, user=UserRef(platform="test", id="1"), chat=ChatRef(platform="test", id="1"), text=text
    )


async def test_healthz_is_alive(runtime: Runtime) -> None:
    _, base = await serve(runtime, [])
    status, _, body = await get(f"{base}/healthz")
    assert status == 200 and "alive" in body


async def test_readyz_waits_for_every_platform(runtime: Runtime) -> None:
    _, base = await serve(runtime, ["telegram", "discord"])
    status, body = await get_json(f"{base}/readyz")
    assert status == 503
    assert body["platforms"] == {"discord": False, "telegram": False}
    assert body["database"] is True

    runtime.senders["telegram"] = ReadySender(True)
    runtime.senders["discord"] = ReadySender(False)  # registered, but says it is not connected
    status, body = await get_json(f"{base}/readyz")
    assert status == 503 and body["platforms"] == {"discord": False, "telegram": True}

    runtime.senders["discord"] = ReadySender(True)
    status, body = await get_json(f"{base}/readyz")
    assert status == 200 and body["ready"] is True
    assert body["circuits"]["openrouter"]["state"] == "closed"
    assert body["circuits"]["google"]["state"] == "closed"


async def test_readyz_fails_when_the_database_is_unreachable(runtime: Runtime, tmp_path: Path) -> None:
    _, base = await serve(runtime, [])
    configure_database(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'no.sqlite3'}")
    status, body = await get_json(f"{base}/readyz")
    assert status == 503 and body["database"] is False


async def test_readyz_reports_an_open_circuit_without_failing(
    runtime: Runtime, fake_openrouter: FakeOpenRouter
) -> None:
    _, base = await serve(runtime, [])
    fake_openrouter.inject(Fault.status(500), Fault.status(500))
    for _ in range(3):
        await runtime.core.handle(command("write", "a caption about ramen"), RecordingResponder())
    assert len(fake_openrouter.chat_requests) == 2
    status, body = await get_json(f"{base}/readyz")
    assert status == 200
    assert body["circuits"]["openrouter"]["state"] == "open"
    assert body["circuits"]["openrouter"]["retry_in_seconds"] > 0


async def test_metrics_count_commands_upstream_calls_circuits_jobs_and_spend(
    runtime: Runtime, fake_openrouter: FakeOpenRouter
) -> None:
    _, base = await serve(runtime, [])
    fake_openrouter.inject(Fault.status(503))
    await runtime.core.handle(command("write", "a caption about ramen"), RecordingResponder())
    await runtime.core.handle(command("write", "a caption about tea"), RecordingResponder())
    await runtime.core.handle(command("story", ""), RecordingResponder())  # invalid: never reaches a handler
    record_spend("openrouter", 0.25)

    status, content_type, body = await get(f"{base}/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    lines = body.splitlines()

    def value(prefix: str) -> float:
        [line] = [line for line in lines if line.startswith(prefix + " ")]
        return float(line.rsplit(" ", 1)[1])

    assert value('reelwright_commands_total{command="write",outcome="ok"}') >= 1
    assert value('reelwright_commands_total{command="write",outcome="upstream_error"}') >= 1
    assert value('reelwright_upstream_calls_total{operation="text",outcome="ok",provider="openrouter"}') >= 1
    assert (
        value(
            'reelwright_upstream_errors_total{error="UpstreamUnavailable",operation="text",provider="openrouter",status="503"}'
        )
        >= 1
    )
    assert value('reelwright_upstream_call_seconds_count{operation="text",provider="openrouter"}') >= 2
    assert value('reelwright_circuit_state{provider="openrouter"}') == 0
    assert value('reelwright_upstream_in_flight{provider="google"}') == 0
    assert value("reelwright_jobs_pending") == 0
    assert value('reelwright_spend_usd_total{provider="openrouter"}') >= 0.25
    assert "reelwright_command_seconds_bucket" in body


async def test_the_server_is_off_without_a_port_and_closed_with_the_runtime(runtime: Runtime) -> None:
    assert await start_health_server(runtime) is None
    runtime.settings = runtime.settings.model_copy(update={"health_port": 0})
    assert await start_health_server(runtime) is None
    assert set(resilience.guards()) >= {"openrouter", "google"}

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runtime.settings = runtime.settings.model_copy(update={"health_port": port})
    server = await start_health_server(runtime, ["console"])
    assert server is not None and server.port == port
    status, _, _ = await get(f"http://127.0.0.1:{port}/healthz")
    assert status == 200
    await runtime.close()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(f"http://127.0.0.1:{port}/healthz")
