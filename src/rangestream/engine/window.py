"""The window: which chunks are in flight, what is left to plan, the object's size as learned,
and the read-ahead budget. Chunks are cut from the front of what is left (``plan``), enter
the window while fewer than ``size`` requests run, and leave it once delivered."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from ..errors import ObjectChangedError, StreamError
from ..plan import ByteRange, next_chunk, tail_chunk
from .delivery import InOrder, Unordered
from .response import Body, Learned
from .slot import Slot, Terminal
from .stats import Stats

# Seconds a probe may answer later than twice the first-byte delay of a speculative response
# that waits for it, before those responses give way (see wait_known). A stream alone does not
# need it (Controller caps its early chunks at the transport's connections per host), but
# streams sharing a capped pool can hold the connections each other's probes need. Far above
# the jitter of a busy machine, far below any request timeout: a probe that is merely slow by
# more than this costs the early chunks' requests again (never bytes: they were not read).
GIVE_WAY = 1.0


class Window:
    def __init__(self, spans: deque[ByteRange], *, size: int | None, chunk_size: int, window: int,
                 max_buffer: int, auto_budget: bool, prefetch_timeout: float, stats: Stats,
                 delivery: InOrder | Unordered) -> None:
        self.spans = spans  # what is left to plan, in object order
        self.size = size
        self.size_known = asyncio.Event()
        if size is not None:
            self.size_known.set()
            self.clip_spans()
        self.chunk_size = chunk_size
        self.size_limit = window  # requests in flight (the auto controller moves it)
        self.max_buffer = max_buffer
        self.auto_budget = auto_budget  # max_buffer follows the window
        self.readahead_cap: int | None = None  # and stays within this (Controller._horizon)
        # Seconds the in-order consumer spent waiting for bytes, and since when it waits now.
        self.consumer_waited = 0.0
        self.consumer_waiting_since: float | None = None
        self.prefetch_timeout = prefetch_timeout
        self.stats = stats
        self.delivery = delivery
        self.start: Callable[[Slot], asyncio.Task[None]] | None = None  # runs a chunk (set on entering)
        self.whole_spans = False  # the server ignores Range: one request per span
        self.end: int | None = None  # unknown total: the least byte the server said does not exist
        self.probe_open = False
        # Chunks asked before the size is known: 1 (the probe alone), or with a parallel window
        # the probe and the chunks right after it at once, not a round trip later (the
        # controller sets it). Those after the probe are ``speculative`` until its answer.
        self.speculate = 1
        self.speculative: list[Slot] = []
        self.probe: Slot | None = None  # the chunk whose answer tells the size (when unknown)
        # (bytes/s of all connections together, first-byte delay), from the controller with a
        # parallel window: chunks near the end are sized to end together (plan.tail_chunk).
        self.pace: tuple[float, float] | None = None
        self.order: list[Slot] = []  # the window, in object order
        self.head: Slot | None = None  # the chunk the consumer waits on (see sync_head)
        self.next_index = 0
        self.buffered = 0
        self.delivered = 0
        self.progress = asyncio.Event()  # set (and replaced) whenever the budget or the head moves
        self.gate_waiters = 0
        self.stopping = False

    @property
    def active(self) -> int:
        return sum(1 for s in self.order if not s.finished)

    # -- planning -----------------------------------------------------------

    def clip_spans(self) -> None:
        size = self.size
        assert size is not None
        clipped: deque[ByteRange] = deque()
        for r in self.spans:
            stop = size if r.stop is None else min(r.stop, size)
            if r.start < stop:
                clipped.append(ByteRange(r.start, stop))
        self.spans = clipped

    def plan_next(self) -> ByteRange | None:
        if not self.spans:
            return None
        span = self.spans[0]
        if span.stop is None and not self.size_known.is_set():
            # Unknown size: the probe (and any speculative chunk) is one chunk cut from the
            # open span; learn_size re-plans what is left of it.
            self.probe_open = True
            stop = span.start + self.chunk_size
            self.spans[0] = ByteRange(stop, None)
            return ByteRange(span.start, stop)
        if span.stop is None or self.whole_spans:
            self.spans.popleft()
            return span
        if self.pace is not None:
            chunk: ByteRange | None = tail_chunk(span.start, span.stop, self.chunk_size, left=self._left(),
                                                 rate=self.pace[0], ttfb=self.pace[1],
                                                 connections=self.size_limit)
        else:
            chunk = next_chunk(span.start, span.stop, self.chunk_size)  # the pure, tested planner
        assert chunk is not None and chunk.stop is not None  # spans are never empty
        if chunk.stop >= span.stop:
            self.spans.popleft()
        else:
            self.spans[0] = ByteRange(chunk.stop, span.stop)
        return chunk

    def _left(self) -> int:
        """Bytes not yet read: still to plan, and what running chunks have yet to read."""
        return sum(len(r) for r in self.spans if r.stop is not None) + sum(
            s.range.stop - s.pos for s in self.order if not s.finished and s.range.stop is not None)

    def fill(self) -> None:
        """Start chunks while fewer than ``size_limit`` requests are running.

        A slot that finished reading (its bytes wait for the consumer) or is
        about to (``ending``: due within one first-byte delay) no longer counts,
        so the next request's round trip overlaps the end of the previous body.
        Slots waiting for the consumer are bounded by the read-ahead budget.
        """
        most = self.size_limit + self.max_buffer // self.chunk_size + 1
        while not self.stopping:
            known = self.size_known.is_set()
            if not known:
                # Size still unknown: the probe, and after it (cut from an open span) up to
                # ``speculate`` chunks in all, whatever the window (see wait_known).
                if self.next_index >= (self.speculate if self.probe_open else 1):
                    break
            elif len(self.order) >= most or \
                    sum(1 for s in self.order if not s.finished and not s.ending) >= self.size_limit:
                break
            rng = self.plan_next()
            if rng is None:
                break
            slot = self.add_slot(rng, len(self.order))
            if not known and slot.index > 0:
                self.speculative.append(slot)
            elif not known:
                slot.to_end = slot.to_end or self.probe_open  # the probe was cut from an open span
                self.probe = slot
        self.sync_head()
        self.stats.window_max = max(self.stats.window_max, self.size_limit)
        self.stats.connections_max = max(self.stats.connections_max, self.active)

    def add_slot(self, rng: ByteRange, position: int) -> Slot:
        assert self.start is not None
        slot = Slot(self.next_index, rng, self.delivery.wakeup())
        self.next_index += 1
        self.order.insert(position, slot)
        self.stats.traces.append(slot.trace)
        self.stats.chunks += 1
        slot.task = self.start(slot)
        return slot

    def resize(self, size: int) -> None:
        """The auto controller chose another window."""
        if size == self.size_limit:
            return
        self.size_limit = size
        if self.auto_budget:
            self.max_buffer = self._auto_budget()
            self.notify()  # readers waiting on the budget may proceed
        self.fill()

    def _auto_budget(self) -> int:
        budget = (self.size_limit - 1) * self.chunk_size
        return budget if self.readahead_cap is None else min(budget, self.readahead_cap)

    def cap_readahead(self, cap: int | None) -> None:
        """The auto read-ahead holds at most ``cap`` bytes (the controller's horizon of what the
        in-order consumer takes; None: no cap), whatever the window."""
        if not self.auto_budget or cap == self.readahead_cap:
            return
        self.readahead_cap = cap
        before, self.max_buffer = self.max_buffer, self._auto_budget()
        if self.max_buffer > before:
            self.notify()

    # -- what responses teach ---------------------------------------------------

    def learn(self, slot: Slot, body: Body) -> None:
        """Apply what a response's headers said about the object (see ``response.check_body``)."""
        if body.learned is Learned.SIZE or body.learned is Learned.SIZE_UNRANGED:
            self.learn_size(slot, body.value, ranged=body.learned is Learned.SIZE)
        elif body.learned is Learned.END:
            assert body.value is not None
            self.ends_at(slot, body.value)
        elif body.learned is Learned.TOTAL:
            assert body.value is not None
            self.total_appeared(body.value)
        if body.take_over:
            self.take_over_rest(slot)

    def learn_size(self, slot: Slot, size: int | None, ranged: bool) -> None:
        """The probe's first response arrived on a URL without ``clen``. Speculative chunks
        (``speculate``) are kept, clipped to the object, when the server honours Range and
        says the total; those wholly past the end, or all of them otherwise, are dropped unread."""
        if self.size_known.is_set():
            return
        self.size = self.stats.size = size
        start, stop = slot.range.start, slot.range.stop
        assert stop is not None  # the probe is one chunk
        speculative, self.speculative = self.speculative, []
        for s in speculative:
            assert s.range.stop is not None  # speculative chunks are bounded
            if size is not None and ranged and s.range.start < size:
                s.cut_to(min(s.range.stop, size))
            else:
                self._drop(s)
        # With an open span, spans[0] is what follows the last chunk cut from it.
        if self.probe_open and not ranged:
            self.spans.popleft()  # a server ignoring Range: the probe's response carries it all
            if size is None:
                slot.range = ByteRange(start, None)  # read to EOF
            else:
                stop = size
        elif self.probe_open and size is None:
            # No total: the rest after the probe is one open-ended request (whole_spans).
            self.spans[0] = ByteRange(stop, None)
        if size is None:
            self.whole_spans = True  # bounded spans (ranges=) stay bounded: one request each
        else:
            slot.range = ByteRange(start, max(start, min(stop, size)))
            self.whole_spans = not ranged  # a server ignoring Range: one request per span
            self.clip_spans()  # what follows the kept chunks ends at the size
        slot.trace.stop = slot.range.stop
        self.size_known.set()
        self.fill()

    def abandon_speculation(self) -> None:
        """The probe must ask again before the size is known (a retry, a refreshed URL): the
        chunks asked with it go, with their parked responses and the connections those hold
        (a pool's limit would otherwise keep the probe's retry waiting behind responses that
        wait for it), and give their ranges back to the open span they were cut from."""
        speculative, self.speculative = self.speculative, []
        self.speculate = 1
        if not speculative:
            return
        for s in speculative:
            self._drop(s)
        if self.spans and self.spans[0].stop is None:
            self.spans[0] = ByteRange(min(s.range.start for s in speculative), None)

    def _drop(self, slot: Slot) -> None:
        """A speculative chunk past the end (or not needed): its request dies with its task."""
        if slot in self.order:
            self.order.remove(slot)
        if slot.task is not None:
            slot.task.cancel()

    async def wait_known(self, slot: Slot, parked_after: float | None = None) -> float:
        """A speculative chunk's response waits, unread, for the probe's answer: only the size
        says whether its range exists (one wholly past the end is dropped, never judged, so its
        416 is no error) and whether the server honours Range (if not, the probe's response
        carries the object and this one is dropped). Returns the seconds waited here, which
        are not the server's first-byte delay.

        ``parked_after``: the first-byte delay of the response now waiting here, holding a
        connection. The probe, asked at the same time, answers about as fast; if it has not
        within twice that delay and ``GIVE_WAY``, it may be waiting for a connection that
        parked responses hold (streams sharing a per-host limit, the next hop of a redirect
        queued behind them): every early chunk gives way rather than leave the probe to its
        request timeout."""
        if slot not in self.speculative:
            return 0.0
        since = time.monotonic()
        try:
            async with asyncio.timeout(None if parked_after is None else parked_after + GIVE_WAY):
                await self.size_known.wait()
        except TimeoutError:
            # The answer can come in the very loop pass the deadline fires: this chunk is then
            # kept (or dropped) already, and giving way now would leave its range unfetched.
            if slot in self.speculative:
                self.abandon_speculation()  # this chunk goes too: its task is cancelled
                raise asyncio.CancelledError from None
        if slot in self.speculative:  # the probe ended without an answer: the stream fails with its error
            raise Terminal(StreamError("the first request failed before the size was known"))
        return time.monotonic() - since

    def ends_at(self, slot: Slot, at: int) -> None:
        """The server said the object (of unknown total) ends at byte ``at``: this slot
        ends there, and nothing past it is planned. Later chunks with no answer yet are
        dropped (their requests die with them); one that already read a byte past ``at``, or
        holds a 206 saying such bytes exist, means the server contradicts itself: success
        would deliver a gap as the whole object."""
        later = [s for s in self.order if s is not slot and s.range.start >= at]
        live = {id(s.trace) for s in self.order}
        if any(s.pos > s.range.start or (s.attempt is not None and s.attempt.resp is not None)
               for s in later) or any(
                id(t) not in live and t.start >= at and t.first_read is not None for t in self.stats.traces):
            raise ObjectChangedError(f"the server says the object ends at byte {at}, after sending "
                                     "bytes past it: refusing to mix versions")
        if self.size is not None and at != self.size:
            raise ObjectChangedError(f"the server says the object ends at byte {at}, after saying it has "
                                     f"{self.size} bytes: refusing to mix versions", total=self.size)
        self.end = at if self.end is None else min(self.end, at)
        for s in later:
            self.order.remove(s)
            if s.task is not None:
                s.task.cancel()
        slot.cut_to(max(slot.range.start, at))
        self.spans = deque(r for r in self.spans if r.start < at)

    def total_appeared(self, total: int) -> None:
        """A response of an object of unknown total carried one: from now on the size is known
        (and checked against every response); chunks reaching past it end there. Bytes
        already read past it (by any chunk, delivered ones too) say it is another version, as
        does a total past the byte the server already said does not exist (``ends_at``): the
        object would be reported whole with its last bytes missing. A total below that byte
        agrees with it (a 416 only says the object is no longer)."""
        if self.end is not None and total > self.end:
            raise ObjectChangedError(f"the server says the object has {total} bytes, after saying it ends "
                                     f"at byte {self.end}: refusing to mix versions", total=total)
        live = {id(s.trace) for s in self.order}
        reached = max([s.pos for s in self.order if s.pos > s.range.start] + [
            t.start + 1 if t.stop is None else t.stop
            for t in self.stats.traces if id(t) not in live and t.first_read is not None], default=0)
        if reached > total:
            raise ObjectChangedError(f"the server says the object has {total} bytes, after sending "
                                     f"bytes up to {reached}: refusing to mix versions", total=total)
        self.size = self.stats.size = total
        self.clip_spans()
        for s in self.order:
            if s.range.stop is None or s.range.stop > total:
                s.cut_to(max(s.range.start, total))

    def take_over_rest(self, slot: Slot) -> None:
        """A 200 answered a ranged request: this response carries the rest of the object, so
        read on from it instead of downloading the object again for every chunk. Later chunks
        that have not produced a byte are dropped and their ranges join this one, as does the
        span still to plan right after them; later spans get one request each."""
        self.whole_spans = True
        if slot not in self.order or slot.range.stop is None:
            return
        stop: int | None = slot.range.stop
        for s in self.order[self.order.index(slot) + 1:]:
            if s.range.start != stop or s.pos != s.range.start or s.finished:
                break
            self.order.remove(s)
            if s.task is not None:
                s.task.cancel()  # its request (a 200 of the whole object too) dies with it
            stop = s.range.stop
            if stop is None:
                break
        else:
            if self.spans and self.spans[0].start == stop:
                stop = self.spans.popleft().stop
        slot.cut_to(stop)

    async def wait_size(self) -> None:
        await self.size_known.wait()  # set by learn_size, or when the probe ends without learning it
        if self.size is None and self.order and self.order[0].error is not None:
            err = self.order[0].error
            err.offset = 0
            raise err

    # -- the head, the budget, the consumer ---------------------------------------

    def use(self, delivery: InOrder | Unordered) -> None:
        """Deliver another way from now on (before the first byte is delivered)."""
        self.delivery = delivery
        for slot in self.order:
            slot.wakeup = delivery.wakeup()
        self.sync_head()

    def sync_head(self) -> None:
        """The head is the chunk the consumer waits on (see ``delivery``). Only the head's
        failures are charged, and a prefetch becoming the head gets the prefetch timeout."""
        if self.stopping:
            return
        head = self.delivery.head(self.order)
        if head is not self.head:
            self.head = head
            if head is not None:
                if head.trace.prefetched:
                    self.stats.prefetch_hits += 1
                head.became_head(self.prefetch_timeout)
            self.notify()  # prefetches waiting to become the head

    def is_head(self, slot: Slot) -> bool:
        return slot is self.head

    async def wait_head(self, slot: Slot) -> None:
        while slot is not self.head:
            await self.progress.wait()

    def may_read(self, slot: Slot) -> bool:
        return self.delivery.may_read(self, slot)

    def notify(self) -> None:
        self.progress.set()
        self.progress = asyncio.Event()

    async def wait_may_read(self, slot: Slot) -> None:
        self.gate_waiters += 1
        slot.gated_since = since = time.monotonic()
        try:
            while not self.delivery.may_read(self, slot):
                await self.progress.wait()
        finally:
            self.gate_waiters -= 1
            slot.gated_since = None
            slot.gated += time.monotonic() - since

    def take(self, slot: Slot) -> bytes:
        """The consumer takes the slot's oldest piece."""
        piece = slot.pieces.popleft()
        n = len(piece)
        slot.buffered -= n
        slot.out += n
        self.buffered -= n
        self.delivered += n
        self.stats.bytes += n
        if self.gate_waiters:
            self.notify()
        return piece

    def fail(self, slot: Slot) -> None:
        """Raise the slot's error to the consumer, saying how far delivery got."""
        err = slot.error
        assert err is not None
        err.offset = self.delivered  # unordered: bytes delivered, wherever they were
        err.size = self.size
        raise err

    def retire(self, slot: Slot) -> None:
        """A slot fully delivered: drop it, let the next chunk into the window."""
        if slot not in self.order:
            return  # dropped while the consumer held it (take_over_rest): nothing to deliver
        if slot.error is None and slot.range.stop is not None and slot.out < slot.range.stop:
            # A chunk that ended with neither its bytes nor an error is a bug: fail, never skip.
            slot.error = StreamError(f"internal error: chunk {slot.index} ended at byte {slot.out} "
                                     f"of {slot.range.stop} without an error", attempts=slot.trace.requests)
            self.fail(slot)
        self.order.remove(slot)
        self.fill()  # also moves the head on
        self.notify()

    def cancel_all(self) -> None:
        self.stopping = True  # nothing new may start: no split, no refill
        for slot in self.order:
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()

    def clear(self) -> None:
        """After every task ended: drop what the consumer did not take."""
        for slot in self.order:
            slot.pieces.clear()
        self.order.clear()
        self.buffered = 0
