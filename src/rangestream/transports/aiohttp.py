"""The default transport: aiohttp with a shared connection pool (the contract: :mod:`.base`).

Proxies (HTTP(S) through aiohttp, SOCKS through aiohttp-socks), cookies, per-host
limits and redirects hop by hop; aiohttp's failures become the errors
:mod:`.base` lists, and the idle timeout is enforced per body read.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import logging
import os
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote

import aiohttp
from yarl import URL

from ..errors import InvalidURLError, RangestreamError, TLSError, TransientError
from ..headers import add_cookies, headers_for
from ..redact import redact_url
from .base import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    HostPacer,
    Response,
    ca_context,
    host_key,
    next_hop,
    proxy_auth_failed,
    smallest_cap,
    split_proxy_url,
    tls_error,
    too_many_redirects,
    via_proxy,
)

if TYPE_CHECKING:
    from python_socks import ProxyType

__all__ = ["AiohttpTransport"]

log = logging.getLogger("rangestream")

# scheme -> (python_socks ProxyType name, resolve names at the proxy)
_SOCKS_SCHEMES = {"socks5": ("SOCKS5", True), "socks5h": ("SOCKS5", True),
                  "socks4a": ("SOCKS4", True), "socks4": ("SOCKS4", False)}


class _Socks(NamedTuple):
    """aiohttp-socks' ``ProxyConnector`` arguments for a SOCKS proxy URL."""
    proxy_type: ProxyType
    host: str
    port: int
    username: str | None
    password: str | None
    rdns: bool


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
        self._socks = _parse_proxy(self._proxy) if self._proxy is not None else None
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._read_bufsize = read_bufsize
        self._cookies = cookies
        self._pacer = HostPacer(requests_per_second) if requests_per_second else None
        self._session: aiohttp.ClientSession | None = None

    @property
    def connections_per_host(self) -> int | None:
        return smallest_cap(self._limit, self._limit_per_host)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            options: dict[str, Any] = dict(limit=self._limit, limit_per_host=self._limit_per_host,
                                           ttl_dns_cache=300)
            connector: aiohttp.TCPConnector
            if self._socks is not None:
                from aiohttp_socks import ProxyConnector  # checked importable in _parse_proxy
                connector = ProxyConnector(**self._socks._asdict(), **options)
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
        # No sock_read: it would also time the wait for the headers (see transports.base).
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        http_proxy = None if self._socks is not None else self._proxy
        headers = dict(headers)
        for _hop in range(MAX_REDIRECTS + 1):
            if self._pacer is not None:
                await self._pacer.wait(host_key(url))
            # Headers within connect + idle (as CurlTransport); the engine's request timeout,
            # shorter, normally ends the wait first.
            resp = await self._send(session, method, url, headers, data=data, proxy=http_proxy,
                                    timeout=timeout, headers_within=connect_timeout + idle_timeout)
            if resp.status == 407 and http_proxy is not None:  # a forward proxy's own answer
                _AiohttpResponse(resp).close()
                raise proxy_auth_failed(self._proxy)
            location = resp.headers.get("Location")
            if resp.status not in REDIRECT_STATUSES or not location:
                return _AiohttpResponse(resp, idle_timeout)
            _AiohttpResponse(resp).close()
            url, method, data, headers = _follow(resp, location, method, data, headers)
        raise too_many_redirects(url)

    async def _send(self, session: aiohttp.ClientSession, method: str, url: str, headers: Mapping[str, str], *,
                    data: bytes | None, proxy: str | None, timeout: aiohttp.ClientTimeout,
                    headers_within: float) -> aiohttp.ClientResponse:
        """One hop, without following a redirect; aiohttp's failures mapped as :mod:`.base` says."""
        try:
            async with asyncio.timeout(headers_within):
                return await session.request(method, url, headers=self._headers(url, headers), data=data,
                                             proxy=proxy, timeout=timeout, allow_redirects=False, ssl=self._ssl)
        except aiohttp.ClientSSLError as e:  # before ValueError: a certificate error is one too
            raise _tls_error(url, e.os_error) from None
        except (aiohttp.InvalidURL, ValueError) as e:
            raise InvalidURLError(f"invalid URL {redact_url(url)}: {_describe(e)}") from None
        except TimeoutError as e:
            raise TransientError(f"timed out waiting for the server{via_proxy(self._proxy)}") from e
        except aiohttp.ClientHttpProxyError as e:
            if e.status == 407:
                raise proxy_auth_failed(self._proxy) from None
            raise TransientError(f"request failed: {_describe(e)}{via_proxy(self._proxy)}",
                                 proxy_failed=_proxy_failed(e, self._proxy)) from e
        except (aiohttp.ClientError, OSError, EOFError) as e:
            raise TransientError(f"request failed: {_describe(e)}{via_proxy(self._proxy)}",
                                 proxy_failed=_proxy_failed(e, self._proxy)) from e
        except Exception as e:
            if _is_proxy_error(e):  # aiohttp-socks: proxy unreachable, refused, failed auth, timeout
                raise TransientError(f"request failed: {_describe(e)}{via_proxy(self._proxy)}",
                                     proxy_failed=_proxy_failed(e, self._proxy)) from e
            raise

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _follow(resp: aiohttp.ClientResponse, location: str, method: str, data: bytes | None,
            headers: Mapping[str, str]) -> tuple[str, str, bytes | None, dict[str, str]]:
    """The URL, method, body and caller's headers of the next hop of a redirect."""
    try:
        target = resp.url.join(URL(location))
        # origin() needs an absolute http(s) URL; next_hop refuses any other scheme.
        same_origin = target.scheme in ("http", "https") and target.origin() == resp.url.origin()
    except ValueError:
        raise TransientError(f"HTTP {resp.status} with an unusable Location") from None
    method, data, out = next_hop(resp.status, method, data, headers, target=str(target), scheme=target.scheme,
                                 same_origin=same_origin)
    return str(target), method, data, out


