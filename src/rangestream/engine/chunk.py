"""One chunk's requests: attempts until its range is delivered or it fails for good, and
the body read (the hot loop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from ..errors import (
    HTTPStatusError,
    ObjectChangedError,
    RangestreamError,
    RetriesExhaustedError,
    StreamError,
    TransientError,
)
from ..plan import ByteRange, with_query_param
from ..redact import redact_url
from ..retry import Retry, Timeouts
from ..transports import Response, Transport
from .attempts import ChunkAttempts, Failure, Next
from .response import Body, Changed, Expired, Known, Refused, Retryable, check_body, check_status
from .slot import Attempt, Cut, Slot, Terminal
from .source import Source
from .stats import Stats
from .window import Window

log = logging.getLogger("rangestream")


class _Expired(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _Resend(Exception):
    """The response cannot be told to be the pinned version: ask again, now with ``If-Range``
    (not an attempt that failed: nothing is charged)."""


class _NotRetried(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class Chunks:
    """Runs the chunks of one stream (a task each) against its transport and source."""

    def __init__(self, window: Window, source: Source, transport: Transport, headers: Mapping[str, str], *,
                 range_mode: str, retry: Retry, timeouts: Timeouts, stats: Stats,
                 push_back: Callable[[], None]) -> None:
        self._window = window
        self._source = source
        self._transport = transport
        self._headers = dict(headers)
        self._query = range_mode == "query"
        self._retry = retry
        self._timeouts = timeouts
        self._stats = stats
        self._push_back = push_back  # a 429/503: the auto window backs off
        self.ttfb: float | None = None  # smoothed request -> headers delay
        self.read_total = 0  # body bytes read off the network (the controller's rate)

    async def run(self, slot: Slot) -> None:
        """A chunk task: fetch the slot's range; whatever ends it is kept in ``slot.error``."""
        try:
            await self._fetch(slot)
        except Terminal as t:
            slot.error = t.error
        except StreamError as e:  # terminal by nature (TLSError, ProxyError, TooManyRedirectsError...)
            e.url = e.url or redact_url(self._source.url)
            e.attempts = e.attempts or slot.trace.requests
            slot.error = e
        except RangestreamError as e:  # e.g. InvalidURLError from the transport
            slot.error = StreamError(str(e), url=self._source.url, attempts=slot.trace.requests)
            slot.error.__cause__ = e
        except Exception as e:  # a bug must reach the consumer, not vanish in a task
            slot.error = StreamError(f"internal error: {type(e).__name__}: {e}", url=self._source.url,
                                     attempts=slot.trace.requests)
            slot.error.__cause__ = e
        finally:
            window = self._window
            slot.finished = True
            slot.trace.done = time.monotonic()
            slot.wakeup.set()
            if window.probe is None or slot is window.probe:  # only the probe's end may end the wait for the size
                window.size_known.set()
            if not window.stopping and slot.error is None:
                window.fill()  # a request slot is free: do not wait for the consumer
            window.sync_head()  # unordered: the next chunk may be the lowest unfinished now

    async def _fetch(self, slot: Slot) -> None:
        attempts = ChunkAttempts(self._retry)
        while True:
            if slot.trace.requests:
                await self._window.wait_known(slot)  # a speculative chunk asks again only once the size is known
            url, gen = self._source.url, self._source.gen
            wait = slot.not_before - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # a Retry-After holds for every attempt, prefetch or not
            slot.attempt = attempt = Attempt(began_prefetch=not self._window.is_head(slot))
            before = slot.pos
            try:
                await self._attempt(slot, attempt, url)
                if slot.range.stop is not None and slot.pos >= slot.range.stop:
                    return
                if slot.pos == before:
                    raise TransientError(f"no byte and no end of the object at byte {slot.pos}")
                # The server sent less than asked (CDNs and proxies cap responses): ask for the
                # rest. With an unknown total only the server's word ends it (see Window.ends_at).
                continue
            except _Resend:
                continue  # a speculative answer that cannot be verified: ask again, with If-Range
            except TransientError as e:
                self._probe_asks_again(slot)
                progressed = slot.pos - before >= self._window.chunk_size
                attempts = await self._after(slot, attempt, attempts, e, url, progressed)
            except _Expired as e:
                self._probe_asks_again(slot)
                await self._source.refresh(gen, e.status, slot.trace.requests, self._window.size)
            except _NotRetried as e:
                if attempt.began_prefetch and not self._window.is_head(slot):
                    # Possibly a transient oddity of a prefetch: decide once this chunk is current.
                    self._stats.prefetch_misses += 1
                    await self._window.wait_head(slot)
                    continue
                raise Terminal(HTTPStatusError(e.status, f"HTTP {e.status} (not retried)", url=url,
                                               attempts=slot.trace.requests)) from None

    def _probe_asks_again(self, slot: Slot) -> None:
        if slot is self._window.probe and not self._window.size_known.is_set():
            self._window.abandon_speculation()

    async def _after(self, slot: Slot, attempt: Attempt, attempts: ChunkAttempts, e: TransientError,
                     url: str, progressed: bool) -> ChunkAttempts:
        """Carry out the accounting's verdict on a failed attempt (see ``attempts``)."""
        slot.not_before = max(slot.not_before, time.monotonic() + self._retry.not_before(e.retry_after))
        window, stats = self._window, self._stats
        # A response parked unread is what idle timeouts of CDNs and load balancers cut: it never served.
        served = window.is_head(slot) and not attempt.parked and slot.pos != slot.head_from
        verdict = attempts.after(Failure(e.retry_after, stalled=attempt.cut is Cut.STALL),
                                 prefetch=attempt.began_prefetch, head=served, progressed=progressed)
        if verdict.next is Next.REISSUE:
            stats.reissues += 1
            return verdict.attempts
        if e.status in (429, 503):
            self._push_back()
        if verdict.next is Next.FREE:
            stats.prefetch_misses += 1
            stats.retries += 1
            # Back off, but not past the moment the consumer needs this chunk.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(verdict.delay):
                    await window.wait_head(slot)
            return verdict.attempts
        slot.trace.retries += 1
        counted = verdict.attempts.counted
        if verdict.next is Next.GIVE_UP:
            raise Terminal(RetriesExhaustedError(
                f"gave up after {counted} failed attempts: {e}", url=url,
                attempts=slot.trace.requests), cause=e) from None
        stats.retries += 1
        log.warning("chunk %d at byte %d: %s; retry %d/%d in %.2fs (%s)", slot.index, slot.pos, e,
                    counted, self._retry.attempts, verdict.delay, redact_url(url))
        await asyncio.sleep(verdict.delay)
        return verdict.attempts

    def _request(self, slot: Slot, url: str) -> tuple[str, str, dict[str, str], bytes | None, ByteRange]:
        """Method, URL, headers and body of a request for ``[slot.pos, slot.range.stop)``."""
        headers = dict(self._headers)
        want = ByteRange(slot.pos, slot.range.stop)
        if self._query:
            # As YouTube's web player asks: POST, the range in the URL, a tiny body.
            return "POST", with_query_param(url, "range", want.header().removeprefix("bytes=")), headers, \
                b"x\x00", want
        headers["Range"] = want.header()
        if_range = self._source.if_range()
        if if_range:
            headers["If-Range"] = if_range
        return "GET", url, headers, None, want

    async def _attempt(self, slot: Slot, attempt: Attempt, url: str) -> None:
        """One request for ``[slot.pos, slot.range.stop)``; bytes it delivers advance ``slot.pos``
        even if it then fails, so the next attempt resumes from the byte reached."""
        method, url, headers, data, want = self._request(slot, url)
        slot.ending = False
        slot.trace.requests += 1
        self._stats.requests += 1
        if slot.trace.requested is None:
            slot.trace.requested = time.monotonic()
        sent = time.monotonic()
        try:
            async with asyncio.timeout(self._timeouts.request) as cm:
                attempt.deadline = cm
                resp = await self._transport.request(method, url, headers, connect_timeout=self._timeouts.request,
                                                     idle_timeout=self._timeouts.idle, data=data)
        except TimeoutError:
            attempt.timed_out()
            raise TransientError("no response headers within the request timeout") from None
        finally:
            attempt.deadline = None
        try:
            # A speculative chunk's response waits for the size (or gives way to a late probe).
            sent += await self._window.wait_known(slot, parked_after=time.monotonic() - sent)
            if resp.status in (200, 206) and not self._query and \
                    self._source.unverified(resp.headers, headers.get("If-Range")):
                raise _Resend()  # sent before another response pinned a validator, and it shows none
            body = self._check(slot, resp, want, headers.get("If-Range"))
            slot.trace.headers = now = time.monotonic()
            self.ttfb = now - sent if self.ttfb is None else 0.8 * self.ttfb + 0.2 * (now - sent)
            attempt.parked = slot.trace.prefetched = not self._window.is_head(slot)
            attempt.resp = resp
            started_at = slot.pos
            try:
                await self._read_body(slot, resp, body.start, body.stop)
            finally:
                cid = getattr(resp, "connection_id", None) or "?"
                per = self._stats.connection_bytes
                per[cid] = per.get(cid, 0) + slot.pos - started_at
        finally:
            attempt.resp = None
            slot.waiting_since = None
            if slot.reading_since is not None:
                slot.last_rate = slot.rate(time.monotonic())
                slot.reading_since = None
            resp.close()

    def _check(self, slot: Slot, resp: Response, want: ByteRange, if_range: str | None) -> Body:
        """Judge the response (``response``: pure) and apply what it teaches the window."""
        window, h = self._window, resp.headers
        known = Known(window.size, window.size_known.is_set(), slot.to_end, self._query, if_range)
        verdict = check_status(resp.status, h, want, known, self._retry, now=time.time())
        if verdict is None:
            why = self._source.changed(h)
            if why is not None:
                verdict = Changed(why, resp.status)
            else:
                verdict = check_body(resp.status, h, want, known)
        if isinstance(verdict, Body):
            window.learn(slot, verdict)
            return verdict
        if isinstance(verdict, Retryable):
            raise TransientError(verdict.message, retry_after=verdict.retry_after, status=verdict.status)
        if isinstance(verdict, Expired):
            raise _Expired(verdict.status)
        if isinstance(verdict, Refused):
            raise _NotRetried(verdict.status)
        raise Terminal(ObjectChangedError(verdict.message, url=self._source.url, attempts=slot.trace.requests,
                                          status=verdict.status, total=verdict.total))

    async def _read_body(self, slot: Slot, resp: Response, body_start: int, body_stop: int | None) -> None:
        """Push ``[slot.pos, min(slot.range.stop, body_stop))`` from a body spanning
        ``[body_start, body_stop)``. This is the per-byte hot path: keep it lean.

        ``slot.range.stop`` is read again after every await: a split may have moved it
        closer while this task waited, and bytes past it now belong to another slot.
        """
        window, stats = self._window, self._stats
        pos = slot.pos
        skip = pos - body_start  # a 200 (or a resumed 200) repeats bytes already delivered
        pieces = slot.pieces
        slot.reading_since, slot.read_from, slot.gated, slot.gap = time.monotonic(), pos, 0.0, 0.0
        while True:
            stop = slot.range.stop
            end = stop if body_stop is None or (stop is not None and stop < body_stop) else body_stop
            if end is not None and pos >= end:
                return
            if not window.delivery.may_read(window, slot):
                await window.wait_may_read(slot)
            slot.waiting_since = asked = time.monotonic()
            piece = await resp.read_piece()
            waited = time.monotonic() - asked
            if waited > slot.gap:
                slot.gap = waited  # this connection's pacing: the stall test's yardstick
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
            self.read_total += len(piece)
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
            buffered = window.buffered = window.buffered + n
            if buffered > stats.buffered_peak:  # a compare, not max(): this runs once per piece
                stats.buffered_peak = buffered
            slot.wakeup.set()
