"""Range planning and header parsing: pure code, tested exhaustively."""

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rangestream.plan import (
    ByteRange,
    missing_ranges,
    next_chunk,
    parse_content_range,
    parse_size,
    plan_chunks,
    size_from_url,
)


@given(size=st.integers(0, 10**7), chunk=st.integers(1, 10**6), start=st.integers(0, 10**7))
def test_plan_chunks_tile_the_object_exactly(size, chunk, start):
    chunk = max(chunk, size // 2000)  # keep each example small
    chunks = plan_chunks(size, chunk, start)
    if start >= size:
        assert chunks == []
        return
    assert chunks[0].start == start and chunks[-1].stop == size
    for a, b in pairwise(chunks):
        assert a.stop == b.start  # no gap, no overlap
    assert all(len(c) == chunk for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= chunk


def test_default_chunk_sizes():
    chunks = plan_chunks(20_000_000, 9_500_000)
    assert [len(c) for c in chunks] == [9_500_000, 9_500_000, 1_000_000]
    assert chunks[1].header() == "bytes=9500000-18999999"


def test_next_chunk_unknown_size_is_open_ended():
    assert next_chunk(100, None, 10) == ByteRange(100, None)
    assert ByteRange(100, None).header() == "bytes=100-"
    with pytest.raises(ValueError):
        next_chunk(0, 10, 0)


@given(first=st.integers(0, 2**53), length=st.integers(1, 2**40), extra=st.integers(0, 2**40))
def test_content_range_round_trip(first, length, extra):
    last = first + length - 1
    total = last + 1 + extra
    cr = parse_content_range(f"bytes {first}-{last}/{total}")
    assert (cr.start, cr.stop, cr.total) == (first, last + 1, total)
    assert parse_content_range(f"bytes {first}-{last}/*").total is None


@pytest.mark.parametrize("bad", [
    "", "bytes */100", "bytes 5-4/100", "bytes 0-100/100", "items 0-1/2", "bytes 0-1", "bytes a-b/c",
    "bytes -1-5/10", "bytes 0-1/2, bytes 3-4/5",
])
def test_content_range_rejects_garbage(bad):
    with pytest.raises(ValueError):
        parse_content_range(bad)


@given(st.text(max_size=40))
def test_content_range_never_crashes_otherwise(text):
    try:
        parse_content_range(text)
    except ValueError:
        pass


@given(size=st.integers(0, 5000), spans=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 5000)), max_size=12))
def test_missing_ranges_complement(size, spans):
    done = [(min(a, b), max(a, b)) for a, b in spans]
    gaps = missing_ranges(size, done)
    covered = set()
    for a, b in done:
        covered.update(range(max(a, 0), min(b, size)))
    missing = set()
    for g in gaps:
        assert g.start < g.stop
        missing.update(range(g.start, g.stop))
    assert missing == set(range(size)) - covered
    for a, b in pairwise(gaps):
        assert a.stop < b.start  # maximal, sorted gaps


def test_size_from_url():
    assert size_from_url("https://r1.googlevideo.com/videoplayback?id=x&clen=12345&sig=a") == 12345
    assert size_from_url("https://example.com/a.mp4") is None
    assert size_from_url("https://example.com/a.mp4?clen=abc") is None


