"""The engine: an object fetched as a window of Range requests, delivered in order.

Shape (structured concurrency, cf. trio/anyio):

* A :class:`Stream` owns an ``asyncio.TaskGroup``. Each chunk in the window is
  one task (``_run_chunk``) that requests its range, retries it, and pushes the
  body into the chunk's :class:`_Slot`.
* The consumer (``async for``) drains slots strictly in order. When it finishes
  the head slot, the next chunk enters the window.
* Leaving the ``async with`` (or breaking out of ``async for``, or a
  cancellation) cancels every chunk task and awaits them: their ``finally``
  blocks close the connections. No other path needs to remember to clean up.

Memory: a chunk that is not the head may read its body only while the bytes
buffered by the whole stream are under ``max_buffer``; the head may always
keep up to ``_HEAD_QUEUE`` bytes queued for the consumer. With
``max_buffer=0`` (the default for ``window <= 2``) a prefetched chunk gets its
response headers early but reads its body only once it is the head: the
seed's sliding-window prefetch.

Retries: a failure counts against a chunk's ``Retry.attempts`` only when the
chunk is the head (in order: the first of the window; ``unordered()``: the
lowest chunk still fetching). A request that began as a prefetch and failed
before delivering a byte as the head, or whose response was parked unread, or
that is still waiting for headers ``Timeouts.prefetch`` seconds after becoming
the head, is re-issued free of charge. A ``Retry-After`` holds every later
attempt of its chunk.

Every byte exactly once, or a clear error: a response shorter than asked is
followed by a request from the byte reached; with an unknown total only the
server's word (416 at that byte, an empty answer, a total) ends the object; a
different total is :class:`ObjectChangedError`; a 200 to a ranged request is
read on for the rest of the object instead of once per chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from ..errors import (
    HTTPStatusError,
    InvalidURLError,
    ObjectChangedError,
    RangestreamError,
    RetriesExhaustedError,
    StreamError,
    TransientError,
    URLExpiredError,
)
from ..plan import (
    DEFAULT_CHUNK_SIZE,
    AutoWindow,
    ByteRange,
    next_chunk,
    parse_content_range,
    size_from_url,
    url_param,
    with_query_param,
)
from ..redact import redact_url
from ..retry import Retry, Timeouts
from ..transports import Response, Transport

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger("rangestream")

RefreshHook = Callable[[str], Awaitable[str]]

# Bytes the head chunk may queue ahead of a slow consumer, whatever max_buffer says.
_HEAD_QUEUE = 2 << 20


@dataclass
class ChunkTrace:
    """When things happened to one chunk (``time.monotonic()`` seconds)."""

    index: int
    start: int
    stop: int | None
    requested: float | None = None  # first request sent
    headers: float | None = None  # headers of the response that delivered bytes
    first_read: float | None = None  # first body byte read by the engine
    done: float | None = None
    requests: int = 0
    retries: int = 0
    prefetched: bool = False  # its response arrived before it became the head


@dataclass
class Stats:
    size: int | None = None
    bytes: int = 0  # delivered to the consumer
    requests: int = 0
    retries: int = 0  # failed attempts followed by another, counted or not
    refreshes: int = 0
    prefetch_hits: int = 0
    prefetch_misses: int = 0
    chunks: int = 0
    splits: int = 0  # remainders moved to another connection (tail or straggler)
    reissues: int = 0  # stalled attempts abandoned while other connections flowed
    connection_bytes: dict[str, int] = field(default_factory=dict)  # body bytes per TCP connection
    buffered_peak: int = 0  # most body bytes held for the consumer at once
    window_max: int = 0  # largest window the stream ran with (auto: what the controller chose)
    connections_max: int = 0  # most requests in flight at once (window + early next requests + splits)
    # Requests in flight and (seconds since start, MB/s over the last tick, window), sampled
    # every controller tick. A stream may run for hours (the service's do): when the series
    # hold more than ``series_cap`` points, every other one is dropped and sampling halves,
    # so they stay bounded and still span the whole life, evenly spaced.
    window_samples: list[int] = field(default_factory=list)
    timeline: list[tuple[float, float, int]] = field(default_factory=list)
    series_cap: int = 256
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    traces: list[ChunkTrace] = field(default_factory=list)
    _ticks: int = 0
    _active_sum: int = 0  # window_mean counts every tick, not only the points kept
    _stride: int = 1  # ticks per kept point

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def window_mean(self) -> float:
        return self._active_sum / self._ticks if self._ticks else 0.0

    def sample(self, t: float, rate_mb: float, window: int, active: int) -> None:
        """One controller tick: requests in flight, the aggregate rate, the window."""
        self._ticks += 1
        self._active_sum += active
        if self._ticks % self._stride:
            return
        self.window_samples.append(active)
        self.timeline.append((t, rate_mb, window))
        while len(self.timeline) > max(self.series_cap, 2):
            # Kept points sit at multiples of the stride: keep the even multiples, double it.
            del self.timeline[::2]
            del self.window_samples[::2]
            self._stride *= 2

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items()
             if k not in ("traces", "window_samples", "timeline", "started", "finished", "series_cap")
             and not k.startswith("_")}
        d["seconds"] = round(self.seconds, 3)
        d["window_mean"] = round(self.window_mean, 2)
        d["connections"] = len(self.connection_bytes)
        del d["connection_bytes"]
        return d


class _Slot:
    """One chunk of the window: its range, its buffered body, its outcome."""

    __slots__ = (
        "began_prefetch",
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
        "parked",
        "pieces",
        "pos",
        "range",
        "read_from",
        "reading_since",
        "reissue",
        "reissued_at",
        "request_timeout",
        "resp",
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
        self.request_timeout: asyncio.Timeout | None = None
        self.trace = ChunkTrace(index, rng.start, rng.stop)
        self.reading_since: float | None = None  # body phase of the current attempt began
        self.read_from = rng.start  # ...at this byte
        self.last_rate: float | None = None  # of the previous attempt's body
        self.urgent = False  # split off the head: reads past the budget (it is at most half a chunk)
        self.ending = False  # its body is due within about one first-byte delay
        self.resp: Response | None = None  # the current attempt's response, once it has headers
        self.waiting_since: float | None = None  # awaiting the socket since (None: not reading)
        self.reissue = False  # the controller abandoned a stalled attempt: retry at once, free
        self.reissued_at = -1  # slot.pos at the last re-issue: re-issue again only after progress
        self.gated = 0.0  # seconds this attempt spent held back by the memory budget
        self.gated_since: float | None = None  # held back right now, since
        self.to_end = rng.stop is None  # may reach the end of an object of unknown size
        self.began_prefetch = False  # the current attempt was sent before this chunk was the head
        self.parked = False  # ...and its headers came before that too (a response held unread)
        self.head_from = rng.start  # slot.pos when it became the head
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


class _Terminal(Exception):
    """A chunk's final failure, carried to the consumer as ``error``."""

    def __init__(self, error: StreamError, cause: BaseException | None = None) -> None:
        self.error = error
        if cause is not None:
            error.__cause__ = cause  # the public error, not this wrapper, carries the cause


