"""Where the engine meets an HTTP library: the :class:`Transport` and :class:`Response`
protocols, and the rules both built-in transports share.

The engine (:class:`~rangestream.Stream`) never imports an HTTP library. It calls
:meth:`Transport.request` for each attempt at a chunk, reads the body with
:meth:`Response.read_piece`, and :meth:`Response.close`\\ s every response it got,
whatever happens. Everything it decides (retry or not, resume where, wait how long)
rests on the exception *classes* the contract below promises, so a new transport
(:mod:`.aiohttp` and :mod:`.curl` are two) needs only to keep this contract; the
engine's tests can be re-run on it as ``tests/test_transport_curl.py`` does.

Errors, in one place (every message redacted with :mod:`rangestream.redact`: no proxy
credentials, tokens or URL signatures):

* :class:`~rangestream.errors.TransientError`: one attempt failed in a way a retry may
  fix (refused, reset, DNS, a timeout, the proxy unreachable, a TLS handshake cut off,
  a redirect without a usable ``Location``, the connection lost mid-body). The engine
  retries it under its :class:`~rangestream.retry.Retry` policy, resuming at the byte
  reached.
* :class:`~rangestream.errors.InvalidURLError`: the URL can never be fetched (bad scheme,
  host or port; a redirect to a non-http(s) URL; a bad proxy URL). Never retried.
* terminal :class:`~rangestream.errors.StreamError` subclasses, never retried because the
  same request would fail the same way: :class:`~rangestream.errors.TLSError` (certificate
  not trusted, handshake refused), :class:`~rangestream.errors.ProxyError` (HTTP 407 from
  the proxy), :class:`~rangestream.errors.TooManyRedirectsError`.

An HTTP status is *not* an error at this layer: a 403 or a 503 comes back as a
:class:`Response` and the engine judges it. Any other exception escaping a transport is
a bug in it.

Timeouts: the idle timeout covers only the waits for body bytes (inside
:meth:`Response.read_piece`), never the wait for the headers nor the time a response
sits unread (a headers-only prefetch). The wait for the headers is the engine's request
timeout: the engine wraps :meth:`Transport.request` in it and cancels the call when it
expires, so ``request`` must release everything it holds when cancelled. Its own bound
on that wait, ``connect_timeout + idle_timeout``, is only a backstop.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

from ..errors import InvalidURLError, ProxyError, RangestreamError, TLSError, TooManyRedirectsError
from ..redact import redact_text, redact_url

__all__ = ["Response", "Transport"]


class Response(Protocol):
    """One HTTP response whose status and headers have arrived; the body is read on demand.

    ``status`` and ``headers`` (case-insensitive) are those of the final response,
    after redirects. A transport may also give ``connection_id: str | None``, a name
    for the TCP connection (the built-in ones use the local ``ip:port``) for the
    per-connection byte counts in :class:`~rangestream.Stats`; the engine reads it with
    ``getattr`` and shows ``"?"`` without it.
    """

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read_piece(self) -> bytes:
        """The next piece of the body as soon as any bytes are available, ``b""`` at its end.

        A piece is whatever has arrived (the engine copes with any size, up to a few MiB
        for a bounded memory footprint), never empty before the end of the body. Raises
        :class:`~rangestream.errors.TransientError` when no byte arrives within the
        request's ``idle_timeout`` (timed from this call, not from the headers) or the
        connection is lost mid-body. Whether the body was complete is the engine's
        check (against ``Content-Range``), not the transport's.
        """
        ...

    def close(self) -> None:
        """Release the response, at once and without awaiting anything.

        Before the end of the body this aborts the transfer: the connection is closed
        (an HTTP/2 stream reset), never handed back to a pool with unread bytes, however
        stalled the server is. After the end the connection may be reused. Idempotent: the
        engine calls it in a ``finally`` and may call it again; it never reads after it.
        """
        ...


class Transport(Protocol):
    """Sends the engine's requests; shared by every stream of a :class:`~rangestream.Client`."""

    async def request(self, method: str, url: str, headers: Mapping[str, str], *,
                      connect_timeout: float, idle_timeout: float, data: bytes | None = None) -> Response:
        """Send one request and return the final response as soon as its headers are in.

        ``headers`` (``Range``, ``If-Range``, the user's) go on top of the transport's
        own per-URL profile and cookies. Redirects (301, 302, 303, 307, 308) are followed
        here, hop by hop and at most :data:`MAX_REDIRECTS`, each hop with its own URL's
        profile and cookies (see :func:`next_hop`). ``connect_timeout`` bounds setting up
        a connection; ``idle_timeout`` is handed to the response for its body reads.

        Raises only the errors listed in this module's docstring. Cancelled (the
        engine's request timeout, a stream shutting down), it aborts the request and
        leaves no connection behind.
        """
        ...

    async def aclose(self) -> None:
        """Close the connection pool (and abort responses still open). Idempotent."""
        ...

    # Optional: ``connections_per_host``, the most connections one host gets at once (None:
    # no cap). The engine asks fewer requests ahead of a first answer than that, so a response
    # waiting for that answer never holds the connection the answer needs (see
    # :func:`connection_budget`).