def _parse_proxy(proxy: str) -> _Socks | None:
    """None for an HTTP(S) proxy (aiohttp's ``proxy=``), else the SOCKS connector's arguments."""
    parts = split_proxy_url(proxy)
    scheme = parts.scheme.lower()
    if scheme not in _SOCKS_SCHEMES:
        return None
    try:
        from python_socks import ProxyType
    except ImportError:
        raise RangestreamError("SOCKS proxies need aiohttp-socks: pip install 'rangestream[socks]'") from None
    kind, rdns = _SOCKS_SCHEMES[scheme]
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return _Socks(ProxyType[kind], parts.hostname or "", parts.port or 1080, user, password, rdns)


def _tls_error(url: str, original: BaseException) -> TLSError | TransientError:
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


# SOCKS5 replies that say the proxy worked but the target did not answer (network or host
# unreachable, connection refused, TTL expired): the server's fault, not the proxy's.
_SOCKS_TARGET_CODES = frozenset({3, 4, 5, 6})
# A CONNECT answered 502/504: the proxy reports the server unreachable.
_CONNECT_TARGET_STATUSES = frozenset({502, 504})


def _proxy_failed(e: BaseException, proxy: str | None) -> bool:
    """Whether a failure before the response headers is the proxy's own (unreachable, refused,
    reset on connect, a failed SOCKS or CONNECT handshake) rather than the server's. Through a
    proxy every connection the pool makes is to the proxy, so a connection-level failure is its."""
    if not proxy:
        return False
    if isinstance(e, aiohttp.ClientHttpProxyError):
        return e.status not in _CONNECT_TARGET_STATUSES
    if _is_proxy_error(e):
        return getattr(e, "error_code", None) not in _SOCKS_TARGET_CODES
    return isinstance(e, (aiohttp.ClientConnectionError, OSError, EOFError))


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
