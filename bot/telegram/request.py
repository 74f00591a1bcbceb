"""An aiohttp transport for python-telegram-bot: the same ``BaseRequest`` contract as PTB's httpx one.

Why: under load most of the bot's CPU per command went to httpx/httpcore request machinery (seen
with py-spy in bench/bench_telegram.py); aiohttp does the same work with far less Python per call,
and aiohttp is already a dependency. PTB keeps its own error mapping (``_request_wrapper``): this
class only moves bytes and turns transport failures into ``TimedOut`` / ``NetworkError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode, urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

#: A download is handed on this much at a time.
DOWNLOAD_CHUNK_BYTES = 256 * 1024
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


class AiohttpRequest(BaseRequest):
    """A pooled aiohttp session; one instance for bot calls, another (pool of 1) for getUpdates."""

    def __init__(
        self,
        connection_pool_size: int = 256,
        *,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        self._pool_size = connection_pool_size
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._connect_timeout = connect_timeout
        self._media_write_timeout = media_write_timeout
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str] = {}
        self._proxy_by_origin: dict[str, str | None] = {}

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._pool_size, ttl_dns_cache=300)
            # trust_env would read ~/.netrc in a thread on every request; proxies are read once instead.
            self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": self.USER_AGENT})
            self._proxies = getproxies()
            self._proxy_by_origin.clear()

    async def shutdown(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: object = BaseRequest.DEFAULT_NONE,
        write_timeout: object = BaseRequest.DEFAULT_NONE,
        connect_timeout: object = BaseRequest.DEFAULT_NONE,
        pool_timeout: object = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        files = request_data.multipart_data if request_data is not None and request_data.contains_files else None
        read = _seconds(read_timeout, self._read_timeout)
        connect = _seconds(connect_timeout, self._connect_timeout)
        write = _seconds(write_timeout, self._media_write_timeout if files else self._write_timeout)
        total = None if read is None or write is None else read + write + (connect or 0.0)
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=connect, sock_read=read)
        body: Any = None
        headers: dict[str, str] | None = None
        if request_data is not None:
            if files:
                body = _form(request_data.json_parameters, files)
            else:
                body = urlencode(request_data.json_parameters).encode()
                headers = FORM_HEADERS
        try:
            async with session.request(
                method, url, data=body, headers=headers, timeout=timeout, proxy=self._proxy_for(url)
            ) as response:
                return response.status, await response.read()
        except TimeoutError as exc:
            raise TimedOut from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {exc}") from exc

    async def stream(self, url: str, chunk_bytes: int = DOWNLOAD_CHUNK_BYTES) -> AsyncIterator[bytes]:
        """A file download in chunks as they arrive, so the reader can stop at its size cap (PTB's
        ``File.download_*`` hold the whole file in memory first). The URL carries the bot token:
        never put it in an error or a log line."""
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout, sock_read=self._read_timeout)
        try:
            async with session.get(url, timeout=timeout, proxy=self._proxy_for(url)) as response:
                if response.status != 200:
                    raise NetworkError(f"file download answered HTTP {response.status}")
                async for chunk in response.content.iter_chunked(chunk_bytes):
                    yield chunk
        except TimeoutError as exc:
            raise TimedOut from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"file download failed: aiohttp.{type(exc).__name__}") from exc

    def _proxy_for(self, url: str) -> str | None:
        """HTTP(S)_PROXY / NO_PROXY from the environment, decided once per origin."""
        if not self._proxies:
            return None
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._proxy_by_origin:
            proxy = self._proxies.get(parts.scheme)
            self._proxy_by_origin[origin] = None if proxy is None or proxy_bypass(parts.hostname or "") else proxy
        return self._proxy_by_origin[origin]


def _seconds(timeout: object, default: float | None) -> float | None:
    """A timeout as PTB passes it: seconds, None for no limit, or its "use your default" marker
    (``BaseRequest.DEFAULT_NONE`` and its kind), which stands for ``default``."""
    if timeout is None:
        return None
    if isinstance(timeout, int | float) and not isinstance(timeout, bool):
        return float(timeout)
    return default


def _form(fields: dict[str, str], files: dict[str, Any]) -> aiohttp.FormData:
    """Multipart body: the parameters as fields, then each upload as a named file part."""
    form = aiohttp.FormData(quote_fields=False)
    for name, value in fields.items():
        form.add_field(name, value)
    for name, upload in files.items():
        if isinstance(upload, tuple):
            filename, content, *rest = upload
            content_type = rest[0] if rest else "application/octet-stream"
        else:
            filename, content, content_type = name, upload, "application/octet-stream"
        if hasattr(content, "read"):
            content = content.read()
        form.add_field(name, content, filename=filename, content_type=content_type)
    return form
