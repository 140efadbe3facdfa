"""The shared client: one connection pool, headers, cookies and a proxy (or a pool of
proxies) for many streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from typing import Any

from .engine import Stats, Stream
from .errors import ObjectChangedError, ProxyError, RangestreamError, StreamError, TransientError
from .headers import load_cookies
from .plan import url_param
from .proxypool import Lease, NoProxyAvailableError, Proxy, ProxyPool, is_bot_check
from .redact import redact_url
from .transports import Http1Transport, Response, Transport

log = logging.getLogger("rangestream")

Proxies = ProxyPool | Iterable[str] | str | os.PathLike[str]
TransportFactory = Callable[[str | None], Transport]


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

    ``proxies``: a :class:`~rangestream.ProxyPool`, a list of entries (proxy URLs or
    ``host:port[:user:pass]`` records) or the path of a file of them. Each stream then holds
    one lease from start to end (or shares ``lease=`` given to :meth:`open_stream`: one
    download's page resolution and streams): every request goes through that one proxy,
    retries included. When the proxy dies (refused, 407, reset on connect) or the server takes
    it for a bot (a 403/429 saying so), the failure is counted in the pool and the stream
    moves to the next healthy proxy, continuing from the byte reached (a URL bound to an IP,
    ``ip=``, is re-resolved through ``refresh=`` first). No usable proxy left:
    :class:`~rangestream.proxypool.NoProxyAvailableError` (a :class:`ProxyError`).
    ``transport_factory``: builds the transport for a proxy URL (or None), instead of the
    built-in one (the service's guarded transport).

    ``stream_defaults`` (chunk_size, window, retry, timeouts, refresh, ...) apply to
    every :meth:`open_stream` unless overridden there.
    """

    def __init__(self, *, headers: dict[str, str] | None = None, proxy: str | None = None,
                 transport: Transport | None = None, limit_per_host: int = 0,
                 cookies_file: str | os.PathLike[str] | None = None,
                 requests_per_second: float | None = None, impersonate: str | None = None,
                 cacert: str | os.PathLike[str] | None = None, insecure: bool = False,
                 proxies: Proxies | None = None, transport_factory: TransportFactory | None = None,
                 **stream_defaults: Any) -> None:
        self.headers: dict[str, str] = dict(headers or {})
        self.proxy = proxy
        self.pool = _pool_of(proxies) if proxies is not None else None
        if self.pool is not None and (proxy or transport is not None):
            raise ValueError("proxies= is a pool used instead of proxy= and transport= "
                             "(give transport_factory= to build each proxy's transport)")
        self._factory = transport_factory
        if transport_factory is not None:
            transport = transport_factory(proxy)
        self._custom = transport is not None and transport_factory is None
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
        if self._factory is not None:
            return self._factory(proxy)
        if self._impersonate:
            return _curl_transport(self._impersonate, proxy=proxy, **self._transport_options)
        return default_transport(proxy, **self._transport_options)

    def open_stream(self, url: str, *, proxy: str | None = None, **options: Any) -> Stream:
        """A stream on this client's pool; ``proxy=`` pins this stream to another proxy.
        With ``proxies=``, ``lease=`` (from :meth:`lease`) shares one download's proxy."""
        opts = {**self._stream_defaults, **options}
        headers = {**self.headers, **(opts.pop("headers", None) or {})}  # per-stream headers win
        lease = opts.pop("lease", None)
        if self.pool is not None:
            if proxy is not None:
                raise ValueError("proxy= per stream cannot be combined with the client's proxies=")
            return PooledStream(self, url, lease, headers, opts)  # type: ignore[return-value]  # same surface
        if lease is not None:
            raise ValueError("lease= needs a client with proxies=")
        transport = self._transport
        if proxy is not None and proxy != self.proxy:
            if self._custom:
                raise ValueError("proxy= per stream needs the built-in transport")
            transport = self._transport_for(proxy)
        return Stream(url, transport=transport, headers=headers, **opts)

    def _transport_for(self, proxy: str) -> Transport:
        if proxy not in self._by_proxy:
            self._by_proxy[proxy] = self._build_transport(proxy)
        return self._by_proxy[proxy]

    def lease(self) -> Lease:
        """``async with client.lease() as lease:`` one proxy for a whole download (its page
        resolution and every stream opened with ``lease=lease``). Raises
        :class:`~rangestream.proxypool.NoProxyAvailableError` at once when no proxy is usable."""
        if self.pool is None:
            raise ValueError("lease() needs a client with proxies=")
        return checked_lease(self.pool)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for transport in self._by_proxy.values():
            await transport.aclose()


