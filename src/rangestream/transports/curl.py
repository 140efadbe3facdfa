"""A :class:`~rangestream.transports.base.Transport` on curl_cffi: a real browser's TLS and HTTP/2 fingerprint.

``pip install 'rangestream[impersonate]'``, then ``Client(impersonate="chrome")`` (or
``Client(transport=CurlTransport(...))``). The engine drives it exactly like
:class:`~rangestream.transports.aiohttp.AiohttpTransport` (the contract: :mod:`.base`).

Why not curl_cffi's ``AsyncSession(stream=True)``: two properties measured on it
rule it out for a window of long Range requests:

* leaving its stream context (``Response.aclose``) *awaits the whole transfer*
  (49 s for a throttled one); its only abort, the ``quit_now`` event, is checked
  when the next piece arrives, which for a stalled server is never;
* its write callback ``put_nowait``\\ s every piece into an unbounded queue, so a
  stalled consumer lets the whole object pile up in memory (551 MB measured).

So this module drives libcurl through curl_cffi's lower layer (``AsyncCurl``, one
multi handle per transport, and one ``Curl`` easy handle per request) with its own
callbacks:

* **abort**: :meth:`_CurlResponse.close` before the end of the body removes the
  easy handle from the multi handle at once (``curl_multi_remove_handle``), which
  closes an HTTP/1.1 connection (an HTTP/2 stream is reset) and frees the handle;
  it returns immediately, whatever the server is doing;
* **backpressure**: the write callback queues at most ``buffer_limit`` bytes; when
  the queue is full it returns ``CURL_WRITEFUNC_PAUSE`` (libcurl keeps that one
  piece and stops reading the socket) and :meth:`_CurlResponse.read_piece` resumes
  the transfer (``curl_easy_pause(CONT)``) once the consumer has taken the queue.
  Python-side memory per response is at most ``buffer_limit`` plus one piece (libcurl
  hands the body over 16 KiB at a time). The default, 2 MiB, is aiohttp's own pause
  mark (twice its 1 MiB read buffer); a smaller one costs CPU in pause/resume cycles
  on a fast link (``benchmarks/transports.py``). The residue outside our control: the kernel's socket buffer,
  and on HTTP/2 the data the server may send before flow control stops it: up to
  the stream window the impersonated browser announces (Chrome: 6 MiB), held by
  libcurl while the transfer is paused. Changing that window would change the
  fingerprint, so it is left as the browser has it.
* **idle timeout**: ``asyncio.timeout`` around each wait for a piece
  (:class:`~rangestream.errors.TransientError`); the connect timeout is libcurl's
  ``CONNECTTIMEOUT``, and waiting for the response headers is bounded by
  ``connect_timeout + idle_timeout`` (the engine has its own request timeout too).

Headers: the impersonated browser's own headers lead (User-Agent, sec-ch-ua,
Accept, ... must match the TLS fingerprint, so ``rangestream.headers``' generic
desktop profile is *not* sent); on top go the per-URL headers of that profile that
are about the URL rather than the browser (googlevideo's Origin/Referer, the iOS
app's User-Agent for ``c=IOS`` URLs, which googlevideo checks against the
signature), the caller's headers (Range, If-Range, user overrides), the cookies
file's cookies and ``Accept-Encoding: identity`` always, with libcurl's content
decoding off: ranges are offsets into the stored bytes.

Redirects are followed here hop by hop, as AiohttpTransport does (each hop gets
its own URL's headers and cookies; credentials stay with their origin).
"""

from __future__ import annotations

import asyncio
import collections
import http.cookiejar
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urljoin, urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from ..errors import InvalidURLError, RangestreamError, TransientError
from ..headers import _BROWSER, add_cookies, default_headers, merge_headers
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

try:
    from curl_cffi import AsyncCurl, Curl, CurlError
    from curl_cffi._wrapper import ffi, lib
    from curl_cffi.const import CurlECode, CurlHttpVersion, CurlInfo, CurlMOpt, CurlOpt
    from curl_cffi.curl import CURL_WRITEFUNC_ERROR, CURL_WRITEFUNC_PAUSE, CURLPAUSE_CONT
    from curl_cffi.requests.impersonate import resolve_latest_browser_type
