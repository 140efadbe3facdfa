"""The engine's public face: :class:`Stream`, an object fetched as a window of Range
requests and delivered in order (or, with :meth:`Stream.unordered`, as pieces at offsets).

Shape (structured concurrency, cf. trio/anyio):

* A :class:`Stream` owns an ``asyncio.TaskGroup``. Each chunk in the window is
  one task (``Chunks.run``, named ``rangestream-chunk-N``) that requests its range,
  retries it, and pushes the body into the chunk's ``Slot``.
* The consumer (``async for``) drains slots strictly in order. When it finishes
  the head slot, the next chunk enters the window.
* Leaving the ``async with`` (or breaking out of ``async for``, or a
  cancellation) cancels every chunk task and awaits them: their ``finally``
  blocks close the connections. No other path needs to remember to clean up.

Memory: a chunk that is not the head may read its body only while the bytes
buffered by the whole stream are under ``max_buffer``; the head may always
keep up to ``HEAD_QUEUE`` bytes queued for the consumer. With
``max_buffer=0`` (the default for ``window <= 2``) a prefetched chunk gets its
response headers early but reads its body only once it is the head: a
sliding-window prefetch of headers.

Retries: a failure counts against a chunk's ``Retry.attempts`` only when the
chunk is the head (in order: the first of the window; ``unordered()``: the
lowest chunk still fetching). A request that began as a prefetch and failed
before delivering a byte as the head, or whose response was parked unread, or
that is still waiting for headers ``Timeouts.prefetch`` seconds after becoming
the head, is re-issued free of charge. A ``Retry-After`` holds every later
attempt of its chunk. (The rules, as a value: ``attempts.ChunkAttempts``.)

Every byte exactly once, or a clear error: a response shorter than asked is
followed by a request from the byte reached; with an unknown total only the
server's word (416 at that byte, an empty answer, a total) ends the object; a
different total is :class:`ObjectChangedError`; a 200 to a ranged request is
read on for the rest of the object instead of once per chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from itertools import pairwise
from typing import Protocol

from ..errors import InvalidURLError
from ..plan import DEFAULT_CHUNK_SIZE, AutoWindow, ByteRange, size_from_url
from ..redact import redact_url
from ..retry import Retry, Timeouts
from ..transports import Transport
from ..transports.base import connection_budget
from .chunk import Chunks
from .control import Controller
from .delivery import InOrder, Unordered
from .slot import Slot
from .source import RefreshHook, Source
from .stats import Stats
from .window import Window


class Owner(Protocol):
    """Something the stream closes when it is left (the private client of ``open_stream``)."""

    async def aclose(self) -> None: ...


class Stream:
    """An object being fetched. Use as ``async with client.open_stream(url) as s: async for b in s``.

    ``transport``: how requests are sent (a :class:`~rangestream.transports.Transport`);
    ``headers``: sent with every request; ``owner``: closed (``aclose()``) when the stream
    is left. :class:`~rangestream.Client` passes all three.
    ``window``: requests in flight (an int, or ``"auto"`` to adapt up to ``ceiling``).
    ``max_buffer``: bytes that chunks other than the current one may read ahead;
    default 0 for ``window <= 2`` (a headers-only prefetch), else
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

    def __init__(self, url: str, *, transport: Transport, headers: Mapping[str, str] | None = None,
                 owner: Owner | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 window: int | str = 2, ceiling: int = 8, max_buffer: int | None = None,
                 retry: Retry | None = None, timeouts: Timeouts | None = None,
                 refresh: RefreshHook | None = None, ranges: list[tuple[int, int]] | None = None,
                 expect_validators: dict[str, str | None] | None = None,
                 range_mode: str = "header") -> None:
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise InvalidURLError(f"not an http(s) URL: {redact_url(str(url))}")
        if not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ValueError("chunk_size must be a positive integer")
        auto: AutoWindow | None = None
        if window == "auto":
            auto = AutoWindow(start=min(2, ceiling), ceiling=ceiling)
            window = auto.size
            default_buffer = (window - 1) * chunk_size
        elif isinstance(window, int) and not isinstance(window, bool) and window >= 1:
            default_buffer = 0 if window <= 2 else (window - 1) * chunk_size
        else:
            raise ValueError(f"window must be an integer >= 1 or 'auto', not {window!r}")
        if range_mode not in ("header", "query"):
            raise ValueError(f"range_mode must be 'header' or 'query', not {range_mode!r}")
        size = size_from_url(url)
        if range_mode == "query" and size is None:
            raise InvalidURLError("range mode 'query' needs a URL that carries the object's size (clen): "
                                  f"{redact_url(url)}")
        self.stats = Stats(size=size)
        retry, timeouts = retry or Retry(), timeouts or Timeouts()
        self._owner = owner
        self._ordered = InOrder()
        self._source = Source(url, refresh=refresh, refreshes=retry.refreshes, stats=self.stats,
                              expect_validators=expect_validators)
        self._window = Window(_spans(ranges, size), size=size, chunk_size=chunk_size, window=window,
                              max_buffer=default_buffer if max_buffer is None else max_buffer,
                              auto_budget=auto is not None and max_buffer is None,
                              prefetch_timeout=timeouts.prefetch, stats=self.stats, delivery=self._ordered)
        self._chunks = Chunks(self._window, self._source, transport, headers or {}, range_mode=range_mode,
                              retry=retry, timeouts=timeouts, stats=self.stats, push_back=self.push_back)
        self._control = Controller(self._window, self._chunks, self.stats, auto,
                                   connections=connection_budget(transport))
        self._tg: asyncio.TaskGroup | None = None
        self._controller: asyncio.Task[None] | None = None
        self._entered = False
        self._iterated = False
        self._closed = False

    # -- public surface ---------------------------------------------------

    @property
    def size(self) -> int | None:
        """The object's size in bytes once known (None: not (yet) known)."""
        return self._window.size

    @property
    def url(self) -> str:
        """The current URL with secrets masked (it changes after a refresh)."""
        return redact_url(self._source.url)

    @property
    def delivered(self) -> int:
        """Bytes handed to the consumer so far."""
        return self._window.delivered

    @property
    def active(self) -> int:
        """Chunk requests in flight (or backing off) right now."""
        return self._window.active

    @property
    def window(self) -> int:
        return self._window.size_limit

    @property
    def validators(self) -> dict[str, str | None]:
        return {"etag": self._source.etag, "last_modified": self._source.last_modified}

    def push_back(self) -> None:
        """Shrink an auto window now (the server or the caller asks for less)."""
        self._control.push_back()

    async def __aenter__(self) -> Stream:
        if self._entered:
            raise RuntimeError("a Stream can be entered once")
        self._entered = True
        self._tg = tg = asyncio.TaskGroup()
        await tg.__aenter__()
        self._window.start = self._start_chunk
        try:
            w = self._window
            w.fill()
            if not w.order:
                w.size_known.set()  # nothing to fetch (e.g. ranges=[]): nothing to learn
            if not w.size_known.is_set():
                # No clen: chunk 0's first response tells the size (or that the
                # server ignores Range); before that only the chunks right after it are
                # asked, with a parallel window (Window.speculate), and judged after it.
                await w.wait_size()
            self._controller = tg.create_task(self._control.run(), name="rangestream-control")
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._shutdown()

    def __aiter__(self) -> AsyncGenerator[bytes, None]:  # a generator: aclose() ends it early
        self._start_iteration()
        return self._ordered.iterate(self._window)

    def unordered(self) -> AsyncGenerator[tuple[int, bytes], None]:
        """``(offset, data)`` pieces as soon as any chunk of the window has them.

        For writers that can seek (a file written with ``os.pwrite``): every byte
        still arrives exactly once, memory stays bounded, and a resume knows
        exactly which spans are complete.
        """
        self._start_iteration()
        delivery = Unordered()
        self._window.use(delivery)
        return delivery.iterate(self._window)

    def _start_iteration(self) -> None:
        if not self._entered or self._closed:
            raise RuntimeError("iterate a Stream inside its 'async with' block")
        if self._iterated:
            raise RuntimeError("a Stream can be iterated once")
        self._iterated = True

    # -- inside -----------------------------------------------------------------

    def _start_chunk(self, slot: Slot) -> asyncio.Task[None]:
        assert self._tg is not None
        return self._tg.create_task(self._chunks.run(slot), name=f"rangestream-chunk-{slot.index}")

    async def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._window.cancel_all()
        try:
            if self._tg is not None:
                if self._controller is not None:
                    self._controller.cancel()
                await self._tg.__aexit__(None, None, None)
        finally:
            self._window.clear()
            if self.stats.finished is None:
                self.stats.finished = time.monotonic()
            if self._owner is not None:
                await self._owner.aclose()


def _spans(ranges: list[tuple[int, int]] | None, size: int | None) -> deque[ByteRange]:
    """What is left to plan, in object order; chunks are cut from its front."""
    spans = [ByteRange(a, b) for a, b in ranges] if ranges is not None else [ByteRange(0, size)]
    if any(x.stop is None or x.stop > y.start for x, y in pairwise(spans)):
        raise ValueError("ranges must be sorted and must not overlap (each byte is delivered once)")
    return deque(r for r in spans if r.stop is None or len(r) > 0)
