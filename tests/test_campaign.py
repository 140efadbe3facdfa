"""Fault campaign: hundreds of seeded downloads through every fault kind, all byte-exact, no leaks.

Each window size runs the same mix: small objects in small chunks (every fault kind, fast),
objects of a few chunks of 1 MiB served at 4 MB/s per connection (long enough that the
parallel windows split remainders onto new connections, with faults landing on both
halves), a share read through ``unordered()`` (what ``get -o FILE`` writes at offsets),
and a few runs of ``rangestream get -o FILE`` as a subprocess.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
from itertools import pairwise
from pathlib import Path

import pytest

import rangestream
from rangestream import Retry, Timeouts
from rangestream.testing.origin import FAULT_KINDS, Origin, Profile

KB = 1024
MiB = 1 << 20
# Small objects, small chunks, millisecond backoffs: the whole campaign runs in seconds.
RETRY = Retry(attempts=12, backoff=0.001, cap=0.005, jitter=0.5, refreshes=1000)
TIMEOUTS = Timeouts(request=2, idle=0.25, prefetch=0.5)
# A split needs at least 512 KiB left that will take longer than two controller ticks:
# 1 MiB chunks at 4 MB/s per connection leave both.
SPLIT_RATE = 4e6
SPLIT_CHUNK = MiB
RUNS = 55  # x 4 windows = 220 small downloads in the library
SPLIT_RUNS = 10  # parallel windows: objects of a few 1 MiB chunks, alongside the small ones
CLI_RUNS = 2  # per window, `get -o FILE` in a subprocess, alongside the library runs
# The CLI cannot refresh our origin's one-off 403s without --refresh-command: leave them out there.
CLI_FAULTS = ",".join(k for k in FAULT_KINDS if k != "403")


def plan_run(rng: random.Random, i: int) -> tuple[int, int]:
    """(size, chunk size) of run ``i`` of the main track."""
    if i < len(FAULT_KINDS):
        return 200 * KB, rng.choice([16 * KB, 64 * KB])
    return rng.choice([0, 1, 1000, 50 * KB, 200 * KB + rng.randrange(KB), 333 * KB]), rng.choice([16 * KB, 64 * KB])


def faulty_url(origin: Origin, name: str, size: int, seed: int, kinds: str = ",".join(FAULT_KINDS)) -> str:
    """A URL with its own seeded random faults, served at SPLIT_RATE per connection: a track
    running beside the main one (which re-seeds the origin's profile per run) stays reproducible."""
    return origin.url(size, name, youtube=True, fault_rate=0.15, fault_kinds=kinds, seed=seed, retry_after=0,
                      stall_seconds=2.0, rate=SPLIT_RATE)


def chunk_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("rangestream-chunk-")]


async def read_ordered(stream: rangestream.Stream) -> bytes:
    return b"".join([piece async for piece in stream])


async def read_unordered(stream: rangestream.Stream, size: int) -> bytes:
    """Write at offsets like ``get -o FILE``; every byte must come exactly once."""
    out, spans = bytearray(size), []
    async for offset, piece in stream.unordered():
        out[offset:offset + len(piece)] = piece
        spans.append((offset, offset + len(piece)))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in pairwise(spans)), "a byte was delivered twice"
    assert sum(b - a for a, b in spans) == size
    return bytes(out)


async def split_track(origin: Origin, window: object, rng: random.Random, refresh) -> tuple[int, int]:
    """Objects of a few 1 MiB chunks under random faults, half of them unordered; returns
    (runs, runs in which the engine split a remainder)."""
    hits = 0
    for i in range(SPLIT_RUNS):
        name, size = f"s{window}-{i}", rng.randrange(3 * SPLIT_CHUNK // 2, 3 * SPLIT_CHUNK)
        async with asyncio.timeout(20), rangestream.open_stream(
                faulty_url(origin, name, size, rng.randrange(1 << 30)), chunk_size=SPLIT_CHUNK, window=window,
                retry=RETRY, timeouts=TIMEOUTS, refresh=refresh) as stream:
            data = await (read_unordered(stream, size) if i % 2 else read_ordered(stream))
        assert hashlib.sha256(data).hexdigest() == origin.sha256(name, size), \
            f"split run {i} ({'unordered' if i % 2 else 'ordered'}): {stream.stats.as_dict()}"
        hits += stream.stats.splits > 0
    return SPLIT_RUNS, hits


async def cli_get(origin: Origin, tmp: Path, name: str, size: int, window: object, seed: int) -> None:
    """``rangestream get URL -o FILE`` against random faults (seeded in the URL): exact file, exit 0."""
    url = faulty_url(origin, name, size, seed, CLI_FAULTS)
    target = tmp / f"{name}.bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANGESTREAM_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rangestream", "get", url, "-o", str(target), "--quiet", "--window", str(window),
        "--chunk-size", str(SPLIT_CHUNK), "--retries", "12", "--backoff", "0.001", "--timeout", "2",
        "--idle-timeout", "0.25", "--prefetch-timeout", "0.5", env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"get -o FILE exit {proc.returncode}: {err.decode(errors='replace')[-2000:]}"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == origin.sha256(name, size)
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(name)) == [target.name]  # no .part left


