"""Engine edge cases: a 416 for a range the known total already ends before (table, then a server
that makes the race deterministic)."""

from __future__ import annotations

import asyncio
import time
from collections import deque

import pytest
from aiohttp import web

import rangestream
from rangestream import Retry
from rangestream.engine.delivery import InOrder
from rangestream.engine.response import Body, Changed, Known, Retryable, check_status
from rangestream.engine.stats import Stats
from rangestream.engine.window import Window
from rangestream.plan import ByteRange
from rangestream.testing.origin import Origin, Profile
from rangestream.testing.servers import serve

KB = 1024
MB = 1024 * KB
CH = 64 * KB
FAST_RETRY = Retry(attempts=2, backoff=0.001, cap=0.01, jitter=0)


def payload(n: int) -> bytes:
    return bytes((i * 7 + i // 251) % 256 for i in range(n))


def span(request: web.Request) -> tuple[int, int | None]:
    first, _, last = request.headers["Range"].removeprefix("bytes=").partition("-")
    return int(first), int(last) + 1 if last else None


# -- a 416 once the total is known (pure) ----------------------------------------------------------

T = 1000


def verdict_416(content_range: str | None, want: ByteRange, size: int | None = T):
    headers = {} if content_range is None else {"Content-Range": content_range}
    known = Known(size, size_known=True, to_end=want.stop is None)
    return check_status(416, headers, want, known, Retry(), now=0.0)


@pytest.mark.parametrize("content_range", [f"bytes */{T}", None])  # RFC 9110: the total SHOULD be sent
@pytest.mark.parametrize("want", [ByteRange(T, None), ByteRange(T, T + CH), ByteRange(T + 5, T + CH)])
def test_a_416_agreeing_with_the_known_total_past_it_is_nothing_to_read(want, content_range):
    # Asked before another response told the total: not needed, not a change.
    assert verdict_416(content_range, want) == Body(want.start, want.start)


@pytest.mark.parametrize("content_range, want, kind", [
    (f"bytes */{T + 1}", ByteRange(T, None), Changed),  # another total: the object changed
    (f"bytes */{T - 1}", ByteRange(T, None), Changed),
    (f"bytes */{T - 1}", ByteRange(T + 5, None), Changed),
    (f"bytes */{T}", ByteRange(T - 1, None), Retryable),  # the byte exists by its own total: confused
    (f"bytes */{T}", ByteRange(0, CH), Retryable),
    (None, ByteRange(T - 1, None), Changed),  # no total, a byte we know exists: gone
])
def test_other_416s_once_the_total_is_known_keep_their_verdicts(content_range, want, kind):
    assert isinstance(verdict_416(content_range, want), kind)


def test_a_416_at_the_end_of_an_object_of_unknown_total_still_ends_it():
    got = verdict_416(f"bytes */{T}", ByteRange(T, None), size=None)
    assert isinstance(got, Body) and (got.start, got.stop, got.value) == (T, T, T)


# -- the race, made deterministic by a server --------------------------------------------------------

@pytest.mark.parametrize("named", [True, False], ids=["with-total", "without-content-range"])
@pytest.mark.parametrize("window", [2, "auto"])
async def test_a_request_at_the_total_answered_416_after_the_total_was_learned_ends_normally(window, named):
    """Chunk 0 is answered short and without a total ("bytes 0-999/*"), so the rest is asked
    open-ended from 64 KiB, which is the object's size. The server holds that request until the
    probe's next answer has told the total ("bytes 1000-1999/65536") and the engine has asked for
    what follows it (so it judged that total); only then does the held request get its
    "416 bytes */65536". Before the fix: ObjectChangedError after all 65536 bytes."""
    data = payload(CH)
    at_total, total_judged = asyncio.Event(), asyncio.Event()
    answered_416: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        start, stop = span(request)
        if start >= len(data):
            if stop is None:  # the open-ended request: held until the total was judged
                at_total.set()
                await total_judged.wait()
                answered_416.append(start)
            return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"} if named else {})
        if start == 0:
            return web.Response(status=206, body=data[:1000], headers={"Content-Range": "bytes 0-999/*"})
        if start == 1000:
            await at_total.wait()  # the request at the total is in flight
            return web.Response(status=206, body=data[1000:2000],
                                headers={"Content-Range": f"bytes 1000-1999/{len(data)}"})
        total_judged.set()
        stop = len(data) if stop is None else min(stop, len(data))
        return web.Response(status=206, body=data[start:stop],
                            headers={"Content-Range": f"bytes {start}-{stop - 1}/{len(data)}"})

    async with serve(handler) as url, asyncio.timeout(10):
        async with rangestream.open_stream(url, chunk_size=CH, window=window, retry=FAST_RETRY) as stream:
            got = b"".join([piece async for piece in stream])
    assert got == data and stream.size == len(data)
    assert answered_416 == [len(data)]  # the race happened: the held request got its 416


# -- a chunk that ends with neither its bytes nor an error -------------------------------------------

def test_a_chunk_ending_without_its_bytes_or_an_error_fails_the_stream_instead_of_skipping_them():
    # The backstop behind every path that ends a chunk's task (a give-way racing the probe's
    # answer once did): delivery must never step over a range nobody fetched.
    window = Window(deque([ByteRange(0, 3 * CH)]), size=3 * CH, chunk_size=CH, window=2, max_buffer=0,
                    auto_budget=False, prefetch_timeout=1.0, stats=Stats(size=3 * CH), delivery=InOrder())
    window.start = lambda slot: None  # no task: the slot's outcome is set by hand below
    slot = window.add_slot(ByteRange(0, CH), 0)
    slot.finished = True
    with pytest.raises(rangestream.StreamError, match=f"chunk 0 ended at byte 0 of {CH} without an error"):
        window.retire(slot)
    assert slot in window.order  # not stepped over


# -- time the process did not run is not the servers' silence ----------------------------------------

async def test_a_consumer_blocking_the_loop_does_not_make_healthy_reads_look_stalled():
    # The consumer does 2.5 s of synchronous work once: the whole process stops, the origin in it
    # too, as on a frozen machine. No server was silent, so no read is re-issued (before: all 4
    # connections, 4 requests more, once the loop ran again).
    size, chunk = 8 * MB, 1 * MB
    async with Origin(Profile(rate=2e6)) as origin:  # 4 connections at 2 MB/s: about a second
        out, blocked = bytearray(), False
        async with rangestream.open_stream(origin.url(size, "busy"), chunk_size=chunk, window=4) as stream:
            async for piece in stream:
                out += piece
                if not blocked and len(out) >= 2 * chunk:
                    blocked = True
                    time.sleep(2.5)  # the behaviour under test: a loop blocked by its consumer
        assert bytes(out) == origin.content("busy", size)
    assert stream.stats.reissues == 0


def test_the_stall_clock_forgives_one_wait_a_bounded_time_however_often_the_loop_is_blocked():
    # A loop blocked again and again (other work on it) must not hide a dead read until the idle
    # timeout: each late tick's lag is credited to a wait, up to FORGIVEN in all; a new wait
    # starts with no credit.
    from rangestream.engine.control import Controller

    window = Window(deque([ByteRange(0, 3 * CH)]), size=3 * CH, chunk_size=CH, window=2, max_buffer=0,
                    auto_budget=False, prefetch_timeout=1.0, stats=Stats(size=3 * CH), delivery=InOrder())
    window.start = lambda slot: None  # no task: the slot's wait is set by hand below
    slot = window.add_slot(ByteRange(0, CH), 0)
    control = Controller(window, None, window.stats, None)  # type: ignore[arg-type]  # chunks: unused here
    slot.waiting_since = 100.0
    for _ in range(30):
        control._discount_lag(0.5)  # thirty ticks, each half a second late
    assert slot.waiting_since == pytest.approx(100.0 + 5.0)  # control.FORGIVEN, not the 15 s of lag
    slot.waiting_since = 200.0  # the next read's wait
    control._discount_lag(0.5)
    assert slot.waiting_since == pytest.approx(200.5)
