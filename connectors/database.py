"""The database engine: SQLite through aiosqlite by default, PostgreSQL through asyncpg when
DATABASE_URL points at one. One engine (one pool) per process, built lazily, closed at shutdown.

SQLite is opened in WAL mode with a busy timeout so that two bot processes can share one file.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from connectors.settings import SettingsError

_url: str | None = None
_engine: AsyncEngine | None = None
_sessions: async_sessionmaker[AsyncSession] | None = None

SQLITE_BUSY_TIMEOUT_MS = 10_000
#: The drivers every query and migration is written and tested for.
SUPPORTED_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
DATABASE_URL_EXAMPLES = "sqlite:///reelwright.sqlite3 or postgresql://user:password@host:5432/reelwright"


def normalise_database_url(url: str) -> str:
    """Accept the plain schemes people paste (``postgresql://``, ``sqlite:///``) and pick async drivers."""
    parsed = make_url(url)
    driver = parsed.drivername
    if driver in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif driver == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def check_database_url(url: str) -> None:
    """Refuse a URL we cannot use, by its scheme; the message never repeats the URL (it may hold a password)."""
    try:
        driver = make_url(normalise_database_url(url)).drivername
    except ArgumentError:
        raise ValueError(f"not a database URL; use {DATABASE_URL_EXAMPLES}") from None
    if driver not in SUPPORTED_DRIVERS:
        raise ValueError(f"{driver} is not supported; use {DATABASE_URL_EXAMPLES}")


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


def _open_sqlite_file(database: str) -> None:
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    folder = Path(database).parent
    if not folder.is_dir():
        raise SettingsError(f"Invalid setting DATABASE_URL: the folder {folder} of the SQLite file does not exist")
    try:
        sqlite3.connect(database).close()
    except sqlite3.Error as exc:
        raise SettingsError(f"Invalid setting DATABASE_URL: cannot open the SQLite file {database} ({exc})") from None


def os_error_reason(exc: OSError) -> str:
    """ "Connection refused", "Name or service not known", "timed out": the words, not the call that failed."""
    if isinstance(exc, socket.gaierror | TimeoutError):
        return exc.strerror or "timed out"
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def _postgres_refusal(exc: DBAPIError) -> str | None:
    """What the server said when it refused the connection itself (no such database, role or password)."""
    import asyncpg

    cause = exc.orig.__cause__ if exc.orig is not None else None
    if isinstance(cause, asyncpg.InvalidCatalogNameError | asyncpg.InvalidAuthorizationSpecificationError):
        return str(cause)
    return None


async def check_database() -> None:
    """Connect once at start, so that a wrong DATABASE_URL is one line naming it instead of a traceback.

    Only the errors that mean "this URL does not lead to a usable database" are translated; anything
    else is a bug and propagates as it is.
    """
    if _url is None:
        raise RuntimeError("configure_database() must be called before the database is checked")
    url = make_url(_url)
    if is_sqlite():
        await asyncio.to_thread(_open_sqlite_file, url.database or "")
        return
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    try:
        async with get_engine().connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (OSError, TimeoutError) as exc:
        raise SettingsError(
            f"Invalid setting DATABASE_URL: cannot connect to PostgreSQL at {where} ({os_error_reason(exc)})"
        ) from None
    except DBAPIError as exc:
        refusal = _postgres_refusal(exc)
        if refusal is None:
            raise
        raise SettingsError(f"Invalid setting DATABASE_URL: PostgreSQL at {where} refused: {refusal}") from None


async def close_database() -> None:
    global _engine, _sessions
    engine, _engine, _sessions = _engine, None, None
    if engine is not None:
        await engine.dispose()