async def main_track(origin: Origin, window: object, rng: random.Random, profile: Profile, refresh) -> int:
    """Small objects in small chunks, every fault kind, half of them unordered; returns the unordered count."""
    unordered_runs = 0
    for i in range(RUNS):
        origin.profile = Profile(**{**profile.__dict__, "seed": rng.randrange(1 << 30)})
        size, chunk = plan_run(rng, i)
        unordered = i % 2 == 1
        name = f"c{window}-{i}"
        url = origin.url(size, name, youtube=rng.random() < 0.5)
        if i < len(FAULT_KINDS) and size > 1000:
            origin.inject(FAULT_KINDS[i], name=name)  # each kind at least once, besides the random ones
        async with asyncio.timeout(20), rangestream.open_stream(
                url, chunk_size=chunk, window=window, retry=RETRY, timeouts=TIMEOUTS, refresh=refresh) as stream:
            if i == 0:  # size > 0: its chunk tasks are running, and the leak check below must see them
                assert chunk_tasks(), "the leak check no longer finds the engine's chunk tasks"
            data = await (read_unordered(stream, size) if unordered else read_ordered(stream))
        assert hashlib.sha256(data).hexdigest() == origin.sha256(name, size), \
            f"run {i} ({'unordered' if unordered else 'ordered'}): {stream.stats.as_dict()}"
        unordered_runs += unordered
    return unordered_runs


@pytest.mark.parametrize("window", [1, 2, 4, "auto"])
async def test_fault_campaign(window, tmp_path):
    rng = random.Random(f"campaign-{window}")
    profile = Profile(fault_rate=0.15, fault_kinds=FAULT_KINDS, stall_seconds=2.0, retry_after=0)
    parallel = window == "auto" or window > 2
    async with Origin(profile) as origin:

        async def refresh(url: str) -> str:
            return url  # the origin's random 403s are one-offs: the same URL works again

        # The other tracks run alongside the main one: their waits cost no wall time.
        async with asyncio.TaskGroup() as tg:
            for j in range(CLI_RUNS):
                size = rng.randrange(SPLIT_CHUNK, 3 * SPLIT_CHUNK)
                tg.create_task(cli_get(origin, tmp_path, f"cli{window}-{j}", size, window, rng.randrange(1 << 30)))
            splits = tg.create_task(split_track(origin, window, random.Random(rng.random()), refresh)) \
                if parallel else None
            unordered_runs = await main_track(origin, window, rng, profile, refresh)
        split_runs, split_hits = splits.result() if splits else (0, 0)
        kinds_seen = {r.fault for r in origin.log if r.fault}
        assert await origin.wait_idle(timeout=3)
        assert chunk_tasks() == []
        # every kind of fault was actually exercised
        assert set(FAULT_KINDS) <= kinds_seen, set(FAULT_KINDS) - kinds_seen
        assert unordered_runs >= RUNS // 2
        if parallel:
            # the split code really ran, under faults, in most of the runs built for it
            assert split_hits >= split_runs // 2, (split_hits, split_runs)


async def test_object_changed_is_detected_not_mixed():
    # The "changed" fault is not survivable by design: it must be a clean typed error, every time.
    async with Origin(Profile()) as origin:
        for i in range(10):
            size = 200 * KB
            name = f"chg{i}"
            origin.inject("changed", name=name, start=(i % 3 + 1) * 32 * KB)
            got = bytearray()
            with pytest.raises(rangestream.ObjectChangedError) as ei:
                async with rangestream.open_stream(origin.url(size, name), chunk_size=32 * KB, window=1 + i % 4,
                                                   retry=RETRY, timeouts=TIMEOUTS) as stream:
                    async for piece in stream:
                        got += piece
            assert bytes(got) == origin.content(name, size, version=0)[: len(got)]
            assert ei.value.offset == len(got)
        assert await origin.wait_idle(timeout=3)
