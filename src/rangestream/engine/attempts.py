"""Retry accounting of one chunk as a value (cf. urllib3's ``Retry.increment``).

:class:`ChunkAttempts` is frozen: :meth:`ChunkAttempts.after` takes a failed attempt and
returns a :class:`Verdict` (what to do next, and the accounting to carry into the next
attempt). No sockets, no clock, no stream: the rules can be read, and tested, on their own.

The rules: a stalled read abandoned by the controller is re-issued at once, free (not the
chunk's fault). A failure of a prefetch (an attempt that began before its chunk was the
head) that never served the consumer is retried free of charge, after a backoff the chunk
becoming the head cuts short. Any other failure is counted; more than ``Retry.attempts``
counted failures give up. An attempt that delivered a chunk's worth before failing (one long
request to a server ignoring Range) starts a fresh count: the limit is per chunk of bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from ..retry import Retry


class Next(enum.Enum):
    REISSUE = "re-issue at once, free"
    FREE = "retry free, after a backoff that becoming the head cuts short"
    RETRY = "retry, counted, after a delay"
    GIVE_UP = "give up"


@dataclass(frozen=True)
class Failure:
    """What ended an attempt, as far as accounting cares."""

    retry_after: float | None = None  # the server's Retry-After, seconds
    stalled: bool = False  # the controller cut it: silent while other connections flowed


@dataclass(frozen=True)
class Verdict:
    next: Next
    attempts: ChunkAttempts  # the accounting to carry into the next attempt
    delay: float = 0.0  # seconds to wait first (FREE: at most; RETRY: exactly)


@dataclass(frozen=True)
class ChunkAttempts:
    retry: Retry
    counted: int = 0  # failures charged to this chunk
    free: int = 0  # prefetch failures: retried, never charged

    def after(self, failure: Failure, *, prefetch: bool, head: bool, progressed: bool) -> Verdict:
        """The verdict on a failed attempt.

        ``prefetch``: it began before its chunk was the head. ``head``: it served the
        consumer (its chunk is the head, its response was not parked unread, and it
        delivered a byte since its chunk became the head). ``progressed``: it delivered
        a chunk's worth of bytes before failing.
        """
        counted = 0 if progressed else self.counted
        if failure.stalled:
            return Verdict(Next.REISSUE, replace(self, counted=counted))
        if prefetch and not head:
            free = self.free + 1
            return Verdict(Next.FREE, replace(self, counted=counted, free=free), self.retry.delay(free))
        counted += 1
        state = replace(self, counted=counted)
        if counted > self.retry.attempts:
            return Verdict(Next.GIVE_UP, state)
        return Verdict(Next.RETRY, state, self.retry.delay(counted, failure.retry_after))
