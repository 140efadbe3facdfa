"""HTTP/1.1 straight to the server on asyncio's protocol layer: the default transport for
direct connections (the contract: :mod:`.base`).

Why not aiohttp here: importing it is ~0.15 s of a CLI run (a tenth of a 1 GB download at
disk speed, a twentieth of a 200 MB one at the link limit), and a Range GET needs little of
it: one request per connection at a time, a body framed by ``Content-Length`` (chunked and
read-to-close bodies are handled too), keep-alive reuse. Proxies go through
:mod:`.aiohttp` (HTTP and SOCKS) and browser impersonation through :mod:`.curl`.

Pieces are the ``bytes`` the socket read produced (joined when several wait), so the body
is copied once on its way to the engine. Unread bytes beyond ``_HIGH`` pause reading: the
kernel's buffer then fills and TCP slows the server, as with any stalled consumer.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import re
import socket
import ssl
from collections import deque
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

from ..errors import InvalidURLError, TransientError
from ..headers import add_cookies, headers_for, store_cookies
from ..redact import redact_url
from .base import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    HostPacer,
    Response,
    ca_context,
    host_key,
    next_hop,
    smallest_cap,
    tls_error,
    too_many_redirects,
)

if TYPE_CHECKING:
    from http.cookiejar import CookieJar

__all__ = ["Http1Transport"]

_HIGH = 2 << 20          # unread bytes per connection before reading pauses
_MAX_HEAD = 64 << 10     # status line and headers together
_GATHER = 1 << 20        # small socket reads are joined into pieces up to this size
_TLS_READ = 256 << 10    # decrypted bytes per read, as asyncio reads a plain socket (see _TLSConnection)
_MAX_LINE = 8 << 10      # a chunk-size or trailer line
_KEEPALIVE = 15.0        # seconds an idle connection stays in the pool (aiohttp's default too)
_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [^\r\n]*)?")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CHUNKED_END = re.compile(rb"\r\n0(?:;[^\r\n]*)?\r\n(?:[^\r\n]+\r\n)*\r\n")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00\r\n]")
# Bytes a request line cannot carry as they are (yarl and browsers escape them too); every
# other character, "%" included, is sent as given so signed URLs stay byte for byte.
_UNSAFE = re.compile(r"[^\x21-\x7e]|[\"<>\\^`{|}]")


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: raw bytes queued as they arrive, a waiter woken on each."""

    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.eof = False
        self.error: BaseException | None = None
        self.reused = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size > _HIGH and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = self.error or exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- used by the response
    async def wait(self) -> None:
        """Until bytes are queued or the connection ended."""
        if self.chunks or self.eof:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self, limit: int | None = None) -> bytes:
        """The next queued bytes (at most ``limit``), ``b""`` when none are. Small reads are
        gathered up to 1 MiB (fewer, larger pieces cost the engine less); a large one is
        handed on as it is, never copied into a bigger one."""
        chunks = self.chunks
        if not chunks:
            return b""
        data = chunks.popleft()
        if len(data) < _GATHER and chunks:
            parts, n = [data], len(data)
            while chunks and n < _GATHER and (limit is None or n < limit):
                parts.append(chunks.popleft())
                n += len(parts[-1])
            data = b"".join(parts)
        if limit is not None and len(data) > limit:
            chunks.appendleft(data[limit:])
            data = data[:limit]
        self.size -= len(data)
        if self._paused and self.size < _HIGH // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def unread(self, data: bytes) -> None:
        if data:
            self.chunks.appendleft(data)
            self.size += len(data)

    @property
    def usable(self) -> bool:
        """Idle, open and silent: safe to send the next request on."""
        return not (self.eof or self.chunks or self.transport is None or self.transport.is_closing())

    def abort(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        if self.transport is not None:
            self.transport.abort()
        self.eof = True


class _TLSConnection(_Connection, asyncio.BufferedProtocol):
    """Over TLS, asyncio decrypts straight into one buffer of ours, and each read is handed on
    as one copy of it: without this, every TLS record (16 KiB) is decrypted into a fresh
    256 KiB allocation and the records of a read are joined again (measured against nginx,
    TLS 1.3, 1 GB, one connection: 910-1030 MB/s at 0.93-1.07 CPU s/GB, was 750-950 MB/s at
    1.02-1.31). Plain connections keep the socket's own reads, which need no copy at all.

    The buffer is the transport's, shared by its connections: asyncio fills it and calls
    ``buffer_updated`` in one step, which copies it out at once."""

    def __init__(self, key: tuple[str, str, int], buffer: memoryview) -> None:
        super().__init__(key)
        self._buffer = buffer

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._buffer[:nbytes].tobytes())


