"""The endpoints: ``/stream`` (one object, Range-capable) and ``/mux`` (two inputs muxed)."""

from __future__ import annotations

import contextlib
import logging
import re

from aiohttp import web

from ..errors import MuxError, ObjectChangedError, RangestreamError
from ..mux import mux
from ..plan import size_from_url, url_param
from ..redact import redact_text, redact_url
from .guard import find_refusal
from .replies import Reply, reply_for, unsatisfiable
from .state import STATE, State

log = logging.getLogger("rangestream.service")

MUX_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "mkv": "video/x-matroska"}
_MIME = re.compile(r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+$")
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)

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
    mime = url_param(url, "mime")
    if mime and _MIME.match(mime):
        return mime
    return "application/octet-stream"


async def abort(request: web.Request) -> None:
    """Close the player's connection: a body cut short must not look complete."""
    if request.transport is not None:
        request.transport.abort()


async def stream_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    url = await state.upstream(request, "url")
    spec = parse_range(request.headers.get("Range"))
    async with state.slot():
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


def _bounds(url: str, spec: Spec | None, size: int | None) -> tuple[Spec | None, int, int | None]:
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
    size: int | None = None
    if spec is not None and spec[0] is None:  # a suffix range needs the size
        size = size_from_url(url)
        if size is None:
            size = await _probe_size(state, url)
    spec, start, stop = _bounds(url, spec, size)
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
        try:
            stream = await stack.enter_async_context(state.open_stream(url, ranges=ranges))
        except RangestreamError as e:
            raise (await _open_failed(state, url, start, e) if ranged else reply_for(e)) from None
        size = stream.size
        if ranged and size is None:
            return None
        if ranged and size is not None and start >= size:
            raise unsatisfiable(size)
        pieces = stream.__aiter__()
        stack.push_async_callback(pieces.aclose)
        try:
            first_piece = await pieces.__anext__()
        except StopAsyncIteration:
            first_piece = b""
        except RangestreamError as e:
            raise reply_for(e) from None
        resp = _media_response(url, ranged, start, stop, size)
        await resp.prepare(request)
        if head:
            return resp
        try:
            if first_piece:
                await resp.write(first_piece)
            async for piece in pieces:
                await resp.write(piece)
        except ConnectionResetError:
            return resp  # the player left; leaving the ``async with`` stops the upstream
        except RangestreamError as e:
            log.warning("/stream %s failed after the headers: %s", redact_url(url), redact_text(str(e)))
            await abort(request)
            return resp
        await resp.write_eof()
        return resp


def _media_response(url: str, ranged: bool, start: int, stop: int | None, size: int | None) -> web.StreamResponse:
    headers = {"Content-Type": content_type(url), "Cache-Control": "no-store",
               "X-Content-Type-Options": "nosniff",
               "Accept-Ranges": "bytes" if size is not None else "none"}
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


class _LazySink:
    """An async writer that sends the response headers with the first byte, so an
    error before it can still be a proper status."""

    def __init__(self, request: web.Request, resp: web.StreamResponse) -> None:
        self.request = request
        self.resp = resp

    async def write(self, data: bytes) -> None:
        if not self.resp.prepared:
            await self.resp.prepare(self.request)
        await self.resp.write(data)


async def mux_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    fmt = request.query.get("format", "mp4").lower()
    if fmt not in MUX_TYPES:
        raise Reply(400, "format must be mp4, webm or mkv")
    video = await state.upstream(request, "video")
    audio = await state.upstream(request, "audio")
    async with state.slot(), contextlib.AsyncExitStack() as stack:
        streams = {}
        for name, url in (("video", video), ("audio", audio)):
            try:
                streams[name] = await stack.enter_async_context(state.open_stream(url))
            except RangestreamError as e:
                r = reply_for(e)
                raise Reply(r.status if r.status in (403, 404, 410) else 502, f"{name}: {r.message}") from None
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": MUX_TYPES[fmt], "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            "Accept-Ranges": "none"})
        resp.enable_chunked_encoding()
        return await _run_mux(request, resp, streams, fmt)


async def _run_mux(request: web.Request, resp: web.StreamResponse, streams: dict, fmt: str) -> web.StreamResponse:
    try:
        await mux(streams["video"], streams["audio"], _LazySink(request, resp), fmt)
    except MuxError as e:
        if not resp.prepared:
            if e.input and find_refusal(e.__cause__) is not None:
                raise Reply(403, f"{e.input}: upstream refused") from None
            raise Reply(502, f"mux failed: {e}") from None
        if e.input is not None:
            log.warning("/mux failed after the headers: %s", redact_text(str(e)))
        await abort(request)
        return resp
    except ConnectionResetError:
        return resp
    if not resp.prepared:  # nothing at all was written (cannot happen with real media)
        await resp.prepare(request)
    await resp.write_eof()
    return resp
