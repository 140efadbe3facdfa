"""Retry accounting of one chunk (rangestream.engine.attempts), without sockets: each row
is a failed attempt and the verdict the engine must act on."""

from __future__ import annotations

import dataclasses

import pytest

from rangestream import Retry
from rangestream.engine.attempts import ChunkAttempts, Failure, Next

RETRY = Retry(attempts=2, backoff=1.0, cap=30.0, jitter=0)
STALL = Failure(stalled=True)
PLAIN = Failure()

# (state before, failure, prefetch, served the head, progressed) -> (next, counted, free, delay)
ROWS = [
    # A stalled read abandoned by the controller: at once, free, whoever it was.
    ((0, 0), STALL, False, True, False, (Next.REISSUE, 0, 0, 0.0)),
    ((2, 1), STALL, True, False, False, (Next.REISSUE, 2, 1, 0.0)),
    ((2, 0), STALL, False, True, True, (Next.REISSUE, 0, 0, 0.0)),  # a chunk's worth: fresh count
    # A prefetch that never served the consumer: free, with its own backoff.
    ((0, 0), PLAIN, True, False, False, (Next.FREE, 0, 1, 1.0)),
    ((1, 1), PLAIN, True, False, False, (Next.FREE, 1, 2, 2.0)),
    ((1, 2), Failure(retry_after=9.0), True, False, False, (Next.FREE, 1, 3, 4.0)),
    # ...once it served the head, it is charged like any other.
    ((0, 5), PLAIN, True, True, False, (Next.RETRY, 1, 5, 1.0)),
    # Counted failures: backoff doubles; Retry-After lengthens, never shortens.
    ((0, 0), PLAIN, False, True, False, (Next.RETRY, 1, 0, 1.0)),
    ((1, 0), PLAIN, False, False, False, (Next.RETRY, 2, 0, 2.0)),
    ((0, 0), Failure(retry_after=7.0), False, True, False, (Next.RETRY, 1, 0, 7.0)),
    ((0, 0), Failure(retry_after=0.5), False, True, False, (Next.RETRY, 1, 0, 1.0)),
    # More than Retry.attempts counted failures: give up...
    ((2, 0), PLAIN, False, True, False, (Next.GIVE_UP, 3, 0, 0.0)),
    # ...unless the failed attempt delivered a chunk's worth: the count starts again.
    ((2, 0), PLAIN, False, True, True, (Next.RETRY, 1, 0, 1.0)),
]


@pytest.mark.parametrize(("before", "failure", "prefetch", "head", "progressed", "expected"), ROWS)
def test_verdict(before, failure, prefetch, head, progressed, expected):
    state = ChunkAttempts(RETRY, counted=before[0], free=before[1])
    v = state.after(failure, prefetch=prefetch, head=head, progressed=progressed)
    assert (v.next, v.attempts.counted, v.attempts.free, v.delay) == expected
    assert (state.counted, state.free) == before  # a value: the old state is unchanged
    assert v.attempts.retry is RETRY


def test_a_head_failing_every_time_gets_attempts_plus_one_requests():
    state, seen = ChunkAttempts(Retry(attempts=3, backoff=0.5, jitter=0)), []
    for _ in range(10):
        v = state.after(PLAIN, prefetch=False, head=True, progressed=False)
        seen.append((v.next, v.delay))
        state = v.attempts
        if v.next is Next.GIVE_UP:
            break
    assert seen == [(Next.RETRY, 0.5), (Next.RETRY, 1.0), (Next.RETRY, 2.0), (Next.GIVE_UP, 0.0)]


def test_free_failures_never_use_up_the_counted_ones():
    state = ChunkAttempts(Retry(attempts=0, backoff=0.0, jitter=0))
    for _ in range(50):
        state = state.after(PLAIN, prefetch=True, head=False, progressed=False).attempts
        state = state.after(STALL, prefetch=False, head=True, progressed=False).attempts
    assert (state.counted, state.free) == (0, 50)
    assert state.after(PLAIN, prefetch=False, head=True, progressed=False).next is Next.GIVE_UP


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ChunkAttempts(RETRY).counted = 1  # type: ignore[misc]