class _Headers(Mapping[str, str]):
    """Response headers, case-insensitive; ``[name]`` and ``get`` give the first value."""

    __slots__ = ("_all", "_names")

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._all: dict[str, list[str]] = {}
        self._names: dict[str, str] = {}
        for name, value in fields:
            low = name.lower()
            self._all.setdefault(low, []).append(value)
            self._names.setdefault(low, name)

    def __getitem__(self, name: str) -> str:
        return self._all[name.lower()][0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._all

    def __iter__(self) -> Iterator[str]:
        return iter(self._names.values())

    def __len__(self) -> int:
        return len(self._all)

    def getall(self, name: str) -> list[str]:
        return list(self._all.get(name.lower(), ()))


class _StaleConnection(Exception):
    """A kept-alive connection closed before answering: the request goes again on a new one."""


class _Http1Response:
    __slots__ = ("status", "headers", "connection_id", "_conn", "_pool", "_idle", "_left", "_chunked",
                 "_need_crlf", "_done", "_keep", "_closed")

    def __init__(self, conn: _Connection, pool: _Pool, status: int, headers: _Headers, *,
                 length: int | None, chunked: bool, keep_alive: bool, idle_timeout: float | None) -> None:
        self.status, self.headers = status, headers
        self._conn, self._pool, self._idle = conn, pool, idle_timeout
        self._left, self._chunked, self._keep = length, chunked, keep_alive
        self._need_crlf = False
        self._done = length == 0 and not chunked
        self._closed = False
        sock = conn.transport.get_extra_info("sockname") if conn.transport is not None else None
        self.connection_id: str | None = f"{sock[0]}:{sock[1]}" if sock else None

    async def read_piece(self) -> bytes:
        if self._done:
            return b""
        if self._chunked:
            return await self._chunked_piece()
        conn = self._conn
        if not conn.chunks:
            await self._wait()
            if not conn.chunks:  # ended
                if self._left is not None or conn.error is not None:
                    raise TransientError("connection lost mid-body")
                self._done = True  # read to close: the close is the end
                return b""
        data = conn.take(self._left)
        if self._left is not None:
            self._left -= len(data)
            self._done = self._left == 0
        return data

    async def _wait(self) -> None:
        # The idle timeout runs only while we wait for bytes (see transports.base).
        try:
            async with asyncio.timeout(self._idle):
                await self._conn.wait()
        except TimeoutError as e:
            raise TransientError("no data received within the idle timeout") from e

    async def _chunked_piece(self) -> bytes:
        while True:
            if self._left:
                conn = self._conn
                if not conn.chunks:
                    await self._wait()
                    if not conn.chunks:
                        raise TransientError("connection lost mid-body")
                data = conn.take(self._left)
                self._left -= len(data)
                self._need_crlf = self._left == 0
                return data
            if self._need_crlf:
                if await self._line() != b"":
                    raise TransientError("malformed chunked body")
                self._need_crlf = False
            self._left = _chunk_size(await self._line())
            if self._left == 0:
                while await self._line() != b"":  # trailers, ignored
                    pass
                self._done = True
                return b""

    async def _line(self) -> bytes:
        conn, buf = self._conn, b""
        while True:
            end = buf.find(b"\n")
            if end >= 0:
                conn.unread(buf[end + 1:])
                return buf[:end].rstrip(b"\r")
            if len(buf) > _MAX_LINE:
                raise TransientError("malformed chunked body (line too long)")
            if not conn.chunks:
                await self._wait()
                if not conn.chunks:
                    raise TransientError("connection lost mid-body")
            buf += conn.take()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._chunked and not self._done and not self._left:
            self._done = self._ends_chunked()
        self._pool.done(self._conn, reuse=self._done and self._keep)

    def _ends_chunked(self) -> bool:
        """The engine stops once it has the bytes Content-Range promised: the last-chunk marker
        already queued after them completes the body, so the connection can be kept."""
        conn = self._conn
        rest = conn.take()
        if _CHUNKED_END.fullmatch(rest if self._need_crlf else b"\r\n" + rest):
            return True
        conn.unread(rest)
        return False


def _chunk_size(line: bytes) -> int:
    size = line.split(b";", 1)[0].strip()
    if not size or len(size) > 16 or size.strip(b"0123456789abcdefABCDEF"):
        raise TransientError("malformed chunked body (bad chunk size)")
    return int(size, 16)


class _Pool:
    """Kept-alive connections per (scheme, host, port), and the caps on connections in use."""

    def __init__(self, limit: int, limit_per_host: int) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._live: set[_Connection] = set()
        self._limit = asyncio.Semaphore(limit) if limit else None
        self._per_host_limit = limit_per_host
        self._per_host: dict[tuple[str, str, int], asyncio.Semaphore] = {}

    async def acquire(self, key: tuple[str, str, int]) -> None:
        if self._limit is not None:
            await self._limit.acquire()
        if self._per_host_limit:
            sem = self._per_host.setdefault(key, asyncio.Semaphore(self._per_host_limit))
            try:
                await sem.acquire()
            except BaseException:
                if self._limit is not None:
                    self._limit.release()
                raise

    def release(self, key: tuple[str, str, int]) -> None:
        if self._per_host_limit:
            self._per_host[key].release()
        if self._limit is not None:
            self._limit.release()

    def idle(self, key: tuple[str, str, int]) -> _Connection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.idle_timer is not None:
                conn.idle_timer.cancel()
                conn.idle_timer = None
            if conn.usable:
                conn.reused = True
                return conn
            self.drop(conn)
        return None

    def add(self, conn: _Connection) -> None:
        self._live.add(conn)

    def done(self, conn: _Connection, *, reuse: bool) -> None:
        """A response is finished with ``conn``: keep it for the next request or close it."""
        self.release(conn.key)
        if not (reuse and conn.usable):
            self.drop(conn)
            return
        conn.idle_timer = asyncio.get_running_loop().call_later(_KEEPALIVE, self._expire, conn)
        self._idle.setdefault(conn.key, []).append(conn)

    def _expire(self, conn: _Connection) -> None:
        conns = self._idle.get(conn.key, [])
        if conn in conns:
            conns.remove(conn)
        self.drop(conn)

    def drop(self, conn: _Connection) -> None:
        conn.abort()
        self._live.discard(conn)

    def close(self) -> None:
        for conn in list(self._live):
            self.drop(conn)
        self._idle.clear()


class _Resolver:
    """Name lookups kept for a while (as aiohttp's connector keeps them): a window opens several
    connections to one host at once, and each lookup is a trip to the resolver."""

    TTL = 300.0

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], tuple[float, list[tuple[int, str]]]] = {}

    async def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """(family, address) pairs for ``host``; an address literal is its own answer."""
        try:
            return [(socket.AF_INET6 if ":" in host else socket.AF_INET, str(ipaddress.ip_address(host)))]
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        hit = self._cache.get((host, port))
        if hit is not None and loop.time() - hit[0] < self.TTL:
            return hit[1]
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found: list[tuple[int, str]] = list(dict.fromkeys((int(family), str(sockaddr[0]))
                                                          for family, _, _, _, sockaddr in infos))
        self._cache[(host, port)] = (loop.time(), found)
        return found


