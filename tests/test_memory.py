"""Memory: the peak RSS of a real process reading an object many times larger than the bound.

The engine's own counter (``stats.buffered_peak``) only sees what the engine chose to
count; these tests measure the process. A subprocess (the library only, no origin in
it) first warms the code path up on a small object and records its resident size as
the baseline, then reads a 256 MB object through a slow consumer and reports its
high-water mark (VmHWM). The growth over the baseline must stay within the bound
ARCHITECTURE.md documents ("Memory bound"): ``max_buffer`` + 2 MiB for the head + one
piece (up to ~2 MiB) per reading connection + 2 MiB per urgent split-off, plus what
aiohttp holds per open connection (``_PER_CONNECTION``) and a fixed allowance for the
allocator (``_SLACK``). Both allowances together are far below the object (256 MB), so
a stream that buffered the object, or a read-ahead budget that is not enforced, fails:
``test_the_measurement_sees_a_budget_overrun`` runs the same probe with a budget larger
than the bound assumes and checks that the measured peak breaks the bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import pytest

from rangestream.testing.origin import Origin, Profile

MiB = 1 << 20
SIZE = 256 * MiB
HEAD_QUEUE = 2 * MiB  # documented, not read from the engine: a bigger queue must fail here
_PIECE = 2 * MiB  # the most one read_piece returns (aiohttp's readany of its buffer)
# aiohttp pauses a socket once its buffer passes twice read_bufsize (1 MiB in transports/aiohttp.py),
# after one more socket read (256 KiB): what a connection holds that the engine does not count.
_PER_CONNECTION = 2 * MiB + 256 * 1024
CHUNK = 16 * MiB  # chunks far larger than the bound: a chunk read whole would break it
_SLACK = 8 * MiB  # allocator fragmentation and free lists after hundreds of MB went through
# The consumer takes 256 MB in about 1 s; loopback delivers several times faster, so the
# read-ahead budget is full most of the time (the case the bound is about).
CONSUMER_RATE = 250e6

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")

PROBE = r"""
import asyncio, json, sys, time
import rangestream

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no " + field)

async def read(url, opts, unordered, rate):
    n, began = 0, time.monotonic()
    async with rangestream.open_stream(url, **opts) as s:
        pieces = s.unordered() if unordered else s
        async for item in pieces:
            n += len(item[1] if unordered else item)
            ahead = n / rate - (time.monotonic() - began) if rate else 0
            if ahead > 0:
                await asyncio.sleep(ahead)  # a consumer slower than loopback: the engine must hold back
    return n, s

async def main():
    warm_url, url, opts, unordered, rate = json.loads(sys.argv[1])
    await read(warm_url, opts, unordered, 0)  # load every code path the real read uses
    base = status("VmRSS")
    t = time.monotonic()
    n, s = await read(url, opts, unordered, rate)
    print(json.dumps({"baseline": base, "peak": status("VmHWM"), "bytes": n, "seconds": time.monotonic() - t,
                      "buffered_peak": s.stats.buffered_peak, "splits": s.stats.splits,
                      "connections_max": s.stats.connections_max}))

asyncio.run(main())
"""


def bound(max_buffer: int, connections: int, urgent: int = 0) -> int:
    """ARCHITECTURE.md's "Memory bound", plus aiohttp's per-connection buffers and the allocator."""
    return (max_buffer + HEAD_QUEUE + connections * (_PIECE + _PER_CONNECTION) + urgent * HEAD_QUEUE
            + _SLACK)


async def probe(origin: Origin, name: str, *, unordered: bool = False, rate: float = CONSUMER_RATE,
                **opts: object) -> dict:
    warm = origin.url(8 * MiB, f"{name}-warm", youtube=True)
    url = origin.url(SIZE, name, youtube=True)
    arg = json.dumps([warm, url, opts, unordered, rate])
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", PROBE, arg, env=dict(os.environ),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    result = json.loads(out)
    assert result["bytes"] == SIZE
    return result


@pytest.fixture
async def fast_origin():
    async with Origin(Profile()) as server:
        yield server


@pytest.mark.parametrize("window,max_buffer,unordered", [
    (2, None, False),          # the seed's prefetch: headers early, no body read ahead
    (4, 6 * MiB, False),       # parallel read-ahead under a budget
    (4, 6 * MiB, True),        # the path `get -o FILE` uses
])
async def test_peak_rss_of_a_slow_consumer_stays_within_the_documented_bound(fast_origin, window, max_buffer,
                                                                            unordered):
    r = await probe(fast_origin, f"rss{window}{unordered}", unordered=unordered, chunk_size=CHUNK,
                    window=window, max_buffer=max_buffer)
    budget = 0 if max_buffer is None else max_buffer
    # window slots + one early next request + the budget's waiting chunks: every one may hold a piece
    connections = max(r["connections_max"], window)
    limit = bound(budget, connections, urgent=r["splits"])
    growth = r["peak"] - r["baseline"]
    assert growth <= limit, f"RSS grew {growth / MiB:.1f} MiB over the baseline, bound {limit / MiB:.1f} MiB: {r}"
    assert limit * 6 < SIZE  # a real constraint: the object is many times larger than the bound


async def test_the_measurement_sees_a_budget_overrun(fast_origin):
    # The same probe, but the stream may read 96 MiB ahead while the bound is computed for 6 MiB:
    # if this did not break the bound, the test above could not fail either.
    r = await probe(fast_origin, "overrun", chunk_size=CHUNK, window=4, max_buffer=96 * MiB)
    growth = r["peak"] - r["baseline"]
    assert growth > bound(6 * MiB, max(r["connections_max"], 4), urgent=r["splits"]), r


# -- the CLI into a slow reader: the auto window must not grow for a consumer that is the limit --

CLI_SIZE = 96 * MiB
READER_RATE = 32e6  # a reader at half of one connection's rate: one connection is plenty
CLI_PEAK = 100e6  # issue 11: `get -o -` into a slow reader peaks at <= 100 MB RSS (ARCHITECTURE.md)


def _vm_hwm(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


async def test_cli_into_a_slow_reader_keeps_the_auto_window_and_read_ahead_small(tmp_path):
    # 64 MB/s per connection and a 256 MB/s link: an auto window that measured the link and not
    # the reader would grow to 8 connections and read (8 - 1) x 9.5 MB ahead of a reader that
    # takes 32 MB/s. The process is measured itself (its VmHWM while it runs: ru_maxrss would
    # include what it inherited across exec).
    async with Origin(Profile(ttfb=0.02, rate=64e6, link_rate=256e6)) as origin:
        url = origin.url(CLI_SIZE, "slowreader", youtube=True)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rangestream", "get", url, "--window", "auto", "-o", "-", "--quiet",
            env={k: v for k, v in os.environ.items() if not k.startswith("RANGESTREAM_")},
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        h, n, peak = hashlib.sha256(), 0, 0
        began: float | None = None
        try:
            async with asyncio.timeout(60):
                while block := await proc.stdout.read(1 << 20):
                    began = began or time.monotonic()  # paced from the first byte: no catching up on start-up
                    h.update(block)
                    n += len(block)
                    peak = max(peak, _vm_hwm(proc.pid) or 0)  # the high-water mark: polling misses nothing
                    ahead = n / READER_RATE - (time.monotonic() - began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                _, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
        assert n == CLI_SIZE and h.hexdigest() == origin.sha256("slowreader", CLI_SIZE)
    assert peak, "never saw the process's VmHWM"
    assert peak <= CLI_PEAK, f"peak RSS {peak / 1e6:.0f} MB > {CLI_PEAK / 1e6:.0f} MB"
