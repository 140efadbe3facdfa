"""The end of a parallel download: the last chunks are sized so that the connections end
together (``plan.tail_chunk``), instead of full chunks whose slow remainders are then split,
each split paying another first-byte delay."""

from __future__ import annotations

import pytest

import rangestream
from rangestream import Retry
from rangestream.plan import MIN_SPLIT, ByteRange, tail_chunk
from rangestream.testing.origin import Origin, Profile

MB = 1_000_000
FAST_RETRY = Retry(attempts=4, backoff=0.001, cap=0.01, jitter=0)


# -- the rule (pure) ------------------------------------------------------------------------------

def test_far_from_the_end_a_chunk_is_a_whole_chunk():
    assert tail_chunk(0, 200 * MB, 9_500_000, left=200 * MB, rate=64e6, ttfb=0.15, connections=8) == \
        ByteRange(0, 9_500_000)


def test_near_the_end_each_connection_gets_its_share_of_what_is_left():
    # 40 MB left at 64 MB/s: while the new request waits 0.15 s the others read 9.6 MB; the
    # rest, shared by 4 connections, is 7.6 MB each.
    assert tail_chunk(10 * MB, 30 * MB, 9_500_000, left=40 * MB, rate=64e6, ttfb=0.15, connections=4) == \
        ByteRange(10 * MB, 10 * MB + 7_600_000)


def test_a_share_is_never_below_the_smallest_piece():
    got = tail_chunk(0, 10 * MB, 9_500_000, left=3 * MB, rate=64e6, ttfb=0.15, connections=8)
    assert got == ByteRange(0, MIN_SPLIT)


@pytest.mark.parametrize("span", [MIN_SPLIT + 1000, 2 * MIN_SPLIT - 1])
def test_no_sliver_is_left_for_a_request_of_its_own(span):
    # A share of MIN_SPLIT would leave less than MIN_SPLIT behind it: take the span whole.
    assert tail_chunk(0, span, 9_500_000, left=span, rate=64e6, ttfb=0.15, connections=8) == ByteRange(0, span)


def test_a_share_never_passes_the_span_or_the_chunk_size():
    assert tail_chunk(5, 5 + 3 * MB, 9_500_000, left=10**12, rate=0.0, ttfb=0.0, connections=1) == \
        ByteRange(5, 5 + 3 * MB)
    # A span longer than a chunk by less than MIN_SPLIT: a whole chunk, the sliver later (as before).
    assert tail_chunk(0, 1_000_100, 1_000_000, left=1_000_100, rate=1.0, ttfb=0.0, connections=1) == \
        ByteRange(0, 1_000_000)


# -- against the emulated CDN --------------------------------------------------------------------

async def test_the_last_chunks_are_planned_in_shares_not_split_afterwards():
    # 4 connections of 8 MB/s fill a 32 MB/s link; 100 ms to the first byte. Planned pieces (a
    # request whose end no earlier request had: not a split, not a resume) shrink near the end,
    # each at least MIN_SPLIT and at most a chunk, and the bytes are exact.
    # The read-ahead budget holds the whole object: chunks are sized by the link only while no
    # chunk waits for the consumer, and with the default budget a head slowed down by a busy
    # machine (this process paused for 0.3 s) held the later chunks back until the end (1 run
    # in 10 planned whole chunks only).
    chunk, size = 2 * MB, 20 * MB + 123
    profile = Profile(ttfb=0.1, rate=8e6, link_rate=32e6)
    async with Origin(profile) as origin:
        out = bytearray()
        async with rangestream.open_stream(origin.url(size, "tail"), chunk_size=chunk, window=4,
                                           max_buffer=size, retry=FAST_RETRY) as stream:
            async for piece in stream:
                out += piece
        assert bytes(out) == origin.content("tail", size)
        spans = []
        for r in sorted(origin.log, key=lambda r: r.start):
            first, _, last = r.range.removeprefix("bytes=").partition("-")
            spans.append((int(first), int(last) + 1))
    ends: set[int] = set()
    planned = []
    for a, b in spans:
        if b not in ends:
            planned.append((a, b))
        ends.add(b)
    lengths = [b - a for a, b in sorted(planned)]
    assert sum(lengths) == size  # planned pieces tile the object
    assert all(MIN_SPLIT <= n <= chunk for n in lengths[:-1]) and lengths[-1] <= chunk
    shares = [n for n in lengths[:-1] if n < chunk]
    assert shares, f"every piece but the last was a whole chunk: {lengths}"
