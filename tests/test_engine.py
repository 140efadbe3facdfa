"""The engine against the emulated CDN: real sockets, real faults."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from itertools import pairwise

import pytest
from aiohttp import web

import rangestream
from rangestream import Retry, Timeouts
from rangestream.testing.origin import Origin, Profile
from rangestream.testing.servers import serve

FAST_RETRY = Retry(attempts=4, backoff=0.001, cap=0.01, jitter=0)
KB = 1024


async def fetch(url: str, **opts) -> tuple[bytes, rangestream.Stream]:
    opts.setdefault("retry", FAST_RETRY)
    out = bytearray()
    async with rangestream.open_stream(url, **opts) as stream:
        size_before = stream.size
        async for piece in stream:
            out += piece
    assert stream.size == size_before or size_before is None
    return bytes(out), stream


def our_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("rangestream-chunk-")]


def reqs(origin: Origin, name: str) -> list:
    return [r for r in origin.log if f"/{name}/" in r.path or r.query.get("id") == name]


async def assert_no_leaks(origin: Origin) -> None:
    assert await origin.wait_idle(timeout=3.0), f"{origin.open_connections} connections still open"
    assert our_tasks() == []


# -- 1. size ----------------------------------------------------------------

async def test_size_from_clen_before_first_byte(origin):
    size = 300 * KB + 7
    url = origin.url(size, "clen", youtube=True)
    async with rangestream.open_stream(url, chunk_size=64 * KB, retry=FAST_RETRY) as stream:
        assert stream.size == size  # known from the URL, before any byte
        data = b"".join([p async for p in stream])
    assert data == origin.content("clen", size)
    assert stream.stats.chunks == 5 and stream.stats.bytes == size


async def test_size_from_content_range_without_clen(origin):
    size = 200 * KB + 1
    async with rangestream.open_stream(origin.url(size, "cr"), chunk_size=64 * KB, retry=FAST_RETRY) as stream:
        assert stream.size == size
        data = b"".join([p async for p in stream])
    assert hashlib.sha256(data).hexdigest() == origin.sha256("cr", size)
    first = reqs(origin, "cr")[0]
    assert first.range == f"bytes=0-{64 * KB - 1}"  # the probe is chunk 0 itself, not an extra request
    assert len(reqs(origin, "cr")) == 4


async def test_server_ignoring_range_is_streamed_as_one_request(origin):
    size = 500 * KB
    url = origin.url(size, "ign", fault="ignore-range")
    data, stream = await fetch(url, chunk_size=64 * KB)
    assert data == origin.content("ign", size)
    assert stream.size == size and stream.stats.requests == 1


async def test_ignored_range_retry_skips_bytes_already_delivered():
    # A real server that ignores Range and resets the first response mid-body.
    payload = bytes(range(256)) * 4000
    calls = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(request.headers.get("Range"))
        resp = web.StreamResponse(status=200, headers={"Content-Length": str(len(payload))})
        await resp.prepare(request)
        if len(calls) == 1:
            await resp.write(payload[:300_000])
            request.transport.close()
            return resp
        await resp.write(payload)
        return resp

    async with serve(handler) as url:
        data, stream = await fetch(url, chunk_size=64 * KB)
    assert data == payload  # nothing repeated, nothing missing
    assert len(calls) == 2 and stream.stats.retries == 1


async def test_unknown_size_streams_to_eof():
    payload = b"z" * 123_457

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        resp.enable_chunked_encoding()  # no Content-Length, no Content-Range
        await resp.prepare(request)
        for i in range(0, len(payload), 10_000):
            await resp.write(payload[i:i + 10_000])
        return resp

    async with serve(handler) as url:
        async with rangestream.open_stream(url, chunk_size=16 * KB) as stream:
            assert stream.size is None
            data = b"".join([p async for p in stream])
    assert data == payload


async def test_empty_object(origin):
    data, stream = await fetch(origin.url(0, "empty"))
    assert data == b"" and stream.size == 0


# -- 2. chunking and the window ---------------------------------------------

async def test_chunks_are_chunk_size_and_last_is_shorter(origin):
    size = 5 * 100 * KB + 10
    data, stream = await fetch(origin.url(size, "ch", youtube=True), chunk_size=100 * KB, window=1)
    assert data == origin.content("ch", size)
    ranges = [r.range for r in reqs(origin, "ch")]
    want = [f"bytes={i * 100 * KB}-{min((i + 1) * 100 * KB, size) - 1}" for i in range(6)]
    assert ranges == want


async def test_window_1_is_sequential(origin):
    origin.profile = Profile(ttfb=0.02)
    size = 4 * 64 * KB
    _, stream = await fetch(origin.url(size, "seq"), chunk_size=64 * KB, window=1)
    assert await origin.wait_idle()
    log = reqs(origin, "seq")
    assert len(log) == 4
    for a, b in pairwise(log):
        assert b.start >= a.first_byte  # the server saw no overlap...
    traces = stream.stats.traces
    for a, b in pairwise(traces):
        assert b.requested >= a.done  # ...because the next request waits for the previous body


async def test_window_2_prefetches_next_request_while_current_chunk_streams(origin):
    # Seed criterion: for a 2-chunk object, chunk 1's request starts before chunk 0 finishes.
    origin.profile = Profile(ttfb=0.05, rate=1_000_000)  # chunk 0 streams for 0.2 s
    size = 2 * 200 * KB
    data, stream = await fetch(origin.url(size, "pf", youtube=True), chunk_size=200 * KB, window=2)
    assert data == origin.content("pf", size)
    assert await origin.wait_idle()  # the origin's handlers have recorded their ends
    r0, r1 = reqs(origin, "pf")
    assert r1.start < r0.end
    t0, t1 = stream.stats.traces
    # ...but its body is consumed only once chunk 0 is complete (headers-only prefetch).
    assert t1.headers is not None and t1.headers < t0.done
    assert t1.first_read >= t0.done
    assert stream.stats.prefetch_hits == 1


@pytest.mark.parametrize("window", [3, 4])
async def test_wider_windows_stay_in_order(origin, window):
    size = 1_000_000 + 3
    data, stream = await fetch(origin.url(size, f"k{window}", youtube=True), chunk_size=50 * KB, window=window)
    assert data == origin.content(f"k{window}", size)
    assert stream.stats.window_max == window


# -- 3. retries -------------------------------------------------------------

@pytest.mark.parametrize("kind", ["reset", "truncate", "503", "503-retry-after", "429", "bad-content-range"])
async def test_transient_fault_is_retried(origin, kind):
    origin.profile = Profile(retry_after=0)
    size = 300 * KB
    origin.inject(kind, name=f"t{kind}", count=1)
    data, stream = await fetch(origin.url(size, f"t{kind}"), chunk_size=100 * KB, window=1)
    assert data == origin.content(f"t{kind}", size)
    assert stream.stats.retries == 1


@pytest.mark.parametrize("kind", ["truncate", "reset"])
async def test_a_broken_body_resumes_from_the_byte_reached(origin, kind):
    size = 400 * KB
    origin.inject(kind, name="res", at=150 * KB)
    data, stream = await fetch(origin.url(size, "res"), chunk_size=size, window=1)
    assert data == origin.content("res", size)
    first, second = reqs(origin, "res")
    resumed_at = int(second.range.split("=")[1].split("-")[0])
    assert first.bytes_sent == 150 * KB and second.range.endswith(f"-{size - 1}")
    if kind == "truncate":
        assert resumed_at == 150 * KB  # a clean close: every byte sent was read, none asked again
    else:
        assert resumed_at <= 150 * KB  # an RST may discard bytes the client had not read yet


async def test_idle_timeout_catches_a_stall(origin):
    # A 30 s stall, caught by the 0.3 s idle timeout: the 10 s bound leaves a busy machine
    # room and still fails a read that waits the stall out.
    origin.profile = Profile(stall_seconds=30)
    size = 200 * KB
    origin.inject("stall", name="st", at=50 * KB)
    t = time.monotonic()
    data, stream = await fetch(origin.url(size, "st"), chunk_size=size,
                               timeouts=Timeouts(request=5, idle=0.3, prefetch=1))
    assert data == origin.content("st", size)
    assert time.monotonic() - t < 10 and stream.stats.retries == 1


async def test_request_timeout_when_headers_never_come(origin):
    size = 100 * KB
    url = origin.url(size, "slowhdr", ttfb=30)  # two attempts of 0.2 s each, not 30 s
    t = time.monotonic()
    with pytest.raises(rangestream.RetriesExhaustedError) as ei:
        # (idle=30: the transport's own limit, connect + idle, is then no stand-in for it)
        await fetch(url, retry=Retry(attempts=1, backoff=0.001, jitter=0),
                    timeouts=Timeouts(request=0.2, idle=30, prefetch=1))
    assert time.monotonic() - t < 10
    assert ei.value.attempts == 2 and ei.value.offset == 0
    await assert_no_leaks(origin)


async def test_retry_after_is_honoured(origin):
    origin.profile = Profile(retry_after=1)
    origin.inject("429", name="ra")
    t = time.monotonic()
    await fetch(origin.url(10 * KB, "ra"))
    assert time.monotonic() - t >= 0.9


async def test_client_errors_are_not_retried(origin):
    origin.inject("status", status=404, name="nf", count=5)
    with pytest.raises(rangestream.HTTPStatusError) as ei:
        await fetch(origin.url(10 * KB, "nf"))
    assert ei.value.status == 404 and ei.value.attempts == 1
    assert len(reqs(origin, "nf")) == 1


async def test_exhausted_retries_raise_after_delivering_everything_before(origin):
    size, chunk = 300 * KB, 100 * KB
    url = origin.url(size, "ex")
    got = bytearray()
    async with rangestream.open_stream(url, chunk_size=chunk, window=1,
                                       retry=Retry(attempts=2, backoff=0.001, jitter=0)) as stream:
        with pytest.raises(rangestream.RetriesExhaustedError) as ei:
            async for piece in stream:
                got += piece
                if len(got) >= chunk and len(reqs(origin, "ex")) == 1:
                    origin.inject("503", name="ex", count=10)
    assert bytes(got) == origin.content("ex", size)[: len(got)]
    assert ei.value.offset == len(got) >= chunk
    assert ei.value.attempts == 3
    assert "503" in str(ei.value) and f"after {len(got)} of {size} bytes" in str(ei.value)


# -- 4. refresh ---------------------------------------------------------------

async def test_expired_url_is_refreshed_through_the_hook(origin):
    size = 300 * KB
    calls = []

    async def refresh(old: str) -> str:
        calls.append(old)
        return origin.url(size, "exp", youtube=True, expire=time.time() + 3600)

    url = origin.url(size, "exp", youtube=True, expire=time.time() - 10)
    data, stream = await fetch(url, chunk_size=100 * KB, refresh=refresh)
    assert data == origin.content("exp", size)
    assert len(calls) == 1 and stream.stats.refreshes == 1


@pytest.mark.parametrize("window", [1, 4])
async def test_expiry_mid_body_continues_from_the_byte_reached(origin, window):
    # The URL expires while chunk 1's body is being read: the CDN ends that body after `cut`
    # bytes (a clean close, so every byte sent is read) and answers 403 to the old URL from
    # then on. The hook's fresh URL must be asked for exactly the rest of chunk 1: not a
    # byte read before the cut again, none skipped. (Window 2 parks chunk 1's body unread
    # while chunk 0 streams, so its byte reached is the chunk's start: not this case.)
    size, chunk = 600 * KB, 200 * KB
    cut = chunk + 50 * KB + 123
    old = origin.url(size, "mid", youtube=True, expire=time.time() + 3600)
    fresh = origin.url(size, "mid", youtube=True, expire=time.time() + 7200)
    origin.inject("expire", name="mid", start=chunk, at=cut - chunk)
    calls = []

    async def refresh(url: str) -> str:
        calls.append(url)
        return fresh

    data, stream = await fetch(old, chunk_size=chunk, window=window, refresh=refresh)
    assert data == origin.content("mid", size)
    assert calls == [old] and stream.stats.refreshes == 1
    assert await origin.wait_idle()
    sig = {old: old.split("&sig=")[1].split("&")[0], fresh: fresh.split("&sig=")[1].split("&")[0]}
    chunk1 = [r for r in reqs(origin, "mid") if r.range and r.range.endswith(f"-{2 * chunk - 1}")]
    expired = [r for r in chunk1 if r.outcome == "expired"]
    assert len(expired) == 1 and expired[0].bytes_sent == cut - chunk
    after = [r for r in chunk1 if r.start > expired[0].start]
    # Chunk 1 asks the old URL again from the byte reached and gets the 403 that triggers the
    # refresh, unless another chunk met the 403 first (window > 1); the fresh URL continues there.
    seen = [("old" if r.query["sig"] == sig[old] else "fresh", r.status) for r in after]
    assert seen == [("old", 403), ("fresh", 206)] or (window > 1 and seen == [("fresh", 206)]), seen
    assert [r.range for r in after] == [f"bytes={cut}-{2 * chunk - 1}"] * len(after)
    assert after[-1].bytes_sent == 2 * chunk - cut
    assert any(r.status == 403 and r.query["sig"] == sig[old] for r in reqs(origin, "mid"))


async def test_expired_without_hook_is_a_clear_error(origin):
    url = origin.url(10 * KB, "nohook", youtube=True, expire=time.time() - 10)
    sig = url.split("&sig=")[1].split("&")[0]
    with pytest.raises(rangestream.URLExpiredError) as ei:
        await fetch(url)
    assert ei.value.status == 403 and "refresh" in str(ei.value)
    assert "sig=REDACTED" in str(ei.value) and sig not in str(ei.value)


async def test_refresh_is_bounded(origin):
    calls = 0

    async def refresh(old: str) -> str:
        nonlocal calls
        calls += 1
        return old  # still expired

    url = origin.url(10 * KB, "bounded", youtube=True, expire=time.time() - 10)
    with pytest.raises(rangestream.URLExpiredError):
        await fetch(url, refresh=refresh, retry=Retry(refreshes=2, backoff=0.001))
    assert calls == 2


# -- 5. validators ------------------------------------------------------------

async def test_object_changed_mid_download_raises_and_never_mixes(origin):
    size, chunk = 300 * KB, 100 * KB
    got = bytearray()
    with pytest.raises(rangestream.ObjectChangedError) as ei:
        async with rangestream.open_stream(origin.url(size, "chg"), chunk_size=chunk, window=1,
                                           retry=FAST_RETRY) as stream:
            async for piece in stream:
                got += piece
                if len(got) == chunk and origin.version("chg") == 0:
                    origin.change("chg")
    assert bytes(got) == origin.content("chg", size, version=0)[: len(got)]
    assert ei.value.offset == len(got) == chunk


async def test_clen_must_match_content_range_total(origin):
    # Another size is another version of the object: ObjectChangedError (CLI exit 5) at once.
    url = origin.url(100 * KB, "clenbad") + "?clen=99999"
    with pytest.raises(rangestream.ObjectChangedError) as ei:
        await fetch(url)
    assert "differs from the size 99999" in str(ei.value) and ei.value.attempts == 1


# -- 6. cancellation and leaks ------------------------------------------------

async def test_break_cancels_everything_in_flight(origin):
    origin.profile = Profile(rate=2_000_000)
    url = origin.url(4_000_000, "brk", youtube=True)
    async with rangestream.open_stream(url, chunk_size=500 * KB, window=4, retry=FAST_RETRY) as stream:
        async for _ in stream:
            assert our_tasks()  # the leak checks find the engine's chunk tasks (not vacuous after a rename)
            break
        await asyncio.sleep(0)  # let the generator's aclose run
        assert await origin.wait_idle(timeout=5.0)  # even before leaving the async with
    await assert_no_leaks(origin)
    assert sum(r.bytes_sent for r in reqs(origin, "brk")) < 3_000_000


async def test_leaving_async_with_without_reading_cancels(origin):
    origin.profile = Profile(ttfb=0.2, rate=1_000_000)
    async with rangestream.open_stream(origin.url(2_000_000, "lv", youtube=True), chunk_size=200 * KB, window=3):
        await asyncio.sleep(0.05)
    await assert_no_leaks(origin)


async def test_cancelling_the_consumer_task_cancels_requests(origin):
    origin.profile = Profile(rate=1_000_000)
    started = asyncio.Event()

    async def consume():
        async with rangestream.open_stream(origin.url(3_000_000, "cx"), chunk_size=300 * KB, window=3) as s:
            async for _ in s:
                started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_no_leaks(origin)


async def test_terminal_error_leaves_nothing_behind(origin):
    origin.inject("status", status=410, name="gone", count=100)
    with pytest.raises(rangestream.HTTPStatusError):
        await fetch(origin.url(1_000_000, "gone", youtube=True), chunk_size=100 * KB, window=4)
    await assert_no_leaks(origin)


# -- 7. errors and logs ---------------------------------------------------------

async def test_errors_and_logs_never_show_signatures(origin, caplog):
    caplog.set_level(logging.DEBUG, logger="rangestream")
    origin.profile = Profile(retry_after=0)
    url = origin.url(50 * KB, "sec", youtube=True)
    sig = url.split("&sig=")[1].split("&")[0]
    origin.inject("503", name="sec", count=10)
    with pytest.raises(rangestream.RetriesExhaustedError) as ei:
        await fetch(url, retry=Retry(attempts=2, backoff=0.001, jitter=0))
    assert sig not in str(ei.value) and sig not in caplog.text
    assert "REDACTED" in str(ei.value) and "retry 1/2" in caplog.text
    assert isinstance(ei.value, rangestream.RangestreamError)


async def test_bad_urls_are_typed_errors():
    with pytest.raises(rangestream.InvalidURLError):
        rangestream.open_stream("ftp://example.com/x")
    with pytest.raises(rangestream.InvalidURLError):
        rangestream.open_stream("not a url")


async def test_unreachable_host_is_a_typed_error():
    with pytest.raises(rangestream.RetriesExhaustedError) as ei:
        await fetch("http://127.0.0.1:9/nothing-listens-here", retry=Retry(attempts=1, backoff=0.001))
    assert "cannot connect" in str(ei.value)


# -- 8. memory ------------------------------------------------------------------
# Measured on a real process in test_memory.py: a slow consumer of a 256 MB object, peak RSS
# against the documented bound (an engine counter checked on a 3 MB object could not fail).


# -- the seed's prefetch criteria ------------------------------------------------

async def test_failed_prefetch_falls_back_transparently(origin):
    # Chunk 1's prefetch gets a 503; with attempts=0 any *counted* failure would be fatal,
    # so success proves the prefetch failure never cost the chunk a retry.
    origin.profile = Profile(rate=2_000_000, retry_after=None)
    size, chunk = 400 * KB, 200 * KB
    origin.inject("503", name="pff", start=chunk)
    data, stream = await fetch(origin.url(size, "pff", youtube=True), chunk_size=chunk, window=2,
                               retry=Retry(attempts=0, backoff=0.001, jitter=0))
    assert data == origin.content("pff", size)
    assert stream.stats.prefetch_misses == 1
    assert [r.status for r in reqs(origin, "pff") if r.range.startswith(f"bytes={chunk}-")] == [503, 206]


async def test_prefetch_not_ready_in_time_is_cancelled_and_reissued(origin):
    size, chunk = 400 * KB, 200 * KB
    origin.inject("delay", name="pto", start=chunk, delay=60)
    t = time.monotonic()
    data, stream = await fetch(origin.url(size, "pto", youtube=True), chunk_size=chunk, window=2,
                               retry=Retry(attempts=0, backoff=0.001, jitter=0),
                               timeouts=Timeouts(request=30, idle=5, prefetch=0.3))
    assert data == origin.content("pto", size)
    assert time.monotonic() - t < 10  # not the 30 s request timeout (the headers come after 60 s)
    assert stream.stats.prefetch_misses == 1
    await assert_no_leaks(origin)  # the abandoned request's connection is closed


async def test_disconnect_mid_chunk_cancels_the_prefetch(origin):
    origin.profile = Profile(rate=1_000_000)
    size, chunk = 2_000_000, 500 * KB
    async with rangestream.open_stream(origin.url(size, "dmc", youtube=True), chunk_size=chunk,
                                       window=2) as stream:
        async for _ in stream:
            # chunk 1's prefetch is in flight now
            break
    await assert_no_leaks(origin)
    prefetch = [r for r in reqs(origin, "dmc") if r.range.startswith(f"bytes={chunk}-")]
    assert len(prefetch) == 1 and prefetch[0].outcome == "client-closed"


async def test_stall_on_a_lone_connection_is_reissued_before_the_idle_timeout(origin):
    origin.profile = Profile(stall_seconds=15)
    size = 300 * KB
    origin.inject("stall", name="lone", at=100 * KB)
    t = time.monotonic()
    data, stream = await fetch(origin.url(size, "lone"), chunk_size=size, window=1,
                               retry=Retry(attempts=0, backoff=0.001))
    assert data == origin.content("lone", size)
    # Re-issued after LONE_STALL (2 s) of silence; waiting would take the 15 s stall at least.
    assert time.monotonic() - t < 10 and stream.stats.reissues == 1


async def test_a_server_that_always_stalls_ends_in_the_counted_idle_timeout(origin):
    origin.profile = Profile(stall_seconds=15)
    origin.inject("stall", name="always", at=10 * KB)
    origin.inject("stall", name="always", at=0, count=10)  # from then on, no byte ever again
    with pytest.raises(rangestream.RetriesExhaustedError) as ei:
        await fetch(origin.url(100 * KB, "always"), window=1, retry=Retry(attempts=1, backoff=0.001),
                    timeouts=Timeouts(request=5, idle=1.5, prefetch=1))
    assert "idle timeout" in str(ei.value)
    await assert_no_leaks(origin)


# -- googlevideo's range= query form -------------------------------------------------

@pytest.mark.parametrize("window", [1, 4])
async def test_query_range_mode_posts_like_the_web_player(origin, window):
    size, chunk = 300 * KB + 5, 64 * KB
    url = origin.url(size, f"q{window}", youtube=True)
    origin.inject("reset", name=f"q{window}", at=10 * KB, start=0)  # resumes within the query form too
    data, stream = await fetch(url, chunk_size=chunk, window=window, range_mode="query")
    assert data == origin.content(f"q{window}", size)
    log = reqs(origin, f"q{window}")
    assert {r.method for r in log} == {"POST"} and all(r.range.startswith("query:") for r in log)
    assert stream.stats.retries == 1
    assert any(r.range == f"query:{10 * KB}-{chunk - 1}" for r in log)


def test_query_range_mode_needs_the_size_in_the_url():
    with pytest.raises(ValueError):
        rangestream.open_stream("http://127.0.0.1:9/data/x/100.bin", range_mode="query")