except ImportError:  # pragma: no cover - exercised by Client's lazy import
    raise RangestreamError("impersonation needs curl_cffi: pip install 'rangestream[impersonate]'") from None

__all__ = ["CurlTransport"]

log = logging.getLogger("rangestream")

_PROXY_SCHEMES = {"http": "http", "https": "https",
                  # As AiohttpTransport: SOCKS5 always resolves names at the proxy.
                  "socks5": "socks5h", "socks5h": "socks5h", "socks4": "socks4", "socks4a": "socks4a"}
_INVALID_URL_CODES = frozenset({CurlECode.UNSUPPORTED_PROTOCOL, CurlECode.URL_MALFORMAT})
# Before any response through a proxy: the proxy unreachable, refusing, or cutting the connection.
_PROXY_CODES = frozenset({CurlECode.PROXY, CurlECode.COULDNT_CONNECT, CurlECode.COULDNT_RESOLVE_PROXY,
                          CurlECode.RECV_ERROR, CurlECode.SEND_ERROR, CurlECode.GOT_NOTHING})
# The server's certificate is not trusted (or not the one pinned): retrying cannot help.
_CERT_CODES = frozenset({CurlECode.PEER_FAILED_VERIFICATION, CurlECode.SSL_PINNEDPUBKEYNOTMATCH,
                         CurlECode.SSL_INVALIDCERTSTATUS, CurlECode.SSL_ISSUER_ERROR})
# libcurl's detail ("SSL certificate problem: ...") inside curl_cffi's message.
_CURL_DETAIL = re.compile(r"curl: \(\d+\) (.*?)(?:\. See https://curl\.se/\S*.*)?$", re.S)
_PROFILE_ONLY = tuple(_BROWSER)  # the generic browser headers the impersonation replaces
# curl_cffi leaves this one unannotated: the type we rely on.
_latest_browser: Callable[[str], str] = resolve_latest_browser_type


def _strerror(code: int) -> str:
    try:
        message: bytes = ffi.string(lib.curl_easy_strerror(code))
        return message.decode(errors="replace")
    except Exception:  # pragma: no cover
        return f"curl error {code}"


def _local_address(curl: Curl) -> str | None:
    """``ip:port`` of the transfer's socket: it names the TCP connection (per-connection stats)."""
    try:
        ip, port = curl.getinfo(CurlInfo.LOCAL_IP), curl.getinfo(CurlInfo.LOCAL_PORT)
    except CurlError:  # pragma: no cover
        return None
    if not (ip and isinstance(port, int) and port):  # libcurl gives the port as a long
        return None
    return f"{ip.decode() if isinstance(ip, bytes) else ip}:{port}"