def default_transport(proxy: str | None, **options: Any) -> Transport:
    """The built-in transport: HTTP/1.1 on asyncio for direct connections, aiohttp through a
    proxy (HTTP, HTTPS or SOCKS)."""
    if proxy is None:
        return Http1Transport(**options)
    from .transports.aiohttp import AiohttpTransport  # lazy: aiohttp's import is ~0.15 s

    return AiohttpTransport(proxy=proxy, **options)


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


# -- a pool of proxies ------------------------------------------------------------------------

PEEK_BYTES = 4096  # of a 403/429 body: enough for "Sign in to confirm you're not a bot"


def _pool_of(proxies: Proxies) -> ProxyPool:
    if isinstance(proxies, ProxyPool):
        return proxies
    if isinstance(proxies, (str, os.PathLike)):
        return ProxyPool.from_file(proxies)
    return ProxyPool(proxies)


class _CheckedLease(Lease):
    async def __aenter__(self) -> Lease:
        if not self._pool.usable:  # all cooling or quarantined: fail now, not after a cooldown
            raise NoProxyAvailableError(f"no usable proxy ({self._pool._summary()})")
        return await super().__aenter__()


def checked_lease(pool: ProxyPool) -> Lease:
    """``pool.lease()``, but entering it raises :class:`NoProxyAvailableError` at once when no
    proxy is healthy (instead of waiting out a cooldown); a full pool is still waited for."""
    return _CheckedLease(pool, pool.wait_timeout)


class EgressLost(StreamError):
    """The proxy a stream goes through failed (``bot_check``: the server took it for a bot).
    Terminal for the engine's stream; :class:`PooledStream` moves and continues."""

    def __init__(self, proxy: Proxy, reason: str, *, bot_check: bool = False) -> None:
        self.proxy = proxy
        self.bot_check = bot_check
        super().__init__(f"proxy {proxy.label}: {reason}")


class _Peeked:
    """A response whose first body bytes were read to look for a bot check; they come first."""

    def __init__(self, resp: Response, head: bytes) -> None:
        self._resp = resp
        self._head = head
        self.status = resp.status
        self.headers = resp.headers
        self.connection_id = getattr(resp, "connection_id", None)

    async def read_piece(self) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return await self._resp.read_piece()

    def close(self) -> None:
        self._resp.close()


class _LeaseTransport:
    """Sends each request through the proxy the lease holds now; turns the proxy's own
    failures and bot checks into :class:`EgressLost`, and counts the rest as successes."""

    def __init__(self, client: Client, lease: Callable[[], Lease]) -> None:
        self._client = client
        self._lease = lease

    async def request(self, method: str, url: str, headers: Mapping[str, str], *,
                      connect_timeout: float, idle_timeout: float, data: bytes | None = None) -> Response:
        proxy = self._lease().proxy
        transport = self._client._transport_for(proxy.url)
        try:
            resp = await transport.request(method, url, headers, connect_timeout=connect_timeout,
                                           idle_timeout=idle_timeout, data=data)
        except TransientError as e:
            if e.proxy_failed:
                raise EgressLost(proxy, str(e)) from None
            raise
        except ProxyError as e:  # 407: these credentials will not do
            raise EgressLost(proxy, e.reason) from None
        if resp.status in (403, 429):
            head = await _peek(resp, idle_timeout)
            if is_bot_check(resp.status, head.decode("utf-8", "replace")):
                resp.close()
                raise EgressLost(proxy, f"HTTP {resp.status}: the server took the client for a bot",
                                 bot_check=True)
            resp = _Peeked(resp, head)
        assert self._client.pool is not None
        self._client.pool.record_success(proxy)
        return resp

    async def aclose(self) -> None:
        pass  # the transports are the client's


