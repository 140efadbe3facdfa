"""The start of a parallel window when the size is unknown (no clen): the probe (chunk 0) and
the chunks right after it are asked at once, so the first-byte delay is paid once, not twice.
Each case checks the exact bytes and what the server saw: which requests came before the
first answer, and that speculation never costs more than those few requests."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

import rangestream
from rangestream import HTTPStatusError, Retry
from rangestream.plan import AutoWindow
from rangestream.testing.origin import Origin
from rangestream.testing.servers import serve

KB = 1024
CH = 64 * KB
FAST_RETRY = Retry(attempts=4, backoff=0.001, cap=0.01, jitter=0)
HOLD = 0.3  # every first answer is held this long: the speculative requests are in flight by then


async def fetch(url: str, **opts) -> tuple[bytes, rangestream.Stream]:
    opts.setdefault("retry", FAST_RETRY)
    out = bytearray()
    async with rangestream.open_stream(url, **opts) as stream:
        async for piece in stream:
            out += piece
    return bytes(out), stream


def logged(origin: Origin, name: str) -> list:
    return sorted((r for r in origin.log if f"/{name}/" in r.path), key=lambda r: r.start)


def starts(ranges: list[str | None]) -> list[int]:
    return sorted(int((r or "bytes=0-").removeprefix("bytes=").partition("-")[0]) for r in ranges)


def our_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("rangestream-chunk-")]


# -- the choice (pure) -------------------------------------------------------------------------

@pytest.mark.parametrize("ceiling, at_once", [(8, 4), (64, 4), (5, 2), (3, 2), (1, 1)])
def test_chunks_asked_at_once_follow_the_ceiling(ceiling, at_once):
    # Half the ceiling (the start a long round trip gets), at most 4; a batch's share of the
    # connection budget (-j 3 of 16: ceiling 5) asks only the next chunk with the probe.
    auto = AutoWindow(start=min(2, ceiling), ceiling=ceiling)
    assert auto.open_at_once(4) == at_once
    # Those chunks are in flight anyway: a short round trip does not start the window below them.
    assert auto.first_response(0.0, 100 * CH, CH, ttfb=0.001) == at_once


# -- the emulated CDN ------------------------------------------------------------------------

@pytest.mark.parametrize("window, at_once", [("auto", 4), (3, 3), (8, 4)])
async def test_unknown_size_asks_the_first_chunks_before_the_first_answer(origin, window, at_once):
    size = 8 * CH + 5
    origin.inject("delay", count=at_once, delay=HOLD, name="spec")  # the first requests' headers wait
    data, stream = await fetch(origin.url(size, "spec"), chunk_size=CH, window=window)
    assert data == origin.content("spec", size)
    log = logged(origin, "spec")
    probe = next(r for r in log if r.range == f"bytes=0-{CH - 1}")
    assert probe.first_byte is not None
    early = [r.range for r in log if r.start < probe.first_byte]
    assert starts(early) == [i * CH for i in range(at_once)]
    # Nothing was asked twice: the 206s partition the object.
    served = starts([r.range for r in log if r.status == 206])
    assert served == [i * CH for i in range(9)] and len(log) == 9 == stream.stats.requests


@pytest.mark.parametrize("size", [10 * KB, 2 * CH + CH // 2])
async def test_an_object_smaller_than_the_speculated_chunks_costs_only_those_requests(origin, size):
    # Chunks past the end were asked before the size was known: they end quietly (dropped once
    # the probe's total shows them past the end, their 416 never judged), no error, no retry.
    name = f"small{size}"
    data, stream = await fetch(origin.url(size, name, ttfb=HOLD), chunk_size=CH, window="auto")
    assert data == origin.content(name, size)
    assert stream.stats.requests == 4 and stream.stats.retries == 0  # the probe and 3 speculative ones
    log = logged(origin, name)
    assert len(log) <= 4
    served = sorted((r for r in log if r.status == 206), key=lambda r: r.range)
    assert starts([r.range for r in served]) == list(range(0, size, CH))
    assert sum(r.bytes_sent for r in served) == size
    assert all(r.status != 206 for r in log if starts([r.range])[0] >= size)
    assert await origin.wait_idle(timeout=3.0) and our_tasks() == []


# -- servers odder than the CDN ----------------------------------------------------------------

class Log:
    def __init__(self) -> None:
        self.requests: list[tuple[float, int]] = []  # (arrival, first byte asked)
        self.answered: dict[int, float] = {}  # first byte asked -> when its headers went out
        self.sent = 0

    def arrive(self, request: web.Request) -> int:
        a = int(request.headers.get("Range", "bytes=0-").removeprefix("bytes=").partition("-")[0])
        self.requests.append((time.monotonic(), a))
        return a

    def before(self, a: int) -> list[int]:
        """First bytes asked before the headers for ``a`` went out."""
        return sorted(x for t, x in self.requests if t < self.answered[a])


def payload(n: int) -> bytes:
    return bytes((i * 7 + i // 251) % 256 for i in range(n))


async def test_unknown_total_drops_the_speculative_chunks_and_reads_the_rest_open_ended():
    # "bytes a-b/*": the size stays unknown, so the chunks asked after the probe are dropped
    # unread and the rest is one open-ended request, ended by the server's 416.
    data, log = payload(300_000), Log()

    async def handler(request: web.Request) -> web.StreamResponse:
        a = log.arrive(request)
        await asyncio.sleep(HOLD if a < 4 * CH else 0)
        if a >= len(data):
            return web.Response(status=416, headers={"Content-Range": "bytes */*"})
        spec = request.headers["Range"].removeprefix("bytes=").partition("-")[2]
        last = len(data) - 1 if not spec else min(int(spec), len(data) - 1)
        resp = web.StreamResponse(status=206, headers={"Content-Range": f"bytes {a}-{last}/*"})
        resp.content_length = last + 1 - a
        log.answered.setdefault(a, time.monotonic())
        await resp.prepare(request)
        await resp.write(data[a:last + 1])
        return resp

    async with serve(handler) as url:
        got, _ = await fetch(url, chunk_size=CH, window="auto")
    assert got == data
    assert log.before(0) == [0, CH, 2 * CH, 3 * CH]
    later = [a for _, a in log.requests[4:]]
    assert later == [CH, len(data)]  # the rest from the probe's end, then the end of the object


@pytest.mark.parametrize("length", [True, False])
async def test_range_ignored_with_an_unknown_size_is_read_from_one_response(length):
    # Every request gets a 200 of the whole object (paced like a link): the probe's response is
    # read to the end; the speculative ones are dropped, so the object is not sent four times.
    data, log = payload(2_000_000), Log()

    async def handler(request: web.Request) -> web.StreamResponse:
        a = log.arrive(request)
        await asyncio.sleep(HOLD)
        resp = web.StreamResponse(status=200)
        if length:
            resp.content_length = len(data)
        log.answered.setdefault(a, time.monotonic())
        await resp.prepare(request)
        for i in range(0, len(data), 64 * KB):
            await resp.write(data[i:i + 64 * KB])
            log.sent += len(data[i:i + 64 * KB])
            await asyncio.sleep(0.005)
        return resp

    async with serve(handler) as url:
        got, stream = await fetch(url, chunk_size=256 * KB, window="auto")
    assert got == data
    assert log.before(0) == [0, 256 * KB, 512 * KB, 768 * KB] and len(log.requests) == 4
    assert log.sent < 1.2 * len(data), f"{log.sent / len(data):.1f}x the object sent"


async def test_a_failing_first_request_fails_the_stream_with_its_own_error():
    # A 404: the stream fails with it, the speculative requests are not retried.
    log = Log()

    async def handler(request: web.Request) -> web.StreamResponse:
        a = log.arrive(request)
        await asyncio.sleep(HOLD)
        log.answered.setdefault(a, time.monotonic())
        return web.Response(status=404)

    async with serve(handler) as url:
        with pytest.raises(HTTPStatusError) as info:
            await fetch(url, chunk_size=CH, window="auto")
    assert info.value.status == 404
    assert sorted(a for _, a in log.requests) == [0, CH, 2 * CH, 3 * CH]  # none asked again
    assert our_tasks() == []


async def test_a_speculative_request_that_fails_asks_again_only_once_the_size_is_known():
    # Chunk 1's first request is cut before its headers while the probe is still held: it is
    # not retried blindly (a refused or failing server would get every speculative chunk's
    # retries), only once the probe's answer says the chunk exists.
    data, log = payload(4 * CH), Log()
    cut = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        a = log.arrive(request)
        if a == CH and not cut.is_set():
            cut.set()
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=499)
        await asyncio.sleep(HOLD if a == 0 else 0)
        stop = min(len(data), a + CH)
        resp = web.StreamResponse(status=206, headers={"Content-Range": f"bytes {a}-{stop - 1}/{len(data)}"})
        resp.content_length = stop - a
        log.answered.setdefault(a, time.monotonic())
        await resp.prepare(request)
        await resp.write(data[a:stop])
        return resp

    async with serve(handler) as url:
        got, _ = await fetch(url, chunk_size=CH, window="auto")
    assert got == data and cut.is_set()
    asked = [t for t, a in log.requests if a == CH]
    assert len(asked) == 2 and asked[0] < log.answered[0] <= asked[1]


# -- found by a review: a changed object, a pool limit ------------------------------------------

def ranged_reply(request: web.Request, data: bytes, headers: dict[str, str] | None = None) -> web.Response:
    spec = request.headers["Range"].removeprefix("bytes=")
    first, _, last = spec.partition("-")
    start, stop = int(first), min(int(last) + 1, len(data))
    return web.Response(status=206, body=data[start:stop], headers={
        "Content-Range": f"bytes {start}-{stop - 1}/{len(data)}", **(headers or {})})


@pytest.mark.parametrize("window", ["auto", 4])
async def test_a_version_change_behind_chunks_asked_without_if_range_is_caught(window):
    """The object is replaced right after the probe's answer (ETag "A"); the server honours
    If-Range but sends validators only on the probe's kind of response. The chunks asked with
    the probe went out before any validator was known, without If-Range: their 206s (version
    B, no validator) must be asked again with If-Range, which reveals the change. Before the
    fix they were kept: A's first chunk spliced to B's rest, with success."""
    size = 2 * CH + 123
    versions = {"A": bytes(range(256)) * (size // 256) + bytes(size % 256), "B": bytes(size)}
    state = {"now": "A"}

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers["Range"].startswith("bytes=0-"):
            await asyncio.sleep(HOLD)
            reply = ranged_reply(request, versions["A"], {"ETag": '"A"'})
            state["now"] = "B"
            return reply
        await asyncio.sleep(HOLD + 0.1)  # served after the replacement
        now = state["now"]
        if_range = request.headers.get("If-Range")
        if if_range is not None and if_range != f'"{now}"':
            return web.Response(body=versions[now], headers={"ETag": f'"{now}"'})  # 200: another version
        return ranged_reply(request, versions[now])  # no validator on these

    async with serve(handler) as url:
        with pytest.raises(rangestream.ObjectChangedError):
            await fetch(url, window=window, chunk_size=CH)


@pytest.mark.parametrize("limit, window", [(1, "auto"), (2, 4)])
async def test_the_probe_asking_again_is_not_held_up_by_responses_waiting_for_it(limit, window):
    """A pool of ``limit`` connections and a probe answered 503 (Retry-After: 1) once: the
    chunks asked with it got 206s that wait, unread, for the size, each holding a connection.
    The probe's retry gives up on them (their ranges are planned again) instead of waiting out
    its request timeout behind them (before: 'no response headers within the request timeout'
    after 9 s; here the timeout is 4 s and the download takes about 1 s)."""
    data = bytes(range(256)) * ((2 * CH + 123) // 256)
    refused: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers["Range"].startswith("bytes=0-") and not refused:
            refused.append(1)
            return web.Response(status=503, headers={"Retry-After": "1"})
        return ranged_reply(request, data)

    async with serve(handler) as url:
        async with rangestream.Client(limit_per_host=limit) as client:
            async with client.open_stream(url, window=window, chunk_size=CH, retry=Retry(attempts=2, backoff=0.2),
                                          timeouts=rangestream.Timeouts(request=4)) as stream:
                assert b"".join([p async for p in stream]) == data
                assert stream.stats.retries == 1


@pytest.mark.parametrize("limit, window", [(1, "auto"), (2, 4)])
async def test_a_redirected_probe_is_not_held_up_by_responses_waiting_for_it(limit, window):
    """A pool of ``limit`` connections and only the probe's request redirected (302 to another
    path on the same host): its next hop queued for a connection behind the chunks asked with
    it, whose 206s then waited, unread, for the probe's answer, holding every connection (the
    probe waited out its request timeout, 5 s here, and was retried). A stream asks fewer early
    chunks than the pool has connections, so the hop finds one free at once: no range is
    asked twice (which the give-way of a late probe, the fallback, would have cost)."""
    data = payload(3 * CH + 123)
    hops: list[str] = []
    ranges: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        hops.append(request.path)
        if request.path == "/x" and request.headers["Range"].startswith("bytes=0-") and "/y" not in hops:
            raise web.HTTPFound("/y")
        ranges.append(request.headers["Range"])  # each range answered
        return ranged_reply(request, data)

    async with serve(handler, route="/{name}") as url:  # /x, and /y after the redirect
        began = time.monotonic()
        async with rangestream.Client(limit_per_host=limit) as client:
            async with client.open_stream(url, window=window, chunk_size=CH, retry=FAST_RETRY,
                                          timeouts=rangestream.Timeouts(request=5)) as stream:
                got = b"".join([p async for p in stream])
        took = time.monotonic() - began
    assert got == data and "/y" in hops
    assert stream.stats.retries == 0 and took < 2.5, f"{took:.2f} s, {stream.stats.retries} retries"
    answered = starts(ranges)
    assert len(answered) == len(set(answered)), ranges


async def test_streams_sharing_a_capped_pool_give_way_to_each_others_probes():
    """Two streams of one Client (two connections per host), each probe redirected: one
    stream's early chunk can take the connection the other's probe hop needs, and both
    early chunks then wait, unread, for probes that wait for them. The parked responses give
    way (their ranges are asked again) instead of the probes waiting out their request
    timeout (5 s here) and being retried. Each answer comes after a CDN's first-byte delay,
    so every early chunk is queued for a connection before the redirects free one."""
    data = payload(3 * CH + 123)
    moved: set[str] = set()

    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.15)  # the modelled first-byte delay (as the youtube profile's)
        name = request.match_info["name"]
        if not name.endswith("2") and request.headers["Range"].startswith("bytes=0-") and name not in moved:
            moved.add(name)
            raise web.HTTPFound(f"/{name}2")
        return ranged_reply(request, data)

    async with serve(handler, route="/{name}") as url:
        base = url.rsplit("/", 1)[0]
        began = time.monotonic()
        async with rangestream.Client(limit_per_host=2) as client:
            async def one(name: str) -> tuple[bytes, int]:
                async with client.open_stream(f"{base}/{name}", window=4, chunk_size=CH, retry=FAST_RETRY,
                                              timeouts=rangestream.Timeouts(request=5)) as stream:
                    return b"".join([p async for p in stream]), stream.stats.retries
            results = await asyncio.gather(one("a"), one("b"))
        took = time.monotonic() - began
    assert results == [(data, 0), (data, 0)], [r for _, r in results]
    assert took < 4.0, f"{took:.2f} s"
