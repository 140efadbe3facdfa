"""HTTP transports: the only module that talks to an HTTP library.

The engine drives a :class:`Transport` and sees :class:`Response` objects; it
never imports aiohttp. A transport turns its library's failures into
:class:`~rangestream.errors.TransientError` (worth retrying) or
:class:`~rangestream.errors.InvalidURLError` (never), and enforces the idle-read
timeout itself, so the engine's retry logic is the same for every transport.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

import aiohttp

from .errors import InvalidURLError, TransientError
from .redact import redact_url

log = logging.getLogger("rangestream")

DEFAULT_HEADERS = {
    "User-Agent": "rangestream/0.1",
    "Accept": "*/*",
    # Ranges are byte offsets into the stored representation: never let a
    # server compress them on the fly.
    "Accept-Encoding": "identity",
}


class Response(Protocol):
    status: int
    headers: Mapping[str, str]  # case-insensitive

    async def read_piece(self) -> bytes:
        """The next piece of the body as soon as any is available; ``b""`` at its end."""

    def close(self) -> None:
        """Release the connection; closes it if the body was not read to the end."""


class Transport(Protocol):
    async def request(self, method: str, url: str, headers: Mapping[str, str], *,
                      connect_timeout: float, idle_timeout: float) -> Response: ...

    async def aclose(self) -> None: ...


class _AiohttpResponse:
    __slots__ = ("_resp", "status", "headers")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers

    async def read_piece(self) -> bytes:
        try:
            return await self._resp.content.readany()
        except asyncio.TimeoutError as e:  # aiohttp's sock_read: our idle timeout
            raise TransientError("no data received within the idle timeout") from e
        except (aiohttp.ClientError, OSError) as e:
            raise TransientError(f"connection lost mid-body ({type(e).__name__})") from e

    def close(self) -> None:
        if self._resp.content.is_eof():
            self._resp.release()  # complete: the connection goes back to the pool
        else:
            self._resp.close()  # abandoned mid-body: the connection must die with it


class AiohttpTransport:
    """aiohttp with a shared connection pool.

    ``read_bufsize`` is large because each read costs Python overhead: big
    pieces keep CPU per GB near curl's (see ``benchmarks/window.py``).
    """

    def __init__(self, *, proxy: str | None = None, limit: int = 64, limit_per_host: int = 0,
                 read_bufsize: int = 1 << 20) -> None:
        self._proxy = proxy
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._read_bufsize = read_bufsize
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit_per_host,
                                             ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, read_bufsize=self._read_bufsize, auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None), trust_env=False,
            )
        return self._session

    async def request(self, method: str, url: str, headers: Mapping[str, str], *,
                      connect_timeout: float, idle_timeout: float) -> Response:
        session = self._get_session()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=idle_timeout)
        try:
            resp = await session.request(method, url, headers=headers, proxy=self._proxy,
                                         timeout=timeout, allow_redirects=True)
        except (aiohttp.InvalidURL, ValueError) as e:
            raise InvalidURLError(f"invalid URL {redact_url(url)}: {e}") from None
        except asyncio.TimeoutError as e:
            raise TransientError("timed out waiting for the server") from e
        except (aiohttp.ClientError, OSError) as e:
            raise TransientError(f"request failed: {_describe(e)}") from e
        return _AiohttpResponse(resp)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _describe(e: BaseException) -> str:
    # aiohttp's messages can embed the full URL (with its signature): keep only the kind.
    if isinstance(e, aiohttp.ClientConnectorError):
        return f"cannot connect to {e.host}:{e.port} ({e.os_error.strerror or type(e.os_error).__name__})"
    if isinstance(e, aiohttp.ClientResponseError):
        return f"HTTP {e.status}"
    return type(e).__name__
