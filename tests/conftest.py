"""Shared fixtures: loopback-only networking, the AI fakes, and connectors configured against them."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from connectors import genai_connector, openai_connector
from connectors.genai_connector import GenAIConfig
from connectors.openai_connector import OpenRouterConfig
from services.config import ServiceConfig, configure_services
from tests.fakes import FakeGenAI, FakeOpenRouter

os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"
for _proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_proxy, None)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


class NonLoopbackConnection(ConnectionRefusedError):
    """A test tried to reach beyond this machine."""


def _is_loopback(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if not _is_loopback(address):
        raise NonLoopbackConnection(f"tests may only connect to loopback, not {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if not _is_loopback(address):
        raise NonLoopbackConnection(f"tests may only connect to loopback, not {address!r}")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and not _is_loopback((name, 0)):
        raise NonLoopbackConnection(f"tests may only resolve loopback names, not {name!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Refuse every connection to a non-loopback address, so no test can spend real money."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)
    yield


@pytest.fixture
async def fake_openrouter() -> AsyncIterator[FakeOpenRouter]:
    fake = FakeOpenRouter()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def fake_genai() -> AsyncIterator[FakeGenAI]:
    fake = FakeGenAI()
    await fake.start()
    yield fake
    await fake.stop()


def openrouter_config(fake: FakeOpenRouter, **overrides: Any) -> OpenRouterConfig:
    values: dict[str, Any] = {
        "api_key": "test-openrouter-key",
        "base_url": fake.base_url,
        "timeout_seconds": 5.0,
        "max_retries": 0,
        "site_url": "https://reelwright.test",
        "app_name": "Reelwright tests",
    }
    values.update(overrides)
    return OpenRouterConfig(**values)


def genai_config(fake: FakeGenAI, **overrides: Any) -> GenAIConfig:
    values: dict[str, Any] = {
        "api_key": "test-google-key",
        "base_url": fake.base_url,
        "enterprise": False,
        "timeout_seconds": 5.0,
        "retry_attempts": 1,
        "retry_initial_delay": 0.01,
        "retry_max_delay": 0.05,
    }
    values.update(overrides)
    return GenAIConfig(**values)


TEST_SERVICE_CONFIG = ServiceConfig(
    video_poll_initial_seconds=0.01,
    video_poll_max_seconds=0.05,
    video_deadline_seconds=30.0,
)


@pytest.fixture
async def upstreams(
    fake_openrouter: FakeOpenRouter, fake_genai: FakeGenAI
) -> AsyncIterator[tuple[FakeOpenRouter, FakeGenAI]]:
    """Both connectors and the services configured against fresh fakes; closed afterwards."""
    openai_connector.configure_openai(openrouter_config(fake_openrouter))
    genai_connector.configure_genai(genai_config(fake_genai))
    configure_services(TEST_SERVICE_CONFIG)
    yield fake_openrouter, fake_genai
    await openai_connector.close_openai_client()
    await genai_connector.close_genai_client()
    configure_services(ServiceConfig())
