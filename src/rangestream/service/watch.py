"""Page URLs for the service: resolve a page, pick formats, and report a fetch's progress.

The HTTP side lives in :mod:`.page`; this module holds what it decides with:

* :func:`resolve`: a page URL -> a :class:`~rangestream.refresh.Resolution` with yt-dlp
  (``rangestream[youtube]``), the best video+audio within a height for a container;
  a URL no extractor knows is taken as a direct media link (one stream, no mux).
  With the SSRF guard on (no ``--allow-private``), yt-dlp's *generic* extractor is
  left out: it follows links on arbitrary pages with yt-dlp's own HTTP stack, which
  the guard cannot see. Site extractors (YouTube's...) talk to their own sites.
* :class:`Resolutions`: recent resolutions for a short while, so the page's
  ``/watch/info``, its player and its download link resolve a page once (per worker).
* :class:`ProgressStore` / :class:`Job`: live progress of one fetch keyed by a random job
  id, kept as small JSON files in a directory every worker of the host shares, so a
  progress request may land on any worker (``--workers N``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from ..errors import RangestreamError
from ..plan import size_from_url, url_param
from ..redact import redact_text, redact_url
from ..refresh import (
    Resolution,
    ResolveError,
    Resolver,
    ResolverUnavailable,
    StreamFormat,
    is_page_url,
    output_name,
)
from .state import request_lease

log = logging.getLogger("rangestream.service")

CONTAINERS = ("mp4", "webm", "mkv")
#: Containers browsers play (the page offers the others for download only).
PLAYABLE = ("mp4", "webm")
# Prefer formats the container takes natively (H.264/AAC in MP4 plays everywhere); any
# video+audio pair next (fMP4 and MKV hold VP9, AV1, Opus too), a combined format last.
SELECTORS = {
    "mp4": "bv*[ext=mp4]+ba[ext=m4a]/bv*+ba/b",
    "webm": "bv*[ext=webm]+ba[ext=webm]/bv*+ba/b",
    "mkv": "bv*+ba/b",
}
DEFAULT_HEIGHT = 1080
HEIGHTS = (144, 4320)
_JOB = re.compile(r"[0-9a-f]{32}")
_NO_EXTRACTOR = ("No suitable extractor", "Unsupported URL")
_EXT_TYPES = {"mp4": "video/mp4", "m4v": "video/mp4", "webm": "video/webm", "mkv": "video/x-matroska",
              "m4a": "audio/mp4", "mp3": "audio/mpeg", "ogg": "audio/ogg", "opus": "audio/ogg"}


def new_job_id() -> str:
    return secrets.token_hex(16)


def valid_job_id(job: str | None) -> bool:
    # fullmatch: with match, "$" also matches before a final newline (a file name with a newline in it)
    return isinstance(job, str) and _JOB.fullmatch(job) is not None


# -- resolving ---------------------------------------------------------------------------------


def direct_resolution(url: str) -> Resolution:
    """A direct media link as a one-format resolution: its title from the file name."""
    path = unquote(urlsplit(url).path)
    base = path.rstrip("/").rsplit("/", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    if not dot or not ext.isalnum() or len(ext) > 5:
        stem, ext = base, ""
    mime = url_param(url, "mime") or ""
    if not ext and "/" in mime:
        ext = {"video/mp4": "mp4", "audio/mp4": "m4a", "video/webm": "webm", "audio/webm": "webm"}.get(mime, "")
    fmt = StreamFormat(format_id="direct", url=url, ext=ext.lower() or None, filesize=size_from_url(url),
                       protocol=urlsplit(url).scheme)
    return Resolution(page_url=url, id="", title=stem or "download", ext=fmt.ext, formats=(fmt,),
                      available=(fmt,), extracted_at=time.monotonic())


def make_resolver(height: int, container: str, *, allow_generic: bool) -> Resolver:
    """A fresh resolver for one request (its cache then lives as long as the request).

    Made inside the request's slot: with a proxy pool, yt-dlp goes through the request's lease,
    the proxy its streams then use (a googlevideo URL is bound to the address that resolved it),
    and a bot check during resolution moves the lease like one met by a stream."""
    options: dict[str, Any] = {}
    if not allow_generic:
        options["allowed_extractors"] = ["default", "-generic"]
    return Resolver(SELECTORS[container], max_height=height, ydl_options=options, proxy=request_lease())


async def resolve(resolver: Resolver, url: str) -> Resolution:
    """``url`` resolved by ``resolver``; a direct media link when no extractor takes it
    (or yt-dlp is not installed and it is not a YouTube page)."""
    try:
        return await resolver.resolve(url)
    except ResolverUnavailable:
        if is_page_url(url):
            raise
        return direct_resolution(url)
    except ResolveError as e:
        if e.status is None and any(s in str(e) for s in _NO_EXTRACTOR):
            return direct_resolution(url)
        raise


def resolve_message(error: ResolveError) -> str:
    """A resolver failure in plain words."""
    if isinstance(error, ResolverUnavailable):
        return ("this server cannot read video pages: yt-dlp is not installed "
                "(the operator can install it with: pip install 'rangestream[youtube]')")
    if error.status is not None:
        return f"the page could not be read (HTTP {error.status}): {error}"
    if error.network:
        return f"the page could not be reached: {error}"
    return str(error)


class Resolutions:
    """Recent resolutions, by (page URL, height, container), for ``ttl`` seconds (at most
    ``size`` of them). A stale entry is harmless: an expired URL is re-resolved by the
    refresh hook while streaming."""

    def __init__(self, ttl: float = 120.0, size: int = 128) -> None:
        self.ttl, self.size = ttl, size
        self._items: OrderedDict[tuple[str, int, str], Resolution] = OrderedDict()

    def get(self, key: tuple[str, int, str]) -> Resolution | None:
        res = self._items.get(key)
        if res is None or time.monotonic() - res.extracted_at > self.ttl:
            self._items.pop(key, None)
            return None
        return res

    def put(self, key: tuple[str, int, str], res: Resolution) -> None:
        self._items[key] = res
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


# -- describing ----------------------------------------------------------------------------------


def format_rows(res: Resolution) -> list[dict[str, Any]]:
    """The chosen formats for the page: role, id, size in pixels, codecs, bytes."""
    rows = []
    for i, f in enumerate(res.formats):
        if res.needs_mux:
            role = "video" if i == 0 else "audio"
        else:
            role = "video+audio" if f.has_video and f.has_audio else "media"
        rows.append({"role": role, "format_id": f.format_id, "ext": f.ext, "width": f.width,
                     "height": f.height, "vcodec": f.vcodec, "acodec": f.acodec, "size": f.filesize})
    return rows


def output_container(res: Resolution, container: str) -> str:
    """The file type of what /watch sends: the container for a muxed pair, else the format's own."""
    if res.needs_mux:
        return container
    return (res.video.ext or "bin").lower()


