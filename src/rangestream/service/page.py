"""The page (``GET /``) and the page-URL endpoints behind it.

``GET /``
    A small page (``static/``: HTML, JS, CSS; nothing from elsewhere) where a person
    pastes a page URL (YouTube, with the ``[youtube]`` extra), a direct media URL, or
    a video URL and an audio URL; it plays the result as it arrives, links a
    download, lists the chosen formats and shows the fetch's progress and errors.
``GET /watch?url=PAGE&height=1080&format=mp4[&download=1][&job=ID]``
    The page resolved with yt-dlp (once; see :class:`~.watch.Resolutions`), the best
    video+audio within ``height`` picked for ``format`` (mp4, webm, mkv) and muxed on
    the fly into a chunked 200, as ``/mux`` does (a combined format or a direct media
    link is streamed as it is, with its length). ``video=URL&audio=URL`` instead of
    ``url=``: that pair, no resolving. A stream URL that expires mid-stream is
    re-resolved from the page (the refresh hook of :mod:`rangestream.refresh`) and
    the engine continues from the byte reached. ``download=1`` adds
    ``Content-Disposition: attachment`` with a file name made from the title.
    ``job=ID`` (32 hex digits) records progress under that id.
``GET /watch/info?...``
    The same parameters: ``{"job", "title", "filename", "container", "mux",
    "playable", "formats": [{"role", "format_id", "ext", "width", "height",
    "vcodec", "acodec", "size"}]}``, with a fresh job id for the player.
``GET /watch/progress?job=ID``
    ``{"state": "starting|streaming|done|failed|cancelled", "inputs": [{"name",
    "bytes", "size"}], "output_bytes", "refreshes", "retries", "elapsed",
    "mb_per_s", "error"}``, or 404 before the fetch started.

Errors are the service's ``{"error": "..."}`` in plain words (the page shows them).
Resolved stream URLs pass the SSRF guard like any upstream URL; page URLs too, except
that YouTube's own page hosts are not subject to ``--allow-host`` (which names the
CDN, e.g. googlevideo.com).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from ..errors import RangestreamError
from ..headers import merge_headers
from ..redact import redact_text
from ..refresh import (
    Resolution,
    ResolveError,
    Resolver,
    ResolverUnavailable,
    StreamFormat,
    is_page_url,
)
from .guard import Guard, UpstreamRefused
from .handlers import MEDIA_HEADERS, MUX_TYPES, Output, abort, enter_input, first_of, run_mux
from .replies import Reply, log_safe
from .state import STATE, State
from .watch import (
    CONTAINERS,
    DEFAULT_HEIGHT,
    HEIGHTS,
    PLAYABLE,
    Job,
    ProgressStore,
    Resolutions,
    attachment,
    counted,
    describe_for_log,
    direct_resolution,
    file_name,
    format_rows,
    make_resolver,
    media_type,
    new_job_id,
    output_container,
    resolve,
    resolve_message,
    valid_job_id,
)

__all__ = ["add_routes"]

log = logging.getLogger("rangestream.service")

_STATIC = {"page.js": "text/javascript", "page.css": "text/css"}
# The page runs only its own script and loads only from this service.
_PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
             "media-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class _Page:
    def __init__(self) -> None:
        self.resolutions = Resolutions()
        self.store = ProgressStore()
        files = resources.files(__package__).joinpath("static")
        self.index = files.joinpath("index.html").read_text(encoding="utf-8")
        self.static = {name: files.joinpath(name).read_bytes() for name in _STATIC}


_PAGE: web.AppKey[_Page] = web.AppKey("rangestream_page", _Page)


def add_routes(app: web.Application) -> None:
    """``/``, ``/static/{name}``, ``/watch``, ``/watch/info`` and ``/watch/progress``."""
    app[_PAGE] = _Page()
    app.router.add_get("/", index_handler)
    app.router.add_get("/static/{name}", static_handler)
    app.router.add_get("/watch", watch_handler, allow_head=False)
    app.router.add_get("/watch/info", info_handler, allow_head=False)
    app.router.add_get("/watch/progress", progress_handler, allow_head=False)


# -- the page ---------------------------------------------------------------------------------


async def index_handler(request: web.Request) -> web.Response:
    text = request.app[_PAGE].index
    token = request.query.get("token")
    if token:  # the page's own files need it too when the service wants a token
        suffix = html.escape("?token=" + quote(token, safe=""))
        for name in _STATIC:
            text = text.replace(f'"static/{name}"', f'"static/{name}{suffix}"')
    return web.Response(text=text, content_type="text/html", headers={
        "Content-Security-Policy": _PAGE_CSP, "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache", "X-Frame-Options": "DENY"})


async def static_handler(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = request.app[_PAGE].static.get(name)
    if body is None:
        raise Reply(404, "not found")
    return web.Response(body=body, headers={"Content-Type": f"{_STATIC[name]}; charset=utf-8",
                                            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})


# -- parameters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Params:
    url: str | None  # a page or direct media URL; else video and audio
    video: str | None
    audio: str | None
    height: int
    container: str
    download: bool
    job: str | None


async def _params(request: web.Request, state: State) -> _Params:
    q = request.query
    container = q.get("format", "mp4").strip().lower()
    if container not in CONTAINERS:
        raise Reply(400, "format must be mp4, webm or mkv")
    height_text = q.get("height", str(DEFAULT_HEIGHT)).strip()
    if not (height_text.isascii() and height_text.isdigit() and len(height_text) <= 5
            and HEIGHTS[0] <= int(height_text) <= HEIGHTS[1]):
        raise Reply(400, f"height must be a number of pixels from {HEIGHTS[0]} to {HEIGHTS[1]}")
    job = q.get("job") or None
    if job is not None and not valid_job_id(job):
        raise Reply(400, "job must be 32 hexadecimal digits")
    url = q.get("url", "").strip()
    video, audio = q.get("video", "").strip(), q.get("audio", "").strip()
    if url and (video or audio):
        raise Reply(400, "give either a page or media URL, or a video URL and an audio URL, not both")
    if url:
        await _check_page(state, url)
    elif video and audio:
        video = await state.upstream(request, "video")
        audio = await state.upstream(request, "audio")
    elif video or audio:
        raise Reply(400, "a separate video URL needs an audio URL too (or paste one URL above)")
    else:
        raise Reply(400, "paste a video page URL, a media URL, or a video URL and an audio URL")
    return _Params(url or None, video or None, audio or None, int(height_text), container,
                   q.get("download", "") in ("1", "true", "yes"), job)


async def _check_page(state: State, url: str) -> None:
    """The page URL through the guard. YouTube's page hosts skip ``--allow-host`` (it names
    the CDN the streams come from), never the address check."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        raise Reply(400, "that is not a valid URL") from None
    if scheme not in ("http", "https") or not host:
        raise Reply(400, "the URL must start with http:// or https:// and name a host")
    guard = Guard(allow_private=state.guard.allow_private) if is_page_url(url) else state.guard
    await _guarded(guard, host, port or (443 if scheme == "https" else 80), "the page")


