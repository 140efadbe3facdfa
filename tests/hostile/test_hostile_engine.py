"""The engine against hostile servers (issue 9, engine items): each server models one real
behaviour, and each is checked through the library (ordered and unordered) and the CLI
(``-o FILE`` and ``-o -``): the exact object, or the documented error and exit code."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from engine_servers import (
    Books,
    bursty,
    capped_unknown_total,
    hold,
    ignores_range,
    payload,
    ranged,
)
from hostile_support import check_cli, fetch, serve

import rangestream
from rangestream import Retry, Timeouts

KB = 1024
NO_RETRY = Retry(attempts=0, backoff=0.001, jitter=0)


# -- 1. capped responses with an unknown total -------------------------------------------

@pytest.mark.parametrize("end", ["416", "empty200", "total"])
async def test_capped_responses_with_unknown_total_deliver_the_whole_object(tmp_path, end):
    # Every response is capped at 64 KiB and says "bytes a-b/*": the end of a response is
    # not the end of the object. Only the server's own word (a 416 at the byte reached, an
    # empty 200, or a total that appears) ends it.
    data = payload(300_000)
    books = Books()
    async with serve(capped_unknown_total(data, books, cap=64 * KB, end=end)) as url:
        assert await fetch(url, chunk_size=100_000, window=2) == data
        assert await fetch(url, unordered=True, chunk_size=100_000, window=4) == data
        assert await fetch(url, chunk_size=1_000_000) == data  # the probe alone meets the cap
        await check_cli(url, tmp_path, expected=data)


# -- 2. a parked prefetch cut while idle -------------------------------------------------

async def test_a_parked_prefetch_cut_while_idle_is_a_free_reissue(tmp_path):
    # Chunk 1's headers (and a little body) arrive while chunk 0 streams; the engine holds
    # that response unread and the server (an idle timeout) closes it. attempts=0: a charged
    # failure would end the download, so success proves the cut cost the chunk nothing.
    ch = 128 * KB
    data = payload(2 * ch)
    books = Books()

    async def cut_when_parked(request, a):
        if a != ch or not books.busy(0):
            return None
        resp = web.StreamResponse(status=206, headers={"Content-Range": f"bytes {ch}-{2 * ch - 1}/{2 * ch}",
                                                       "ETag": '"v1"'})
        resp.content_length = ch
        await resp.prepare(request)
        await resp.write(data[ch:ch + 32 * KB])
        await asyncio.sleep(0.1)
        request.transport.close()
        return resp

    async with serve(ranged(data, books, pause=0.04, first=cut_when_parked)) as url:
        for unordered in (False, True):
            books.requests.clear()
            got = await fetch(url, unordered=unordered, chunk_size=ch, window=2, retry=NO_RETRY)
            assert got == data
            assert len([s for _, s in books.requests if s and s >= ch]) == 2  # cut once, resumed once
        await check_cli(url, tmp_path, expected=data,
                        args=("--window", "2", "--retries", "0", "--chunk-size", str(ch)))


# -- 3. unordered(): the prefetch guarantees hold there too ----------------------------------

async def test_unordered_503_on_a_prefetch_is_not_charged(tmp_path):
    ch = 128 * KB
    data = payload(2 * ch)
    books = Books()

    async def busy_503(request, a):
        return web.Response(status=503) if a == ch and books.busy(0) else None

    async with serve(ranged(data, books, pause=0.04, first=busy_503)) as url:
        for unordered in (True, False):
            books.requests.clear()
            assert await fetch(url, unordered=unordered, chunk_size=ch, window=2, retry=NO_RETRY) == data
            assert len(books.starts(ch)) >= 2  # 503s while chunk 0 streams, then the chunk
        await check_cli(url, tmp_path, expected=data,
                        args=("--window", "2", "--retries", "0", "--backoff", "0.001", "--chunk-size", str(ch)))


async def test_unordered_prefetch_timeout_applies_to_the_lowest_unfinished_chunk(tmp_path):
    # Chunk 1's headers would come 30 s late; once chunk 0 is done, chunk 1 is what the
    # writer waits on, so it gets only the prefetch timeout (0.3 s) before a free re-issue.
    # (Each run takes well under a second: the bounds leave a busy machine room, far below 30 s.)
    ch = 128 * KB
    data = payload(2 * ch)
    books = Books()

    async def late_headers(request, a):
        if a == ch and books.busy(0):
            await hold(request, 30.0)

    async with serve(ranged(data, books, pause=0.02, first=late_headers)) as url:
        for unordered in (True, False):
            t = time.monotonic()
            got = await fetch(url, unordered=unordered, chunk_size=ch, window=2, retry=NO_RETRY,
                              timeouts=Timeouts(request=30, idle=10, prefetch=0.3))
            assert got == data
            assert time.monotonic() - t < 10  # not the 30 s the headers take
        t = time.monotonic()
        await check_cli(url, tmp_path, expected=data,
                        args=("--window", "2", "--retries", "0", "--prefetch-timeout", "0.3",
                              "--chunk-size", str(ch)))
        assert time.monotonic() - t < 2 * 10 + 5  # two runs, each well under the 30 s delay, plus start-up


# -- 4. Retry-After on a chunk that is not the head -------------------------------------------

async def test_retry_after_on_a_non_head_chunk_is_honoured(tmp_path):
    # Chunk 1's prefetch gets "503, Retry-After: 2" while chunk 0 streams (0.15 s): it is
    # the head long before 2 s have passed, and still not asked again before then.
    ch = 128 * KB
    data = payload(2 * ch)

    def server(books: Books):
        async def busy_retry_after(request, a):
            if a == ch and books.busy(0):
                return web.Response(status=503, headers={"Retry-After": "2"})
            return None
        return serve(ranged(data, books, pause=0.02, first=busy_retry_after))

    async def library(unordered: bool) -> Books:
        books = Books()
        async with server(books) as url:
            got = await fetch(url, unordered=unordered, chunk_size=ch, window=2,
                              retry=Retry(attempts=3, backoff=0.001, jitter=0))
        assert got == data
        return books

    async def command_line() -> Books:
        books = Books()
        async with server(books) as url:
            await check_cli(url, tmp_path, expected=data,
                            args=("--window", "2", "--backoff", "0.001", "--chunk-size", str(ch)))
        return books

    *runs, cli_run = await asyncio.gather(library(False), library(True), command_line())
    for books in runs:
        starts = books.starts(ch)
        assert len(starts) == 2 and starts[1] - starts[0] >= 1.9, books.requests
    starts = cli_run.starts(ch)  # -o FILE, then -o -
    assert len(starts) == 4 and starts[1] - starts[0] >= 1.9 and starts[3] - starts[2] >= 1.9


# -- 5. Range ignored while the size is known ---------------------------------------------------

@pytest.mark.parametrize("unordered, window", [(False, 2), (False, 4), (True, 4)])
async def test_range_ignored_with_a_known_size_is_read_from_one_response(unordered, window):
    # The URL says the size (clen), the server answers every Range with a 200 of the whole
    # object: read the rest from that response instead of downloading it once per chunk.
    size = 4_000_000
    data = payload(size)
    books = Books()
    async with serve(ignores_range(data, books), path=f"/x?clen={size}") as url:
        assert await fetch(url, unordered=unordered, chunk_size=256 * KB, window=window) == data
    assert books.sent < 1.2 * size, f"{books.sent / size:.1f}x the object sent for one download"


async def test_range_ignored_with_a_known_size_through_the_cli(tmp_path):
    size = 4_000_000
    data = payload(size)
    books = Books()
    async with serve(ignores_range(data, books), path=f"/x?clen={size}") as url:
        await check_cli(url, tmp_path, expected=data, args=("--chunk-size", "256K", "--window", "4"))
    assert books.sent < 2 * 1.2 * size, f"{books.sent / size:.1f}x the object sent for two downloads"


# -- 7. a changed Content-Range total -----------------------------------------------------------

async def test_a_changed_total_is_an_object_change_at_once(tmp_path):
    # Chunk 0 says the object has N bytes, later responses say N + 10: a new version, not a fault.
    ch = 64 * KB
    data = payload(3 * ch)
    books = Books()

    async with serve(ranged(data, books, total=lambda a: len(data) + (10 if a else 0))) as url:
        for unordered in (False, True):
            books.requests.clear()
            with pytest.raises(rangestream.ObjectChangedError):
                await fetch(url, unordered=unordered, chunk_size=ch, window=2,
                            retry=Retry(attempts=3, backoff=0.2, jitter=0))
            assert len(books.starts(ch)) == 1  # never retried
        await check_cli(url, tmp_path, exit_code=5, args=("--chunk-size", str(ch), "--window", "2"))


# -- 9. a healthy server that sends in bursts ----------------------------------------------------

async def test_a_bursty_server_is_read_on_one_connection(tmp_path):
    # 128 KB every 0.7 s: silent most of the time, but every gap is like the one before it.
    size = 1_000_000
    data = payload(size)
    lib, cli_books = (Books(), Books()), Books()
    small = payload(512_000)

    async def library(books: Books, unordered: bool) -> None:
        async with serve(bursty(data, books, 128 * KB, 0.7)) as url:
            assert await fetch(url, unordered=unordered, chunk_size=size, retry=NO_RETRY) == data

    async def command_line() -> None:
        async with serve(bursty(small, cli_books, 128 * KB, 0.7)) as url:
            await check_cli(url, tmp_path, expected=small, args=("--chunk-size", "512000", "--retries", "0"))

    await asyncio.gather(library(lib[0], False), library(lib[1], True), command_line())
    assert [len(b.requests) for b in lib] == [1, 1]
    # One per CLI run. (Its auto window also asks the next chunks with the first one before the
    # size is known; past the end of this small object, they are dropped unread.)
    assert len([a for _, a in cli_books.requests if a is not None and a < len(small)]) == 2


# -- 10. stats stay bounded -------------------------------------------------------------------------

async def test_stats_series_stay_bounded_over_a_long_stream():
    # The controller samples every 50 ms for a stream's whole life (the service's streams run
    # for hours): the series keep at most ``series_cap`` points, spread over the whole life.
    size = 320 * KB
    data = payload(size)
    books = Books()
    async with serve(ranged(data, books, pause=0.05)) as url:  # 20 pieces, about 1 s
        async with rangestream.open_stream(url, chunk_size=size, window=1) as stream:
            stream.stats.series_cap = 8
            got = b"".join([p async for p in stream])
    assert got == data
    stats = stream.stats
    ticks = stats.seconds / 0.05
    assert ticks > 2 * 8  # the stream lived long enough for the cap to matter
    assert 0 < len(stats.timeline) <= 8 and 0 < len(stats.window_samples) <= 8
    assert stats.timeline[-1][0] >= 0.4 * stats.seconds  # the series still spans the whole life
    assert 0.8 <= stats.window_mean <= 1.0  # from every tick (the last may see the chunk done)