# The controller's sampling period: short, so the window finds the link within
# about half a second (measured-facts.md: reconsidering per chunk is too slow).
_TICK = 0.05
# Never split a remainder into pieces smaller than this: a new request costs a round trip.
_MIN_SPLIT = 256 << 10
# A read is stalled once silent for this many times the longest gap its connection has shown...
_GAPS = 4
# ...and, with no other connection flowing to compare with, for at least this many seconds.
_LONE_STALL = 2.0


class Stream:
    """An object being fetched. Use as ``async with client.open_stream(url) as s: async for b in s``.

    ``window``: requests in flight (an int, or ``"auto"`` to adapt up to ``ceiling``).
    ``max_buffer``: bytes that chunks other than the current one may read ahead;
    default 0 for ``window <= 2`` (the seed's headers-only prefetch), else
    ``(window - 1) * chunk_size`` (for ``"auto"`` it follows the current window:
    in-order delivery from K connections that share a link needs about K - 1
    chunks of slack, or the head blocks the rest).
    ``ranges``: fetch only these ``(start, stop)`` spans, in order (resuming a file).
    ``expect_validators``: ``{"etag": ..., "last_modified": ...}`` the object must
    still have (a resume); otherwise :class:`ObjectChangedError`.
    ``range_mode``: ``"header"`` (a ``Range`` header) or ``"query"``: googlevideo's
    web-player form, a POST with ``range=a-b`` in the URL answered by a 200 holding
    exactly those bytes (needs the size in the URL, ``clen``).
    """

    def __init__(self, client: Client, url: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 window: int | str = 2, ceiling: int = 8, max_buffer: int | None = None,
                 retry: Retry | None = None, timeouts: Timeouts | None = None,
                 refresh: RefreshHook | None = None, headers: dict[str, str] | None = None,
                 ranges: list[tuple[int, int]] | None = None,
                 expect_validators: dict[str, str | None] | None = None,
                 range_mode: str = "header", transport: Transport | None = None,
                 owns_client: bool = False) -> None:
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise InvalidURLError(f"not an http(s) URL: {redact_url(str(url))}")
        if not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ValueError("chunk_size must be a positive integer")
        self._auto: AutoWindow | None = None
        if window == "auto":
            self._auto = AutoWindow(start=min(2, ceiling), ceiling=ceiling)
            window = self._auto.size
            default_buffer = (window - 1) * chunk_size
        elif isinstance(window, int) and not isinstance(window, bool) and window >= 1:
            default_buffer = 0 if window <= 2 else (window - 1) * chunk_size
        else:
            raise ValueError(f"window must be an integer >= 1 or 'auto', not {window!r}")
        self._client = client
        self._transport = transport or client._transport
        self._owns_client = owns_client
        self._url = url
        self._url_gen = 0
        self._chunk_size = chunk_size
        self._window = window
        self._max_buffer = default_buffer if max_buffer is None else max_buffer
        self._auto_budget = self._auto is not None and max_buffer is None
        self._retry = retry or Retry()
        self._timeouts = timeouts or Timeouts()
        self._refresh_hook = refresh
        self._refresh_lock = asyncio.Lock()
        self._headers = {**client.headers, **(headers or {})}
        self._lmt = url_param(url, "lmt")
        if range_mode not in ("header", "query"):
            raise ValueError(f"range_mode must be 'header' or 'query', not {range_mode!r}")
        self._range_mode = range_mode

        self.size: int | None = size_from_url(url)
        if range_mode == "query" and self.size is None:
            raise InvalidURLError("range mode 'query' needs a URL that carries the object's size (clen): "
                                  f"{redact_url(url)}")
        self.stats = Stats(size=self.size)
        self._size_known = asyncio.Event()
        if self.size is not None:
            self._size_known.set()
        self._etag: str | None = None
        self._last_modified: str | None = None
        self._validated = False
        if expect_validators and any(expect_validators.values()):
            self._etag = expect_validators.get("etag")
            self._last_modified = expect_validators.get("last_modified")
            self._validated = True

        # What is left to plan, in object order; chunks are cut from its front.
        spans = [ByteRange(a, b) for a, b in ranges] if ranges is not None else [ByteRange(0, self.size)]
        if any(x.stop is None or x.stop > y.start for x, y in zip(spans, spans[1:])):
            raise ValueError("ranges must be sorted and must not overlap (each byte is delivered once)")
        self._spans: deque[ByteRange] = deque(r for r in spans if r.stop is None or len(r) > 0)
        if self.size is not None:
            self._clip_spans()
        self._whole_spans = False  # the server ignores Range: one request per span
        self._probe_open = False
        self._order: list[_Slot] = []  # the window, in object order
        self._head: _Slot | None = None  # the chunk the consumer waits on (see _sync_head)
        self._next_index = 0
        self._buffered = 0
        self._read_total = 0
        self._delivered = 0
        self._progress = asyncio.Event()
        self._gate_waiters = 0
        self._unordered = False
        self._any_piece = asyncio.Event()  # unordered mode: every slot wakes the consumer
        self._tg: asyncio.TaskGroup | None = None
        self._t0 = 0.0  # when the controller started (timeline origin)
        self._controller: asyncio.Task[None] | None = None
        self._ttfb: float | None = None  # smoothed request -> headers delay
        self._stopping = False
        self._entered = False
        self._iterated = False
        self._closed = False

    # -- public surface ---------------------------------------------------

    @property
    def url(self) -> str:
        """The current URL with secrets masked (it changes after a refresh)."""
        return redact_url(self._url)

    @property
    def delivered(self) -> int:
        """Bytes handed to the consumer so far."""
        return self._delivered

    @property
    def active(self) -> int:
        """Chunk requests in flight (or backing off) right now."""
        return sum(1 for s in self._order if not s.finished)

    @property
    def window(self) -> int:
        return self._window

    @property
    def validators(self) -> dict[str, str | None]:
        return {"etag": self._etag, "last_modified": self._last_modified}

    async def __aenter__(self) -> Stream:
        if self._entered:
            raise RuntimeError("a Stream can be entered once")
        self._entered = True
        if self._owns_client:
            await self._client.__aenter__()
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        try:
            self._fill_window()
            if not self._order:
                self._size_known.set()  # nothing to fetch (e.g. ranges=[]): nothing to learn
            if not self._size_known.is_set():
                # No clen: chunk 0's first response tells the size (or that the
                # server ignores Range); nothing else is planned before that.
                await self._wait_size()
            self._controller = self._tg.create_task(self._control())
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._shutdown()

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._start_iteration()
        return self._iterate()

    def unordered(self) -> AsyncIterator[tuple[int, bytes]]:
        """``(offset, data)`` pieces as soon as any chunk of the window has them.

        For writers that can seek (a file written with ``os.pwrite``): every byte
        still arrives exactly once, memory stays bounded, and a resume knows
        exactly which spans are complete.
        """
        self._start_iteration()
        self._unordered = True
        for slot in self._order:
            slot.wakeup = self._any_piece
        self._sync_head()
        return self._iterate_unordered()

    def _start_iteration(self) -> None:
        if not self._entered or self._closed:
            raise RuntimeError("iterate a Stream inside its 'async with' block")
        if self._iterated:
            raise RuntimeError("a Stream can be iterated once")
        self._iterated = True

    # -- consumer side ----------------------------------------------------

    def _take(self, slot: _Slot) -> bytes:
        piece = slot.pieces.popleft()
        n = len(piece)
        slot.buffered -= n
        slot.out += n
        self._buffered -= n
        self._delivered += n
        self.stats.bytes += n
        if self._gate_waiters:
            self._notify()
        return piece

    def _raise_for(self, slot: _Slot) -> None:
        err = slot.error
        assert err is not None
        err.offset = self._delivered  # unordered: bytes delivered, wherever they were
        err.size = self.size
        raise err

    async def _iterate(self) -> AsyncIterator[bytes]:
        complete = False
        try:
            while self._order:
                slot = self._order[0]
                pieces = slot.pieces
                while True:
                    if pieces:
                        yield self._take(slot)
                    elif slot.finished:
                        break
                    else:
                        slot.wakeup.clear()
                        await slot.wakeup.wait()
                if slot.error is not None:
                    self._raise_for(slot)
                self._retire(slot)
            complete = True
            self.stats.finished = time.monotonic()
        finally:
            if not complete:
                # Breaking out of ``async for`` lands here (via the generator's
                # aclose): stop the network at once; __aexit__ awaits the tasks.
                self._cancel_all()

    async def _iterate_unordered(self) -> AsyncIterator[tuple[int, bytes]]:
        complete = False
        try:
            while self._order:
                self._any_piece.clear()
                for slot in list(self._order):
                    while slot.pieces:
                        offset = slot.out
                        yield offset, self._take(slot)
                    if slot.finished and not slot.pieces:
                        if slot.error is not None:
                            self._raise_for(slot)
                        self._retire(slot)
                if self._order and not any(s.pieces or s.finished for s in self._order):
                    await self._any_piece.wait()
            complete = True
            self.stats.finished = time.monotonic()
        finally:
            if not complete:
                self._cancel_all()

    def _retire(self, slot: _Slot) -> None:
        """A slot fully delivered: drop it, let the next chunk into the window."""
        if slot not in self._order:
            return  # dropped while the consumer held it (_take_over_rest): nothing to deliver
        self._order.remove(slot)
        self._fill_window()  # also moves the head on
        self._notify()

    def _sync_head(self) -> None:
        """The head is the chunk the consumer waits on: in order, the first of the window;
        unordered, the lowest chunk still fetching. Only the head's failures are charged,
        and a prefetch becoming the head gets the prefetch timeout, in both modes."""
        if self._stopping:
            return
        if self._unordered:
            head = next((s for s in self._order if not s.finished), None)
        else:
            head = self._order[0] if self._order else None
        if head is not self._head:
            self._head = head
            if head is not None:
                self._on_new_head(head)
            self._notify()  # prefetches waiting to become the head

    def _on_new_head(self, head: _Slot) -> None:
        head.head_from = head.pos
        if head.trace.prefetched:
            self.stats.prefetch_hits += 1
        if head.request_timeout is not None:
            # The seed's prefetch timeout: a prefetch still waiting for headers
            # gets only `prefetch` more seconds now that the consumer waits on it.
            deadline = asyncio.get_running_loop().time() + self._timeouts.prefetch
            when = head.request_timeout.when()
            if when is None or deadline < when:
                with contextlib.suppress(RuntimeError):  # it expired this very moment
                    head.request_timeout.reschedule(deadline)

    # -- window -------------------------------------------------------------

    def _clip_spans(self) -> None:
        size = self.size
        assert size is not None
        clipped: deque[ByteRange] = deque()
        for r in self._spans:
            stop = size if r.stop is None else min(r.stop, size)
            if r.start < stop:
                clipped.append(ByteRange(r.start, stop))
        self._spans = clipped

    def _plan_next(self) -> ByteRange | None:
        if not self._spans:
            return None
        span = self._spans[0]
        if span.stop is None or self._whole_spans:
            self._spans.popleft()
            if span.stop is None and not self._size_known.is_set():
                # Unknown size: probe with one chunk; _learn_size re-plans the rest.
                self._probe_open = True
                return ByteRange(span.start, span.start + self._chunk_size)
            return span
        chunk = next_chunk(span.start, span.stop, self._chunk_size)  # the pure, tested planner
        assert chunk is not None and chunk.stop is not None  # spans are never empty
        if chunk.stop >= span.stop:
            self._spans.popleft()
        else:
            self._spans[0] = ByteRange(chunk.stop, span.stop)
        return chunk

    def _fill_window(self) -> None:
        """Start chunks while fewer than ``window`` requests are running.

        A slot that finished reading (its bytes wait for the consumer) or is
        about to (``ending``: due within one first-byte delay) no longer counts,
        so the next request's round trip overlaps the end of the previous body.
        Slots waiting for the consumer are bounded by the read-ahead budget.
        """
        assert self._tg is not None
        most = self._window + self._max_buffer // self._chunk_size + 1
        while not self._stopping and len(self._order) < most:
            if sum(1 for s in self._order if not s.finished and not s.ending) >= self._window:
                break
            if not self._size_known.is_set() and self._next_index > 0:
                break  # size still unknown: only the probe may run
            probe = not self._size_known.is_set()
            rng = self._plan_next()
            if rng is None:
                break
            slot = self._add_slot(rng, len(self._order))
            slot.to_end = slot.to_end or (probe and self._probe_open)  # the probe was cut from an open span
        self._sync_head()
        self.stats.window_max = max(self.stats.window_max, self._window)
        self.stats.connections_max = max(self.stats.connections_max, self.active)

    def _add_slot(self, rng: ByteRange, position: int) -> _Slot:
        assert self._tg is not None
        slot = _Slot(self._next_index, rng, self._any_piece if self._unordered else asyncio.Event())
        self._next_index += 1
        self._order.insert(position, slot)
        self.stats.traces.append(slot.trace)
        self.stats.chunks += 1
        slot.task = self._tg.create_task(self._run_chunk(slot))
        return slot

    def _learn_size(self, slot: _Slot, size: int | None, ranged: bool) -> None:
        """The probe's first response arrived on a URL without ``clen``."""
        if self._size_known.is_set():
            return
        self.size = self.stats.size = size
        start, stop = slot.range.start, slot.range.stop
        if size is None:
            # No total: a server honouring Range gets the rest as one open-ended request;
            # one ignoring it sends everything in this response. Bounded spans (ranges=)
            # stay bounded: one request each.
            if self._probe_open and ranged:
                self._spans.appendleft(ByteRange(stop, None))  # type: ignore[arg-type]
            elif self._probe_open:
                slot.range = ByteRange(start, None)  # read to EOF
                self._spans.clear()
            self._whole_spans = True
        else:
            if self._probe_open:
                # The probe was cut from an open-ended span: give back what follows it.
                stop = size if not ranged else min(stop, size)  # type: ignore[type-var]
                if stop < size:
                    self._spans.appendleft(ByteRange(stop, size))
            slot.range = ByteRange(start, max(start, min(stop, size)))  # type: ignore[type-var]
            self._whole_spans = not ranged  # a server ignoring Range: one request per span
            self._clip_spans()
        slot.trace.stop = slot.range.stop
        self._size_known.set()
        self._fill_window()

    def _ends_at(self, slot: _Slot, at: int) -> None:
        """The server said the object (of unknown total) ends at byte ``at``: this slot
        ends there, and nothing past it is planned."""
        slot.range = ByteRange(slot.range.start, max(slot.range.start, at))
        slot.trace.stop = slot.range.stop
        self._spans = deque(r for r in self._spans if r.start < at)

    def _total_appeared(self, total: int) -> None:
        """A response of an object of unknown total carried one: from now on the size is known
        (and checked against every response); chunks reaching past it end there."""
        self.size = self.stats.size = total
        self._clip_spans()
        for s in self._order:
            if s.range.stop is None or s.range.stop > total:
                s.range = ByteRange(s.range.start, max(s.range.start, total))
                s.trace.stop = s.range.stop

    def _take_over_rest(self, slot: _Slot) -> None:
        """A 200 answered a ranged request: this response carries the rest of the object, so
        read on from it instead of downloading the object again for every chunk. Later chunks
        that have not produced a byte are dropped and their ranges join this one, as does the
        span still to plan right after them; later spans get one request each."""
        self._whole_spans = True
        if slot not in self._order or slot.range.stop is None:
            return
        stop: int | None = slot.range.stop
        for s in self._order[self._order.index(slot) + 1:]:
            if s.range.start != stop or s.pos != s.range.start or s.finished:
                break
            self._order.remove(s)
            if s.task is not None:
                s.task.cancel()  # its request (a 200 of the whole object too) dies with it
            stop = s.range.stop
            if stop is None:
                break
        else:
            if self._spans and self._spans[0].start == stop:
                stop = self._spans.popleft().stop
        slot.range = ByteRange(slot.range.start, stop)
        slot.trace.stop = stop

    async def _wait_size(self) -> None:
        await self._size_known.wait()  # set by _learn_size, or when the probe ends without learning it
        if self.size is None and self._order and self._order[0].error is not None:
            err = self._order[0].error
            err.offset = 0
            raise err

    def _is_head(self, slot: _Slot) -> bool:
        return slot is self._head

    def _may_read(self, slot: _Slot) -> bool:
        if self._unordered:
            return self._buffered < max(self._max_buffer, _HEAD_QUEUE)
        if self._order and self._order[0] is slot:
            return slot.buffered < _HEAD_QUEUE
        # A split-off of the head may run past the budget, by at most its own head queue.
        return self._buffered < self._max_buffer or (slot.urgent and slot.buffered < _HEAD_QUEUE)

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def _wait_may_read(self, slot: _Slot) -> None:
        self._gate_waiters += 1
        slot.gated_since = since = time.monotonic()
        try:
            while not self._may_read(slot):
                await self._progress.wait()
        finally:
            self._gate_waiters -= 1
            slot.gated_since = None
            slot.gated += time.monotonic() - since

    # -- adapting the window ----------------------------------------------------

    async def _control(self) -> None:
        try:
            await self._control_loop()
        except Exception:  # a controller bug must not take the download down with it
            log.exception("window controller stopped; the stream continues with a fixed window")

    async def _control_loop(self) -> None:
        """Every tick: abandon stalled reads; with a parallel window (>= 3 or auto) also
        start next requests early, feed the auto window and split slow remainders.
        Windows 1 and 2 keep the seed's shapes: sequential, and one prefetch."""
        loop = asyncio.get_running_loop()
        last_t, last_bytes = loop.time(), self._read_total
        self._t0 = last_t
        parallel = self._auto is not None or self._window > 2
        while (self._order or self._spans) and not self._stopping:
            await asyncio.sleep(_TICK)
            now = loop.time()
            rate = (self._read_total - last_bytes) / max(now - last_t, 1e-6)
            last_t, last_bytes = now, self._read_total
            self.stats.sample(round(now - self._t0, 2), round(rate / 1e6, 1), self._window, self.active)
            self._abandon_stalls(now, flowing=rate > 0)
            if not parallel:
                continue
            ttfb = self._ttfb or 0.0
            for s in self._order:
                r = s.rate(now)
                if r and s.reading_since is not None and s.range.stop is not None and not s.ending:
                    s.ending = (s.range.stop - s.pos) / r < ttfb + _TICK
            self._fill_window()
            if self._auto is not None:
                reading = sum(1 for s in self._order if s.reading_since is not None and not s.finished)
                self._set_window(self._auto.observe(now, rate, reading))
            self._maybe_split(now)

    def push_back(self) -> None:
        if self._auto is not None:
            self._set_window(self._auto.push_back(asyncio.get_running_loop().time()))

    def _set_window(self, size: int) -> None:
        if size == self._window:
            return
        self._window = size
        if self._auto_budget:
            self._max_buffer = (size - 1) * self._chunk_size
            self._notify()  # readers waiting on the budget may proceed
        self._fill_window()

    def _abandon_stalls(self, now: float, flowing: bool) -> None:
        """A connection silent for much longer than a round trip and than its own pacing
        (the longest gap it has shown between pieces) while others flow is stalled, not
        slow: re-issue its remaining range instead of waiting out the idle timeout (20 s by
        default). The head qualifies even alone (everything behind it waits on it), but with
        no peer to compare with, silence must also outlast ``_LONE_STALL``: a healthy server
        sending in bursts is read on one connection. A slot is re-issued again only after it
        made progress, so a server that always stalls at one byte still ends in the
        (counted) idle timeout."""
        stall_after = max(0.5, 3 * (self._ttfb or 0.0))
        for s in self._order:
            if s.waiting_since is None or s.resp is None or s.reissue:
                continue
            limit = max(stall_after, _GAPS * s.gap)
            if not flowing:
                if s is not self._head:
                    continue
                limit = max(limit, _LONE_STALL)
            if now - s.waiting_since > limit and s.pos != s.reissued_at:
                s.reissued_at = s.pos  # no progress since the last re-issue: leave it to the idle timeout
                log.info("chunk %d silent for %.1fs at byte %d (longest gap so far %.2fs): re-issuing",
                         s.index, now - s.waiting_since, s.pos, s.gap)
                s.reissue = True
                s.resp.close()  # the pending read fails; _fetch_chunk retries from s.pos

    def _maybe_split(self, now: float) -> None:
        """Move the back half of a slow remainder onto a new connection.

        Two cases pay: the tail (nothing left to plan, a connection of the
        window idle) and a straggler (the head far slower than its peers while
        the chunks behind it wait on the buffer). The slot keeps the front
        half; its request is simply read no further than the new stop.
        """
        if self._stopping or self._whole_spans:
            return  # a server ignoring Range would send the whole object again for each split
        running = [s for s in self._order if not s.finished]
        if any(s.gated_since is not None for s in running) and not self._straggler(now):
            return  # the consumer is the bottleneck: another connection cannot help
        if self._spans or len(running) >= self._window:
            straggler = self._straggler(now)
            if straggler is None:
                return
            victim = straggler
        else:
            best = None
            for s in running:
                rate = s.rate(now)
                if rate is None or s.range.stop is None or s.reading_since is None:
                    continue
                eta = (s.range.stop - s.pos) / max(rate, 1.0)
                if best is None or eta > best[0]:
                    best = (eta, s)
            if best is None or best[0] < max(2 * _TICK, 2 * (self._ttfb or 0.0)):
                return
            victim = best[1]
        stop = victim.range.stop
        if stop is None or stop - victim.pos < 2 * _MIN_SPLIT:
            return
        mid = victim.pos + (stop - victim.pos) // 2
        victim.range = ByteRange(victim.range.start, mid)
        victim.trace.stop = mid
        new = self._add_slot(ByteRange(mid, stop), self._order.index(victim) + 1)
        # The consumer needs these bytes right after the victim's: waiting on a
        # budget full of later chunks would undo the split.
        new.urgent = victim is self._order[0] or victim.urgent
        self.stats.splits += 1

    def _straggler(self, now: float) -> _Slot | None:
        if self._unordered or len(self._order) < 3 or not self._gate_waiters:
            return None
        head = self._order[0]
        if head.finished or head.reading_since is None or head.gated_since is not None:
            return None
        head_rate = head.rate(now)
        peers = [r for s in self._order[1:] if (r := s.rate(now)) is not None]
        if head_rate is None or len(peers) < 2:
            return None
        peers.sort()
        return head if head_rate * 4 < peers[len(peers) // 2] else None

    def _cancel_all(self) -> None:
        self._stopping = True  # nothing new may start: no split, no refill
        for slot in self._order:
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()

    async def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_all()
        try:
            if self._tg is not None:
                if self._controller is not None:
                    self._controller.cancel()
                await self._tg.__aexit__(None, None, None)
        finally:
            for slot in self._order:
                slot.pieces.clear()
            self._order.clear()
            self._buffered = 0
            if self.stats.finished is None:
                self.stats.finished = time.monotonic()
            if self._owns_client:
                await self._client.aclose()

    # -- one chunk ----------------------------------------------------------

    async def _run_chunk(self, slot: _Slot) -> None:
        try:
            await self._fetch_chunk(slot)
        except _Terminal as t:
            slot.error = t.error
        except StreamError as e:  # terminal by nature (TLSError, ProxyError, TooManyRedirectsError...)
            e.url = e.url or redact_url(self._url)
            e.attempts = e.attempts or slot.trace.requests
            slot.error = e
        except RangestreamError as e:  # e.g. InvalidURLError from the transport
            slot.error = StreamError(str(e), url=self._url, attempts=slot.trace.requests)
            slot.error.__cause__ = e
        except Exception as e:  # a bug must reach the consumer, not vanish in a task
            slot.error = StreamError(f"internal error: {type(e).__name__}: {e}", url=self._url,
                                     attempts=slot.trace.requests)
            slot.error.__cause__ = e
        finally:
            slot.finished = True
            slot.trace.done = time.monotonic()
            slot.wakeup.set()
            self._size_known.set()
            if not self._stopping and slot.error is None:
                self._fill_window()  # a request slot is free: do not wait for the consumer
            self._sync_head()  # unordered: the next chunk may be the lowest unfinished now

    async def _fetch_chunk(self, slot: _Slot) -> None:
        counted = 0  # failures charged to this chunk (only while it is the head)
        uncounted = 0  # prefetch failures: retried, never charged
        while True:
            url, gen = self._url, self._url_gen
            wait = slot.not_before - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # a Retry-After holds for every attempt, prefetch or not
            slot.began_prefetch, slot.parked = not self._is_head(slot), False
            before = slot.pos
            try:
                await self._attempt(slot, url)
                if slot.range.stop is not None and slot.pos >= slot.range.stop:
                    return
                if slot.pos == before:
                    raise TransientError(f"no byte and no end of the object at byte {slot.pos}")
                # The server sent less than asked (CDNs and proxies cap responses): ask for the
                # rest. With an unknown total only the server's word ends it (see _ends_at).
                continue
            except TransientError as e:
                if slot.pos - before >= self._chunk_size:
                    # "Attempts per chunk": an attempt that delivered a chunk's worth before
                    # failing (one long request to a server ignoring Range) starts a fresh count.
                    counted = 0
                slot.not_before = max(slot.not_before, time.monotonic() + self._retry.not_before(e.retry_after))
                if slot.reissue:
                    slot.reissue = False  # abandoned by the controller as stalled: not this chunk's fault
                    self.stats.reissues += 1
                    continue
                if e.status in (429, 503):
                    self.push_back()
                if self._free_failure(slot):
                    self.stats.prefetch_misses += 1
                    uncounted += 1
                    self.stats.retries += 1
                    # Back off, but not past the moment the consumer needs this chunk.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._retry.delay(uncounted)):
                            await self._wait_head(slot)
                    continue
                counted += 1
                slot.trace.retries += 1
                if counted > self._retry.attempts:
                    raise _Terminal(RetriesExhaustedError(
                        f"gave up after {counted} failed attempts: {e}", url=url,
                        attempts=slot.trace.requests), cause=e) from None
                self.stats.retries += 1
                delay = self._retry.delay(counted, e.retry_after)
                log.warning("chunk %d at byte %d: %s; retry %d/%d in %.2fs (%s)", slot.index, slot.pos, e,
                            counted, self._retry.attempts, delay, redact_url(url))
                await asyncio.sleep(delay)
            except _Expired as e:
                await self._refresh(gen, e.status, slot)
            except _NotRetried as e:
                if slot.began_prefetch and not self._is_head(slot):
                    # Possibly a transient oddity of a prefetch: decide once this chunk is current.
                    self.stats.prefetch_misses += 1
                    await self._wait_head(slot)
                    continue
                raise _Terminal(HTTPStatusError(e.status, f"HTTP {e.status} (not retried)", url=url,
                                                attempts=slot.trace.requests)) from None

    def _free_failure(self, slot: _Slot) -> bool:
        """Is this failure a prefetch's, re-issued free of charge? The attempt began as a
        prefetch and either failed before delivering a byte as the chunk being consumed, or
        its response was parked (headers before it became the head): a response held unread
        is what idle timeouts of CDNs and load balancers cut. The re-issue begins as the head,
        so a chunk gets at most one free failure once it is needed."""
        if not slot.began_prefetch:
            return False
        return not self._is_head(slot) or slot.parked or slot.pos == slot.head_from

    async def _wait_head(self, slot: _Slot) -> None:
        while not self._is_head(slot):
            await self._progress.wait()

    async def _attempt(self, slot: _Slot, url: str) -> None:
        """One request for ``[slot.pos, slot.range.stop)``; bytes it delivers advance ``slot.pos``
        even if it then fails, so the next attempt resumes from the byte reached."""
        headers = dict(self._headers)
        want = ByteRange(slot.pos, slot.range.stop)
        method, data = "GET", None
        if self._range_mode == "query":
            # As YouTube's web player asks: POST, the range in the URL, a tiny body.
            url = with_query_param(url, "range", want.header().removeprefix("bytes="))
            method, data = "POST", b"x\x00"
        else:
            headers["Range"] = want.header()
            if self._etag and not self._etag.startswith("W/"):
                headers["If-Range"] = self._etag
            elif self._last_modified:
                headers["If-Range"] = self._last_modified
        slot.ending = slot.reissue = False  # flags of the previous attempt
        slot.trace.requests += 1
        self.stats.requests += 1
        if slot.trace.requested is None:
            slot.trace.requested = time.monotonic()
        transport = self._transport
        sent = time.monotonic()
        try:
            async with asyncio.timeout(self._timeouts.request) as cm:
                slot.request_timeout = cm
                resp = await transport.request(method, url, headers, connect_timeout=self._timeouts.request,
                                               idle_timeout=self._timeouts.idle, data=data)
        except TimeoutError:
            raise TransientError("no response headers within the request timeout") from None
        finally:
            slot.request_timeout = None
        try:
            body_start, body_stop = self._check_response(slot, resp, want)
            slot.trace.headers = now = time.monotonic()
            if self._ttfb is None:
                self._ttfb = now - sent
            else:
                self._ttfb = 0.8 * self._ttfb + 0.2 * (now - sent)
            slot.parked = slot.trace.prefetched = not self._is_head(slot)
            slot.resp = resp
            started_at = slot.pos
            try:
                await self._read_body(slot, resp, body_start, body_stop)
            finally:
                cid = getattr(resp, "connection_id", None) or "?"
                per = self.stats.connection_bytes
                per[cid] = per.get(cid, 0) + slot.pos - started_at
        finally:
            slot.resp = None
            slot.waiting_since = None
            if slot.reading_since is not None:
                slot.last_rate = slot.rate(time.monotonic())
                slot.reading_since = None
            resp.close()

    def _check_response(self, slot: _Slot, resp: Response, want: ByteRange) -> tuple[int, int | None]:
        """Validate status and headers; return the body's span ``[start, stop)`` in the object."""
        status = resp.status
        h = resp.headers
        if status in (401, 403):
            raise _Expired(status)
        if status not in (200, 206):
            if self._retry.is_retryable_status(status):
                raise TransientError(f"HTTP {status}", retry_after=_retry_after(h.get("Retry-After")),
                                     status=status)
            if status == 416 and not self._size_known.is_set() and want.start == 0:
                self._learn_size(slot, 0, ranged=True)  # an empty object: nothing to read
                return 0, 0
            if status == 416 and self.size is None and slot.to_end:
                self._ends_at(slot, want.start)  # unknown total: the server says it ends here
                return want.start, want.start
            if status == 416:
                raise _Terminal(ObjectChangedError(
                    f"HTTP 416: the server no longer has byte {want.start} ({h.get('Content-Range', '')})",
                    url=self._url, attempts=slot.trace.requests))
            raise _NotRetried(status)
        self._check_validators(h, slot)
        length = h.get("Content-Length")
        clen = int(length) if length is not None and length.isdigit() else None
        if self._range_mode == "query":
            # googlevideo answers range= with a 200 carrying exactly the bytes asked for.
            if status != 200 or clen is None or clen == 0 or (want.stop is not None and clen > len(want)):
                raise TransientError(f"HTTP {status} with {clen} bytes for range={want.header()[6:]}")
            return want.start, want.start + clen
        if clen == 0 and self.size is None and slot.to_end:
            # Unknown total and an empty answer (206 or 200) at the byte reached: the object ends here.
            if self._size_known.is_set():
                self._ends_at(slot, want.start)
            else:
                self._learn_size(slot, want.start, ranged=True)
            return want.start, want.start
        if status == 206:
            try:
                cr = parse_content_range(h.get("Content-Range", ""))
            except ValueError as e:
                raise TransientError(str(e)) from None
            if cr.start != want.start or (want.stop is not None and cr.stop > want.stop) or cr.stop <= cr.start:
                raise TransientError(f"Content-Range {cr.start}-{cr.stop - 1} does not match "
                                     f"the requested {want.header()}")
            if self.size is not None and cr.total is not None and cr.total != self.size:
                raise self._changed(slot, f"Content-Range total {cr.total} differs from the size {self.size}")
            if clen is not None and clen != cr.stop - cr.start:
                raise TransientError(f"Content-Length {clen} disagrees with Content-Range")
            if not self._size_known.is_set():
                self._learn_size(slot, cr.total, ranged=True)
            elif self.size is None and cr.total is not None:
                self._total_appeared(cr.total)
            return cr.start, cr.stop
        # 200: the server ignored Range and sends the whole object from byte 0.
        if self.size is not None and clen is not None and clen != self.size:
            raise self._changed(slot, f"full response of {clen} bytes differs from the size {self.size}")
        if not self._size_known.is_set():
            self._learn_size(slot, clen, ranged=False)
            return 0, clen
        if self.size is None and clen is not None:
            self._total_appeared(clen)
        self._take_over_rest(slot)
        return 0, clen

    def _changed(self, slot: _Slot, why: str) -> _Terminal:
        """The server reports another size: a new version of the object, not a network fault."""
        return _Terminal(ObjectChangedError(f"{why}: the object changed on the server; refusing to mix versions",
                                            url=self._url, attempts=slot.trace.requests))

    def _check_validators(self, h: Any, slot: _Slot) -> None:
        etag, lm = h.get("ETag"), h.get("Last-Modified")
        if not self._validated:
            self._etag, self._last_modified, self._validated = etag, lm, True
            return
        if (self._etag and etag and etag != self._etag) or (
                self._last_modified and lm and _http_date(lm) != _http_date(self._last_modified)):
            raise _Terminal(ObjectChangedError(
                f"object changed mid-download (ETag {self._etag} -> {etag}, Last-Modified "
                f"{self._last_modified} -> {lm}); refusing to mix versions",
                url=self._url, attempts=slot.trace.requests))

    async def _read_body(self, slot: _Slot, resp: Response, body_start: int, body_stop: int | None) -> None:
        """Push ``[slot.pos, min(slot.range.stop, body_stop))`` from a body spanning
        ``[body_start, body_stop)``. This is the per-byte hot path: keep it lean.

        ``slot.range.stop`` is read again after every await: a split may have moved it
        closer while this task waited, and bytes past it now belong to another slot.
        """
        pos = slot.pos
        skip = pos - body_start  # a 200 (or a resumed 200) repeats bytes already delivered
        pieces = slot.pieces
        slot.reading_since, slot.read_from, slot.gated, slot.gap = time.monotonic(), pos, 0.0, 0.0
        while True:
            stop = slot.range.stop
            end = stop if body_stop is None or (stop is not None and stop < body_stop) else body_stop
            if end is not None and pos >= end:
                return
            if not self._may_read(slot):
                await self._wait_may_read(slot)
            slot.waiting_since = since = time.monotonic()
            piece = await resp.read_piece()
            since = time.monotonic() - since
            slot.gap = max(slot.gap, since)  # this connection's pacing: the stall test's yardstick
            slot.waiting_since = None  # blocked on the budget is not stalled
            stop = slot.range.stop
            end = stop if body_stop is None or (stop is not None and stop < body_stop) else body_stop
            if not piece:
                if end is None:
                    slot.range = ByteRange(slot.range.start, pos)  # unknown size: EOF is the end
                    return
                raise TransientError(f"premature end of body at byte {pos} (expected {end})")
            if slot.trace.first_read is None:
                slot.trace.first_read = time.monotonic()
            self._read_total += len(piece)
            if skip > 0:
                if len(piece) <= skip:
                    skip -= len(piece)
                    continue
                piece = piece[skip:]
                skip = 0
            if end is not None and pos + len(piece) > end:
                piece = piece[: end - pos]  # bytes beyond this slot belong to others
                if not piece:
                    return
            n = len(piece)
            pos += n
            slot.pos = pos
            pieces.append(piece)
            slot.buffered += n
            self._buffered += n
            self.stats.buffered_peak = max(self.stats.buffered_peak, self._buffered)
            slot.wakeup.set()

    async def _refresh(self, failed_gen: int, status: int, slot: _Slot) -> None:
        async with self._refresh_lock:
            if self._url_gen != failed_gen:
                return  # another chunk already refreshed the URL
            if self._refresh_hook is None:
                raise _Terminal(URLExpiredError(
                    status, f"HTTP {status}: the URL is expired or forbidden and no refresh hook was given",
                    url=self._url, attempts=slot.trace.requests))
            if self.stats.refreshes >= self._retry.refreshes:
                raise _Terminal(URLExpiredError(
                    status, f"HTTP {status} again after {self.stats.refreshes} URL refreshes",
                    url=self._url, attempts=slot.trace.requests))
            try:
                new_url = await self._refresh_hook(self._url)
            except Exception as e:
                # The hook's text (a signed URL it tried, a command's output, a proxy URL) may hold
                # secrets, and so may its cause chain, which a traceback (--debug) prints: show
                # only redacted copies of both. (Local import: this method is the only user.)
                from ..errors import redacted
                from ..redact import redact_text
                what = redact_text(str(e) if isinstance(e, RangestreamError) else f"{type(e).__name__}: {e}")
                raise _Terminal(URLExpiredError(status, f"URL refresh failed: {what}", url=self._url,
                                                attempts=slot.trace.requests), cause=redacted(e)) from None
            if not isinstance(new_url, str) or not new_url.lower().startswith(("http://", "https://")):
                raise _Terminal(URLExpiredError(status, "URL refresh hook returned no usable URL",
                                                url=self._url, attempts=slot.trace.requests))
            new_lmt, new_clen = url_param(new_url, "lmt"), size_from_url(new_url)
            if (self._lmt and new_lmt and new_lmt != self._lmt) or (
                    self.size is not None and new_clen is not None and new_clen != self.size):
                raise _Terminal(ObjectChangedError(
                    "the refreshed URL points at a different version of the object (lmt/clen changed)",
                    url=new_url, attempts=slot.trace.requests))
            self.stats.refreshes += 1
            self._url = new_url
            self._url_gen += 1
            log.info("refreshed expired URL (HTTP %d): now %s", status, redact_url(new_url))


class _Expired(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _NotRetried(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _http_date(value: str) -> object:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return value