class Http1Transport:
    """HTTP/1.1 to the server itself, kept-alive connections shared by every stream.

    Options as :class:`~rangestream.transports.aiohttp.AiohttpTransport`'s, without a
    proxy: ``limit`` connections in use at once (``limit_per_host`` per host), ``cookies``,
    ``requests_per_second`` per host, ``cacert`` / ``insecure`` for TLS (the system's CAs
    and ``SSL_CERT_FILE`` otherwise; the context is built at the first https request, not
    before, because loading the system's CAs takes tens of milliseconds).
    """

    def __init__(self, *, limit: int = 64, limit_per_host: int = 0, cookies: CookieJar | None = None,
                 requests_per_second: float | None = None,
                 cacert: str | os.PathLike[str] | None = None, insecure: bool = False) -> None:
        if cacert is not None:
            ca_context(cacert)  # a bad CA file is reported now, not at the first request
        self._cacert, self._insecure = cacert, insecure
        self._ssl: ssl.SSLContext | None = None
        self._cookies = cookies
        self._pacer = HostPacer(requests_per_second) if requests_per_second else None
        self._limits = (limit, limit_per_host)
        self._pool: _Pool | None = None
        self._resolver = _Resolver()
        self._tls_buffer: memoryview | None = None  # see _TLSConnection

    @property
    def connections_per_host(self) -> int | None:
        return smallest_cap(*self._limits)

    async def request(self, method: str, url: str, headers: Mapping[str, str], *,
                      connect_timeout: float, idle_timeout: float, data: bytes | None = None) -> Response:
        headers = dict(headers)
        for _hop in range(MAX_REDIRECTS + 1):
            if self._pacer is not None:
                await self._pacer.wait(host_key(url))
            # Headers within connect + idle (as the other transports); the engine's request
            # timeout, shorter, normally ends the wait first.
            try:
                async with asyncio.timeout(connect_timeout + idle_timeout):
                    resp = await self._send(method, url, headers, data, connect_timeout, idle_timeout)
            except TimeoutError as e:
                raise TransientError("timed out waiting for the server") from e
            if "Set-Cookie" in resp.headers:
                self._keep_cookies(url, resp.headers.getall("Set-Cookie"))
            location = resp.headers.get("Location")
            if resp.status not in REDIRECT_STATUSES or not location:
                return resp
            resp.close()
            url, method, data, headers = _follow(resp.status, url, location, method, data, headers)
        raise too_many_redirects(url)

    async def _send(self, method: str, url: str, headers: Mapping[str, str], data: bytes | None,
                    connect_timeout: float, idle_timeout: float) -> _Http1Response:
        scheme, host, port, target, auth = _parse_url(url)
        out = add_cookies(headers_for(url, headers), self._cookies, url)
        if auth is not None and not any(k.lower() == "authorization" for k in out):
            out["Authorization"] = auth
        wire = _request_bytes(method, target, _host_header(scheme, host, port), out, data)
        key = (scheme, host, port)
        pool = self._get_pool()
        await pool.acquire(key)
        try:
            while True:
                conn = pool.idle(key) or await self._connect(key, url, connect_timeout)
                try:
                    return await _exchange(conn, pool, wire, method, idle_timeout)
                except _StaleConnection:
                    pool.drop(conn)  # the server closed it while idle: a new connection, once per stale one
                except BaseException:
                    pool.drop(conn)
                    raise
        except BaseException:
            pool.release(key)
            raise

    async def _connect(self, key: tuple[str, str, int], url: str, timeout: float) -> _Connection:
        scheme, host, port = key
        context = self._context() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                conn = await self._open(key, context)
        except ssl.SSLCertVerificationError as e:
            raise tls_error(url, str(e.verify_message or e.reason or "certificate verification failed"),
                            certificate=True) from None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as e:  # cut mid-handshake: may pass next time
            raise TransientError(f"request failed: connection closed during the TLS handshake "
                                 f"({type(e).__name__})") from e
        except ssl.SSLError as e:
            raise tls_error(url, str(e.reason or type(e).__name__), certificate=False) from None
        except TimeoutError as e:
            raise TransientError(f"request failed: cannot connect to {host}:{port} (timed out)") from e
        except UnicodeError:  # the resolver's IDNA check refused a label
            raise InvalidURLError(f"invalid URL {redact_url(url)}: bad host name") from None
        except OSError as e:
            why = e.strerror or type(e).__name__
            raise TransientError(f"request failed: cannot connect to {host}:{port} ({why})") from e
        self._get_pool().add(conn)
        return conn

    async def _open(self, key: tuple[str, str, int], context: ssl.SSLContext | None) -> _Connection:
        """A connection to the first of the host's addresses that accepts one."""
        _, host, port = key
        loop = asyncio.get_running_loop()
        error: OSError | None = None
        if context is not None and self._tls_buffer is None:
            self._tls_buffer = memoryview(bytearray(_TLS_READ))
        buffer = self._tls_buffer

        def connection() -> _Connection:
            return _Connection(key) if buffer is None or context is None else _TLSConnection(key, buffer)

        for family, address in await self._resolver.resolve(host, port):
            try:
                _, conn = await loop.create_connection(connection, address, port, family=family,
                                                       ssl=context, server_hostname=host if context else None)
                return conn
            except ssl.SSLError:
                raise
            except OSError as e:
                error = e
        raise error or OSError(f"no address for {host}")

    def _keep_cookies(self, url: str, values: list[str]) -> None:
        """Cookies a server sets go with the next requests they match (as aiohttp's session
        jar keeps them), in the jar of ``cookies=`` or one made now; never written to a file."""
        if self._cookies is None:
            import http.cookiejar  # lazy: only for servers that set cookies

            self._cookies = http.cookiejar.CookieJar()
        store_cookies(self._cookies, url, values)

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            if self._insecure:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx = ca_context(self._cacert) if self._cacert is not None else ssl.create_default_context()
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl = ctx
        return self._ssl

    def _get_pool(self) -> _Pool:
        if self._pool is None:
            self._pool = _Pool(*self._limits)
        return self._pool

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()