@pytest.mark.parametrize("text,value", [
    ("9.5M", 9_500_000), ("10MiB", 10 * 1024**2), ("65536", 65536), ("1k", 1000), ("2 GiB", 2 * 1024**3),
    ("1.5kb", 1500),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "0", "-1M", "ten", "5 parsecs", "1e9"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


# -- AutoWindow: fed synthetic links, no sockets --------------------------------

def simulate(per_conn: float, link: float, ticks: int = 60, ceiling: int = 8, push_back_at=()):
    from rangestream.plan import AutoWindow
    w = AutoWindow(start=2, ceiling=ceiling)
    sizes = []
    for i in range(ticks):
        now = i * 0.1
        if i in push_back_at:
            w.push_back(now)
        rate = min(w.size * per_conn, link)
        sizes.append(w.observe(now, rate, reading=w.size))
    return sizes


def test_auto_window_finds_the_link():
    sizes = simulate(per_conn=16e6, link=64e6)
    assert sizes[0] == 2 and max(sizes) <= 8
    assert sizes[-1] == 4  # 4 x 16 MB/s fills 64 MB/s; more did not pay and was given back
    assert sizes.index(4) <= 5  # within about half a second


def test_auto_window_grows_to_the_ceiling_when_every_connection_adds():
    assert simulate(per_conn=1e6, link=1e9)[-1] == 8
    assert simulate(per_conn=1e6, link=1e9, ceiling=5)[-1] == 5


def test_auto_window_stays_small_when_one_connection_fills_the_link():
    sizes = simulate(per_conn=100e6, link=100e6)
    assert sizes[-1] <= 2


def test_auto_window_shrinks_on_push_back_and_stops_doubling():
    sizes = simulate(per_conn=1e6, link=1e9, push_back_at=(30,))
    assert sizes[30] == sizes[29] - 1
    # afterwards it only probes one connection at a time
    assert all(b - a <= 1 for a, b in pairwise(sizes[30:]))


def test_auto_window_ignores_samples_while_not_every_slot_reads():
    from rangestream.plan import AutoWindow
    w = AutoWindow(start=2, ceiling=8)
    for i in range(20):
        assert w.observe(i * 0.1, 1e6, reading=1) == 2  # the consumer, not the network, is the limit


def test_auto_window_does_not_grow_after_an_interval_its_consumer_did_not_wait_for_bytes():
    from rangestream.plan import AutoWindow
    w = AutoWindow(start=2, ceiling=8)
    # a link where every connection adds, but the consumer was busy (bytes ready, or writing):
    # samples count, growth waits for an interval in which it waited for bytes
    for i in range(10):
        assert w.observe(i * 0.1, (i + 1) * 1e6, reading=2, may_grow=False) == 2
    assert w.observe(1.0, 11e6, reading=2) == 4


def test_auto_window_starts_from_the_first_response_on_a_long_round_trip():
    from rangestream.plan import AutoWindow
    w = AutoWindow(start=2, ceiling=8)
    # 200 MB in 9.5 MB chunks, 150 ms to the first byte: open half the ceiling at once
    assert w.first_response(0.0, 200_000_000, 9_500_000, ttfb=0.15) == 4
    # ...and slow start still tests the last doubling, giving it back when it does not pay
    assert w.observe(0.1, 64e6, reading=4) == 8
    assert w.observe(0.2, 64e6, reading=8) == 4


def test_auto_window_start_keeps_the_ramp_when_it_is_cheap_or_cannot_help():
    from rangestream.plan import AutoWindow
    assert AutoWindow(start=2, ceiling=8).first_response(0.0, 10**9, 9_500_000, ttfb=0.001) == 2  # short round trip
    assert AutoWindow(start=2, ceiling=8).first_response(0.0, 3 * 9_500_000, 9_500_000, ttfb=0.2) == 3  # 3 chunks
    assert AutoWindow(start=2, ceiling=8).first_response(0.0, 1000, 9_500_000, ttfb=0.2) == 1  # one chunk
    assert AutoWindow(start=2, ceiling=8).first_response(0.0, None, 9_500_000, ttfb=0.2) == 2  # size unknown
    assert AutoWindow(start=2, ceiling=16).first_response(0.0, 10**9, 9_500_000, ttfb=0.2) == 8
    pushed = AutoWindow(start=2, ceiling=8)
    pushed.push_back(0.0)  # the server said 429/503 first: nothing grows
    assert pushed.first_response(0.1, 10**9, 9_500_000, ttfb=0.2) == 1


def test_auto_window_start_from_the_first_response_reaches_the_link_sooner():
    def ramp(first: bool) -> list[int]:
        from rangestream.plan import AutoWindow
        w = AutoWindow(start=2, ceiling=8)
        if first:
            w.first_response(0.0, 200_000_000, 9_500_000, ttfb=0.15)
        sizes = [w.size]  # the window the first response leaves, then one per sample
        for i in range(1, 20):
            sizes.append(w.observe(i * 0.1, min(w.size * 16e6, 64e6), reading=w.size))
        return sizes
    assert ramp(True).index(4) == 0 < ramp(False).index(4)
    assert ramp(True)[-1] == ramp(False)[-1] == 4  # the same size in the end: the link's


def test_auto_window_shrinks_to_what_a_slow_consumer_needs_and_grows_gently_after():
    from rangestream.plan import AutoWindow
    w = AutoWindow(start=8, ceiling=8)
    # the consumer takes 8 MB/s, one connection gives 16 MB/s: one connection is enough
    assert w.consumer_bound(1.0, 8e6, 16e6) == 1
    # a consumer at 40 MB/s needs ceil(40 * 1.25 / 16) = 4, but it never grows here
    assert w.consumer_bound(1.1, 40e6, 16e6) == 1
    w2 = AutoWindow(start=8, ceiling=8)
    assert w2.consumer_bound(1.0, 40e6, 16e6) == 4
    assert AutoWindow(start=5, ceiling=8).consumer_bound(1.0, 8e6, None) == 4  # no rate known: one fewer
    # once the network is the limit again, it probes one connection per probe_every, no doubling
    sizes = [w.observe(2.0 + i * 0.1, w.size * 16e6, reading=w.size) for i in range(40)]
    assert max(sizes) <= 3 and all(b - a <= 1 for a, b in pairwise(sizes))
