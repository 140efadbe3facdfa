"""CurlTransport (curl_cffi, browser impersonation) under the same engine.

Two parts:

* the engine suites (tests/test_engine.py and tests/test_window.py) re-run here
  unchanged, with every ``Client``/``open_stream`` built on ``CurlTransport("chrome")``
  (the autouse fixture below): the engine must not care which transport it drives;
* what is specific to curl: aborting a transfer on close, bounded buffering with a
  stalled consumer, the idle timeout, error mapping and the headers on the wire.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

pytest.importorskip("curl_cffi")

import test_engine  # noqa: E402  (tests/ is on sys.path: pytest's rootdir-relative imports)
import test_window  # noqa: E402
from conftest import use_curl_transport  # noqa: E402

import rangestream  # noqa: E402
from rangestream import Retry, Timeouts  # noqa: E402
from rangestream.errors import InvalidURLError, RangestreamError, TransientError  # noqa: E402
from rangestream.testing.origin import Profile  # noqa: E402
from rangestream.transports import AiohttpTransport  # noqa: E402
from rangestream.transports.curl import CurlTransport  # noqa: E402

KB = 1024
MB = 1_000_000
FAST_RETRY = Retry(attempts=4, backoff=0.001, cap=0.01, jitter=0)

# -- 1. the engine suites, unchanged, on curl -----------------------------------------

for _module in (test_engine, test_window):
    for _name, _fn in vars(_module).items():
        if _name.startswith("test_") and callable(_fn):
            globals()[f"{_name}__{_module.__name__.removeprefix('test_')}"] = _fn
del _module, _name, _fn


@pytest.fixture(autouse=True)
def _curl_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    use_curl_transport(monkeypatch, "chrome")


async def _request(t: CurlTransport, url: str, headers: dict[str, str] | None = None, *,
                   idle: float = 5.0):
    return await t.request("GET", url, headers or {}, connect_timeout=5.0, idle_timeout=idle)


async def _read_all(resp) -> bytes:
    out = bytearray()
    while piece := await resp.read_piece():
        out += piece
    return bytes(out)


@pytest.fixture
async def curl() -> AsyncIterator[CurlTransport]:
    t = CurlTransport("chrome")
    try:
        yield t
    finally:
        await t.aclose()


# -- 2. byte-exact through the engine at every window, memory bounded ------------------

@pytest.mark.parametrize("window", [1, 2, 4, "auto"])
async def test_byte_exact_at_every_window(origin, curl, window):
    size = 6 * MB + 123
    name = f"w{window}"
    async with rangestream.Client(transport=curl) as client:
        async with client.open_stream(origin.url(size, name, youtube=True), chunk_size=700 * KB,
                                      window=window, retry=FAST_RETRY) as stream:
            h = hashlib.sha256()
            async for piece in stream:
                h.update(piece)
    assert h.hexdigest() == origin.sha256(name, size)
    assert curl.buffered_peak <= curl.buffer_limit + 16 * KB
    await test_engine.assert_no_leaks(origin)


# -- 3. abort on close -------------------------------------------------------------------

async def test_close_mid_body_of_a_throttled_response_aborts_at_once(origin, curl):
    # 10 MB at 200 kB/s: leaving curl_cffi's own stream context would wait ~50 s for it.
    # The bounds (5 s) are far below that and leave a busy machine room: an abort takes ms.
    origin.profile = Profile(rate=200_000)
    resp = await _request(curl, origin.url(10 * MB, "thr"))
    assert resp.status == 200 and await resp.read_piece()
    t = time.monotonic()
    resp.close()
    assert time.monotonic() - t < 5
    assert await origin.wait_idle(timeout=5), f"{origin.open_connections} connections still open"
    assert curl.aborts == 1
    assert await resp.read_piece() == b""  # closed: nothing more, no error
    rec = test_engine.reqs(origin, "thr")[0]
    assert rec.outcome == "client-closed" and rec.bytes_sent < 2 * MB


async def test_cancel_while_waiting_for_headers_closes_the_connection(origin, curl):
    origin.inject("delay", name="slowhdr", delay=30)  # left open, the connection outlives the 5 s wait below
    task = asyncio.create_task(_request(curl, origin.url(100 * KB, "slowhdr")))
    for _ in range(100):  # up to 5 s for the connection to be up
        if origin.open_connections == 1:
            break
        await asyncio.sleep(0.05)
    assert origin.open_connections == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await origin.wait_idle(timeout=5)


async def test_break_mid_stream_leaves_no_connection(origin):
    origin.profile = Profile(rate=2 * MB)
    async with rangestream.Client(impersonate="chrome") as client:
        async with client.open_stream(origin.url(8 * MB, "brk", youtube=True), chunk_size=500 * KB,
                                      window=4, retry=FAST_RETRY) as stream:
            async for _ in stream:
                break
        assert await origin.wait_idle(timeout=5)  # ms when aborted; one kept in the pool never closes
    assert test_engine.our_tasks() == []


async def test_aclose_aborts_live_responses(origin):
    origin.profile = Profile(rate=200_000)
    t = CurlTransport("chrome")
    resp = await _request(t, origin.url(10 * MB, "live"))
    await resp.read_piece()
    started = time.monotonic()
    await t.aclose()
    assert time.monotonic() - started < 5  # in ms; the throttled 10 MB would take ~50 s
    assert await origin.wait_idle(timeout=5)


# -- 4. backpressure ---------------------------------------------------------------------

async def test_stalled_consumer_pauses_the_transfer_and_memory_stays_bounded(origin, curl):
    size = 300 * MB  # loopback sends this in well under a second if nothing holds it back
    resp = await _request(curl, origin.url(size, "stall-consumer"))
    await asyncio.sleep(1.0)  # read nothing for a second
    bound = curl.buffer_limit + 16 * KB  # the queue, plus the one 16 KiB piece libcurl hands over at a time
    assert curl.buffered_peak <= bound
    assert curl.pauses >= 1
    sent = test_engine.reqs(origin, "stall-consumer")[0].bytes_sent
    assert sent < 64 * MB, f"{sent} bytes left the origin while nobody read"  # kernel buffers only
    # ...and resuming delivers every byte, in order.
    h = hashlib.sha256()
    while piece := await resp.read_piece():
        h.update(piece)
    resp.close()
    assert h.hexdigest() == origin.sha256("stall-consumer", size)
    assert curl.buffered_peak <= bound


async def test_headers_only_prefetch_buffers_at_most_the_limit(origin):
    t = CurlTransport("chrome", buffer_limit=256 * KB, recv_buffer=64 * KB)
    try:
        resp = await _request(t, origin.url(50 * MB, "pre"))
        for _ in range(100):  # up to 5 s for the queue to fill while nobody reads
            if t.buffered_peak >= 256 * KB:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # and a while longer: it must stay capped, not grow
        assert 0 < t.buffered_peak <= 256 * KB + 16 * KB
        data = await _read_all(resp)
        resp.close()
        assert len(data) == 50 * MB
    finally:
        await t.aclose()


# -- 5. timeouts and errors ---------------------------------------------------------------

async def test_idle_timeout_on_a_stalled_body(origin, curl):
    # A 30 s stall: without the 0.3 s idle timeout the read would wait it out, far past 10 s.
    origin.profile = Profile(stall_seconds=30)
    origin.inject("stall", name="idle", at=50 * KB)
    resp = await _request(curl, origin.url(200 * KB, "idle"), idle=0.3)
    got = 0
    t = time.monotonic()
    with pytest.raises(TransientError, match="idle timeout"):
        while piece := await resp.read_piece():
            got += len(piece)
    assert time.monotonic() - t < 10 and got <= 50 * KB
    resp.close()
    assert await origin.wait_idle(timeout=5)


@pytest.mark.parametrize("kind", ["reset", "truncate"])
async def test_body_faults_are_transient(origin, curl, kind):
    origin.inject(kind, name=kind, at=100 * KB)
    resp = await _request(curl, origin.url(400 * KB, kind))
    with pytest.raises(TransientError, match="mid-body"):
        await _read_all(resp)
    resp.close()


async def test_faults_are_retried_by_the_engine(origin, curl):
    origin.profile = Profile(retry_after=0, stall_seconds=5)
    size = 300 * KB
    for i, kind in enumerate(["reset", "truncate", "503", "stall"]):
        origin.inject(kind, name=f"f{i}", at=120 * KB if kind in ("reset", "truncate", "stall") else None)
    async with rangestream.Client(transport=curl, retry=FAST_RETRY,
                                  timeouts=Timeouts(request=5, idle=0.3, prefetch=1)) as client:
        for i in range(4):
            async with client.open_stream(origin.url(size, f"f{i}"), chunk_size=size, window=1) as stream:
                data = b"".join([p async for p in stream])
            assert data == origin.content(f"f{i}", size)
            assert stream.stats.retries == 1


async def test_404_is_not_retried(origin, curl):
    origin.inject("status", status=404, name="nf", count=5)
    async with rangestream.Client(transport=curl, retry=FAST_RETRY) as client:
        with pytest.raises(rangestream.HTTPStatusError) as ei:
            async with client.open_stream(origin.url(10 * KB, "nf")) as stream:
                async for _ in stream:
                    pass
    assert ei.value.status == 404 and len(test_engine.reqs(origin, "nf")) == 1


async def test_connection_refused_is_transient(curl):
    with pytest.raises(TransientError, match=r"cannot connect to 127\.0\.0\.1:9"):
        await _request(curl, "http://127.0.0.1:9/nothing")


async def test_malformed_url_is_invalid(curl):
    with pytest.raises(InvalidURLError):
        await _request(curl, "http://[::1/x")
    with pytest.raises(InvalidURLError):
        await _request(curl, "gopher://example.com/x")


@pytest.mark.parametrize("proxy, message", [
    ("http://user:pw-secret@127.0.0.1:99999", "invalid proxy URL"),  # port out of range
    ("ftp://user:pw-secret@127.0.0.1:21", "unsupported proxy scheme"),
    ("http://user:pw-secret@:8080", "proxy URL without a host"),
])
@pytest.mark.parametrize("make", [CurlTransport, AiohttpTransport], ids=["curl", "aiohttp"])
def test_bad_proxy_urls_are_refused_alike_by_both_transports(make, proxy, message):
    # Up front, with the same words, never showing the password (the checks live in transports.base).
    with pytest.raises(InvalidURLError, match=message) as info:
        make(proxy=proxy)
    assert "pw-secret" not in str(info.value)


async def test_unknown_browser_is_a_clear_error():
    with pytest.raises(RangestreamError, match="cannot impersonate"):
        CurlTransport("netscape4")


# -- 6. headers on the wire, redirects -----------------------------------------------------

@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, list]]:
    """A server recording each request's raw headers; /r/N redirects N times then serves."""
    seen: list[list[tuple[str, str]]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append([(k.decode(), v.decode()) for k, v in request.raw_headers])
        hops = request.match_info.get("n")
        if hops and int(hops) > 0:
            raise web.HTTPFound(f"/r/{int(hops) - 1}")
        return web.Response(body=b"0123456789")

    app = web.Application()
    app.router.add_get("/r/{n}", handler)
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def _names(raw: list[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in raw}


async def test_impersonated_browser_headers_lead(echo, curl):
    base, seen = echo
    resp = await _request(curl, f"{base}/x", {"Range": "bytes=0-9", "X-Mine": "1", "Accept-Language": "fr"})
    assert await _read_all(resp) == b"0123456789"
    resp.close()
    h = _names(seen[-1])
    assert "Chrome/" in h["user-agent"] and "Chrome/141" not in h["user-agent"]  # the browser's, not our profile's
    assert "sec-ch-ua" in h  # browser headers rangestream's own profile never sends
    assert h["accept-encoding"] == "identity"
    assert h["range"] == "bytes=0-9" and h["x-mine"] == "1" and h["accept-language"] == "fr"
    assert "upgrade" not in h  # no h2c upgrade: plain HTTP/1.1 on http://, as a browser


async def test_without_impersonation_the_profile_is_sent(echo):
    base, seen = echo
    t = CurlTransport(None)
    try:
        resp = await _request(t, f"{base}/x")
        await _read_all(resp)
        resp.close()
    finally:
        await t.aclose()
    h = _names(seen[-1])
    assert h["user-agent"] == rangestream.headers.CHROME_USER_AGENT and h["accept-encoding"] == "identity"


def test_url_specific_profile_headers_stay_when_impersonating():
    t = CurlTransport("chrome")
    yt = t._headers("https://rr1---sn-x.googlevideo.com/videoplayback?id=1", {"Range": "bytes=0-1"})
    assert yt["Origin"] == "https://www.youtube.com" and "User-Agent" not in yt and "Accept" not in yt
    ios = t._headers("https://rr1---sn-x.googlevideo.com/videoplayback?c=IOS", {})
    assert ios["User-Agent"] == rangestream.headers.IOS_USER_AGENT  # the URL was signed for the iOS app
    assert t._headers("https://example.com/x", {"User-Agent": "mine"})["User-Agent"] == "mine"


async def test_redirects_are_followed_hop_by_hop(echo, curl):
    base, seen = echo
    resp = await _request(curl, f"{base}/r/2")
    assert resp.status == 200 and await _read_all(resp) == b"0123456789"
    resp.close()
    assert len(seen) == 3


# -- 7. Client(impersonate=...) -------------------------------------------------------------

async def test_client_impersonate_builds_the_curl_transport(origin):
    async with rangestream.Client(impersonate="chrome", limit_per_host=2) as client:
        assert isinstance(client._transport, CurlTransport)
        async with client.open_stream(origin.url(1 * MB, "cl"), chunk_size=200 * KB, window=2) as stream:
            assert b"".join([p async for p in stream]) == origin.content("cl", 1 * MB)
    with pytest.raises(ValueError):
        rangestream.Client(impersonate="chrome", transport=CurlTransport())


def test_client_impersonate_without_curl_cffi_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "curl_cffi", None)  # import curl_cffi -> ImportError
    monkeypatch.delitem(sys.modules, "rangestream.transports.curl")
    with pytest.raises(RangestreamError, match=r"pip install 'rangestream\[impersonate\]'"):
        rangestream.Client(impersonate="chrome")
