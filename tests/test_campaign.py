"""Fault campaign: hundreds of seeded downloads through every fault kind, all byte-exact, no leaks."""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest

import rangestream
from rangestream import Retry, Timeouts
from rangestream.origin import FAULT_KINDS, Origin, Profile

KB = 1024
# Small objects, small chunks, millisecond backoffs: the whole campaign runs in seconds.
RETRY = Retry(attempts=12, backoff=0.001, cap=0.005, jitter=0.5, refreshes=1000)
TIMEOUTS = Timeouts(request=2, idle=0.25, prefetch=0.5)


@pytest.mark.parametrize("window", [1, 2, 4, "auto"])
async def test_fault_campaign(window):
    rng = random.Random(f"campaign-{window}")
    profile = Profile(fault_rate=0.15, fault_kinds=FAULT_KINDS, stall_seconds=2.0, retry_after=0)
    runs = 55  # x 4 windows = 220 downloads
    async with Origin(profile) as origin:

        async def refresh(url: str) -> str:
            return url  # the origin's random 403s are one-offs: the same URL works again

        kinds_seen: set[str] = set()
        for i in range(runs):
            origin.profile = Profile(**{**profile.__dict__, "seed": rng.randrange(1 << 30)})
            size = 200 * KB if i < len(FAULT_KINDS) else rng.choice([0, 1, 1000, 50 * KB, 200 * KB + rng.randrange(KB), 333 * KB])
            name = f"c{window}-{i}"
            url = origin.url(size, name, youtube=rng.random() < 0.5)
            if i < len(FAULT_KINDS) and size > 1000:
                origin.inject(FAULT_KINDS[i], name=name)  # each kind at least once, besides the random ones
            h = hashlib.sha256()
            async with rangestream.open_stream(url, chunk_size=rng.choice([16 * KB, 64 * KB]), window=window,
                                               retry=RETRY, timeouts=TIMEOUTS, refresh=refresh) as stream:
                async for piece in asyncio_timeout_iter(stream, 20):
                    h.update(piece)
            assert h.hexdigest() == origin.sha256(name, size), f"run {i}: {stream.stats.as_dict()}"
            kinds_seen.update(r.fault for r in origin.log if r.fault)
        assert await origin.wait_idle(timeout=3)
        assert [t for t in asyncio.all_tasks() if "_run_chunk" in repr(t.get_coro())] == []
        # every kind of fault was actually exercised
        assert set(FAULT_KINDS) <= kinds_seen, set(FAULT_KINDS) - kinds_seen


async def asyncio_timeout_iter(stream, seconds):
    async with asyncio.timeout(seconds):
        async for piece in stream:
            yield piece


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
