"""Retry and timeout policies: plain values, no I/O (cf. urllib3's ``Retry``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random

__all__ = ["Retry", "Timeouts"]


def _default_statuses() -> frozenset[int]:
    return frozenset({408, 425, 429, *range(500, 600)})


@dataclass(frozen=True)
class Retry:
    """How a chunk recovers from transient failures.

    ``attempts`` is the number of *retries* per chunk after its first request
    (3 by default), so a chunk is requested at most ``attempts + 1``
    times for counted failures. Retry ``n`` (1-based) waits
    ``backoff * 2**(n-1)``, capped at ``cap``, scaled by a random factor in
    ``[1 - jitter, 1 + jitter]``; a server's ``Retry-After`` lengthens the wait
    (up to ``retry_after_cap``) but never shortens it. ``refreshes`` bounds how
    many times an expired URL (401/403) may be refreshed in one stream.
    """

    attempts: int = 3
    backoff: float = 1.0
    cap: float = 30.0
    jitter: float = 0.1
    statuses: frozenset[int] = field(default_factory=_default_statuses)
    respect_retry_after: bool = True
    retry_after_cap: float = 60.0
    refreshes: int = 3

    def __post_init__(self) -> None:
        if self.attempts < 0 or self.refreshes < 0:
            raise ValueError("attempts and refreshes must be >= 0")
        if self.backoff < 0 or self.cap < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("backoff and cap must be >= 0, jitter within [0, 1]")

    def is_retryable_status(self, status: int) -> bool:
        return status in self.statuses

    def delay(self, retry_number: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        n = max(retry_number, 1)
        base: float = min(self.backoff * (2 ** (n - 1)), self.cap)
        if self.jitter:
            import random  # here: only a retry needs it, and a command's start-up does not

            base *= (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return max(base, self.not_before(retry_after))

    def not_before(self, retry_after: float | None) -> float:
        """Seconds a server's ``Retry-After`` forbids asking again (0 if absent or not respected),
        whatever else decides when the next request goes out (a prefetch becoming the head)."""
        if retry_after is None or not self.respect_retry_after:
            return 0.0
        return min(max(retry_after, 0.0), self.retry_after_cap)


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``request``: until response headers. ``idle``: longest silence while
    reading a body. ``prefetch``: how long a prefetched request may still take once
    its chunk becomes the current one before it is abandoned and re-issued."""

    request: float = 30.0
    idle: float = 20.0
    prefetch: float = 5.0

    def __post_init__(self) -> None:
        if min(self.request, self.idle, self.prefetch) <= 0:
            raise ValueError("timeouts must be positive")