async def _guarded(guard: Guard, host: str, port: int, what: str) -> None:
    try:
        await guard.check(host, port)
    except UpstreamRefused as e:
        raise Reply(403, f"{what} is on a host this server may not fetch from ({e.reason})") from None
    except OSError:
        raise Reply(502, f"{what}: the host {host} could not be found (DNS)") from None


# -- resolving --------------------------------------------------------------------------------


def _resolve_status(error: ResolveError) -> int:
    if isinstance(error, ResolverUnavailable):
        return 501
    if error.status in (404, 410):
        return error.status
    if error.status is not None or error.network:
        return 502
    return 422  # read, but nothing this service can stream (a playlist, a live stream...)


def _pair(video: str, audio: str) -> Resolution:
    v, a = direct_resolution(video), direct_resolution(audio)
    fv = StreamFormat(format_id="video", url=video, ext=v.ext, filesize=v.video.filesize)
    fa = StreamFormat(format_id="audio", url=audio, ext=a.ext, filesize=a.video.filesize)
    return Resolution(page_url=video, id="", title=v.title, ext=None, formats=(fv, fa), available=(fv, fa),
                      extracted_at=v.extracted_at)


async def _resolution(request: web.Request, p: _Params) -> tuple[Resolution, Resolver | None]:
    """What to fetch (and the resolver whose hook renews expired URLs; None for a pair)."""
    state, page = request.app[STATE], request.app[_PAGE]
    if p.url is None:
        assert p.video and p.audio
        return _pair(p.video, p.audio), None
    resolver = make_resolver(p.height, p.container, allow_generic=state.guard.allow_private)
    key = (p.url, p.height, p.container)
    res = page.resolutions.get(key)
    if res is None:
        try:
            res = await resolve(resolver, p.url)
        except ResolveError as e:
            raise Reply(_resolve_status(e), resolve_message(e)) from None
        log.info("resolved %s", log_safe(describe_for_log(res)))
        page.resolutions.put(key, res)
    for f in res.formats:  # what the page points to passes the guard like any upstream URL
        parts = urlsplit(f.url)
        await _guarded(state.guard, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
                       f"format {f.format_id}")
    return res, (resolver if res.formats[0].format_id != "direct" else None)


