"""What ``get`` is asked to download: the URLs (arguments and ``-i FILE``), each as a job with the
key the download archive knows it by; where each job's file goes (``-o`` as a file, a directory or
a template), with no two jobs ever given one path; ``--playlist-items``."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from ..output import DownloadArchive, default_output_name, is_template, render_template, safe_file_name
from ..output.names import fit_path
from ..redact import redact_url
from .args import check_url
from .exits import UsageError

MAX_INPUT_BYTES = 16 << 20


@dataclass
class Job:
    url: str
    page: bool  # resolved with yt-dlp (a page URL, or --resolve)
    key: str  # what --download-archive lists it as
    fields: dict[str, object] = field(default_factory=dict)  # template fields known before any request
    label: str = ""


def archived(job: Job, archive: DownloadArchive | None) -> bool:
    """Whether ``--download-archive`` lists ``job`` (by its key or its URL): skipped, no request."""
    return archive is not None and (job.key in archive or job.url in archive)


async def record(job: Job, archive: DownloadArchive | None) -> None:
    """``job`` completed: appended to ``--download-archive``."""
    if archive is not None:
        await asyncio.to_thread(archive.add, job.key)


def read_url_list(path: str) -> list[tuple[str, str]]:
    """``-i FILE`` (``-``: stdin): (where, URL) per line; blank lines and ``#`` comments skipped."""
    try:
        if path == "-":
            text = sys.stdin.read(MAX_INPUT_BYTES + 1)
        else:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read(MAX_INPUT_BYTES + 1)
    except OSError as e:
        raise UsageError(f"-i {path}: cannot read it ({e.strerror or e})") from None
    if len(text) > MAX_INPUT_BYTES:
        raise UsageError(f"-i {path}: larger than {MAX_INPUT_BYTES >> 20} MiB")
    text = text.removeprefix("\ufeff")  # a byte-order mark (Windows editors save one) is not part of a URL
    name = "stdin" if path == "-" else path
    return [(f"{name}:{n}", line.strip()) for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.strip().startswith("#")]


def collect_urls(args: argparse.Namespace) -> list[str]:
    """Every URL asked for, checked (a bad one is a usage error naming its line), each once."""
    given = [("argument", u) for u in args.urls]
    if args.input_file:
        given += read_url_list(args.input_file)
    if not given:
        raise UsageError("no URL: give one or more URLs, or -i FILE")
    urls: list[str] = []
    for where, url in given:
        try:
            check_url(url)
        except UsageError as e:
            raise UsageError(f"{where}: {e}" if where != "argument" else str(e)) from None
        if url not in urls:
            urls.append(url)
    return urls


_YT_ID = re.compile(r"[A-Za-z0-9_-]{11}")


def youtube_id(url: str) -> str | None:
    """The video id of a YouTube watch/shorts/youtu.be URL, read from the URL alone."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    segs = [s for s in parts.path.split("/") if s]
    candidate = None
    if host == "youtu.be" or host.endswith(".youtu.be"):
        candidate = segs[0] if segs else None
    elif segs[:1] == ["watch"]:
        candidate = next(iter(parse_qs(parts.query).get("v", [])), None)
    elif len(segs) >= 2 and segs[0] in ("shorts", "live", "embed", "v"):
        candidate = segs[1]
    return candidate if candidate and _YT_ID.fullmatch(candidate) else None


def archive_key(url: str, page: bool) -> str:
    """yt-dlp's ``youtube ID`` for a YouTube video; otherwise the URL, secrets masked."""
    if page and (vid := youtube_id(url)):
        return f"youtube {vid}"
    return redact_url(url)


def parse_items(spec: str) -> list[tuple[int, int | None]]:
    """``1-5,8,12-`` as 1-based inclusive (first, last or None) ranges."""
    out: list[tuple[int, int | None]] = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:(-)\s*(\d*)\s*)?", part)
        if not m or int(m.group(1)) < 1:
            raise UsageError(f"--playlist-items {spec!r}: use 1-based numbers and ranges like 1-5,8,12-")
        first = int(m.group(1))
        last = None if m.group(2) and not m.group(3) else int(m.group(3) or first)
        if last is not None and last < first:
            raise UsageError(f"--playlist-items {spec!r}: {first}-{last} is empty")
        out.append((first, last))
    return out


