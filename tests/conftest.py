"""Shared fixtures: loopback-only networking, the AI fakes, and connectors configured against them."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
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


# -- real services: SQLite always; PostgreSQL and Redis on 127.0.0.1 when they run ------------------

REQUIRE_SERVICES = os.environ.get("REELWRIGHT_REQUIRE_SERVICES") == "1"
POSTGRES_ADMIN_URL = os.environ.get("REELWRIGHT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_TEST_URL = os.environ.get("REELWRIGHT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def service_missing(name: str, why: str) -> None:
    """Skip with a clear reason on a user's machine; fail under .ci/run, which starts the services."""
    message = f"{name} is not reachable ({why}); start it or unset REELWRIGHT_REQUIRE_SERVICES"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test session (parallel runs never share tables)."""
    import asyncio
    import concurrent.futures
    import uuid

    import asyncpg

    name = f"reelwright_test_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    def run(sql: str) -> None:
        # In a thread: this fixture may be first requested from inside a running event loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, admin(sql)).result()

    try:
        run(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        service_missing("PostgreSQL", str(exc))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        service_missing("Redis", str(exc))
    return REDIS_TEST_URL


async def reset_schema() -> None:
    """Empty database at the newest migration: drop everything, then run Alembic to head."""
    from sqlalchemy import text

    from connectors.database import get_engine
    from services.store.migrate import migrate_to_head
    from services.store.models import Base

    async with get_engine().begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await migrate_to_head()


@asynccontextmanager
async def empty_database(url: str) -> AsyncIterator[str]:
    """The store at ``url``, migrated to head and empty, closed afterwards."""
    from connectors.database import close_database, configure_database

    configure_database(url)
    await reset_schema()
    try:
        yield url
    finally:
        await close_database()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    """The job store on SQLite (a file) and on PostgreSQL, migrated to head and empty."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'reelwright.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    async with empty_database(url) as ready:
        yield ready


@pytest.fixture
async def sqlite_database(tmp_path: Any) -> AsyncIterator[str]:
    """An empty SQLite store, for tests that need one (the character book) but not both engines."""
    async with empty_database(f"sqlite+aiosqlite:///{tmp_path / 'reelwright.sqlite3'}") as ready:
        yield ready


@pytest.fixture
async def local_jobs(tmp_path: Any, upstreams: Any) -> AsyncIterator[Any]:
    """In-process durable jobs on a fresh SQLite store (``tests.bot.helpers.catalogue(jobs=...)``)."""
    from connectors.database import close_database, configure_database
    from tests.bot.helpers import in_process_jobs

    configure_database(f"sqlite+aiosqlite:///{tmp_path / 'jobs.sqlite3'}")
    await reset_schema()
    jobs = in_process_jobs(tmp_path / "job-media")
    await jobs.queue.start()
    yield jobs
    await jobs.queue.stop()
    await close_database()


@pytest.fixture
def storyboards_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every storyboard drawing raises, as a Pillow failure would (no wire: our own function)."""
    from bot.core import storyboard

    async def broken(story: object) -> bytes:
        raise RuntimeError("Pillow fell over")

    monkeypatch.setattr(storyboard, "draw_storyboard", broken)


#: ``await make(**settings)``: a production runtime (``start_runtime``), closed after the test.
RuntimeFactory = Callable[..., Awaitable[Any]]


@asynccontextmanager
async def production_runtimes(settings_for: Callable[..., Any]) -> AsyncIterator[RuntimeFactory]:
    """Runtimes built the way ``reelwright run`` builds them, from ``settings_for(**overrides)``;
    all closed (newest first) when the block ends, and the services' configuration reset."""
    from bot.runtime import Runtime, start_runtime

    started: list[Runtime] = []

    async def make(**overrides: Any) -> Runtime:
        runtime = await start_runtime(settings_for(**overrides))
        started.append(runtime)
        return runtime

    try:
        yield make
    finally:
        for runtime in reversed(started):
            await runtime.close()
        configure_services(ServiceConfig())


def ai_fake_settings(tmp_path: Path, text: Any, media: Any, **overrides: Any) -> Any:
    """Settings with real (test) keys pointed at the AI fakes, a store and MEDIA_DIR in ``tmp_path``,
    and fast video polling."""
    from connectors.settings import load_settings

    values: dict[str, Any] = {
        "_env_file": None,
        "openrouter_api_key": "test-openrouter-key",
        "openrouter_base_url": text.base_url,
        "google_api_key": "test-google-key",
        "genai_base_url": media.base_url,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'runtime.sqlite3'}",
        "media_dir": tmp_path / "media",
        "video_poll_initial_seconds": 0.01,
        "video_poll_max_seconds": 0.05,
        "text_max_retries": 0,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
async def make_runtime(tmp_path: Path, fake_openrouter: Any, fake_genai: Any) -> AsyncIterator[RuntimeFactory]:
    """Production runtimes on the AI fakes (no chat platform), with the default money settings."""
    async with production_runtimes(
        lambda **overrides: ai_fake_settings(tmp_path, fake_openrouter, fake_genai, **overrides)
    ) as make:
        yield make
