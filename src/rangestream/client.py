"""The shared client: one connection pool, headers, cookies and a proxy for many streams."""

from __future__ import annotations

import os
from typing import Any

from .engine import Stream
from .errors import RangestreamError
from .headers import load_cookies
from .transports import AiohttpTransport, Transport


class Client:
    """Holds what streams share. Use ``async with Client() as c: async with c.open_stream(url) as s: ...``.

    ``headers``: the user's headers (kept in :attr:`headers`), sent on top of the
    built-in transport's per-URL profile (see :mod:`rangestream.headers`: a
    desktop Chrome profile, YouTube's Origin/Referer for googlevideo, the iOS app's
    User-Agent for ``c=IOS`` URLs, ``Accept-Encoding: identity`` always).
    ``cookies_file``: a Netscape-format cookies file (yt-dlp's ``--cookies``, curl's
    ``-c``); each request carries the cookies that match its URL.
    ``proxy``: ``http://``, ``https://``, ``socks5://`` (names resolved by the proxy),
    ``socks5h://``, ``socks4://``, ``socks4a://``; credentials in the URL.
    ``limit_per_host``: connections per host; ``requests_per_second``: request
    starts per host, shared by all streams of this client.
    ``cookies_file``, ``limit_per_host`` and ``requests_per_second`` configure the
    built-in transport and cannot be combined with ``transport=``.
    ``impersonate``: a browser (``"chrome"``, ``"safari"``, ``"firefox"``, a version like
    ``"chrome131"``) whose TLS and HTTP/2 fingerprint and headers the requests present:
    the built-in transport is then :class:`~rangestream.transports.curl.CurlTransport`
    (curl_cffi, ``pip install 'rangestream[impersonate]'``) with the same options.

    ``cacert``: a PEM file of CA certificates to trust instead of the system's (curl's
    ``--cacert``; without it the system's CAs and ``SSL_CERT_FILE`` apply); ``insecure``:
    do not verify TLS certificates (curl's ``--insecure``). An untrusted certificate
    raises :class:`~rangestream.errors.TLSError` at once (not retried).

    ``stream_defaults`` (chunk_size, window, retry, timeouts, refresh, ...) apply to
    every :meth:`open_stream` unless overridden there.
    """

    def __init__(self, *, headers: dict[str, str] | None = None, proxy: str | None = None,
                 transport: Transport | None = None, limit_per_host: int = 0,
                 cookies_file: str | os.PathLike[str] | None = None,
                 requests_per_second: float | None = None, impersonate: str | None = None,
                 cacert: str | os.PathLike[str] | None = None, insecure: bool = False,
                 **stream_defaults: Any) -> None:
        self.headers: dict[str, str] = dict(headers or {})
        self.proxy = proxy
        self._custom = transport is not None
        if transport is None:
            cookies = load_cookies(cookies_file) if cookies_file is not None else None
            self._transport_options: dict[str, Any] = dict(
                limit_per_host=limit_per_host, cookies=cookies, requests_per_second=requests_per_second,
                cacert=cacert, insecure=insecure)
            self._impersonate = impersonate
            transport = self._build_transport(proxy)
        elif (cookies_file is not None or limit_per_host or requests_per_second or proxy or impersonate
              or cacert is not None or insecure):
            raise ValueError("proxy, cookies_file, limit_per_host, requests_per_second, impersonate, cacert "
                             "and insecure configure the built-in transport; configure your transport= instead")
        self._transport: Transport = transport
        # Streams pinned to another proxy get a transport (a pool) of their own, closed with the client.
        self._by_proxy: dict[str | None, Transport] = {proxy: transport}
        self._stream_defaults = stream_defaults

    def _build_transport(self, proxy: str | None) -> Transport:
        if self._impersonate:
            return _curl_transport(self._impersonate, proxy=proxy, **self._transport_options)
        return AiohttpTransport(proxy=proxy, **self._transport_options)

    def open_stream(self, url: str, *, proxy: str | None = None, **options: Any) -> Stream:
        """A stream on this client's pool; ``proxy=`` pins this stream to another proxy."""
        transport = self._transport
        if proxy is not None and proxy != self.proxy:
            if self._custom:
                raise ValueError("proxy= per stream needs the built-in transport")
            if proxy not in self._by_proxy:
                self._by_proxy[proxy] = self._build_transport(proxy)
            transport = self._by_proxy[proxy]
        opts = {**self._stream_defaults, **options}
        headers = {**self.headers, **(opts.pop("headers", None) or {})}  # per-stream headers win
        return Stream(url, transport=transport, headers=headers, **opts)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for transport in self._by_proxy.values():
            await transport.aclose()


def _curl_transport(impersonate: str, **options: Any) -> Transport:
    try:
        from .transports.curl import CurlTransport  # lazy: curl_cffi is an optional extra
    except ImportError:
        raise RangestreamError("impersonation needs curl_cffi: pip install 'rangestream[impersonate]'") from None
    return CurlTransport(impersonate, **options)


def open_stream(url: str, *, headers: dict[str, str] | None = None, proxy: str | None = None,
                transport: Transport | None = None, cookies_file: str | os.PathLike[str] | None = None,
                impersonate: str | None = None, cacert: str | os.PathLike[str] | None = None,
                insecure: bool = False, **options: Any) -> Stream:
    """Open one stream with a private :class:`Client`, closed when the stream is left.

    ``async with open_stream(url, chunk_size=9_500_000, window=2) as stream: ...``
    """
    client = Client(headers=headers, proxy=proxy, transport=transport, cookies_file=cookies_file,
                    impersonate=impersonate, cacert=cacert, insecure=insecure)
    return Stream(url, transport=client._transport, headers=client.headers, owner=client, **options)