def item_selected(index: int, ranges: list[tuple[int, int | None]] | None) -> bool:
    return ranges is None or any(a <= index and (b is None or index <= b) for a, b in ranges)


def direct_fields(url: str) -> dict[str, object]:
    """Template fields of a direct URL: its file name as title and id, its extension as ext."""
    name = default_output_name(url)
    stem, ext = os.path.splitext(name)
    return {"title": stem or name, "id": stem or name, "ext": ext.lstrip(".") or "bin"}


class Placer:
    """``-o`` turned into each job's path, before any byte is written: two jobs are never given
    the same path (the later one gets ``NAME.1.EXT``, ``NAME.2.EXT``...), in the order asked.
    Awaited, as ``Context.place`` is: a batch job waits there for its turn (batch._placing)."""

    def __init__(self, output: str | None, several: bool) -> None:
        if output == "-" and several:
            raise UsageError("-o - streams one download: with several URLs give a directory (-o DIR/) "
                             "or a template (-o '%(title)s.%(ext)s')")
        self.template = output if is_template(output) else None
        self.directory = output if output and not self.template and (
            output.endswith(os.sep) or os.path.isdir(output)) else None
        if output and several and not self.template and not self.directory:
            raise UsageError(f"-o {output} names one file: with several URLs give a directory (-o DIR/) or "
                             f"a template (-o '%(title)s.%(ext)s')")
        self.output = output
        self._claimed: set[str] = set()

    async def __call__(self, fields: dict[str, object], default_name: str) -> str:
        if self.template is not None:
            try:
                path = render_template(self.template, fields)
            except ValueError as e:
                raise UsageError(str(e)) from None
        elif self.directory is not None:
            path = os.path.join(self.directory, safe_file_name(default_name, directory=self.directory))
        elif self.output:
            path = self.output
        else:
            path = safe_file_name(default_name)
        path = self._claim(path)
        parent = os.path.dirname(path)
        if parent and (self.template or self.directory):
            os.makedirs(parent, exist_ok=True)  # DIR/ or the template's directories
        return path

    def _claim(self, path: str) -> str:
        candidate, n = path, 0
        while self._key(candidate) in self._claimed:
            n += 1
            # Room for ".N" within the filesystem's name limit, which a long title already fills.
            stem, ext = os.path.splitext(fit_path(path, reserve=len(f".{n}")))
            candidate = f"{stem}.{n}{ext}"
        self._claimed.add(self._key(candidate))
        return candidate

    @staticmethod
    def _key(path: str) -> str:
        # Case folded even where the filesystem tells case apart: a download directory on a
        # case-insensitive one (macOS, a FAT/exFAT stick, a Windows share) would otherwise give
        # "Clip.mp4" and "clip.mp4" one file.
        return os.path.normcase(os.path.abspath(path)).casefold()


class NameOrder:
    """Names given in the order asked, whatever order the jobs get to them in: a page job only
    knows its title once yt-dlp has resolved it, and with ``-j N`` or ``--proxy-file`` (a job waits
    for a proxy) the second page may resolve first. Numbering clashes in arrival order would give
    the same list different names on each run: a re-run would then find video A's file under
    video B's name, skip B as "already exists" and record it in the archive.

    Job ``i`` may take its name (:meth:`turn`) once every earlier job has its own or has ended
    (:meth:`done`): it resolves its page alongside the others and waits only for the name itself;
    its download then runs alongside the earlier ones. The same chain orders proxy leases (batch)."""

    def __init__(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        self._ready = [loop.create_future() for _ in range(count)]  # job i and all before it: named
        self._done = [False] * count

    async def turn(self, index: int) -> None:
        if index:
            await asyncio.shield(self._ready[index - 1])

    def done(self, index: int) -> None:
        """Job ``index`` has its name, or never will (failed, skipped, cancelled)."""
        self._done[index] = True
        while index < len(self._ready) and self._done[index] and (index == 0 or self._ready[index - 1].done()):
            if not self._ready[index].done():
                self._ready[index].set_result(None)
            index += 1