def connection_budget(transport: object) -> int | None:
    """``transport.connections_per_host``, or None for a transport that does not say."""
    budget = getattr(transport, "connections_per_host", None)
    return budget if isinstance(budget, int) and budget > 0 else None


def smallest_cap(*limits: int) -> int | None:
    """The smallest of ``limits`` that caps anything (0: no cap), or None."""
    return min((n for n in limits if n > 0), default=None)


# -- redirects -----------------------------------------------------------------

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
# The caller's credentials stay with their origin (as browsers and aiohttp do); cookies from
# the cookies file are chosen again for the new URL.
_ORIGIN_BOUND = ("authorization", "cookie")


def next_hop(status: int, method: str, data: bytes | None, headers: Mapping[str, str], *,
             target: str, scheme: str, same_origin: bool) -> tuple[str, bytes | None, dict[str, str]]:
    """The method, body and caller's headers for the request to a redirect's ``target``."""
    if scheme not in ("http", "https"):
        raise InvalidURLError(f"redirected to a non-http(s) URL: {redact_url(target)}")
    out = dict(headers)
    if not same_origin:
        for name in [k for k in out if k.lower() in _ORIGIN_BOUND]:
            del out[name]
    if status == 303:
        method, data = "GET", None
    return method, data, out


def too_many_redirects(last: str) -> TooManyRedirectsError:
    # A loop (or a chain this long) answers the same way on every retry: terminal.
    return TooManyRedirectsError(f"too many redirects: more than {MAX_REDIRECTS} in a row (a redirect "
                                 f"loop?), the last to {redact_url(last)}")


# -- pacing ----------------------------------------------------------------------

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


def host_key(url: str) -> str:
    """``host:port`` as the pacer counts it (``""`` for an unparsable URL)."""
    try:
        parts = urlsplit(url)
        return f"{(parts.hostname or '').lower()}:{parts.port or ''}"
    except ValueError:
        return ""


# -- proxies ---------------------------------------------------------------------

PROXY_SCHEMES = frozenset({"http", "https", "socks5", "socks5h", "socks4", "socks4a"})


def split_proxy_url(proxy: str) -> SplitResult:
    """``proxy`` parsed, or :class:`~rangestream.errors.InvalidURLError` for one no transport can use."""
    try:
        parts = urlsplit(proxy)
        scheme, host = parts.scheme.lower(), parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise InvalidURLError(f"invalid proxy URL {redact_url(proxy)}") from None
    if not host:
        raise InvalidURLError(f"proxy URL without a host: {redact_url(proxy)}")
    if scheme not in PROXY_SCHEMES:
        raise InvalidURLError(f"unsupported proxy scheme {scheme!r} (use http, https, socks5, "
                              f"socks5h, socks4 or socks4a): {redact_url(proxy)}")
    return parts


def via_proxy(proxy: str | None) -> str:
    """The end of an error message naming the proxy (redacted), if there is one."""
    return f" (via proxy {redact_url(proxy)})" if proxy else ""


def proxy_auth_failed(proxy: str | None) -> ProxyError:
    # Not worth retrying: the same credentials will be refused again.
    try:
        has_credentials = bool(proxy and urlsplit(proxy).username)
    except ValueError:
        has_credentials = False
    what = ("the proxy refused the credentials given in the proxy URL" if has_credentials else
            "the proxy requires credentials: give them in the proxy URL (http://USER:PASSWORD@HOST:PORT)")
    return ProxyError(f"{what} (HTTP 407 Proxy Authentication Required; via proxy {redact_url(proxy)})",
                      status=407)


# -- TLS -------------------------------------------------------------------------

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
    """The terminal error for a failed handshake; ``certificate``: the server's certificate was not trusted."""
    try:
        parts = urlsplit(url)
        where = f"{parts.hostname}:{parts.port or 443}"
    except ValueError:
        where = "the server"
    reason = redact_text(reason)
    if certificate:
        return TLSError(f"TLS certificate of {where} not trusted ({reason}); {TLS_HINT}", url=url)
    return TLSError(f"TLS handshake with {where} failed ({reason})", url=url)