async def _exchange(conn: _Connection, pool: _Pool, wire: bytes, method: str,
                    idle_timeout: float) -> _Http1Response:
    """Send one request on ``conn`` and read the response's head (skipping 1xx)."""
    assert conn.transport is not None
    conn.transport.write(wire)
    while True:
        status, version, fields = await _read_head(conn)
        if not 100 <= status < 200:
            break
        if status == 101:
            raise TransientError("the server switched protocols (HTTP 101)")
    headers = _Headers(fields)
    length, chunked = _framing(method, status, headers)
    tokens = {t.strip().lower() for v in headers.getall("Connection") for t in v.split(",")}
    keep = "close" not in tokens and (version == 1 or "keep-alive" in tokens)
    if length is None and not chunked:
        keep = False  # the close ends the body
    return _Http1Response(conn, pool, status, headers, length=length, chunked=chunked, keep_alive=keep,
                          idle_timeout=idle_timeout)


async def _read_head(conn: _Connection) -> tuple[int, int, list[tuple[str, str]]]:
    """The head's status and fields; the bytes after it stay queued for the body."""
    buf, scanned = b"", 0
    while True:
        if not conn.chunks:
            await conn.wait()
            if not conn.chunks:
                if conn.reused and not buf:
                    raise _StaleConnection()
                raise TransientError("connection closed before the response headers" if not buf else
                                     "connection closed in the middle of the response headers")
        piece = conn.chunks.popleft()  # one read at a time: the body that follows is not copied
        conn.size -= len(piece)
        buf = buf + piece if buf else piece
        if not scanned and buf[:1] in (b"\r", b"\n"):
            buf = buf.lstrip(b"\r\n")  # blank lines before the status line
        end = _HEAD_END.search(buf, max(0, scanned - 3))
        if end is not None:
            if end.start() > _MAX_HEAD:
                raise TransientError("response headers too long")
            conn.unread(buf[end.end():])
            return _parse_head(buf[:end.start()])
        if len(buf) > _MAX_HEAD:
            raise TransientError("response headers too long")
        scanned = len(buf)