def media_type(ext: str) -> str:
    return _EXT_TYPES.get(ext.lower(), "application/octet-stream")


def file_name(res: Resolution, ext: str) -> str:
    """A safe file name from the title (no separators, control or quote characters)."""
    return output_name(res.title, ext, res.id or "download")


def attachment(name: str) -> str:
    """``Content-Disposition`` for a download: an ASCII fallback and the UTF-8 name (RFC 6266)."""
    ascii_name = re.sub(r"[^A-Za-z0-9._ ()\[\]-]+", "_", name).strip(" _") or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


# -- progress ------------------------------------------------------------------------------------


def _private_dir() -> str:
    """A directory only this user can write, shared by the workers of one host."""
    path = os.environ.get("RANGESTREAM_PROGRESS_DIR") or os.path.join(
        tempfile.gettempdir(), f"rangestream-progress-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022:
        return path
    # Someone else's (or a link) in a shared temp directory: a private one for this process.
    return tempfile.mkdtemp(prefix="rangestream-progress-")


class ProgressStore:
    """Job progress as ``<dir>/<job>.json``, written atomically (rename); files older
    than ``keep`` seconds are swept."""

    def __init__(self, directory: str | None = None, keep: float = 3600.0) -> None:
        self.directory = directory or _private_dir()
        self.keep = keep
        self._swept = 0.0

    def _path(self, job: str) -> str:
        assert valid_job_id(job)
        return os.path.join(self.directory, f"{job}.json")

    def put(self, job: str, data: dict[str, Any]) -> None:
        path = self._path(job)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, path)
        except OSError as e:  # progress is a convenience: never fail a stream for it
            log.debug("cannot write progress of job %s: %s", job, e)
        self._sweep()

    def get(self, job: str) -> dict[str, Any] | None:
        if not valid_job_id(job):
            return None
        try:
            with open(self._path(job), encoding="utf-8") as f:
                data: dict[str, Any] = json.load(f)  # written by put() above: a JSON object
                return data
        except (OSError, ValueError):
            return None

    def _sweep(self) -> None:
        now = time.time()
        if now - self._swept < 60:
            return
        self._swept = now
        with contextlib.suppress(OSError), os.scandir(self.directory) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.name.endswith(".json") and now - entry.stat().st_mtime > self.keep:
                        os.unlink(entry.path)


