"""Page URLs: resolve them into stream URLs with yt-dlp, and re-resolve when a URL expires.

A YouTube watch page (or any page or manifest one of yt-dlp's extractors
understands, including its generic extractor: a direct media link, an HTML page
with ``<video>``, a DASH MPD, an HLS playlist) is turned into the stream URL(s)
of the format(s) a yt-dlp selector picks::

    resolver = Resolver("bv*+ba/b", max_height=1080)
    res = await resolver.resolve("https://www.youtube.com/watch?v=...")
    res.formats          # one combined format, or (video, audio) to mux
    res.video.url        # a signed googlevideo URL, valid for some hours

Signed stream URLs expire. :meth:`Resolver.hook` gives the engine's
``refresh=`` hook for one format: when the CDN answers 401/403 the engine calls
it with the failing URL, it re-resolves the page and returns the URL of the
same format (the same ``format_id``, i.e. itag on YouTube; failing that, the
same codecs and container with the closest size), and the engine continues from
the byte reached. The engine itself refuses a URL whose ``clen``/``lmt`` say it
is another object, so a refresh can never splice two encodings together.

Any async callable ``old_url -> new_url`` can be the hook instead: plug in your
own resolver the same way (``refresh=my_resolver``).

yt-dlp is blocking, so every extraction runs in a worker thread
(``asyncio.to_thread``). The last extraction of a page is kept for
``cache_seconds``: when the video and the audio URL expire together, the page
is extracted once. yt-dlp is imported only when a page is first resolved
(``pip install 'rangestream[youtube]'``). Stream URLs are never logged in full
(their signatures are masked by :func:`~rangestream.redact.redact_url`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import RangestreamError
from .headers import is_page_url
from .plan import size_from_url, url_param
from .proxypool import Lease, is_bot_check
from .redact import redact_text, redact_url

__all__ = [
    "DEFAULT_FORMAT",
    "INSTALL_HINT",
    "ResolveError",
    "ResolverUnavailable",
    "StreamFormat",
    "Resolution",
    "Resolver",
    "build_selector",
    "match_format",
    "is_page_url",
    "output_name",
    "refresh_hook",
    "ytdlp_extract",
    "YdlLogger",
]

log = logging.getLogger("rangestream")

#: yt-dlp's selector for "best video + best audio, else the best combined format".
DEFAULT_FORMAT = "bv*+ba/b"
INSTALL_HINT = "pip install 'rangestream[youtube]'"

# Formats the engine can fetch as one object with Range requests: plain http(s).
# Manifests (HLS m3u8, DASH segment lists) are not one object.
_HTTP_FILTER = "[protocol^=http][protocol!*=dash]"


RefreshHook = Callable[[str], Awaitable[str]]
# (page_url, yt-dlp options) -> yt-dlp's info dict; blocking, runs in a thread.
Extractor = Callable[[str, dict[str, Any]], dict[str, Any]]


class ResolveError(RangestreamError):
    """A page could not be resolved into stream URLs. ``status``: the HTTP status
    behind it, if any; ``network``: a connection failure or timeout; ``bot_check``: the
    site took the client for a bot ("Sign in to confirm you're not a bot"), judged on
    yt-dlp's own error when it was raised."""

    def __init__(self, message: str, *, status: int | None = None, network: bool = False,
                 bot_check: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.network = network
        self.bot_check = bot_check


class ResolverUnavailable(ResolveError):
    """yt-dlp is not installed."""

    def __init__(self) -> None:
        super().__init__(f"resolving page URLs needs yt-dlp, which is not installed: {INSTALL_HINT}")


def _none_if_none(codec: Any) -> str | None:
    return None if codec in (None, "", "none") else str(codec)


@dataclass(frozen=True)
class StreamFormat:
    """One format of a resolved page. ``url`` is secret (signed): show :attr:`safe_url`."""

    format_id: str
    url: str = field(repr=False)
    itag: str | None = None
    vcodec: str | None = None  # None: no video, or not known ("none" from yt-dlp becomes None)
    acodec: str | None = None
    ext: str | None = None
    filesize: int | None = None
    width: int | None = None
    height: int | None = None
    protocol: str | None = None
    http_headers: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_info(cls, f: Mapping[str, Any]) -> StreamFormat:
        url = str(f.get("url") or "")
        size = f.get("filesize") or size_from_url(url)
        return cls(
            format_id=str(f.get("format_id") or ""),
            url=url,
            itag=url_param(url, "itag"),
            vcodec=_none_if_none(f.get("vcodec")),
            acodec=_none_if_none(f.get("acodec")),
            ext=f.get("ext"),
            filesize=int(size) if size else None,
            width=f.get("width"),
            height=f.get("height"),
            protocol=f.get("protocol"),
            http_headers={str(k): str(v) for k, v in (f.get("http_headers") or {}).items()},
        )

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    @property
    def has_video(self) -> bool:
        return self.vcodec is not None

    @property
    def has_audio(self) -> bool:
        return self.acodec is not None

    def describe(self) -> str:
        """``137 (mp4, avc1.640028, 1920x1080, 45.2 MB)``"""
        bits = [self.ext or "?"]
        bits += [c for c in (self.vcodec, self.acodec) if c]
        if self.width and self.height:
            bits.append(f"{self.width}x{self.height}")
        if self.filesize:
            bits.append(f"{self.filesize / 1e6:.1f} MB" if self.filesize >= 1e6 else f"{self.filesize / 1e3:.1f} kB")
        return f"{self.format_id} ({', '.join(bits)})"


@dataclass(frozen=True)
class Resolution:
    """What a page resolved to: the selected format(s) and every format offered."""

    page_url: str
    id: str
    title: str
    ext: str | None  # yt-dlp's container for the selection (the merge format for video+audio)
    formats: tuple[StreamFormat, ...]  # selected: one, or two (video, audio) to mux
    available: tuple[StreamFormat, ...]  # all formats with a URL (what a refresh picks from)
    extracted_at: float  # time.monotonic()

    @property
    def needs_mux(self) -> bool:
        return len(self.formats) == 2

    @property
    def video(self) -> StreamFormat:
        return self.formats[0]

    @property
    def audio(self) -> StreamFormat | None:
        return self.formats[1] if self.needs_mux else None


# -- format selectors ----------------------------------------------------------------------

_ATOM = re.compile(r"(bestvideo|worstvideo|bestaudio|worstaudio|best|worst|bv|wv|ba|wa|b|w)(\*?)(?![\w.-])")
_AUDIO_ATOMS = frozenset({"bestaudio", "worstaudio", "ba", "wa"})


def build_selector(selector: str | None = None, max_height: int | None = None, *, http_only: bool = True) -> str:
    """yt-dlp's ``selector`` (default ``bv*+ba/b``) with filters added to its keyword atoms:
    ``[height<=?N]`` on every atom that can pick video (``bv*``, ``b``, ``best``...), and,
    with ``http_only``, a filter keeping plain http(s) formats (not HLS/DASH manifests) on
    every atom. Explicit format ids (``137+140``) are left alone."""
    selector = (selector or DEFAULT_FORMAT).strip()
    if max_height is not None and max_height < 1:
        raise ValueError("max_height must be >= 1")
    out: list[str] = []
    depth = 0  # inside [...] filters nothing is rewritten
    i = 0
    while i < len(selector):
        c = selector[i]
        if c == "[":
            depth += 1
        elif c == "]":
            depth = max(0, depth - 1)
        elif depth == 0 and (i == 0 or selector[i - 1] in "/+,( "):
            m = _ATOM.match(selector, i)
            if m:
                out.append(m.group(0))
                if max_height is not None and m.group(1) not in _AUDIO_ATOMS:
                    out.append(f"[height<=?{max_height}]")
                if http_only:
                    out.append(_HTTP_FILTER)
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def match_format(like: StreamFormat, candidates: Iterable[StreamFormat]) -> StreamFormat | None:
    """The candidate that is the same format as ``like``: the same ``format_id``; else the
    same itag; else the same codecs and container, the closest in size (an equal size first)."""
    cands = [c for c in candidates if c.url]
    for key in ("format_id", "itag"):
        want = getattr(like, key)
        same = [c for c in cands if want and getattr(c, key) == want
                and (c.vcodec, c.acodec) == (like.vcodec, like.acodec)]
        if key == "format_id":
            same = same or [c for c in cands if want and c.format_id == want]
        if same:
            return min(same, key=lambda c: _size_distance(like, c))
    kin = [c for c in cands if (c.vcodec, c.acodec) == (like.vcodec, like.acodec)
           and (like.ext is None or c.ext == like.ext)]
    if not kin:
        return None
    return min(kin, key=lambda c: (_size_distance(like, c), (c.width, c.height) != (like.width, like.height)))


def _size_distance(like: StreamFormat, c: StreamFormat) -> float:
    if like.filesize is None or c.filesize is None:
        return float("inf") if like.filesize != c.filesize else 0.0
    return abs(like.filesize - c.filesize)


# -- page URLs and names ----------------------------------------------------------------------


def output_name(title: str | None, ext: str | None, fallback: str = "download") -> str:
    """A file name from a title: no path separators, control or shell-hostile characters,
    at most ~200 bytes, plus ``.ext``."""
    name = re.sub(r"[\x00-\x1f\x7f/\\:*?\"<>|]+", "_", title or "").strip().strip(".")
    name = re.sub(r"\s+", " ", name)
    while len(name.encode()) > 200:
        name = name[:-1]
    name = name.rstrip() or fallback
    return f"{name}.{ext}" if ext else name


# -- yt-dlp -------------------------------------------------------------------------------------




def _redact_text(text: str) -> str:
    return redact_text(text)


class YdlLogger:
    """yt-dlp's messages into rangestream's logger, URLs redacted: its chatter at DEBUG, its
    warnings at INFO (shown with -v). Errors come back as exceptions. Give it as yt-dlp's
    ``logger`` option to any extraction (the resolver and the CLI's playlist listing do)."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", _redact_text(msg))

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", _redact_text(msg))

    def warning(self, msg: str) -> None:
        log.info("yt-dlp: %s", _redact_text(msg))

    def error(self, msg: str) -> None:
        log.debug("yt-dlp: %s", _redact_text(msg))


def ytdlp_extract(page_url: str, options: dict[str, Any]) -> dict[str, Any]:
    """yt-dlp's ``extract_info(download=False)`` of ``page_url`` with ``options`` (yt-dlp's own),
    sanitized to plain JSON-able values; blocking (run it in a thread). Raises
    :class:`ResolverUnavailable` without yt-dlp, :class:`ResolveError` when yt-dlp fails (URLs
    redacted), and works on a copy of ``cookiefile`` (yt-dlp would write its jar back)."""
    try:
        import yt_dlp
    except ImportError:
        raise ResolverUnavailable() from None
    import shutil  # with yt-dlp: it imports them anyway, a direct download never does
    import tempfile

    options = dict(options)
    cookies_copy = None
    try:
        if options.get("cookiefile"):
            # yt-dlp writes its cookie jar back to cookiefile when it closes: work on a copy.
            fd, cookies_copy = tempfile.mkstemp(prefix="rangestream-cookies-", suffix=".txt")
            os.close(fd)
            try:
                shutil.copyfile(options["cookiefile"], cookies_copy)
            except OSError as e:
                raise RangestreamError(f"cannot read cookies file {options['cookiefile']}: "
                                       f"{e.strerror or e}") from None
            options["cookiefile"] = cookies_copy
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(page_url, download=False)
            clean: dict[str, Any] = ydl.sanitize_info(info)  # yt-dlp is untyped; its info is a dict
            return clean
    except yt_dlp.utils.DownloadError as e:
        raise _resolve_error(page_url, e) from None
    finally:
        if cookies_copy:
            with contextlib.suppress(OSError):
                os.unlink(cookies_copy)


def _resolve_error(page_url: str, e: Exception) -> ResolveError:
    message = re.sub(r"^(ERROR:\s*)+", "", str(e)).strip()
    status, network = None, False
    exc_info = getattr(e, "exc_info", None)
    cause: Any = exc_info[1] if exc_info else None
    seen = 0
    while cause is not None and seen < 8:
        seen += 1
        if status is None and isinstance(getattr(cause, "status", None), int):
            status = cause.status
        if type(cause).__name__ in ("TransportError", "ConnectionError", "TimeoutError", "SSLError",
                                    "ProxyError", "IncompleteRead"):
            network = True
        cause = getattr(cause, "cause", None) or cause.__cause__
    return ResolveError(f"cannot resolve {redact_url(page_url)}: {_redact_text(message)}",
                        status=status, network=network and status is None,
                        bot_check=is_bot_check(None, message))


# -- the resolver ------------------------------------------------------------------------------


class Resolver:
    """Resolves page URLs with yt-dlp (see the module doc).

    ``format``: a yt-dlp selector (default ``bv*+ba/b``); ``max_height`` adds
    ``[height<=?N]`` to its video atoms. ``proxy`` and ``cookies_file`` are
    handed to yt-dlp (the page request needs them as much as the stream
    requests do). ``ydl_options`` are merged into yt-dlp's options last.
    ``extract``: a blocking ``(page_url, options) -> info dict`` to use instead
    of yt-dlp's ``extract_info`` (another extractor, or a test double).
    ``extractions`` counts the extractions made.
    ``proxy`` may be a proxy pool's :class:`~rangestream.proxypool.Lease` (one download's
    proxy): each extraction goes through the proxy it holds then, and a bot check counts on
    that proxy and moves the lease to the next one before extracting again.
    """

    def __init__(self, format: str | None = None, *, max_height: int | None = None,
                 cache_seconds: float = 10.0, proxy: str | Lease | None = None,
                 cookies_file: str | os.PathLike[str] | None = None,
                 ydl_options: Mapping[str, Any] | None = None, extract: Extractor | None = None,
                 timeout: float = 120.0) -> None:
        self.selector = build_selector(format, max_height)
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self._options: dict[str, Any] = {
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "skip_download": True,
            "noplaylist": True,
            "format": self.selector,
            "logger": YdlLogger(),
            "socket_timeout": 30,
        }
        self._lease = proxy if isinstance(proxy, Lease) else None
        if isinstance(proxy, str) and proxy:
            self._options["proxy"] = proxy
        if cookies_file:
            self._options["cookiefile"] = os.fspath(cookies_file)
        self._options.update(ydl_options or {})
        self._extract = extract or ytdlp_extract
        self._cache: dict[str, Resolution] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.extractions = 0

    def _lock(self, page_url: str) -> asyncio.Lock:
        return self._locks.setdefault(page_url, asyncio.Lock())

    async def resolve(self, page_url: str) -> Resolution:
        """Extract ``page_url`` now (and keep the result for refreshes)."""
        async with self._lock(page_url):
            return await self._extract_now(page_url)

    async def _extract_now(self, page_url: str) -> Resolution:
        lease = self._lease
        if lease is None:
            return await self._extract_via(page_url, self._options)
        for _ in range(2 * len(lease.pool.proxies) + 1):  # each proxy meeting a bot check, twice: give up
            proxy = lease.proxy
            try:
                return await self._extract_via(page_url, {**self._options, "proxy": proxy.url})
            except ResolveError as e:
                if not e.bot_check:
                    raise
                log.warning("%s; resolving again through another proxy", e)
                await lease.leave(proxy, str(e), bot_check=True)
        raise ResolveError(f"cannot resolve {redact_url(page_url)}: every proxy met a bot check", bot_check=True)

    async def _extract_via(self, page_url: str, options: dict[str, Any]) -> Resolution:
        self.extractions += 1
        log.debug("resolving %s with yt-dlp (format %s)", redact_url(page_url), self.selector)
        try:
            info = await asyncio.wait_for(asyncio.to_thread(self._extract, page_url, options), self.timeout)
        except TimeoutError:
            raise ResolveError(f"cannot resolve {redact_url(page_url)}: no answer within {self.timeout:.0f} s",
                               network=True) from None
        except ResolveError:
            raise
        except Exception as e:  # noqa: BLE001 - a user's extractor, or yt-dlp failing unexpectedly
            raise ResolveError(f"cannot resolve {redact_url(page_url)}: {type(e).__name__}: "
                               f"{_redact_text(str(e))}", bot_check=is_bot_check(None, str(e))) from e
        res = _resolution(page_url, info)
        self._cache[page_url] = res
        return res

    async def refresh(self, page_url: str, old_url: str, like: StreamFormat) -> StreamFormat:
        """A fresh URL for format ``like`` of ``page_url`` (``old_url`` just failed).

        A resolution younger than ``cache_seconds`` whose URL for the format is not
        ``old_url`` is reused (the other stream of the pair already re-resolved)."""
        async with self._lock(page_url):
            cached = self._cache.get(page_url)
            if cached is not None and time.monotonic() - cached.extracted_at < self.cache_seconds:
                found = match_format(like, cached.available)
                if found is not None and found.url != old_url:
                    log.debug("format %s: reusing the resolution made %.1f s ago", like.format_id,
                              time.monotonic() - cached.extracted_at)
                    return found
            res = await self._extract_now(page_url)
            found = match_format(like, res.available)
            if found is None:
                raise ResolveError(f"{redact_url(page_url)} no longer offers format {like.describe()} "
                                   f"nor one with the same codecs")
            if found.format_id != like.format_id:
                log.warning("format %s is no longer offered; continuing with %s (same codecs)",
                            like.format_id, found.describe())
            return found

    def hook(self, page_url: str, like: StreamFormat) -> RefreshHook:
        """The engine's ``refresh=`` for format ``like`` of ``page_url``."""

        async def refresh(old_url: str) -> str:
            log.info("the URL of format %s expired; re-resolving %s", like.format_id, redact_url(page_url))
            new = await self.refresh(page_url, old_url, like)
            log.debug("format %s: fresh URL %s", new.format_id, new.safe_url)
            return new.url

        refresh.resolver = self  # type: ignore[attr-defined]
        return refresh


