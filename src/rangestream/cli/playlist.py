"""Playlist and channel pages: yt-dlp lists the entries without extracting each one (flat
extraction); ``--playlist-items`` selects; each entry becomes a job of its own."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from urllib.parse import urlsplit

from ..headers import is_page_url
from ..redact import redact_url
from .args import check_url
from .exits import UsageError
from .jobs import Job, archive_key, item_selected, parse_items, youtube_id
from .proxies import resolver_proxy

_LIST_PATHS = ("playlist", "channel", "c", "user")


def may_be_playlist(url: str, args: argparse.Namespace) -> bool:
    """Worth a flat extraction: a YouTube playlist or channel URL, or any URL with --resolve (yt-dlp's
    generic extractor finds RSS feeds and playlists in pages). A watch URL is one video, even with
    ``&list=`` (as yt-dlp's --no-playlist)."""
    if is_page_url(url):
        segs = [s for s in urlsplit(url).path.split("/") if s]
        return bool(segs) and (segs[0] in _LIST_PATHS or segs[0].startswith("@")) and youtube_id(url) is None
    return bool(args.resolve)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    from ..refresh import YdlLogger, build_selector

    options: dict[str, Any] = {
        "quiet": True, "no_warnings": True, "noprogress": True, "skip_download": True,
        "extract_flat": "in_playlist", "logger": YdlLogger(), "socket_timeout": 30,
        "format": build_selector(args.ytdl_format, args.max_height), "ignore_no_formats_error": True,
    }
    proxy = resolver_proxy(args)  # --proxy-file: the command's proxy, held while the list is read
    if isinstance(proxy, str) and proxy:
        options["proxy"] = proxy
    elif proxy is not None and not isinstance(proxy, str):
        options["proxy"] = proxy.proxy.url
    if args.cookies:
        options["cookiefile"] = args.cookies
    return options


async def playlist_jobs(args: argparse.Namespace, url: str, display: Any) -> list[Job] | None:
    """The selected entries of ``url`` as jobs, or None when it is not a playlist."""
    from ..refresh import ResolveError, ytdlp_extract

    ranges = parse_items(args.playlist_items) if args.playlist_items else None
    display.note(f"rangestream: listing {redact_url(url)} with yt-dlp")
    try:
        info = await asyncio.wait_for(asyncio.to_thread(ytdlp_extract, url, _options(args)), 120)
    except TimeoutError:
        raise ResolveError(f"cannot list {redact_url(url)}: no answer within 120 s", network=True) from None
    if info.get("_type") not in ("playlist", "multi_video"):
        return None
    jobs = []
    entries = [e for e in info.get("entries") or [] if isinstance(e, dict)]
    for index, entry in enumerate(entries, 1):
        if item_selected(index, ranges) and (job := _entry_job(args, entry, index, info)) is not None:
            jobs.append(job)
    display.note(f"rangestream: {info.get('title') or 'playlist'}: {len(entries)} entries, "
                 f"{len(jobs)} selected")
    if not jobs and entries:
        raise UsageError(f"--playlist-items {args.playlist_items} selects none of the {len(entries)} entries")
    return jobs


def _entry_job(args: argparse.Namespace, entry: dict[str, Any], index: int, info: dict[str, Any]) -> Job | None:
    from yt_dlp.utils import unsmuggle_url

    url = unsmuggle_url(str(entry.get("url") or entry.get("webpage_url") or ""))[0]
    if entry.get("ie_key") == "Youtube" and youtube_id(f"https://youtu.be/{url}"):
        url = f"https://www.youtube.com/watch?v={url}"  # a flat YouTube entry may give the bare id
    try:
        check_url(url)
    except UsageError:
        return None  # an entry with no http(s) URL cannot be a job
    page = bool(args.resolve) or is_page_url(url)
    ie, vid = entry.get("ie_key"), entry.get("id")
    key = f"{str(ie).lower()} {vid}" if ie and vid else archive_key(url, page)
    fields: dict[str, object] = {"playlist_index": index, "playlist": info.get("title"),
                                 "playlist_title": info.get("title"), "playlist_id": info.get("id")}
    if entry.get("title"):
        fields["title"] = entry["title"]
    if vid:
        fields["id"] = vid
    return Job(url=url, page=page, key=key, fields=fields)