class Job:
    """One fetch's progress, written to the store at most every ``interval`` seconds."""

    def __init__(self, store: ProgressStore | None, job_id: str | None, title: str,
                 interval: float = 0.25) -> None:
        self.store = store if job_id and valid_job_id(job_id) else None
        self.id = job_id
        self.title = title
        self.interval = interval
        self.state = "starting"
        self.error: str | None = None
        self.inputs: dict[str, dict[str, Any]] = {}
        self.streams: list[Any] = []
        self.output_bytes = 0
        self.started = time.monotonic()
        self._written = 0.0

    def add(self, name: str, stream: Any) -> None:
        self.inputs[name] = {"name": name, "bytes": 0, "size": stream.size}
        self.streams.append(stream)

    def got(self, name: str, n: int) -> None:
        self.inputs[name]["bytes"] += n
        self.flush()

    def sent(self, n: int) -> None:
        self.output_bytes += n
        self.flush()

    def finish(self, state: str, error: str | None = None) -> None:
        if self.state in ("done", "failed", "cancelled"):
            return
        self.state, self.error = state, (redact_text(error) if error else None)
        self.flush(force=True)

    def snapshot(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        fetched = sum(i["bytes"] for i in self.inputs.values())
        return {
            "job": self.id, "state": self.state, "title": self.title, "error": self.error,
            "inputs": list(self.inputs.values()), "output_bytes": self.output_bytes,
            "refreshes": sum(s.stats.refreshes for s in self.streams),
            "retries": sum(s.stats.retries for s in self.streams),
            "elapsed": round(elapsed, 2), "mb_per_s": round(fetched / elapsed / 1e6, 3) if elapsed > 0 else None,
        }

    def flush(self, force: bool = False) -> None:
        if self.store is None or self.id is None:
            return
        now = time.monotonic()
        if force or now - self._written >= self.interval:
            self._written = now
            self.store.put(self.id, self.snapshot())


async def counted(stream: Any, job: Job, name: str) -> AsyncGenerator[bytes, None]:
    """``stream``'s pieces, counted into ``job`` (an input failure is recorded, then raised)."""
    try:
        async for piece in stream:
            job.got(name, len(piece))
            yield piece
    except RangestreamError as e:
        job.finish("failed", f"{name}: {e}")
        raise


def describe_for_log(res: Resolution) -> str:
    return f"{res.title!r}: " + " + ".join(f.describe() for f in res.formats) + f" from {redact_url(res.page_url)}"