async def _peek(resp: Response, idle_timeout: float) -> bytes:
    head = b""
    with contextlib.suppress(TransientError, TimeoutError):
        async with asyncio.timeout(idle_timeout):
            while len(head) < PEEK_BYTES and (piece := await resp.read_piece()):
                head += piece
    return head


class PooledStream:
    """A :class:`~rangestream.Stream` through a proxy pool, with the same surface.

    Runs an engine stream through the lease's proxy; when it ends with :class:`EgressLost`,
    the lease moves and a new engine stream fetches what is left (``ranges=``, the same
    validators and size required), delivering on in order (or at offsets with
    :meth:`unordered`), each byte once. :attr:`stats` is one object for the whole download:
    each engine stream's counts are added to it as it ends.
    """

    def __init__(self, client: Client, url: str, lease: Lease | None, headers: dict[str, str],
                 options: dict[str, Any]) -> None:
        assert client.pool is not None
        self._client, self._pool = client, client.pool
        self._url = url
        self._lease, self._own = lease, None if lease is not None else checked_lease(client.pool)
        self._headers = headers
        ranges = options.pop("ranges", None)
        self._left: list[list[int | None]] = [[a, b] for a, b in ranges] if ranges is not None else [[0, None]]
        hook = options.get("refresh")
        self._hook = hook
        if hook is not None:
            options["refresh"] = self._tracked
        self._options = options
        self._delivered = 0
        self._at_move = 0  # bytes delivered at the last move
        self.moves = 0
        self._inner = self._engine(ranges)
        self.stats: Stats = self._inner.stats
        self._entered = False

    def _engine(self, ranges: list[tuple[int, int | None]] | None, **extra: Any) -> Stream:
        transport = _LeaseTransport(self._client, self._held)
        return Stream(self._url, transport=transport, headers=self._headers,
                      ranges=ranges, **{**self._options, **extra})  # type: ignore[arg-type]

    def _held(self) -> Lease:
        lease = self._lease if self._lease is not None else self._own
        assert lease is not None
        return lease

    async def _tracked(self, old: str) -> str:
        assert self._hook is not None
        self._url = await self._hook(old)
        return self._url

    # -- the Stream surface ----------------------------------------------------------

    @property
    def size(self) -> int | None:
        return self._inner.size

    @property
    def url(self) -> str:
        return redact_url(self._url)

    @property
    def delivered(self) -> int:
        return self._delivered

    @property
    def active(self) -> int:
        return self._inner.active

    @property
    def window(self) -> int:
        return self._inner.window

    @property
    def validators(self) -> dict[str, str | None]:
        return self._inner.validators

    @property
    def proxy(self) -> str | None:
        """``host:port`` of the proxy this stream goes through now (never credentials)."""
        lease = self._held()
        return lease._proxy.label if lease._proxy is not None else None

    def push_back(self) -> None:
        self._inner.push_back()

    async def __aenter__(self) -> PooledStream:
        if self._entered:
            raise RuntimeError("a Stream can be entered once")
        self._entered = True
        if self._own is not None:
            await self._own.__aenter__()
        try:
            try:
                await self._inner.__aenter__()
            except EgressLost as e:
                await self._move(e)
            self._learn_size()
        except BaseException:
            await self._release()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self._inner.__aexit__(None, None, None)
            if self._inner.stats is not self.stats:
                _fold(self.stats, self._inner.stats)
        finally:
            await self._release()

    async def _release(self) -> None:
        own, self._own = self._own, None
        if own is not None:
            await own.__aexit__(None, None, None)

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._in_order()

    def unordered(self) -> AsyncGenerator[tuple[int, bytes], None]:
        return self._at_offsets()

    async def _in_order(self) -> AsyncGenerator[bytes, None]:
        while True:
            pieces = self._inner.__aiter__()
            try:
                async for data in pieces:
                    self._advance(len(data))
                    yield data
                return
            except EgressLost as e:
                await self._move(e)
            except StreamError as e:
                self._count(e)
                raise
            finally:
                await pieces.aclose()

    async def _at_offsets(self) -> AsyncGenerator[tuple[int, bytes], None]:
        while True:
            pieces = self._inner.unordered()
            try:
                async for offset, data in pieces:
                    self._cover(offset, offset + len(data))
                    yield offset, data
                return
            except EgressLost as e:
                await self._move(e)
            except StreamError as e:
                self._count(e)
                raise
            finally:
                await pieces.aclose()

    def _count(self, e: StreamError) -> None:
        """``e`` saying how many bytes this download delivered: after a move, the engine stream
        that raised it counts only its own, but the consumer got every byte before it too."""
        if self.moves:
            e.offset = self._delivered

    # -- what is left ------------------------------------------------------------------

    def _learn_size(self) -> None:
        size = self._inner.size
        if size is not None:
            for span in self._left:
                if span[1] is None:
                    span[1] = size
            self._left = [s for s in self._left if s[1] is None or s[0] < s[1]]  # type: ignore[operator]

    def _advance(self, n: int) -> None:
        """``n`` more bytes delivered in order: they come off the front of what is left."""
        self._delivered += n
        while n and self._left:
            start, stop = self._left[0]
            assert start is not None
            take = n if stop is None else min(n, stop - start)
            self._left[0][0] = start + take
            n -= take
            if stop is not None and start + take >= stop:
                self._left.pop(0)

    def _cover(self, a: int, b: int) -> None:
        """``[a, b)`` delivered at its offset: cut it out of what is left."""
        self._delivered += b - a
        left: list[list[int | None]] = []
        for start, stop in self._left:
            assert start is not None
            if b <= start or (stop is not None and a >= stop):
                left.append([start, stop])
                continue
            if start < a:
                left.append([start, a])
            if stop is None or b < stop:
                left.append([b, stop])
        self._left = left

    # -- moving ---------------------------------------------------------------------------

    async def _move(self, lost: EgressLost) -> None:
        """Leave the proxy that failed and open an engine stream for what is left on the next."""
        while True:
            old = self._inner
            await old.__aexit__(None, None, None)
            if old.stats is not self.stats:
                _fold(self.stats, old.stats)
            size, validators = old.size, old.validators
            self._learn_size()
            progressed, self._at_move = self._delivered > self._at_move, self._delivered
            try:
                proxy = await self._held().leave(lost.proxy, lost.reason, bot_check=lost.bot_check,
                                                 progressed=progressed)
            except NoProxyAvailableError as e:
                raise self._gave_up(e, lost) from lost
            self.moves += 1
            log.warning("%s; continuing through proxy %s from byte %d", lost.reason, proxy.label,
                        self._delivered)
            if url_param(self._url, "ip") and self._hook is not None:
                await self._tracked(self._url)  # the URL is bound to the old egress address
            extra: dict[str, Any] = {}
            if any(validators.values()):
                extra["expect_validators"] = validators
            self._inner = self._engine([(a, b) for a, b in self._left], **extra)  # type: ignore[misc]
            try:
                await self._inner.__aenter__()
            except EgressLost as again:
                lost = again
                continue
            except StreamError as e:  # the object changed meanwhile, ...: say what this download delivered
                self._count(e)
                raise
            if size is not None and self._inner.size is not None and self._inner.size != size:
                raise ObjectChangedError(f"the object's size changed from {size} to {self._inner.size} "
                                         f"while moving to proxy {proxy.label}", url=self._url,
                                         offset=self._delivered, size=size, total=self._inner.size)
            return

    def _gave_up(self, e: NoProxyAvailableError, lost: EgressLost) -> NoProxyAvailableError:
        e.url, e.offset, e.size = redact_url(self._url), self._delivered, self._inner.size
        e.attempts = lost.attempts
        return e


def _fold(into: Stats, other: Stats) -> None:
    """``other``'s counts added to ``into`` (one download's engine streams, one after another)."""
    for name in ("bytes", "requests", "retries", "refreshes", "prefetch_hits", "prefetch_misses", "chunks",
                 "splits", "reissues"):
        setattr(into, name, getattr(into, name) + getattr(other, name))
    for cid, n in other.connection_bytes.items():
        into.connection_bytes[cid] = into.connection_bytes.get(cid, 0) + n
    into.window_max = max(into.window_max, other.window_max)
    into.connections_max = max(into.connections_max, other.connections_max)
    into.buffered_peak = max(into.buffered_peak, other.buffered_peak)
    into.finished = other.finished
