"""The shared Redis client (REDIS_URL): one connection pool per process, built lazily on first use,
closed at shutdown. Budget reservations and the per-user rate limit use it, so every bot and worker
process sharing REDIS_URL sees the same counters. redis-py is imported only when a pool is built:
a bot without REDIS_URL never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from connectors.database import os_error_reason
from connectors.settings import SettingsError

if TYPE_CHECKING:
    from redis.asyncio import BlockingConnectionPool, Redis

#: Connections to Redis per process. A burst of commands waits for a free one (up to
#: ``POOL_WAIT_SECONDS``) instead of failing, as redis-py's default pool does past its size.
MAX_CONNECTIONS = 64
POOL_WAIT_SECONDS = 30

_url: str | None = None
_client: Redis | None = None
_pool: BlockingConnectionPool | None = None


def configure_redis(url: str | None) -> None:
    """Set the URL used by ``redis_client``; None means this process runs without Redis."""
    global _url, _client, _pool
    _url = url
    _client = None
    _pool = None


def redis_url() -> str | None:
    return _url


def redis_pool() -> BlockingConnectionPool:
    """The process's one pool, shared by our client and the ``limits`` rate-limit storage."""
    global _pool
    if _pool is None:
        if _url is None:
            raise RuntimeError("configure_redis() must be given REDIS_URL before Redis is used")
        from redis.asyncio import BlockingConnectionPool

        _pool = BlockingConnectionPool.from_url(
            _url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_WAIT_SECONDS,
            decode_responses=True,
            socket_connect_timeout=5,
            health_check_interval=30,
        )
    return _pool


def redis_client() -> Redis:
    global _client
    if _client is None:
        from redis.asyncio import Redis

        _client = Redis(connection_pool=redis_pool())
    return _client


async def check_redis() -> None:
    """Ping once at start, so that a wrong or unreachable REDIS_URL is one line naming it.

    Connection failures, refusals (a password, a database number) and a URL redis-py cannot parse
    are translated; the message names the host, never the URL (it may hold a password).
    """
    if _url is None:
        return
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import InvalidResponse, ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        parts = urlsplit(_url)
        where = parts.path if parts.scheme == "unix" else f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        await redis_client().ping()
    except ValueError as exc:
        raise SettingsError(f"Invalid setting REDIS_URL: {exc}") from None
    except (RedisConnectionError, RedisTimeoutError) as exc:
        underlying = exc.__cause__ or exc.__context__
        reason = underlying if isinstance(underlying, OSError) else exc
        raise SettingsError(
            f"Invalid setting REDIS_URL: cannot connect to Redis at {where} ({_reason(reason)})"
        ) from None
    except ResponseError as exc:
        raise SettingsError(f"Invalid setting REDIS_URL: Redis at {where} refused: {exc}") from None
    except InvalidResponse as exc:
        raise SettingsError(f"Invalid setting REDIS_URL: the server at {where} is not Redis ({exc})") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return os_error_reason(exc)
    return str(exc).rstrip(".")


async def close_redis() -> None:
    global _client, _pool
    client, _client = _client, None
    pool, _pool = _pool, None
    if client is not None:
        await client.aclose()
    if pool is not None:
        await pool.aclose()