def _resolution(page_url: str, info: Mapping[str, Any]) -> Resolution:
    if info.get("_type") in ("playlist", "multi_video"):
        entries = [e for e in info.get("entries") or [] if e]
        if len(entries) != 1:
            raise ResolveError(f"{redact_url(page_url)} is a playlist of {len(entries)} entries: "
                               f"pass the URL of one video")
        info = entries[0]
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming", "post_live"):
        raise ResolveError(f"{redact_url(page_url)} is a live stream ({info.get('live_status') or 'is_live'}): "
                           f"it has no fixed size to fetch with Range requests")
    available = tuple(StreamFormat.from_info(f) for f in info.get("formats") or () if f.get("url"))
    requested = info.get("requested_formats")
    if requested:
        selected = [StreamFormat.from_info(f) for f in requested]
    elif info.get("url"):
        selected = [StreamFormat.from_info(info)]
    else:
        raise ResolveError(f"{redact_url(page_url)}: yt-dlp selected no format")
    if len(selected) > 2:
        raise ResolveError(f"the format selection gave {len(selected)} streams "
                           f"({'+'.join(f.format_id for f in selected)}); rangestream muxes one video "
                           f"and one audio stream")
    if len(selected) == 2 and not selected[0].has_video and selected[1].has_video:
        selected.reverse()  # e.g. 'ba+bv': video first
    for f in selected:
        if f.protocol and f.protocol not in ("http", "https"):
            raise ResolveError(f"format {f.format_id} is served as {f.protocol}, not as one object over "
                               f"http(s); choose another with --format")
        if not f.url.lower().startswith(("http://", "https://")):
            raise ResolveError(f"format {f.format_id} has no http(s) URL")
    if not available:
        available = tuple(selected)
    return Resolution(
        page_url=page_url,
        id=str(info.get("id") or ""),
        title=str(info.get("title") or info.get("id") or ""),
        ext=info.get("ext"),
        formats=tuple(selected),
        available=available,
        extracted_at=time.monotonic(),
    )


def refresh_hook(page_url: str, format_id: str | StreamFormat, *, resolver: Resolver | None = None,
                 **resolver_options: Any) -> RefreshHook:
    """The engine's ``refresh=`` hook for one format of a page::

        hook = refresh_hook("https://www.youtube.com/watch?v=ID", "137")
        async with rangestream.open_stream(url, refresh=hook) as s: ...

    ``format_id``: the format's id (itag on YouTube) or a :class:`StreamFormat`
    (which also lets a refresh fall back to the same codecs and size). Pass one
    ``resolver`` to the hooks of a video/audio pair so that they share its cache.
    """
    resolver = resolver or Resolver(**resolver_options)
    like = format_id if isinstance(format_id, StreamFormat) else StreamFormat(format_id=str(format_id), url="")
    return resolver.hook(page_url, like)
