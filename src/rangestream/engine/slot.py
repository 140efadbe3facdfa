"""One chunk of the window (:class:`Slot`) and one request for it (:class:`Attempt`)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections import deque

from ..errors import StreamError
from ..plan import ByteRange
from ..transports import Response
from .stats import ChunkTrace


class Cut(enum.Enum):
    """Why an attempt was cut short (cf. trio's cancel scopes: the scope knows why it fired)."""

    REQUEST = "request"  # no response headers within Timeouts.request
    PREFETCH = "prefetch"  # a prefetch still without headers Timeouts.prefetch after its chunk became the head
    STALL = "stall"  # the controller abandoned a read silent while others flowed


class Attempt:
    """One request of a chunk: how it began, its response once it has headers, and, if
    something cut it short, why. Each attempt is a fresh object, so nothing of the previous
    one (a stall, a parked response) leaks into the next."""

    __slots__ = ("began_prefetch", "cut", "deadline", "deadline_why", "parked", "resp")

    def __init__(self, began_prefetch: bool) -> None:
        self.began_prefetch = began_prefetch  # sent before its chunk was the head
        self.parked = False  # ...and its headers came before that too (a response held unread)
        self.resp: Response | None = None  # once it has headers, until it ends
        self.deadline: asyncio.Timeout | None = None  # while it waits for headers
        self.deadline_why = Cut.REQUEST  # what the deadline stands for right now
        self.cut: Cut | None = None

    def hurry(self, seconds: float) -> None:
        """Its chunk became the head: still waiting for headers, it gets only ``seconds`` more."""
        if self.deadline is None:
            return
        deadline = asyncio.get_running_loop().time() + seconds
        when = self.deadline.when()
        if when is None or deadline < when:
            with contextlib.suppress(RuntimeError):  # it expired this very moment
                self.deadline.reschedule(deadline)
                self.deadline_why = Cut.PREFETCH

    def timed_out(self) -> None:
        """Its deadline fired before the headers came."""
        self.cut = self.deadline_why

    def stall(self) -> None:
        """Abandon a silent read: the pending read fails, and the chunk re-issues at once, free."""
        self.cut = Cut.STALL
        if self.resp is not None:
            self.resp.close()


class Slot:
    """One chunk of the window: its range, its buffered body, its outcome."""

    __slots__ = (
        "attempt",
        "buffered",
        "ending",
        "error",
        "finished",
        "gap",
        "gated",
        "gated_since",
        "head_from",
        "index",
        "last_rate",
        "not_before",
        "out",
        "pieces",
        "pos",
        "range",
        "read_from",
        "reading_since",
        "stalled_at",
        "task",
        "to_end",
        "trace",
        "urgent",
        "waiting_since",
        "wakeup",
    )

    def __init__(self, index: int, rng: ByteRange, wakeup: asyncio.Event) -> None:
        self.index = index
        self.range = rng  # its stop may shrink when the tail is split off to another slot
        self.pos = rng.start  # next byte of the object this chunk must fetch
        self.out = rng.start  # next byte to hand to the consumer
        self.pieces: deque[bytes] = deque()
        self.buffered = 0
        self.finished = False
        self.error: StreamError | None = None
        self.wakeup = wakeup
        self.task: asyncio.Task[None] | None = None
        self.attempt: Attempt | None = None  # the current (or last) request
        self.trace = ChunkTrace(index, rng.start, rng.stop)
        self.reading_since: float | None = None  # body phase of the current attempt began
        self.read_from = rng.start  # ...at this byte
        self.last_rate: float | None = None  # of the previous attempt's body
        self.urgent = False  # split off the head: reads past the budget (it is at most half a chunk)
        self.ending = False  # its body is due within about one first-byte delay
        self.waiting_since: float | None = None  # awaiting the socket since (None: not reading)
        self.stalled_at = -1  # pos at the last stall re-issue: re-issue again only after progress
        self.gated = 0.0  # seconds this attempt spent held back by the memory budget
        self.gated_since: float | None = None  # held back right now, since
        self.to_end = rng.stop is None  # may reach the end of an object of unknown size
        self.head_from = rng.start  # pos when it became the head
        self.not_before = 0.0  # monotonic time before which no attempt may start (Retry-After)
        self.gap = 0.0  # longest wait for a piece of the current attempt's body (its pacing)

    def rate(self, now: float) -> float | None:
        """Body bytes/s of the current attempt (or the last one once it ended), not
        counting time held back by the budget: a slow consumer is not a slow server."""
        if self.reading_since is None:
            return self.last_rate
        held = self.gated + (now - self.gated_since if self.gated_since is not None else 0.0)
        elapsed = now - self.reading_since - held
        if elapsed < 0.05:
            return self.last_rate
        return (self.pos - self.read_from) / elapsed

    def became_head(self, prefetch_timeout: float) -> None:
        self.head_from = self.pos
        if self.attempt is not None:
            self.attempt.hurry(prefetch_timeout)

    def cut_to(self, stop: int | None) -> None:
        """The chunk now ends at ``stop`` (a split, the object's end, a take-over)."""
        self.range = ByteRange(self.range.start, stop)
        self.trace.stop = stop


class Terminal(Exception):
    """A chunk's final failure, carried to the consumer as ``slot.error``."""

    def __init__(self, error: StreamError, cause: BaseException | None = None) -> None:
        self.error = error
        if cause is not None:
            error.__cause__ = cause  # the public error, not this wrapper, carries the cause