def _parse_head(head: bytes) -> tuple[int, int, list[tuple[str, str]]]:
    """Status, minor version and header fields. Lines may end in a bare LF and a folded line
    continues the previous value after a space (both as RFC 9112 lets a recipient accept)."""
    lines = [line.removesuffix(b"\r") for line in head.split(b"\n")]
    m = _STATUS.fullmatch(lines[0])
    if m is None:
        raise TransientError("malformed response status line")
    fields: list[tuple[str, str]] = []
    for raw in lines[1:]:
        text = raw.decode("latin-1").replace("\r", " ")  # a bare CR inside a value: a space
        if text[:1] in (" ", "\t") and fields:
            name, value = fields.pop()
            fields.append((name, (value + " " + text.strip(" \t")).strip()))
            continue
        name, sep, value = text.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise TransientError("malformed response header line")
        fields.append((name, value.strip(" \t")))
    return int(m.group(2)), int(m.group(1)), fields


def _framing(method: str, status: int, headers: _Headers) -> tuple[int | None, bool]:
    """(Content-Length or None, chunked) of the body, as RFC 9112 section 6.3 orders the rules;
    the ambiguous cases request smuggling relies on are refused."""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0, False
    te = headers.getall("Transfer-Encoding")
    lengths = {v.strip() for value in headers.getall("Content-Length") for v in value.split(",")}
    if te:
        if lengths:
            raise TransientError("response with both Transfer-Encoding and Content-Length")
        codings = [c.strip().lower() for v in te for c in v.split(",")]
        return None, codings[-1] == "chunked"
    if not lengths:
        return None, False
    if len(lengths) > 1 or not all(v.isdigit() and v.isascii() for v in lengths):
        raise TransientError("response with an invalid or conflicting Content-Length")
    return int(lengths.pop()), False


