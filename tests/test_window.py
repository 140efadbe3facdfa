"""The parallel window: read-ahead, auto sizing, splits, ranges and out-of-order delivery."""

from __future__ import annotations

import hashlib
import time

import rangestream
from rangestream import Retry
from rangestream.testing.origin import Profile

KB = 1024
MB = 1_000_000
FAST_RETRY = Retry(attempts=4, backoff=0.001, cap=0.01, jitter=0)


def overlap(log) -> int:
    """Most requests whose bodies were being sent at the same moment."""
    spans = [(r.first_byte, r.end or float("inf")) for r in log if r.first_byte]
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


async def test_window_4_reads_bodies_in_parallel_and_stays_in_order(origin):
    origin.profile = Profile(rate=4 * MB)
    size = 4 * MB
    async with rangestream.open_stream(origin.url(size, "par", youtube=True), chunk_size=500 * KB, window=4,
                                       retry=FAST_RETRY) as stream:
        data = b"".join([p async for p in stream])
    assert data == origin.content("par", size)
    assert overlap(origin.log) >= 3  # bodies really flowed at once, on separate connections
    assert len({r.peer for r in origin.log}) >= 3
    # the engine's own per-connection accounting agrees with the origin's
    assert await origin.wait_idle()  # ...once the origin's handlers have finished their books
    per_peer: dict[str, int] = {}
    for r in origin.log:
        per_peer[r.peer] = per_peer.get(r.peer, 0) + r.bytes_sent
    assert sorted(stream.stats.connection_bytes.values()) == sorted(per_peer.values())


async def test_auto_window_grows_against_per_connection_caps(origin):
    # 2 MB/s per connection, 8 MB/s link: only about 4 connections fill it.
    origin.profile = Profile(ttfb=0.03, rate=2 * MB, link_rate=8 * MB)
    size = 8 * MB
    async with rangestream.open_stream(origin.url(size, "auto", youtube=True), chunk_size=500 * KB,
                                       window="auto", retry=FAST_RETRY) as stream:
        h = hashlib.sha256()
        async for p in stream:
            h.update(p)
    assert h.hexdigest() == origin.sha256("auto", size)
    assert stream.stats.window_max >= 4
    assert overlap(origin.log) >= 4


async def test_auto_window_backs_off_on_429(origin):
    origin.profile = Profile(rate=2 * MB, retry_after=0)
    origin.inject("429", name="pb", count=6)
    async with rangestream.open_stream(origin.url(4 * MB, "pb", youtube=True), chunk_size=250 * KB,
                                       window="auto", retry=Retry(attempts=8, backoff=0.001)) as stream:
        data = b"".join([p async for p in stream])
    assert data == origin.content("pb", 4 * MB)
    assert stream.window <= 4


async def test_tail_is_split_onto_free_connections(origin):
    # One big chunk and a window of 4: without splitting one connection does all the work.
    origin.profile = Profile(rate=2 * MB)
    size = 6 * MB
    async with rangestream.open_stream(origin.url(size, "tail", youtube=True), chunk_size=size, window=4,
                                       retry=FAST_RETRY) as stream:
        data = b"".join([p async for p in stream])
    assert data == origin.content("tail", size)
    assert stream.stats.splits >= 2
    assert overlap(origin.log) >= 3


async def test_straggler_head_is_split(origin):
    # The head chunk crawls while its peers run fast and fill the read-ahead budget behind it.
    size, chunk = 6 * MB, 2 * MB
    origin.profile = Profile(rate=8 * MB)
    origin.inject("slow", name="strag", start=0, rate=300_000)
    async with rangestream.open_stream(origin.url(size, "strag", youtube=True), chunk_size=chunk, window=3,
                                       max_buffer=2 * chunk, retry=FAST_RETRY) as stream:
        data = b"".join([p async for p in stream])
    assert data == origin.content("strag", size)
    assert stream.stats.splits >= 1
    # the crawling request was abandoned early: it sent well under its 2 MB
    slow = [r for r in origin.log if r.fault == "slow"]
    assert slow and slow[0].bytes_sent < chunk


async def test_ranges_fetch_only_the_missing_spans(origin):
    size = 1 * MB
    spans = [(0, 100_000), (250_000, 400_001), (999_000, size)]
    async with rangestream.open_stream(origin.url(size, "rg"), chunk_size=64 * KB, window=3,
                                       ranges=spans, retry=FAST_RETRY) as stream:
        data = b"".join([p async for p in stream])
    content = origin.content("rg", size)
    assert data == b"".join(content[a:b] for a, b in spans)
    asked = sum(int(r.range.split("-")[1]) - int(r.range.split("=")[1].split("-")[0]) + 1 for r in origin.log)
    assert asked == sum(b - a for a, b in spans)


async def test_unordered_delivers_each_byte_once_with_its_offset(origin):
    origin.profile = Profile(rate=4 * MB)
    size = 3 * MB + 17
    buf = bytearray(size)
    seen = 0
    async with rangestream.open_stream(origin.url(size, "uo", youtube=True), chunk_size=300 * KB, window=4,
                                       retry=FAST_RETRY) as stream:
        offsets = []
        async for offset, piece in stream.unordered():
            assert buf[offset:offset + len(piece)] == bytes(len(piece))  # never written twice
            buf[offset:offset + len(piece)] = piece
            seen += len(piece)
            offsets.append(offset)
    assert seen == size and bytes(buf) == origin.content("uo", size)
    assert offsets != sorted(offsets)  # really out of order: chunks arrived interleaved


async def test_client_limit_per_host_caps_connections(origin):
    origin.profile = Profile(rate=2 * MB)
    async with rangestream.Client(limit_per_host=2) as client:
        async with client.open_stream(origin.url(3 * MB, "lim", youtube=True), chunk_size=250 * KB, window=6,
                                      retry=FAST_RETRY) as stream:
            data = b"".join([p async for p in stream])
    assert data == origin.content("lim", 3 * MB)
    assert overlap(origin.log) <= 2


async def test_stalled_connection_is_reissued_while_others_flow(origin):
    # The idle timeout (20 s) is sized for a lone connection; beside flowing peers a
    # silent one is recognised within about a second and its range re-issued, uncounted.
    origin.profile = Profile(rate=2 * MB, stall_seconds=15)
    size, chunk = 4 * MB, 500 * KB
    origin.inject("stall", name="stall", start=chunk, at=100 * KB)
    t = time.monotonic()
    async with rangestream.open_stream(origin.url(size, "stall", youtube=True), chunk_size=chunk, window=4,
                                       retry=Retry(attempts=0, backoff=0.001)) as stream:
        data = b"".join([p async for p in stream])
    assert data == origin.content("stall", size)
    assert time.monotonic() - t < 10  # about 2.5 s; waiting out the 15 s stall fails it
    assert stream.stats.reissues == 1
    stalled = [r for r in origin.log if r.fault == "stall"]
    assert len(stalled) == 1 and stalled[0].bytes_sent == 100 * KB
    resumed = [r for r in origin.log if r.range == f"bytes={chunk + 100 * KB}-{2 * chunk - 1}"]
    assert len(resumed) == 1  # the re-issue resumed from the byte reached
