"""HTTP transports: the only module that talks to an HTTP library.

The engine drives a :class:`Transport` and sees :class:`Response` objects; it
never imports aiohttp. A transport turns its library's failures into
:class:`~rangestream.errors.TransientError` (worth retrying),
:class:`~rangestream.errors.InvalidURLError` (never), or a terminal
:class:`~rangestream.errors.StreamError` that retrying cannot fix
(:class:`~rangestream.errors.TLSError`, :class:`~rangestream.errors.ProxyError`,
:class:`~rangestream.errors.TooManyRedirectsError`), and enforces the idle-read
timeout itself, so the engine's retry logic is the same for every transport.

The idle timeout covers the body only: it starts when the engine first waits for
body bytes. The wait for the response headers is the engine's request timeout
(a server that thinks before answering is not idle).
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import logging
import os
import ssl
import time
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiohttp
from yarl import URL

from .errors import (
    InvalidURLError,
    ProxyError,
    RangestreamError,
    TLSError,
    TooManyRedirectsError,
    TransientError,
)
from .headers import add_cookies, headers_for
from .redact import redact_text, redact_url

log = logging.getLogger("rangestream")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 10
_HTTP_PROXY_SCHEMES = frozenset({"http", "https"})
# scheme -> (python_socks ProxyType name, resolve names at the proxy)
_SOCKS_SCHEMES = {"socks5": ("SOCKS5", True), "socks5h": ("SOCKS5", True),
                  "socks4a": ("SOCKS4", True), "socks4": ("SOCKS4", False)}


class Response(Protocol):
    status: int
    headers: Mapping[str, str]  # case-insensitive

    async def read_piece(self) -> bytes:
        """The next piece of the body as soon as any is available; ``b""`` at its end."""

    def close(self) -> None:
        """Release the connection; closes it if the body was not read to the end."""


class Transport(Protocol):
    async def request(self, method: str, url: str, headers: Mapping[str, str], *,
                      connect_timeout: float, idle_timeout: float, data: bytes | None = None) -> Response: ...

    async def aclose(self) -> None: ...


class _AiohttpResponse:
    __slots__ = ("_resp", "_idle", "status", "headers", "connection_id")

    def __init__(self, resp: aiohttp.ClientResponse, idle_timeout: float | None = None) -> None:
        self._resp = resp
        self._idle = idle_timeout
        self.status = resp.status
        self.headers = resp.headers
        # The local socket address names the TCP connection (for bytes-per-connection stats).
        conn = resp.connection
        sock = conn.transport.get_extra_info("sockname") if conn is not None and conn.transport else None
        self.connection_id: str | None = f"{sock[0]}:{sock[1]}" if sock else None

    async def read_piece(self) -> bytes:
        content = self._resp.content
        try:
            # Bytes already buffered need no timer (the hot path on a fast link).
            data = content.read_nowait()
            if data or content.at_eof():
                return data
            # The idle timeout runs only while we wait for bytes: not while the headers are
            # awaited (aiohttp's sock_read would count that too) nor while a response is held
            # unread (a headers-only prefetch).
            async with asyncio.timeout(self._idle):
                return await content.readany()
        except TimeoutError as e:
            raise TransientError("no data received within the idle timeout") from e
        except (aiohttp.ClientError, OSError) as e:
            raise TransientError(f"connection lost mid-body ({type(e).__name__})") from e

    def close(self) -> None:
        if self._resp.content.is_eof():
            self._resp.release()  # complete: the connection goes back to the pool
        else:
            self._resp.close()  # abandoned mid-body: the connection must die with it


class HostPacer:
    """At most ``rate`` request starts per second per host (``host:port``), spaced evenly.

    Shared by every stream of a client. A waiter that is cancelled gives its turn
    back (the next start time only advances when a request actually goes out).
    """

    def __init__(self, rate: float) -> None:
        if not rate > 0:
            raise ValueError("requests_per_second must be positive")
        self.interval = 1.0 / rate
        self._next: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def wait(self, host: str) -> None:
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
            delay = self._next.get(host, 0.0) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next[host] = time.monotonic() + self.interval


class AiohttpTransport:
    """aiohttp with a shared connection pool.

    Every request gets :func:`~rangestream.headers.headers_for` its URL (the
    per-URL browser/app profile under the headers the engine passes) and the
    cookies of ``cookies`` that match it. Redirects are followed here, hop by hop,
    so each hop gets its own URL's headers and cookies (and the rate cap).

    ``proxy``: ``http://`` or ``https://`` (aiohttp's ``proxy=``), or ``socks5://``
    / ``socks5h://`` / ``socks4://`` / ``socks4a://`` through aiohttp-socks (the
    ``socks`` extra); SOCKS5 always resolves names at the proxy. Credentials go in
    the URL's userinfo and never appear in errors or logs.

    ``requests_per_second``: cap on request starts per host, shared by all streams.
    The wait counts toward the engine's request timeout, so keep
    ``requests_per_second * Timeouts.request`` above the requests in flight.

    ``read_bufsize`` is large because each read costs Python overhead: big
    pieces keep CPU per GB near curl's (see ``benchmarks/window.py``).

    ``cacert``: a PEM file of the CA certificates to trust *instead of* the system's
    (as curl's ``--cacert``); ``insecure``: do not verify certificates at all (curl's
    ``-k``). Without either, the system's CAs are used (``SSL_CERT_FILE`` is honoured).
    An untrusted certificate is a :class:`~rangestream.errors.TLSError` (not retried).
    """

    def __init__(self, *, proxy: str | None = None, limit: int = 64, limit_per_host: int = 0,
                 read_bufsize: int = 1 << 20, cookies: http.cookiejar.CookieJar | None = None,
                 requests_per_second: float | None = None,
                 cacert: str | os.PathLike[str] | None = None, insecure: bool = False) -> None:
        self._ssl: ssl.SSLContext | bool = False if insecure else (
            ca_context(cacert) if cacert is not None else True)
        self._proxy = proxy or None
        self._socks: tuple[Any, ...] | None = None
        if self._proxy is not None:
            self._socks = _parse_proxy(self._proxy)
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._read_bufsize = read_bufsize
        self._cookies = cookies
        self._pacer = HostPacer(requests_per_second) if requests_per_second else None
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            options: dict[str, Any] = dict(limit=self._limit, limit_per_host=self._limit_per_host,
                                           ttl_dns_cache=300)
            connector: aiohttp.TCPConnector
            if self._socks is not None:
                from aiohttp_socks import ProxyConnector  # checked importable in _parse_proxy
                proxy_type, host, port, user, password, rdns = self._socks
                connector = ProxyConnector(proxy_type=proxy_type, host=host, port=port, username=user,
                                           password=password, rdns=rdns, **options)
            else:
                connector = aiohttp.TCPConnector(**options)
            self._session = aiohttp.ClientSession(
                connector=connector, read_bufsize=self._read_bufsize, auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None), trust_env=False,
            )
        return self._session

    def _headers(self, url: str, headers: Mapping[str, str]) -> dict[str, str]:
        out = headers_for(url, headers)
        return add_cookies(out, self._cookies, url)

    async def request(self, method: str, url: str, headers: Mapping[str, str], *,
                      connect_timeout: float, idle_timeout: float, data: bytes | None = None) -> Response:
        session = self._get_session()
        # No sock_read: it would also time the wait for the headers (see the module docstring).
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        http_proxy = None if self._socks is not None else self._proxy
        headers = dict(headers)
        for _hop in range(_MAX_REDIRECTS + 1):
            if self._pacer is not None:
                await self._pacer.wait(_host_key(url))
            try:
                # Headers within connect + idle (as CurlTransport); the engine's request timeout,
                # shorter, normally ends the wait first.
                async with asyncio.timeout(connect_timeout + idle_timeout):
                    resp = await session.request(method, url, headers=self._headers(url, headers), data=data,
                                                 proxy=http_proxy, timeout=timeout, allow_redirects=False,
                                                 ssl=self._ssl)
            except aiohttp.ClientSSLError as e:  # before ValueError: a certificate error is one too
                raise _tls_error(e, url, e.os_error) from None
            except (aiohttp.InvalidURL, ValueError) as e:
                raise InvalidURLError(f"invalid URL {redact_url(url)}: {_describe(e)}") from None
            except asyncio.TimeoutError as e:
                raise TransientError(f"timed out waiting for the server{self._via()}") from e
            except aiohttp.ClientHttpProxyError as e:
                if e.status == 407:
                    raise _proxy_auth_failed(self._proxy) from None
                raise TransientError(f"request failed: {_describe(e)}{self._via()}") from e
            except (aiohttp.ClientError, OSError, EOFError) as e:
                raise TransientError(f"request failed: {_describe(e)}{self._via()}") from e
            except Exception as e:
                if _is_proxy_error(e):  # aiohttp-socks: proxy unreachable, refused, failed auth, timeout
                    raise TransientError(f"request failed: {_describe(e)}{self._via()}") from e
                raise
            if resp.status == 407 and http_proxy is not None:  # a forward proxy's own answer
                _AiohttpResponse(resp).close()
                raise _proxy_auth_failed(self._proxy)
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or not location:
                return _AiohttpResponse(resp, idle_timeout)
            _AiohttpResponse(resp).close()
            try:
                target = resp.url.join(URL(location))
            except ValueError:
                raise TransientError(f"HTTP {resp.status} with an unusable Location") from None
            if target.scheme not in ("http", "https"):
                raise InvalidURLError(f"redirected to a non-http(s) URL: {redact_url(str(target))}")
            if target.origin() != resp.url.origin():
                # As browsers and aiohttp do: the caller's credentials stay with their origin
                # (cookies from the cookies file are chosen again for the new URL).
                for name in [k for k in headers if k.lower() in ("authorization", "cookie")]:
                    del headers[name]
            if resp.status == 303:
                method, data = "GET", None
            url = str(target)
        raise too_many_redirects(url)

    def _via(self) -> str:
        return f" (via proxy {redact_url(self._proxy)})" if self._proxy else ""

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _host_key(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{(parts.hostname or '').lower()}:{parts.port or ''}"
    except ValueError:
        return ""


def _parse_proxy(proxy: str) -> tuple[Any, ...] | None:
    """None for an HTTP(S) proxy (aiohttp's ``proxy=``), else the SOCKS connector's arguments."""
    try:
        parts = urlsplit(proxy)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        raise InvalidURLError(f"invalid proxy URL {redact_url(proxy)}") from None
    if not host:
        raise InvalidURLError(f"proxy URL without a host: {redact_url(proxy)}")
    if scheme in _HTTP_PROXY_SCHEMES:
        return None
    if scheme not in _SOCKS_SCHEMES:
        raise InvalidURLError(f"unsupported proxy scheme {scheme!r} (use http, https, socks5, "
                              f"socks5h, socks4 or socks4a): {redact_url(proxy)}")
    try:
        from python_socks import ProxyType
    except ImportError:
        raise RangestreamError("SOCKS proxies need aiohttp-socks: pip install 'rangestream[socks]'") from None
    kind, rdns = _SOCKS_SCHEMES[scheme]
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return getattr(ProxyType, kind), host, port or 1080, user, password, rdns


def _proxy_auth_failed(proxy: str | None) -> ProxyError:
    # Not worth retrying: the same credentials will be refused again.
    try:
        has_credentials = bool(proxy and urlsplit(proxy).username)
    except ValueError:
        has_credentials = False
    what = ("the proxy refused the credentials given in the proxy URL" if has_credentials else
            "the proxy requires credentials: give them in the proxy URL (http://USER:PASSWORD@HOST:PORT)")
    return ProxyError(f"{what} (HTTP 407 Proxy Authentication Required; via proxy {redact_url(proxy)})",
                      status=407)


def too_many_redirects(last: str) -> TooManyRedirectsError:
    # A loop (or a chain this long) answers the same way on every retry: terminal.
    return TooManyRedirectsError(f"too many redirects: more than {_MAX_REDIRECTS} in a row (a redirect "
                                 f"loop?), the last to {redact_url(last)}")


# Why a certificate failed, and how a user who trusts the server gets past it.
TLS_HINT = ("if you trust this server, give its CA certificate with --cacert FILE (Client(cacert=...)) or "
            "the SSL_CERT_FILE environment variable, or turn verification off with --insecure (insecure=True)")


def ca_context(cacert: str | os.PathLike[str]) -> ssl.SSLContext:
    """A verifying SSL context trusting only the CAs in the PEM file ``cacert``."""
    try:
        return ssl.create_default_context(cafile=os.fspath(cacert))
    except (OSError, ssl.SSLError) as e:  # missing, unreadable, not PEM
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise RangestreamError(f"cannot use the CA file {os.fspath(cacert)}: {reason}") from None


def tls_error(url: str, reason: str, *, certificate: bool) -> TLSError:
    try:
        parts = urlsplit(url)
        where = f"{parts.hostname}:{parts.port or 443}"
    except ValueError:
        where = "the server"
    reason = redact_text(reason)
    if certificate:
        return TLSError(f"TLS certificate of {where} not trusted ({reason}); {TLS_HINT}", url=url)
    return TLSError(f"TLS handshake with {where} failed ({reason})", url=url)


def _tls_error(e: aiohttp.ClientSSLError, url: str, original: BaseException) -> TLSError | TransientError:
    if isinstance(original, ssl.SSLCertVerificationError):
        why = original.verify_message or original.reason or "certificate verification failed"
        return tls_error(url, str(why), certificate=True)
    if isinstance(original, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):  # cut mid-handshake: may pass
        return TransientError(f"request failed: connection closed during the TLS handshake ({type(original).__name__})")
    why = getattr(original, "reason", None) or type(original).__name__
    return tls_error(url, str(why), certificate=False)


def _is_proxy_error(e: BaseException) -> bool:
    try:
        import aiohttp_socks
        from python_socks import _errors as socks_errors
    except ImportError:
        return False
    return isinstance(e, (aiohttp_socks.ProxyError, aiohttp_socks.ProxyConnectionError,
                          aiohttp_socks.ProxyTimeoutError, socks_errors.ProxyException,
                          socks_errors.IncompleteReadError))


def _describe(e: BaseException) -> str:
    # aiohttp's messages can embed the full URL (with its signature): keep only the kind.
    if isinstance(e, aiohttp.ClientConnectorError):
        return f"cannot connect to {e.host}:{e.port} ({e.os_error.strerror or type(e.os_error).__name__})"
    if isinstance(e, aiohttp.ClientHttpProxyError):
        return f"the proxy answered HTTP {e.status}"
    if isinstance(e, aiohttp.ClientResponseError):
        return f"HTTP {e.status}"
    if _is_proxy_error(e):  # their messages are the library's; keep only the kind and code
        code = getattr(e, "error_code", None)
        return f"SOCKS {type(e).__name__}" + (f" (code {code})" if code is not None else "")
    if isinstance(e, OSError) and e.strerror:
        return f"{type(e).__name__} ({e.strerror})"
    return type(e).__name__