def _parse_url(url: str) -> tuple[str, str, int, str, str | None]:
    """(scheme, host, port, request target, Authorization from the URL's user:password) of an
    http(s) URL, or InvalidURLError."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError as e:
        raise InvalidURLError(f"invalid URL {redact_url(url)}: {e}") from None
    if scheme not in ("http", "https"):
        raise InvalidURLError(f"invalid URL {redact_url(url)}: not http(s)")
    if not host:
        raise InvalidURLError(f"invalid URL {redact_url(url)}: no host")
    if port == 0:
        raise InvalidURLError(f"invalid URL {redact_url(url)}: port 0")
    try:
        if ":" not in host:  # an IPv6 literal has no labels
            host = host.encode("idna").decode("ascii")  # also checks label lengths and empty labels
    except UnicodeError:
        raise InvalidURLError(f"invalid URL {redact_url(url)}: bad host name") from None
    if _UNSAFE.search(host) or "%" in host:
        raise InvalidURLError(f"invalid URL {redact_url(url)}: bad host name")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    target = _UNSAFE.sub(lambda m: quote(m.group(0), safe=""), target)
    auth = None
    if parts.username is not None:  # as aiohttp and curl: Basic credentials from the URL
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = "Basic " + base64.b64encode(pair).decode("ascii")
    return scheme, host, port or (443 if scheme == "https" else 80), target, auth


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme.lower() == "https" else 80)


def _host_header(scheme: str, host: str, port: int) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if scheme == "https" else 80) else f"{name}:{port}"


def _request_bytes(method: str, target: str, host: str, headers: Mapping[str, str], data: bytes | None) -> bytes:
    """The request's head (and body). The caller's ``Host`` wins over the URL's (a virtual host
    reached by address, as with curl and aiohttp); framing headers are this module's own."""
    if not _TOKEN.fullmatch(method):
        raise InvalidURLError(f"invalid HTTP method {method!r}")
    if _BAD_VALUE.search(host):
        raise InvalidURLError("invalid header 'Host': values cannot hold line breaks")
    host = next((v for k, v in headers.items() if k.lower() == "host"), host)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        if name.lower() in ("host", "content-length", "transfer-encoding"):
            continue
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise InvalidURLError(f"invalid header {name!r}: names are tokens, values cannot hold line breaks")
        lines.append(f"{name}: {value}")
    if data is not None or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(data or b'')}")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()  # values as UTF-8, as aiohttp sends them
    except UnicodeEncodeError:
        raise InvalidURLError("invalid header value: not encodable") from None
    return head + data if data else head


def _follow(status: int, url: str, location: str, method: str, data: bytes | None,
            headers: Mapping[str, str]) -> tuple[str, str, bytes | None, dict[str, str]]:
    """The URL, method, body and caller's headers of the next hop of a redirect."""
    # Header values were decoded byte for byte (latin-1): escape the bytes as sent, so a UTF-8
    # path goes out as its UTF-8 escapes rather than being encoded a second time.
    location = re.sub(rb"[^\x21-\x7e]", lambda m: b"%%%02X" % m.group(0)[0],
                      location.strip().encode("latin-1", "replace")).decode("ascii")
    try:
        target = urljoin(url, location)
        old, new = urlsplit(url), urlsplit(target)
        scheme = new.scheme.lower()
        same_origin = (scheme in ("http", "https") and scheme == old.scheme.lower()
                       and new.hostname == old.hostname and _port(new) == _port(old))
    except ValueError:
        raise TransientError(f"HTTP {status} with an unusable Location") from None
    method, data, out = next_hop(status, method, data, headers, target=target, scheme=scheme,
                                 same_origin=same_origin)
    return target, method, data, out