async def info_handler(request: web.Request) -> web.Response:
    state = request.app[STATE]
    p = await _params(request, state)
    async with state.slot(request):  # yt-dlp is costly: resolutions count as streams
        res, _ = await _resolution(request, p)
    ext = output_container(res, p.container)
    playable = ext in PLAYABLE or (not res.needs_mux and media_type(ext).startswith(("video/", "audio/"))
                                   and ext != "mkv")
    return web.json_response({
        "job": new_job_id(), "title": res.title, "filename": file_name(res, ext), "container": ext,
        "mux": res.needs_mux, "playable": playable, "formats": format_rows(res),
    }, headers={"Cache-Control": "no-store"})


async def progress_handler(request: web.Request) -> web.Response:
    job = request.query.get("job", "")
    if not valid_job_id(job):
        raise Reply(400, "job must be 32 hexadecimal digits")
    data = request.app[_PAGE].store.get(job)
    if data is None:
        raise Reply(404, "no progress for this job (not started yet, or finished over an hour ago)")
    return web.json_response(data, headers={"Cache-Control": "no-store"})


# -- /watch -----------------------------------------------------------------------------------


class _CountingResponse(web.StreamResponse):
    """Counts what reaches the player into the job, and whether the body was completed."""

    def __init__(self, job: Job, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job
        self.completed = False

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await super().write(data)
        self.job.sent(len(data))

    async def write_eof(self, data: bytes = b"") -> None:
        await super().write_eof(data)
        self.completed = True


async def watch_handler(request: web.Request) -> web.StreamResponse:
    state, page = request.app[STATE], request.app[_PAGE]
    p = await _params(request, state)
    job = Job(page.store, p.job, "")
    try:
        async with state.slot(request):
            job.flush(force=True)
            res, resolver = await _resolution(request, p)
            job.title = res.title
            resp = await _send(request, state, res, resolver, p, job)
    except Reply as r:
        job.finish("failed", r.message)
        raise
    except asyncio.CancelledError:
        job.finish("cancelled")
        raise
    if resp.completed:
        job.finish("done")
    else:
        job.finish("cancelled")  # the player left (an input failure already marked it failed)
    return resp


async def _open(stack: contextlib.AsyncExitStack, state: State, res: Resolution, resolver: Resolver | None,
                job: Job) -> dict[str, Any]:
    """The engine streams of the resolution, counted into the job, with the refresh hook."""
    names = ("video", "audio") if res.needs_mux else ("media",)
    streams = {}
    for name, f in zip(names, res.formats, strict=True):
        options: dict[str, Any] = {}
        if resolver is not None:
            options["refresh"] = resolver.hook(res.page_url, f)
        headers = merge_headers(f.http_headers)
        if headers:
            options["headers"] = headers
        stream = await enter_input(stack, state, name, f.url, **options)
        job.add(name, stream)
        pieces = counted(stream, job, name)
        stack.push_async_callback(pieces.aclose)
        streams[name] = pieces
    return streams


async def _send(request: web.Request, state: State, res: Resolution, resolver: Resolver | None, p: _Params,
                job: Job) -> _CountingResponse:
    ext = output_container(res, p.container)
    headers = {**MEDIA_HEADERS, "Accept-Ranges": "none"}
    headers["Content-Type"] = MUX_TYPES[ext] if res.needs_mux else media_type(ext)
    if p.download:
        headers["Content-Disposition"] = attachment(file_name(res, ext))
    async with contextlib.AsyncExitStack() as stack:
        streams = await _open(stack, state, res, resolver, job)
        job.state = "streaming"
        job.flush(force=True)
        resp = _CountingResponse(job, status=200, headers=headers)
        if res.needs_mux:
            resp.enable_chunked_encoding()
            await run_mux(request, resp, streams, ext, state)
        else:
            await _send_single(request, state, resp, streams["media"], job)
        return resp


async def _send_single(request: web.Request, state: State, resp: _CountingResponse, pieces: Any,
                       job: Job) -> None:
    """One stream as it is; headers (with the length) once its first byte arrived."""
    first = await first_of(pieces)
    size = job.inputs["media"]["size"]
    if size is not None:
        resp.content_length = size
    await resp.prepare(request)
    out = Output(request, resp, state)  # the write timeout, bytes out, time to first byte
    try:
        if first:
            await out.write(first)
        async for piece in pieces:
            await out.write(piece)
    except ConnectionResetError:
        return
    except RangestreamError as e:
        state.metrics.errors.labels(type(e).__name__).inc()
        log.warning("/watch failed after the headers: %s", log_safe(redact_text(str(e))))
        await abort(request)
        return
    await resp.write_eof()
