"""The auto read-ahead of an in-order consumer stays within a horizon of its rate.

A consumer that takes bytes exactly as fast as the head chunk arrives never leaves a backlog,
so nothing tells it from a slow server; the chunks after the head then filled the whole auto
budget ((window - 1) chunks) for a consumer that would need seconds to reach them. The budget
now holds at most ``control.HORIZON`` seconds of the consumer's rate (never under two chunks).
"""

from __future__ import annotations

import asyncio
import time

import rangestream
from rangestream.engine.control import HORIZON
from rangestream.testing.origin import Origin, Profile

MiB = 1 << 20
RATE = 4e6  # bytes/s, both the consumer's and each connection's: the head never gets ahead
HEAD_QUEUE = 2 * MiB  # the head's own queue, outside the read-ahead budget (delivery.HEAD_QUEUE)


async def test_read_ahead_stays_within_the_consumers_horizon():
    chunk = 2 * MiB
    async with Origin(Profile(rate=RATE, ttfb=0.02)) as origin:
        began, n = time.monotonic(), 0
        async with rangestream.open_stream(origin.url(48 * MiB, "h"), window="auto", ceiling=12,
                                           chunk_size=chunk) as stream:
            async for piece in stream:
                n += len(piece)
                ahead = n / RATE - (time.monotonic() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
                if time.monotonic() - began > 3:  # the budget (11 chunks, 23 MB) fills within 2 s
                    break
    # More connections paid (the link has no cap): the window grew, and with it the budget it
    # would allow without the horizon.
    assert stream.stats.window_max >= 8
    # Two seconds of the consumer (8 MB), the head's queue, and a few pieces in flight; before
    # the horizon the peak was 23.6 MB.
    assert stream.stats.buffered_peak <= HORIZON * RATE + HEAD_QUEUE + 6 * MiB, stream.stats.buffered_peak
