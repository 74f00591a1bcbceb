"""The database engine: SQLite through aiosqlite by default, PostgreSQL through asyncpg when
DATABASE_URL points at one. One engine (one pool) per process, built lazily, closed at shutdown.

SQLite is opened in WAL mode with a busy timeout so that two bot processes can share one file.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

_url: str | None = None
_engine: AsyncEngine | None = None
_sessions: async_sessionmaker[AsyncSession] | None = None

SQLITE_BUSY_TIMEOUT_MS = 10_000


def normalise_database_url(url: str) -> str:
    """Accept the plain schemes people paste (``postgresql://``, ``sqlite:///``) and pick async drivers."""
    parsed = make_url(url)
    driver = parsed.drivername
    if driver in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif driver == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def configure_database(url: str) -> None:
    """Set the URL used by the next ``get_engine``; drops an engine built before (without closing it)."""
    global _url, _engine, _sessions
    _url = normalise_database_url(url)
    _engine = None
    _sessions = None


def is_sqlite() -> bool:
    return _url is not None and _url.startswith("sqlite")


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def get_engine() -> AsyncEngine:
    global _engine
    if _engine is None:
        if _url is None:
            raise RuntimeError("configure_database() must be called before the database is used")
        if is_sqlite():
            _engine = create_async_engine(_url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            event.listen(_engine.sync_engine, "connect", _on_sqlite_connect)
        else:
            _engine = create_async_engine(_url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    return _engine


def sessions() -> async_sessionmaker[AsyncSession]:
    """The session factory; ``expire_on_commit=False`` so rows stay readable after a commit."""
    global _sessions
    if _sessions is None:
        _sessions = async_sessionmaker(get_engine(), expire_on_commit=False)
    return _sessions


async def close_database() -> None:
    global _engine, _sessions
    engine, _engine, _sessions = _engine, None, None
    if engine is not None:
        await engine.dispose()
