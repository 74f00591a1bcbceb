"""The shared Redis client (REDIS_URL): one connection pool per process, built lazily on first use,
closed at shutdown. Budget reservations and the per-user rate limit use it, so every bot and worker
process sharing REDIS_URL sees the same counters.
"""

from __future__ import annotations

from redis.asyncio import Redis

_url: str | None = None
_client: Redis | None = None


def configure_redis(url: str | None) -> None:
    """Set the URL used by ``redis_client``; None means this process runs without Redis."""
    global _url, _client
    _url = url
    _client = None


def redis_url() -> str | None:
    return _url


def redis_client() -> Redis:
    global _client
    if _client is None:
        if _url is None:
            raise RuntimeError("configure_redis() must be given REDIS_URL before Redis is used")
        _client = Redis.from_url(_url, decode_responses=True, socket_connect_timeout=5, health_check_interval=30)
    return _client


async def close_redis() -> None:
    global _client
    client, _client = _client, None
    if client is not None:
        await client.aclose()
