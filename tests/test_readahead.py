"""The auto read-ahead of an in-order consumer and its horizon (``Controller._horizon``).

A consumer slower than the link does not always leave a backlog to show it (with the link
shared by the window's connections the head reads at about its pace), so the auto read-ahead
also stays within ``HORIZON`` seconds of what the consumer took: ``get -o -`` into an 8 MB/s
reader peaked at 101-117 MB RSS without it and 76 MB with it (``benchmarks/slow_reader.py``,
three runs each). A consumer that spends nearly all its time waiting for bytes is not the
limit, however slowly they come: capping it would idle the connections behind a slow head
(a review measured 40 % lost with 2 MB/s per connection). This test keeps that case uncapped.
"""

from __future__ import annotations

import rangestream
from rangestream.engine.control import WAITING
from rangestream.testing.origin import Origin, Profile

MiB = 1 << 20


async def test_a_consumer_that_always_waits_keeps_its_read_ahead():
    chunk = 2 * MiB
    # 2 MB/s per connection, no link cap: a chunk takes a second on one connection, and more
    # connections keep paying, so the window grows and its read-ahead with it.
    async with Origin(Profile(rate=2e6, ttfb=0.02)) as origin:
        async with rangestream.open_stream(origin.url(12 * chunk, "w"), window="auto", ceiling=8,
                                           chunk_size=chunk) as stream:
            n = 0
            async for piece in stream:  # takes every byte at once: it only ever waits
                n += len(piece)
            window = stream._window
            assert window.consumer_waited > WAITING * 0.5  # it did wait, most of the time
            assert window.readahead_cap is None, window.readahead_cap
            assert window.max_buffer == (window.size_limit - 1) * chunk
    assert n == 12 * chunk
    assert stream.stats.window_max >= 4