class _CurlResponse:
    """One transfer: headers parsed from libcurl's header callback, the body queued
    (bounded) by its write callback, read by the engine with :meth:`read_piece`."""

    def __init__(self, transport: CurlTransport, curl: Curl, url: str, idle_timeout: float) -> None:
        self.status = 0
        self.headers: Mapping[str, str] = CIMultiDictProxy(CIMultiDict())
        self.url = url
        self.connection_id: str | None = None
        self._transport = transport
        self._curl: Curl | None = curl
        self._idle = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._limit = transport.buffer_limit
        self._pieces: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._eof = False
        self._closed = False
        self._error: RangestreamError | None = None
        self._raw: CIMultiDict[str] = CIMultiDict()
        self._ready = self._loop.create_future()  # headers complete, the transfer ended, or closed
        self._got_headers = False  # the final header block is complete
        self._waiter: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] | None = None

    # -- libcurl callbacks (run inside curl_multi_socket_action / curl_easy_pause) --

    def _on_header(self, line: bytes) -> int:
        n = len(line)
        if self._ready.done():
            return n  # trailers
        if line.startswith(b"HTTP/"):
            parts = line.split(None, 2)
            try:
                self.status = int(parts[1])
            except (IndexError, ValueError):
                self.status = 0
            self._raw = CIMultiDict()
        elif line in (b"\r\n", b"\n"):
            if not 100 <= self.status < 200:  # a 1xx block is followed by the real one
                self._headers_done()
        else:
            name, sep, value = line.partition(b":")
            if sep:
                self._raw.add(name.strip().decode("latin-1"), value.strip().decode("latin-1"))
        return n

    def _headers_done(self) -> None:
        self.headers = CIMultiDictProxy(self._raw)
        self._got_headers = True
        if self._curl is not None:
            self.connection_id = _local_address(self._curl)
        self._ready.set_result(None)

    def _on_body(self, chunk: bytes) -> int:
        # The hot path: libcurl hands the body over in pieces of at most 16 KiB
        # (CURL_MAX_WRITE_SIZE), whatever its receive buffer, so keep this short.
        if self._buffered >= self._limit or self._closed:
            if self._closed:
                return CURL_WRITEFUNC_ERROR
            # Not consumed: libcurl keeps this piece, stops reading and hands it back on resume.
            self._paused = True
            self._transport._note(self._buffered, pause=True)
            return CURL_WRITEFUNC_PAUSE
        if not self._got_headers:  # headers without the blank line we expect (defensive)
            self._headers_done()
        self._pieces.append(chunk)
        self._buffered += len(chunk)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        return len(chunk)

    def _on_done(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled():  # cancelled: we removed the handle ourselves (close)
            exc = fut.exception()
            if exc is None:
                self._eof = True
            else:
                self._error = self._transport._map_error(exc, self.url, self._curl, mid_body=self._got_headers)
        self._release()
        if not self._ready.done():
            self._ready.set_result(None)
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _release(self) -> None:
        curl, self._curl = self._curl, None
        self._transport._live.discard(self)
        if curl is not None:
            curl.close()

    # -- the Response protocol --

    async def read_piece(self) -> bytes:
        if not self._pieces:
            if self._error is not None:
                raise self._error
            if self._eof or self._closed:
                return b""
            self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(self._idle):
                    await self._waiter
            except TimeoutError:
                raise TransientError("no data received within the idle timeout") from None
            finally:
                self._waiter = None
            if not self._pieces:
                if self._error is not None:
                    raise self._error
                return b""
        pieces = self._pieces
        data = pieces.popleft() if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        self._transport._note(self._buffered)
        self._buffered = 0
        if self._paused and self._curl is not None:
            self._paused = False
            try:
                self._curl.pause(CURLPAUSE_CONT)  # may call _on_body right here with the kept piece
            except CurlError as e:
                self._error = TransientError(f"connection lost mid-body (resume failed: {_strerror(e.code)})")
        return data

    def close(self) -> None:
        """Release the transfer; before its end this aborts it at once (the connection is closed)."""
        if self._closed:
            return
        self._closed = True
        self._pieces.clear()
        self._buffered = 0
        if self._curl is not None and self._done is not None and not self._done.done():
            self._transport._abort(self._curl)
            self._transport.aborts += 1
        self._release()
        if not self._ready.done():
            self._ready.cancel()
        self._wake()


class CurlTransport:
    """libcurl (curl-impersonate) through curl_cffi, presenting ``impersonate``'s TLS and
    HTTP/2 fingerprint and headers (``"chrome"``, ``"chrome131"``, ``"safari"``, ...,
    or ``None`` for plain libcurl with ``rangestream.headers``' profile).

    ``proxy``: ``http://``, ``https://``, ``socks5://`` (names resolved at the proxy, as
    ``socks5h://``), ``socks4://``, ``socks4a://``; credentials in the URL.
    ``cookies``: a jar (see :func:`rangestream.headers.load_cookies`); ``limit_per_host``:
    connections per host (0: unlimited); ``requests_per_second``: request starts per host.
    ``buffer_limit``: bytes a response queues before libcurl is paused (the queue holds at
    most that plus 16 KiB); ``recv_buffer``: libcurl's socket read size (``BUFFERSIZE``;
    64 KiB measured best on loopback: larger reads fill the queue within one event-loop
    turn and cost pause/resume cycles).
    ``cacert``: a PEM file of the CA certificates to trust instead of the default bundle
    (curl's ``--cacert``); ``insecure`` (or ``verify=False``): do not check TLS certificates.
    An untrusted certificate is a :class:`~rangestream.errors.TLSError` (not retried).

    Counters for tests and benchmarks: ``buffered_peak`` (most bytes any response had
    queued), ``pauses`` and ``aborts``.
    """

    def __init__(self, impersonate: str | None = "chrome", *, proxy: str | None = None,
                 cookies: http.cookiejar.CookieJar | None = None, limit_per_host: int = 0,
                 requests_per_second: float | None = None, buffer_limit: int = 2 << 20,
                 recv_buffer: int = 64 * 1024, verify: bool = True,
                 cacert: str | os.PathLike[str] | None = None, insecure: bool = False) -> None:
        self.impersonate = _latest_browser(impersonate) if impersonate else None
        self._proxy = proxy or None
        self._curl_proxy = _parse_proxy(self._proxy) if self._proxy else None
        self._cookies = cookies
        self._limit_per_host = limit_per_host
        self._pacer = HostPacer(requests_per_second) if requests_per_second else None
        if buffer_limit <= 0 or recv_buffer <= 0:
            raise ValueError("buffer_limit and recv_buffer must be positive")
        self.buffer_limit = buffer_limit
        self._recv_buffer = recv_buffer
        self._verify = verify and not insecure
        self._cacert: str | None = None
        if cacert is not None and self._verify:
            ca_context(cacert)  # the same checks (and message) as the aiohttp transport: fail now
            self._cacert = os.fspath(cacert)
        self._acurl: AsyncCurl | None = None
        self._live: set[_CurlResponse] = set()
        self.buffered_peak = 0
        self.pauses = 0
        self.aborts = 0
        if self.impersonate is not None:  # fail now, not on the first request
            probe = Curl()
            try:
                if probe.impersonate(self.impersonate, default_headers=True) != 0:
                    raise RangestreamError(f"curl_cffi cannot impersonate {impersonate!r}")
            finally:
                probe.close()

    @property
    def connections_per_host(self) -> int | None:
        return smallest_cap(self._limit_per_host)

    def _note(self, buffered: int, pause: bool = False) -> None:
        # Queues only grow between reads, so their peak is seen at a read or at a pause.
        if buffered > self.buffered_peak:
            self.buffered_peak = buffered
        if pause:
            self.pauses += 1

    def _multi(self) -> AsyncCurl:
        if self._acurl is None:
            self._acurl = AsyncCurl(loop=asyncio.get_running_loop())
            if self._limit_per_host:
                # Not AsyncCurl.setopt: it passes a pointer to the long where curl_multi_setopt
                # reads the long itself (the limit would be the pointer's address).
                lib.curl_multi_setopt(self._acurl._curlm, CurlMOpt.MAX_HOST_CONNECTIONS,
                                      ffi.cast("void *", self._limit_per_host))
        return self._acurl

    def _headers(self, url: str, headers: Mapping[str, str | None]) -> dict[str, str]:
        profile: dict[str, str | None] = dict(default_headers(url))
        if self.impersonate is not None:
            for name in _PROFILE_ONLY:  # generic browser headers: the impersonated browser's own lead
                if profile.get(name) == _BROWSER[name]:
                    del profile[name]
        out = merge_headers(profile, headers, {"Accept-Encoding": "identity"})
        return add_cookies(out, self._cookies, url)

    async def request(self, method: str, url: str, headers: Mapping[str, str], *,
                      connect_timeout: float, idle_timeout: float, data: bytes | None = None) -> Response:
        headers = dict(headers)
        _check_url(url)
        for _hop in range(MAX_REDIRECTS + 1):
            if self._pacer is not None:
                await self._pacer.wait(host_key(url))
            resp = await self._request_once(method, url, self._headers(url, headers),
                                            connect_timeout=connect_timeout, idle_timeout=idle_timeout,
                                            data=data)
            if resp.status == 407 and self._proxy is not None and urlsplit(url).scheme == "http":
                resp.close()  # a forward proxy's own answer
                raise proxy_auth_failed(self._proxy)
            location = resp.headers.get("Location")
            if resp.status not in REDIRECT_STATUSES or not location:
                return resp
            resp.close()
            try:
                target = urljoin(url, location)
                parts, old = urlsplit(target), urlsplit(url)
                same_origin = (parts.scheme, parts.hostname, parts.port) == (old.scheme, old.hostname, old.port)
            except ValueError:
                raise TransientError(f"HTTP {resp.status} with an unusable Location") from None
            method, data, headers = next_hop(resp.status, method, data, headers, target=target,
                                             scheme=parts.scheme, same_origin=same_origin)
            url = target
        raise too_many_redirects(url)

    async def _request_once(self, method: str, url: str, headers: Mapping[str, str], *,
                            data: bytes | None = None,
                            connect_timeout: float, idle_timeout: float) -> _CurlResponse:
        acurl = self._multi()
        curl = Curl()
        resp = _CurlResponse(self, curl, url, idle_timeout)
        try:
            self._configure(curl, resp, method, url, headers, connect_timeout, data)
        except CurlError as e:
            curl.close()
            raise self._map_error(e, url, None, mid_body=False) from None
        except BaseException:
            curl.close()
            raise
        try:
            done = acurl.add_handle(curl)
        except CurlError as e:
            curl.close()
            raise self._map_error(e, url, None, mid_body=False) from None
        resp._done = done
        self._live.add(resp)
        done.add_done_callback(resp._on_done)
        try:
            async with asyncio.timeout(connect_timeout + idle_timeout):
                await asyncio.shield(resp._ready)
        except TimeoutError:
            resp.close()
            raise TransientError(f"timed out waiting for the server{via_proxy(self._proxy)}") from None
        except BaseException:  # cancelled (the engine's request timeout, shutdown): abort now
            resp.close()
            raise
        if not resp._got_headers:
            resp.close()
            raise resp._error or TransientError(f"no response from the server{via_proxy(self._proxy)}")
        return resp

    def _configure(self, curl: Curl, resp: _CurlResponse, method: str, url: str,
                   headers: Mapping[str, str], connect_timeout: float, data: bytes | None = None) -> None:
        if self.impersonate is not None:
            # First: it sets the TLS/HTTP2 options and the browser's base headers, which the
            # HTTPHEADER list below overrides name by name.
            curl.impersonate(self.impersonate, default_headers=True)
            # HTTP/2 over TLS (ALPN) as the browser does; for http:// plain HTTP/1.1, never the
            # "Upgrade: h2c" libcurl would otherwise add (no browser sends it).
            curl.setopt(CurlOpt.HTTP_VERSION, CurlHttpVersion.V2TLS)
        curl.setopt(CurlOpt.URL, url.encode())
        method = method.upper()
        if method == "HEAD":
            curl.setopt(CurlOpt.NOBODY, 1)
        elif method != "GET":
            curl.setopt(CurlOpt.CUSTOMREQUEST, method.encode())
        if data is not None:
            curl.setopt(CurlOpt.POSTFIELDSIZE, len(data))
            curl.setopt(CurlOpt.COPYPOSTFIELDS, data)
        lines = [(f"{k}: {v}" if v else f"{k};").encode("latin-1") for k, v in headers.items()]
        curl.setopt(CurlOpt.HTTPHEADER, lines + [b"Expect:"])
        curl.setopt(CurlOpt.HTTP_CONTENT_DECODING, 0)
        curl.setopt(CurlOpt.FOLLOWLOCATION, 0)
        curl.setopt(CurlOpt.NOSIGNAL, 1)
        curl.setopt(CurlOpt.CONNECTTIMEOUT_MS, max(1, int(connect_timeout * 1000)))
        curl.setopt(CurlOpt.BUFFERSIZE, self._recv_buffer)
        if not self._verify:
            curl.setopt(CurlOpt.SSL_VERIFYPEER, 0)
            curl.setopt(CurlOpt.SSL_VERIFYHOST, 0)
        elif self._cacert is not None:
            curl.setopt(CurlOpt.CAINFO, self._cacert)  # instead of the default bundle, as curl --cacert
        if self._curl_proxy is not None:
            curl.setopt(CurlOpt.PROXY, self._curl_proxy.encode())
            curl.setopt(CurlOpt.SUPPRESS_CONNECT_HEADERS, 1)  # https: only the origin's headers
        else:
            curl.setopt(CurlOpt.PROXY, b"")  # never the environment's
        curl.setopt(CurlOpt.HEADERFUNCTION, resp._on_header)
        curl.setopt(CurlOpt.WRITEFUNCTION, resp._on_body)

    def _abort(self, curl: Curl) -> None:
        acurl = self._acurl
        if acurl is None:
            return
        try:
            acurl.remove_handle(curl)  # mid-transfer: libcurl closes the connection (h2: resets the stream)
        except CurlError:  # pragma: no cover - the multi handle is gone already
            pass

    def _map_error(self, exc: BaseException, url: str, curl: Curl | None, *, mid_body: bool) -> RangestreamError:
        if isinstance(exc, RangestreamError):
            return exc
        if not isinstance(exc, CurlError):  # an exception from a callback: a bug, but never hang on it
            return TransientError(f"request failed: {type(exc).__name__}{via_proxy(self._proxy)}")
        code = exc.code
        if code in _INVALID_URL_CODES:
            return InvalidURLError(f"invalid URL {redact_url(url)}: {_strerror(code)}")
        if code in (CurlECode.PROXY, CurlECode.COULDNT_CONNECT, CurlECode.RECV_ERROR) and self._proxy and curl:
            try:
                if curl.getinfo(CurlInfo.HTTP_CONNECTCODE) == 407:
                    return proxy_auth_failed(self._proxy)
            except CurlError:  # pragma: no cover
                pass
        reason = _strerror(code)
        if code in _CERT_CODES and not mid_body:
            detail = _CURL_DETAIL.search(str(exc))
            return tls_error(url, detail.group(1) if detail else reason, certificate=True)
        if mid_body:
            return TransientError(f"connection lost mid-body ({reason})")
        if code == CurlECode.OPERATION_TIMEDOUT:
            return TransientError(f"timed out waiting for the server{via_proxy(self._proxy)}")
        if self._proxy and code in _PROXY_CODES:  # through a proxy, every connection made is to it
            return TransientError(f"request failed: {reason}{via_proxy(self._proxy)}", proxy_failed=True)
        if code == CurlECode.COULDNT_CONNECT:
            try:
                parts = urlsplit(url)
                where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
            except ValueError:
                where = "the server"
            return TransientError(f"request failed: cannot connect to {where} ({reason}){via_proxy(self._proxy)}")
        return TransientError(f"request failed: {reason}{via_proxy(self._proxy)}")

    async def aclose(self) -> None:
        for resp in list(self._live):
            resp.close()
        acurl, self._acurl = self._acurl, None
        if acurl is not None:
            close: Callable[[], Awaitable[None]] = acurl.close  # unannotated in curl_cffi
            await close()


def _check_url(url: str) -> None:
    # libcurl reports some malformed URLs as DNS failures (which would be retried): check first.
    try:
        parts = urlsplit(url)
        ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        ok = False
    if not ok:
        raise InvalidURLError(f"invalid URL {redact_url(url)}")


def _parse_proxy(proxy: str) -> str:
    parts = split_proxy_url(proxy)
    return _PROXY_SCHEMES[parts.scheme.lower()] + proxy[len(parts.scheme):]
