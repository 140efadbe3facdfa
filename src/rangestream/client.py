"""The shared client: one connection pool, default headers and a proxy for many streams."""

from __future__ import annotations

from typing import Any

from .fetcher import Stream
from .transport import DEFAULT_HEADERS, AiohttpTransport, Transport


class Client:
    """Holds what streams share. Use ``async with Client() as c: async with c.open_stream(url) as s: ...``.

    ``stream_defaults`` (chunk_size, window, retry, timeouts, refresh, ...) apply to
    every :meth:`open_stream` unless overridden there.
    """

    def __init__(self, *, headers: dict[str, str] | None = None, proxy: str | None = None,
                 transport: Transport | None = None, limit_per_host: int = 0,
                 **stream_defaults: Any) -> None:
        self.headers: dict[str, str] = {**DEFAULT_HEADERS, **(headers or {})}
        self.proxy = proxy
        self._transport: Transport = transport or AiohttpTransport(proxy=proxy, limit_per_host=limit_per_host)
        self._stream_defaults = stream_defaults

    def open_stream(self, url: str, **options: Any) -> Stream:
        return Stream(self, url, **{**self._stream_defaults, **options})

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()


def open_stream(url: str, *, headers: dict[str, str] | None = None, proxy: str | None = None,
                transport: Transport | None = None, **options: Any) -> Stream:
    """Open one stream with a private :class:`Client`, closed when the stream is left.

    ``async with open_stream(url, chunk_size=9_500_000, window=2) as stream: ...``
    """
    client = Client(headers=headers, proxy=proxy, transport=transport)
    return Stream(client, url, owns_client=True, **options)
