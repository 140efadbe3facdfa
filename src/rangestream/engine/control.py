"""The controller: a task that wakes every tick to abandon stalled reads and, with a parallel
window, to start next requests early, size the auto window and split slow remainders."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from ..plan import MIN_SPLIT, AutoWindow, ByteRange
from .chunk import Chunks
from .slot import Slot
from .stats import Stats
from .window import Window

log = logging.getLogger("rangestream")

# The controller's sampling period: short, so the window finds the link within
# about half a second (measured-facts.md: reconsidering per chunk is too slow).
TICK = 0.05
# The consumer is behind once this much is ready for it and not taken (a consumer waiting
# for bytes takes each piece as it comes; a momentary lag leaves at most about one piece),
# or half a chunk when chunks are smaller (``_ready``).
BACKLOG = 1 << 20
# The in-order read-ahead holds at most what the consumer takes in this many seconds (never
# less than two chunks): bytes read further ahead only wait. A consumer slower than the link
# cannot always be told from a slow head: with the link shared by many connections the head
# reads at about the consumer's pace, never leaves a backlog, and the chunks after it filled
# the whole auto budget (measured: 55 MB held for an 8 MB/s reader, 66.5 MB allowed).
HORIZON = 2.0
# ...judged from the consumer's rate once it has taken bytes for this long; a consumer that
# waited for bytes this share of the time is not the limit (never capped).
HORIZON_AFTER = 0.3
WAITING = 0.9
# Chunks asked at once while the size is unknown (a parallel window): the probe and the next
# ones, so that a long first-byte delay is paid once, not twice (see Window.speculate).
SPECULATE = 4
# A read is stalled once silent for this many times the longest gap its connection has shown...
GAPS = 4
# ...and, with no other connection flowing to compare with, for at least this many seconds.
LONE_STALL = 2.0
# A controller tick later than this (seconds past TICK) saw the process stopped, not the network;
# one read's wait is forgiven at most this much stopped time in all: more than a frozen machine's
# pause, far less than the idle timeout (20 s) a loop blocked again and again would otherwise reach.
LATE = 0.2
FORGIVEN = 5.0


class Controller:
    def __init__(self, window: Window, chunks: Chunks, stats: Stats, auto: AutoWindow | None, *,
                 connections: int | None = None) -> None:
        self._window = window
        self._chunks = chunks
        self._stats = stats
        self._auto = auto
        # Windows 1 and 2 keep their simple shapes: sequential, and one prefetch.
        self._parallel = auto is not None or window.size_limit > 2
        if auto is not None:
            window.speculate = auto.open_at_once(SPECULATE)
        elif self._parallel:
            window.speculate = min(window.size_limit, SPECULATE)
        if connections is not None:
            # The probe and its early chunks take a connection each, and the early chunks keep
            # theirs, parked, until the probe answers: when that first answer is a redirect,
            # the connection it frees is the one its next hop takes.
            window.speculate = max(1, min(window.speculate, connections))
        self._started = False  # the auto window's start was chosen (from the first response)
        self._held_since: tuple[float, int] | None = None  # (time, bytes delivered) the consumer became the limit
        # (tick, the consumer's wait and bytes taken by then): set as the loop starts
        self._waited_at: tuple[float, float, int] = (0.0, 0.0, 0)
        self._credited: dict[Slot, tuple[float, float]] = {}  # a read's wait -> lag credited to it
        self._taken: deque[tuple[float, int, float]] = deque()  # (time, delivered, consumer waited) over HORIZON s

    async def run(self) -> None:
        try:
            await self._loop()
        except Exception:  # a controller bug must not take the download down with it
            log.exception("window controller stopped; the stream continues with a fixed window")

    async def _loop(self) -> None:
        """Every tick: abandon stalled reads; with a parallel window (>= 3 or auto) also
        start next requests early, feed the auto window and split slow remainders."""
        w, chunks = self._window, self._chunks
        loop = asyncio.get_running_loop()
        last_t, last_bytes = loop.time(), chunks.read_total
        t0 = last_t
        self._waited_at = (t0, w.consumer_waited, w.delivered)
        self._maybe_start(last_t)  # a probe's response may already have come (size unknown at first)
        while (w.order or w.spans) and not w.stopping:
            await asyncio.sleep(TICK)
            now = loop.time()
            self._discount_lag(now - last_t - TICK)
            self._maybe_start(now)
            rate = (chunks.read_total - last_bytes) / max(now - last_t, 1e-6)
            last_t, last_bytes = now, chunks.read_total
            self._stats.sample(round(now - t0, 2), round(rate / 1e6, 1), w.size_limit, w.active)
            self._abandon_stalls(now, flowing=rate > 0)
            if not self._parallel:
                continue
            ttfb = chunks.ttfb or 0.0
            for s in w.order:
                r = s.rate(now)
                if r and s.reading_since is not None and s.range.stop is not None and not s.ending:
                    s.ending = (s.range.stop - s.pos) / r < ttfb + TICK
            w.pace = self._pace(now, ttfb)
            w.fill()
            if self._auto is not None:
                self._horizon(now)
                held = self._consumer_bound(now)
                if held is not None:
                    w.resize(held)  # never grows while the consumer is the limit
                else:
                    reading = sum(1 for s in w.order if s.reading_since is not None and not s.finished)
                    w.resize(self._auto.observe(now, rate, reading, may_grow=self._consumer_has_room(now, rate)))
            self._maybe_split(now)

    def _consumer_has_room(self, now: float, rate: float) -> bool:
        """Whether an in-order consumer could take what one more connection would bring: the
        bytes it took over the time it was busy (not waiting for bytes) in the last interval,
        against the network's ``rate`` times (window + 1) / window. One that was busy writing
        cannot go faster with more connections, which would only read ahead of it (a CLI
        piping into a 32 MB/s reader absorbed its first megabytes into its writer and the
        pipe, and looked like a fast consumer for two ticks)."""
        w = self._window
        waited = _consumer_wait(w, now)
        (then, waited_then, taken_then), self._waited_at = self._waited_at, (now, waited, w.delivered)
        if not w.delivery.head_blocks:
            return True  # unordered: the consumer takes any chunk's bytes, none waits on it
        busy = (now - then) - (waited - waited_then)
        size = max(1, w.size_limit)
        return busy <= 0 or (w.delivered - taken_then) / busy >= rate * (size + 1) / size

    def _discount_lag(self, lag: float) -> None:
        """A tick this late means the process did not run (a loop blocked by its consumer, a
        frozen machine): that time is not the servers' silence, so the stall clocks skip it
        rather than re-issue every healthy read at once. At most ``FORGIVEN`` per wait, so a
        loop blocked again and again (other work on it) still lets a dead read be re-issued
        long before the idle timeout."""
        if lag <= LATE:
            return
        credited = {}
        for s in self._window.order:
            if s.waiting_since is None:
                continue
            since, given = self._credited.get(s, (None, 0.0))
            given = given if since == s.waiting_since else 0.0  # a new wait starts with none
            add = max(0.0, min(lag, FORGIVEN - given))
            s.waiting_since += add
            credited[s] = (s.waiting_since, given + add)
        self._credited = credited

    def _horizon(self, now: float) -> None:
        """Keep the auto read-ahead of an in-order consumer within ``HORIZON`` seconds of its
        recent rate (over the last ``HORIZON`` seconds, so a consumer that was slow and no
        longer is gets its read-ahead back within that time), unless it spent nearly all that
        time waiting for bytes: then it is not the limit, and the read-ahead is what lets the
        other connections work while a slow head holds it up (see HORIZON)."""
        w, taken = self._window, self._taken
        if not w.delivery.head_blocks or not w.delivered:
            return
        waited = _consumer_wait(w, now)
        taken.append((now, w.delivered, waited))
        while len(taken) > 2 and now - taken[1][0] >= HORIZON:
            taken.popleft()
        since, delivered, waited_then = taken[0]
        span = now - since
        if span < HORIZON_AFTER:
            return
        if waited - waited_then >= WAITING * span:
            w.cap_readahead(None)
        else:
            w.cap_readahead(max(2 * w.chunk_size, int((w.delivered - delivered) / span * HORIZON)))

    def _pace(self, now: float, ttfb: float) -> tuple[float, float] | None:
        """What sizes the chunks near the end (``Window.pace``): the connections' rate together
        and the first-byte delay; None while the consumer holds chunks back (then the link is
        not what decides when they end) or before any connection reads."""
        running = [s for s in self._window.order if not s.finished]
        if not ttfb or any(s.gated_since is not None for s in running):
            return None
        rate = sum(r for s in running if s.reading_since is not None and (r := s.rate(now)))
        return (rate, ttfb) if rate > 0 else None

    def _maybe_start(self, now: float) -> None:
        """Once the first response told the size and the round trip: the auto window's start."""
        auto, w = self._auto, self._window
        if self._started or auto is None or self._chunks.ttfb is None or not w.size_known.is_set():
            return
        self._started = True
        w.resize(auto.first_response(now, w.size, w.chunk_size, self._chunks.ttfb))

    def _consumer_bound(self, now: float) -> int | None:
        """The auto window's size while the consumer is the limit, or None when it is not.

        In order, the consumer is the limit when bytes ready for it wait untaken (the head's
        queue is full, or ``_ready`` holds ``BACKLOG`` or half a chunk, whichever is less: a
        chunk of at most 1 MiB can never hold 1 MiB); a head still fetching while later
        chunks fill the budget is a slow server, not a slow consumer. Unordered, the consumer
        takes any chunk's bytes, so any chunk held back means it is the limit. Held for two
        ticks, the rate it took meanwhile is its rate (``AutoWindow.consumer_bound``)."""
        auto, w = self._auto, self._window
        assert auto is not None
        running = [s for s in w.order if not s.finished]
        if w.delivery.head_blocks:
            head = w.order[0] if w.order else None
            held = head is not None and (head.gated_since is not None
                                         or _ready(w.order) >= min(BACKLOG, w.chunk_size // 2))
        else:
            held = any(s.gated_since is not None for s in running)
        if not held:
            self._held_since = None
            return None
        if self._held_since is None:
            self._held_since = (now, w.delivered)
        since, delivered = self._held_since
        if now - since < 2 * TICK:
            return auto.size
        rates = sorted(r for s in running if (r := s.rate(now)))
        per = rates[len(rates) // 2] if rates else None
        return auto.consumer_bound(now, (w.delivered - delivered) / (now - since), per)

    def push_back(self) -> None:
        """The server asked to slow down (429/503): the auto window shrinks."""
        if self._auto is not None:
            self._window.resize(self._auto.push_back(asyncio.get_running_loop().time()))

    def _abandon_stalls(self, now: float, flowing: bool) -> None:
        """A connection silent for much longer than a round trip and than its own pacing
        (the longest gap it has shown between pieces) while others flow is stalled, not
        slow: re-issue its remaining range instead of waiting out the idle timeout (20 s by
        default). The head qualifies even alone (everything behind it waits on it), but with
        no peer to compare with, silence must also outlast ``LONE_STALL``: a healthy server
        sending in bursts is read on one connection. A slot is re-issued again only after it
        made progress, so a server that always stalls at one byte still ends in the
        (counted) idle timeout."""
        stall_after = max(0.5, 3 * (self._chunks.ttfb or 0.0))
        for s in self._window.order:
            attempt = s.attempt
            if s.waiting_since is None or attempt is None or attempt.resp is None or attempt.cut is not None:
                continue
            limit = max(stall_after, GAPS * s.gap)
            if not flowing:
                if s is not self._window.head:
                    continue
                limit = max(limit, LONE_STALL)
            if now - s.waiting_since > limit and s.pos != s.stalled_at:
                s.stalled_at = s.pos  # no progress since the last re-issue: leave it to the idle timeout
                log.info("chunk %d silent for %.1fs at byte %d (longest gap so far %.2fs): re-issuing",
                         s.index, now - s.waiting_since, s.pos, s.gap)
                attempt.stall()  # the pending read fails; the chunk retries from s.pos

    def _maybe_split(self, now: float) -> None:
        """Move the back half of a slow remainder onto a new connection.

        Two cases pay: the tail (nothing left to plan, a connection of the
        window idle) and a straggler (the head far slower than its peers while
        the chunks behind it wait on the buffer). The slot keeps the front
        half; its request is simply read no further than the new stop.
        """
        w = self._window
        if w.stopping or w.whole_spans:
            return  # a server ignoring Range would send the whole object again for each split
        running = [s for s in w.order if not s.finished]
        if any(s.gated_since is not None for s in running) and not self._straggler(now):
            return  # the consumer is the bottleneck: another connection cannot help
        # A slot due within a round trip (``ending``) frees its place, as for the next request
        # (``Window.fill``): the split's round trip then overlaps the end of that body.
        if w.spans or sum(1 for s in running if not s.ending) >= w.size_limit:
            victim = self._straggler(now)
        else:
            victim = self._slowest(now, running)
        if victim is None:
            return
        stop = victim.range.stop
        if stop is None or stop - victim.pos < 2 * MIN_SPLIT:
            return
        mid = victim.pos + (stop - victim.pos) // 2
        victim.cut_to(mid)
        new = w.add_slot(ByteRange(mid, stop), w.order.index(victim) + 1)
        # The consumer needs these bytes right after the victim's: waiting on a
        # budget full of later chunks would undo the split.
        new.urgent = victim is w.order[0] or victim.urgent
        self._stats.splits += 1

    def _slowest(self, now: float, running: list[Slot]) -> Slot | None:
        """At the tail: the remainder due last, if it is worth another request."""
        best = None
        for s in running:
            rate = s.rate(now)
            if rate is None or s.range.stop is None or s.reading_since is None:
                continue
            eta = (s.range.stop - s.pos) / max(rate, 1.0)
            if best is None or eta > best[0]:
                best = (eta, s)
        if best is None or best[0] < max(2 * TICK, 2 * (self._chunks.ttfb or 0.0)):
            return None
        return best[1]

    def _straggler(self, now: float) -> Slot | None:
        w = self._window
        if not w.delivery.head_blocks or len(w.order) < 3 or not w.gate_waiters:
            return None
        head = w.order[0]
        if head.finished or head.reading_since is None or head.gated_since is not None:
            return None
        head_rate = head.rate(now)
        peers = [r for s in w.order[1:] if (r := s.rate(now)) is not None]
        if head_rate is None or len(peers) < 2:
            return None
        peers.sort()
        return head if head_rate * 4 < peers[len(peers) // 2] else None


def _consumer_wait(w: Window, now: float) -> float:
    """Seconds the in-order consumer has waited for bytes so far, its current wait included."""
    waiting = w.consumer_waiting_since
    return w.consumer_waited + (now - waiting if waiting is not None else 0.0)


def _ready(order: list[Slot]) -> int:
    """Bytes the in-order consumer could take without waiting on the network: the head's,
    then each next chunk's while every chunk before it is fully read."""
    ready = 0
    for s in order:
        ready += s.buffered
        if s.range.stop is None or s.pos < s.range.stop:
            break
    return ready
