"""The endpoints: ``/stream`` (one object, Range-capable) and ``/mux`` (two inputs muxed)."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from ..engine import Stream
from ..errors import MuxError, ObjectChangedError, RangestreamError
from ..muxer import mux
from ..plan import size_from_url, url_param
from ..redact import redact_text, redact_url
from .guard import find_refusal
from .limits import WriteTimeout, WriteWatch
from .replies import Reply, log_safe, reply_for, unsatisfiable
from .state import STATE, State

# request key: when the middleware saw the request (monotonic)
STARTED: web.RequestKey[float] = web.RequestKey("rangestream_started", float)

log = logging.getLogger("rangestream.service")

MUX_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "mkv": "video/x-matroska"}
# Only media types, so an upstream's mime=text/html cannot become a page in our origin.
_MIME = re.compile(r"^(?:video|audio)/[a-z0-9][a-z0-9.+-]{0,100}$", re.ASCII)
_OCTETS = "application/octet-stream"
# ASCII digits only, at most 19 of them (int64 range: larger is never a real offset).
_RANGE = re.compile(r"^[ \t]*bytes[ \t]*=[ \t]*([0-9]{0,19})[ \t]*-[ \t]*([0-9]{0,19})[ \t]*$",
                    re.IGNORECASE | re.ASCII)
_MAX_END = 1 << 62  # beyond any object; keeps the engine's range arithmetic in machine integers
# Proxied media is never a document: no sniffing into HTML, no script if opened directly.
MEDIA_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                 "Content-Security-Policy": "sandbox"}

Spec = tuple[int | None, int | None]


def parse_range(header: str | None) -> Spec | None:
    """``bytes=a-b`` -> (a, b); ``bytes=a-`` -> (a, None); ``bytes=-n`` -> (None, n).

    None (serve the whole object, as RFC 9110 allows) for no header, several
    ranges, another unit or a malformed or backwards range."""
    if not header:
        return None
    m = _RANGE.match(header)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:
        return None, int(last)
    if last and int(last) < int(first):
        return None
    return int(first), (int(last) if last else None)


def content_type(url: str) -> str:
    """``video/*`` or ``audio/*`` from the URL's ``mime=``, else application/octet-stream."""
    mime = (url_param(url, "mime") or "").strip().lower()
    return mime if _MIME.match(mime) else _OCTETS


async def abort(request: web.Request) -> None:
    """Close the player's connection: a body cut short must not look complete."""
    if request.transport is not None:
        request.transport.abort()


async def stream_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    url = await state.upstream(request, "url")
    spec = parse_range(request.headers.get("Range"))
    async with state.slot(request):
        return await _serve_stream(request, state, url, spec)


async def _probe_size(state: State, url: str) -> int | None:
    async with contextlib.AsyncExitStack() as stack:
        try:
            stream = await stack.enter_async_context(state.open_stream(url, ranges=[(0, 1)]))
        except RangestreamError as e:
            raise reply_for(e) from None
        return stream.size


async def _open_failed(state: State, url: str, start: int, error: RangestreamError) -> Reply:
    """The answer for a ranged open that failed. The engine reports an upstream 416
    (a start past the end, size not known beforehand) as an ObjectChangedError with
    nothing delivered; the size then comes from a one-byte probe, never from the text."""
    if start > 0 and isinstance(error, ObjectChangedError):
        size = await _probe_size(state, url)
        if size is not None and start >= size:
            return unsatisfiable(size)
    return reply_for(error)


def _bounds(spec: Spec | None, size: int | None) -> tuple[Spec | None, int, int | None]:
    """(spec, start, stop) for a parsed Range once the size is known where needed."""
    if spec is None:
        return None, 0, None
    first, last = spec
    if first is None:  # the last n bytes
        if size is None:
            return None, 0, None  # the upstream will not say: serve the whole object
        if last == 0 or size == 0:
            raise unsatisfiable(size)
        assert last is not None
        return spec, max(0, size - last), size
    return spec, first, None if last is None else last + 1


async def _serve_stream(request: web.Request, state: State, url: str, spec: Spec | None) -> web.StreamResponse:
    size: int | None = size_from_url(url) if spec is not None else None
    if spec is not None and spec[0] is None and size is None:  # a suffix range needs the size
        size = await _probe_size(state, url)
    spec, start, stop = _bounds(spec, size)
    if spec is not None and size is not None and start >= size:
        raise unsatisfiable(size)
    if size is not None and stop is not None:
        stop = min(stop, max(size, start + 1))  # clamp the end; a start past the end stays a 416
    elif stop is not None:
        stop = min(stop, _MAX_END)  # size unknown: the engine clips to it once known
    for ranged in ((True, False) if spec is not None else (False,)):
        if not ranged:
            start, stop = 0, None
        resp = await _serve_once(request, state, url, ranged, start, stop)
        if resp is not None:
            return resp
    raise AssertionError("unreachable")  # pragma: no cover


async def _serve_once(request: web.Request, state: State, url: str, ranged: bool, start: int,
                      stop: int | None) -> web.StreamResponse | None:
    """One attempt; None when the upstream gives no total (a 206 cannot be described)."""
    head = request.method == "HEAD"
    async with contextlib.AsyncExitStack() as stack:
        if head:
            ranges: list[tuple[int, int | None]] | None = [(start, start + 1)]
        else:
            ranges = [(start, stop)] if ranged else None
        opening = state.open_stream(url, ranges=ranges)
        stack.callback(state.metrics.add_stream_stats, opening.stats)  # also when opening fails
        try:
            stream = await stack.enter_async_context(opening)
        except RangestreamError as e:
            raise (await _open_failed(state, url, start, e) if ranged else reply_for(e)) from None
        size = stream.size
        if ranged and size is None:
            if start > 0:  # no total: a start past the end is still a 416, not the whole object
                probed = await _probe_size(state, url)
                if probed is not None and start >= probed:
                    raise unsatisfiable(probed)
            return None
        if ranged and size is not None and start >= size:
            raise unsatisfiable(size)
        pieces = stream.__aiter__()
        stack.push_async_callback(pieces.aclose)
        first_piece = await first_of(pieces)
        resp = _media_response(url, ranged, start, stop, size)
        await resp.prepare(request)
        if head:
            return resp
        out = Output(request, resp, state)
        try:
            if first_piece:
                await out.write(first_piece)
            async for piece in pieces:
                await out.write(piece)
        except ConnectionResetError:
            return resp  # the player left (or read nothing for too long): leaving stops the upstream
        except RangestreamError as e:
            state.metrics.errors.labels(type(e).__name__).inc()
            log.warning("/stream %s failed after the headers: %s", log_safe(redact_url(url)),
                        log_safe(redact_text(str(e))))
            await abort(request)
            return resp
        await resp.write_eof()
        return resp


class Output:
    """The body's writer: the write timeout, bytes out and time to first byte."""

    def __init__(self, request: web.Request, resp: web.StreamResponse, state: State) -> None:
        self.request = request
        self.resp = resp
        self.metrics = state.metrics
        self.timeout = state.options.write_timeout
        self.watch = WriteWatch(request, self.timeout)
        self.first = True

    async def write(self, data: bytes) -> None:
        if not self.resp.prepared:
            await self.resp.prepare(self.request)
        if self.first and data:
            self.first = False
            self.metrics.ttfb.observe(time.monotonic() - self.request.get(STARTED, time.monotonic()))
        try:
            await self.watch.write(self.resp, data)
        except WriteTimeout:
            self.metrics.errors.labels("write_timeout").inc()
            log.warning("%s: the client read nothing for %gs; dropped", self.request.path, self.timeout)
            raise
        self.metrics.bytes_out.inc(len(data))


def _media_response(url: str, ranged: bool, start: int, stop: int | None, size: int | None) -> web.StreamResponse:
    headers = {"Content-Type": content_type(url), **MEDIA_HEADERS,
               "Accept-Ranges": "bytes" if size is not None else "none"}
    length: int | None
    if ranged:
        assert size is not None
        end = size if stop is None else min(stop, size)
        status, length = 206, end - start
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    else:
        status, length = 200, size
    resp = web.StreamResponse(status=status, headers=headers)
    if length is not None:
        resp.content_length = length
    return resp


async def mux_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    fmt = request.query.get("format", "mp4").lower()
    if fmt not in MUX_TYPES:
        raise Reply(400, "format must be mp4, webm or mkv")
    video = await state.upstream(request, "video")
    audio = await state.upstream(request, "audio")
    async with state.slot(request), contextlib.AsyncExitStack() as stack:
        streams = {}
        for name, url in (("video", video), ("audio", audio)):
            streams[name] = await enter_input(stack, state, name, url)
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": MUX_TYPES[fmt], **MEDIA_HEADERS, "Accept-Ranges": "none"})
        resp.enable_chunked_encoding()
        return await run_mux(request, resp, streams, fmt, state)


async def first_of(pieces: AsyncIterator[bytes]) -> bytes:
    """A stream's first piece (b"" for an empty object): waited for before any header is sent,
    so a failure here is still a proper error reply."""
    try:
        return await pieces.__anext__()
    except StopAsyncIteration:
        return b""
    except RangestreamError as e:
        raise reply_for(e) from None


async def enter_input(stack: contextlib.AsyncExitStack, state: State, name: str, url: str,
                      **options: Any) -> Stream:
    """One input of a mux, opened on ``stack`` (its stats go to /metrics when the stack closes).
    A failure names the input; only 403/404/410 pass through, anything else is the upstream's (502)."""
    opening = state.open_stream(url, **options)
    stack.callback(state.metrics.add_stream_stats, opening.stats)
    try:
        return await stack.enter_async_context(opening)
    except RangestreamError as e:
        r = reply_for(e)
        raise Reply(r.status if r.status in (403, 404, 410) else 502, f"{name}: {r.message}",
                    kind=r.kind, refusal=r.refusal) from None


async def run_mux(request: web.Request, resp: web.StreamResponse, streams: Mapping[str, AsyncIterable[bytes]],
                  fmt: str, state: State) -> web.StreamResponse:
    """Mux ``streams["video"]`` and ``streams["audio"]`` (async iterables of bytes) as ``fmt`` into
    ``resp`` (not yet prepared; its headers are sent with the first output byte), shared by
    ``/mux`` and the page's ``/watch``.

    A failure before the first byte raises :class:`Reply` (403 when an input was refused by the
    SSRF guard, else 502), so the client gets a clean JSON error; after it, the connection is
    aborted (a cut body must not look complete). A client that leaves ends it quietly.
    Returns ``resp``, completed with ``write_eof`` on success."""
    try:
        await mux(streams["video"], streams["audio"], Output(request, resp, state), fmt)
    except MuxError as e:
        if not resp.prepared:
            refused = find_refusal(e.__cause__) if e.input else None
            if refused is not None:
                raise Reply(403, f"{e.input}: upstream refused",
                            refusal=f"upstream_{refused.kind.replace('-', '_')}") from None
            raise Reply(502, f"mux failed: {e}", kind="MuxError") from None
        state.metrics.errors.labels("MuxError").inc()
        if e.input is not None:
            log.warning("/mux failed after the headers: %s", log_safe(redact_text(str(e))))
        await abort(request)
        return resp
    except ConnectionResetError:
        return resp
    if not resp.prepared:  # nothing at all was written (cannot happen with real media)
        await resp.prepare(request)
    await resp.write_eof()
    return resp
