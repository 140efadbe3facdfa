"""The ``rangestream`` command line: ``get``, ``mux``, ``origin`` and ``demo``.

``rangestream get URL -o FILE`` writes ``FILE.part`` at the offsets the pieces
arrive at (any chunk of the window, ``Stream.unordered()``), records the
completed spans in ``FILE.part.json`` (the sidecar, as aria2's control file),
and renames ``FILE.part`` to ``FILE`` once every byte is there. A later run
resumes from the sidecar: only the missing spans are fetched, and only if the
object's size and validators (ETag, Last-Modified) still match.

``rangestream get URL -o -`` streams the object to stdout in order.

Nothing but payload bytes ever goes to stdout with ``-o -``: progress, the
summary, warnings, errors and ``--json`` go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import concurrent.futures
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import select
import signal
import stat
import sys
import tempfile
import threading
import time
import traceback
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import (
    HTTPStatusError,
    InvalidURLError,
    MuxError,
    ObjectChangedError,
    ProxyError,
    RangestreamError,
    RetriesExhaustedError,
    StreamError,
    TLSError,
    TooManyRedirectsError,
    URLExpiredError,
)
from ..plan import DEFAULT_CHUNK_SIZE, missing_ranges, parse_size, url_param
from ..redact import redact_text, redact_url

__all__ = ["main", "EXIT_CODES"]

PROG = "rangestream"

# -- exit codes -------------------------------------------------------------------

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NETWORK = 3
EXIT_HTTP = 4
EXIT_CHANGED = 5
EXIT_LOCAL_IO = 6
EXIT_PROXY = 7
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C); SIGTERM gives 143
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (like a process killed by SIGPIPE)

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILURE: "other failure (a bug, an undecodable input to mux, ...)",
    EXIT_USAGE: "usage: bad flag, bad value, bad URL",
    EXIT_NETWORK: "network: host unreachable, connection failures or timeouts outlasted --retries, "
                  "TLS certificate not trusted (see --cacert, --insecure)",
    EXIT_HTTP: "HTTP error status (404, 410, ...), an expired/forbidden URL that cannot be refreshed, "
               "too many redirects (a redirect loop)",
    EXIT_CHANGED: "the object changed on the server during the download",
    EXIT_LOCAL_IO: "local I/O: disk full, permission denied, no such directory, FILE.part is a symlink "
                   "or not a regular file",
    EXIT_PROXY: "proxy refused (authentication required: HTTP 407 from --proxy)",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C (SIGINT) after saving the sidecar; 143 for SIGTERM",
    EXIT_BROKEN_PIPE: "stdout (or a FIFO given to -o) was closed by its reader (e.g. '| head -c 100'); "
                      "nothing is printed",
}

ENV_VARS = {
    "RANGESTREAM_PROXY": "default for --proxy",
    "RANGESTREAM_CHUNK_SIZE": "default for --chunk-size",
    "RANGESTREAM_WINDOW": "default for --window",
    "RANGESTREAM_RETRIES": "default for --retries",
    "RANGESTREAM_TIMEOUT": "default for --timeout",
    "RANGESTREAM_COOKIES": "default for --cookies",
    "RANGESTREAM_CACERT": "default for --cacert",
    "NO_COLOR": "disables colours in the progress display",
}

MB = 1_000_000
CHECKPOINT_EVERY = 0.5  # seconds between sidecar saves (and fdatasync of FILE.part)
PLAIN_PROGRESS_EVERY = 2.0  # seconds between plain progress lines when stderr is not a terminal
SIDECAR_VERSION = 1


class UsageError(Exception):
    """A bad flag value or URL found after argparse: exit 2."""


class LocalIOError(Exception):
    """A local file could not be written/renamed (disk full, permission...): exit 6."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# -- small helpers --------------------------------------------------------------------


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "?"
    n = float(n)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def human_seconds(s: float | None) -> str:
    if s is None or s != s or s == float("inf"):
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def check_url(url: str) -> str:
    """Reject what can never be fetched before any connection is made."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        raise UsageError(f"bad URL {redact_url(url)}: {e}") from None
    if parts.scheme.lower() not in ("http", "https"):
        what = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise UsageError(f"bad URL {redact_url(url)}: only http:// and https:// URLs can be fetched ({what})")
    if not parts.hostname:
        raise UsageError(f"bad URL {redact_url(url)}: no host")
    if port == 0:
        raise UsageError(f"bad URL {redact_url(url)}: port 0")
    if any(c.isspace() for c in url):
        raise UsageError(f"bad URL {redact_url(url)}: contains whitespace (quote it, or encode spaces as %20)")
    return url


PROXY_SCHEMES = ("http", "https", "socks5", "socks5h", "socks4", "socks4a")


def check_proxy(proxy: str | None) -> str | None:
    if not proxy:
        return None
    try:
        parts = urlsplit(proxy)
        parts.port
    except ValueError as e:
        raise UsageError(f"bad proxy URL {redact_url(proxy)}: {e}") from None
    if parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname:
        raise UsageError(f"bad proxy URL {redact_url(proxy)}: use SCHEME://[user:pass@]host:port with "
                         f"SCHEME one of {', '.join(PROXY_SCHEMES)}")
    return proxy


def default_output_name(url: str) -> str:
    """Like wget: the last path segment; googlevideo's /videoplayback gets ``ID.EXT``."""
    parts = urlsplit(url)
    name = unquote(parts.path.rsplit("/", 1)[-1])
    if name == "videoplayback":
        ident = url_param(url, "id") or "videoplayback"
        mime = (url_param(url, "mime") or "").lower()
        ext = {"video/mp4": "mp4", "audio/mp4": "m4a", "video/webm": "webm", "audio/webm": "webm"}.get(mime, "bin")
        itag = url_param(url, "itag")
        name = f"{ident}{'.' + itag if itag else ''}.{ext}"
    return safe_file_name(name, "download")


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


MAX_WINDOW = 64  # requests in flight: more only hurts a CDN (and the per-host limit caps it anyway)
MIN_RATE, MAX_RATE = 0.01, 10_000.0  # --requests-per-second: one request per 100 s .. no real limit


def _int_in(text: str, least: int, most: int | None, not_int: str, out_of_range: str) -> int:
    """``text`` as an int in ``[least, most]``; the messages name what was wrong (``{text}``, ``{n}``)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(not_int.format(text=repr(text))) from None
    if n < least or (most is not None and n > most):
        raise argparse.ArgumentTypeError(out_of_range.format(n=n))
    return n


def _window_arg(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    return _int_in(text, 1, MAX_WINDOW, f"not a window: {{text}} (an integer 1..{MAX_WINDOW}, or 'auto')",
                   f"window must be 1..{MAX_WINDOW} or 'auto', not {{n}}")


def _max_window_arg(text: str) -> int:
    return _int_in(text, 1, MAX_WINDOW, "not an integer: {text}", f"must be 1..{MAX_WINDOW}, not {{n}}")


def _count_arg(text: str) -> int:
    return _int_in(text, 0, None, "not an integer: {text}", "must be >= 0, not {n}")


def _positive_int_arg(text: str) -> int:
    return _int_in(text, 1, None, "not an integer: {text}", "must be >= 1, not {n}")


def _seconds_arg(text: str, *, allow_zero: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value != value or value < 0 or (value == 0 and not allow_zero) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be {'>= 0' if allow_zero else '> 0'} seconds, not {text!r}")
    return value


def _rate_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not MIN_RATE <= value <= MAX_RATE:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be {MIN_RATE:g}..{MAX_RATE:g} requests per second, not {text!r}")
    return value


def _backoff_arg(text: str) -> float:
    return _seconds_arg(text, allow_zero=True)


def _header_arg(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
        raise argparse.ArgumentTypeError(f"not a header: {text!r} (use 'Name: value')")
    if "\r" in value or "\n" in value:
        raise argparse.ArgumentTypeError("header values cannot contain line breaks")
    return name, value.strip()


def _from_env(args: argparse.Namespace, dest: str, env: str, conv: Callable[[str], Any], default: Any) -> None:
    """Fill ``args.dest`` from ``env`` when the flag was not given; a bad value is a usage error."""
    if getattr(args, dest, None) is not None:
        return
    raw = os.environ.get(env)
    if raw is None or raw.strip() == "":
        setattr(args, dest, default)
        return
    try:
        setattr(args, dest, conv(raw))
    except (argparse.ArgumentTypeError, ValueError) as e:
        raise UsageError(f"environment variable {env}={raw!r}: {e}") from None


def _apply_env(args: argparse.Namespace) -> None:
    _from_env(args, "chunk_size", "RANGESTREAM_CHUNK_SIZE", _size_arg, DEFAULT_CHUNK_SIZE)
    _from_env(args, "window", "RANGESTREAM_WINDOW", _window_arg, "auto")
    _from_env(args, "retries", "RANGESTREAM_RETRIES", _count_arg, 3)
    _from_env(args, "timeout", "RANGESTREAM_TIMEOUT", _seconds_arg, 30.0)
    _from_env(args, "proxy", "RANGESTREAM_PROXY", str, None)
    _from_env(args, "cookies", "RANGESTREAM_COOKIES", str, None)
    _from_env(args, "cacert", "RANGESTREAM_CACERT", str, None)
    args.proxy = check_proxy(args.proxy)
    args.cacert = check_cacert(args.cacert)


def check_cacert(path: str | None) -> str | None:
    """``--cacert FILE`` must be a readable file (PEM certificates), found before any connection."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise UsageError(f"--cacert {path}: cannot read it ({e.strerror or e})") from None
    return path


def stream_options(args: argparse.Namespace) -> dict[str, Any]:
    from ..retry import Retry, Timeouts

    opts: dict[str, Any] = {
        "chunk_size": args.chunk_size,
        "window": args.window,
        "retry": Retry(attempts=args.retries, backoff=args.backoff),
        "timeouts": Timeouts(request=args.timeout, idle=args.idle_timeout, prefetch=args.prefetch_timeout),
    }
    if args.window == "auto":
        opts["ceiling"] = args.max_window
    if args.max_buffer is not None:
        opts["max_buffer"] = args.max_buffer
    if args.range_mode != "header":
        opts["range_mode"] = args.range_mode
    if getattr(args, "_refresh", None) is not None:
        opts["refresh"] = args._refresh
    if getattr(args, "_headers", None):
        opts["headers"] = dict(args._headers)
    return opts


def make_client(args: argparse.Namespace):
    """The engine's Client from the flags; configuration it refuses is a usage error (exit 2)."""
    from ..client import Client

    kw: dict[str, Any] = {"headers": dict(args.header or []), "proxy": args.proxy}
    if getattr(args, "cookies", None):
        kw["cookies_file"] = args.cookies
    if getattr(args, "requests_per_second", None):
        kw["requests_per_second"] = args.requests_per_second
    if getattr(args, "impersonate", None):
        kw["impersonate"] = args.impersonate
    # Passed only when given, so the defaults stay the Client's own (verify with the system's CAs).
    if getattr(args, "cacert", None):
        kw["cacert"] = args.cacert
    if getattr(args, "insecure", False):
        kw["insecure"] = True
    try:
        return Client(**kw)
    except (InvalidURLError, ValueError) as e:
        raise UsageError(str(e)) from None
    except RangestreamError as e:  # an unreadable cookies file, SOCKS support not installed
        raise UsageError(str(e)) from None


def refresh_hook(command: str | None, display: Display):
    """``--refresh-command``: a shell command printing a fresh URL (e.g. ``yt-dlp -g -f 137 ID``),
    run when the CDN says the URL expired (401/403)."""
    if not command:
        return None

    async def refresh(old_url: str) -> str:
        display.note(f"{PROG}: the URL expired; running --refresh-command for a fresh one")
        env = {**os.environ, "RANGESTREAM_EXPIRED_URL": old_url}
        proc = await asyncio.create_subprocess_shell(
            command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 120)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise RangestreamError("--refresh-command timed out after 120 s") from None
        if proc.returncode != 0:
            # Its last stderr line says why; such tools print the URLs they failed on, signatures and all.
            tail = redact_text(err.decode(errors="replace").strip()).splitlines()[-1:]
            raise RangestreamError(f"--refresh-command exited with {proc.returncode}"
                                   + (f": {tail[0][:200]}" if tail else ""))
        for line in out.decode(errors="replace").splitlines():
            line = line.strip()
            if line.lower().startswith(("http://", "https://")):
                return line
        raise RangestreamError("--refresh-command printed no http(s) URL")

    return refresh


# -- the display -----------------------------------------------------------------------


def make_console(quiet: bool = False):
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, quiet=False)


class Display:
    """Progress on stderr: a rich bar on a terminal, a plain line every ~2 s otherwise,
    nothing with ``--quiet``. Also where warnings and the summary are printed."""

    def __init__(self, console, *, quiet: bool = False, plain_every: float = PLAIN_PROGRESS_EVERY) -> None:
        self.console = console
        self.quiet = quiet
        self.mode = "quiet" if quiet else ("rich" if console.is_terminal else "plain")
        self.plain_every = plain_every
        self._progress = None
        self._task = None
        self._label = ""
        self._last_plain = 0.0
        self._last_bytes = 0
        self._started = 0.0
        self._total: int | None = None
        self._first = 0

    # messages -------------------------------------------------------------------------
    def note(self, message: str, style: str | None = None) -> None:
        """An informational line (suppressed by --quiet)."""
        if not self.quiet:
            self.console.print(message, style=style, markup=False, highlight=False)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"{PROG}: warning: {message}", style="yellow", markup=False, highlight=False)

    def error(self, message: str) -> None:
        """Errors are shown even with --quiet."""
        self.console.print(f"{PROG}: error: {message}", style="bold red", markup=False, highlight=False)

    # progress ----------------------------------------------------------------------------
    def start(self, label: str, total: int | None, completed: int = 0) -> None:
        self.stop()
        self._label, self._total, self._first = label, total, completed
        now = time.monotonic()
        self._started = self._last_plain = now
        self._last_bytes = completed
        if self.mode != "rich":
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=True,
            refresh_per_second=8,
            speed_estimate_period=5.0,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=total, completed=completed, info="")

    def update(self, completed: int, total: int | None = None, *, active: int | None = None,
               retries: int = 0) -> None:
        if total is not None:
            self._total = total
        info = []
        if active is not None:
            info.append(f"{active} conn{'s' if active != 1 else ''}")
        info.append(f"{retries} retr{'ies' if retries != 1 else 'y'}")
        if self.mode == "rich" and self._progress is not None:
            self._progress.update(self._task, completed=completed, total=self._total, info=" · ".join(info))
        elif self.mode == "plain":
            now = time.monotonic()
            if now - self._last_plain < self.plain_every:
                return
            speed = (completed - self._last_bytes) / max(now - self._last_plain, 1e-6)
            self._last_plain, self._last_bytes = now, completed
            parts = [f"{human_bytes(completed)} / {human_bytes(self._total)}"]
            if self._total:
                parts[0] += f" ({100 * completed / self._total:.0f}%)"
            parts.append(f"{speed / MB:.1f} MB/s")
            if self._total and speed > 0:
                parts.append(f"ETA {human_seconds((self._total - completed) / speed)}")
            parts.extend(info)
            self.console.print(f"{PROG}: {self._label}: " + ", ".join(parts), markup=False, highlight=False)

    def stop(self) -> None:
        if self._progress is not None:
            with contextlib.suppress(Exception):
                self._progress.stop()
        self._progress = None
        self._task = None


_TRAILING_URL = re.compile(r" \((?:https?://)[^()\s]*\)$")


class _LogHandler(logging.Handler):
    """Engine log records (retries, refreshes) printed above the progress bar."""

    def __init__(self, display: Display) -> None:
        super().__init__()
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001
            return
        # The engine ends retry warnings with the (redacted) URL: one URL per command, already known.
        # Redacted again: a refresh hook's or a server's text may carry signatures or proxy passwords.
        msg = redact_text(_TRAILING_URL.sub("", msg))
        if record.levelno >= logging.WARNING:
            self.display.warn(msg)
        else:
            self.display.note(f"{PROG}: {msg}")


def setup_logging(display: Display, args: argparse.Namespace) -> None:
    logger = logging.getLogger("rangestream")
    for h in list(logger.handlers):
        if isinstance(h, _LogHandler):
            logger.removeHandler(h)
    logger.addHandler(_LogHandler(display))
    logger.propagate = False
    if getattr(args, "debug", False):
        logger.setLevel(logging.DEBUG)
    elif getattr(args, "verbose", False):
        logger.setLevel(logging.INFO)
    elif display.quiet:
        logger.setLevel(logging.CRITICAL)
    else:
        logger.setLevel(logging.WARNING)


async def _ticker(fn: Callable[[], None], every: float = 0.1) -> None:
    while True:
        fn()
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def ticking(fn: Callable[[], None], every: float = 0.1):
    task = asyncio.ensure_future(_ticker(fn, every))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


# -- the summary ---------------------------------------------------------------------------


@dataclass
class Summary:
    command: str
    url: str | None = None
    output: str | None = None
    size: int | None = None
    bytes: int = 0  # fetched by this run
    resumed_from: int = 0  # bytes already in FILE.part before this run
    seconds: float = 0.0
    requests: int = 0
    retries: int = 0
    refreshes: int = 0
    window: int | str | None = None
    window_max: int = 0
    window_mean: float = 0.0
    connections_max: int = 0
    splits: int = 0
    sha256: str | None = None
    restarted: str | None = None  # why a resume started over
    ok: bool = False
    exit_code: int = EXIT_FAILURE
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def add_stats(self, stream) -> None:
        s = stream.stats
        self.requests += s.requests
        self.retries += s.retries
        self.refreshes += s.refreshes
        self.window_max = max(self.window_max, s.window_max)
        self.connections_max = max(self.connections_max, getattr(s, "connections_max", 0))
        self.window_mean = round(s.window_mean, 2) if s.window_samples else self.window_mean
        self.splits += getattr(s, "splits", 0)

    def as_json(self) -> dict[str, Any]:
        mbps = self.bytes / self.seconds / MB if self.seconds > 0 else 0.0
        d = {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "command": self.command,
            "url": self.url,
            "output": self.output,
            "size": self.size,
            "bytes": self.bytes,
            "resumed_from": self.resumed_from,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(mbps, 2),
            "requests": self.requests,
            "retries": self.retries,
            "refreshes": self.refreshes,
            "window": self.window,
            "window_max": self.window_max,
            "window_mean": self.window_mean,
            "connections_max": self.connections_max,
            "splits": self.splits,
        }
        if self.sha256 is not None:
            d["sha256"] = self.sha256
        if self.restarted:
            d["restarted"] = self.restarted
        if self.error is not None:
            d["error"] = self.error
        d.update(self.extra)
        return d


def write_json_summary(args: argparse.Namespace, summary: Summary, console) -> None:
    text = json.dumps(summary.as_json(), sort_keys=False)
    path = getattr(args, "json_file", None)
    if path:
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        except OSError as e:
            console.print(f"{PROG}: error: cannot write --json-file {path}: {e.strerror or e}",
                          markup=False, highlight=False)
    if getattr(args, "json", False):
        # One line, last on stderr, so `2>&1 >/dev/null | tail -1 | jq` works.
        sys.stderr.flush()
        console.file.write(text + "\n")
        console.file.flush()


def summary_line(summary: Summary) -> str:
    rate = summary.bytes / summary.seconds / MB if summary.seconds > 0 else 0.0
    what = human_bytes(summary.size if summary.size is not None else summary.bytes + summary.resumed_from)
    if summary.command == "get" and summary.extra.get("output_kind"):
        head = f"Wrote {what} to {summary.output}"
    elif summary.command == "get" and summary.output not in (None, "-"):
        head = f"Saved {summary.output} ({what})"
        if summary.resumed_from:
            head += f", resumed: fetched {human_bytes(summary.bytes)}"
    elif summary.command == "mux":
        head = f"Muxed {human_bytes(summary.bytes)} of input into {summary.output}"
    else:
        head = f"Streamed {what} to stdout"
    window = summary.window
    wtxt = f"window {window}" + (f" (max {summary.window_max})" if window == "auto" else "")
    return (f"{head} in {summary.seconds:.2f} s at {rate:.1f} MB/s · {summary.requests} requests, "
            f"{summary.retries} retries" + (f", {summary.refreshes} refreshes" if summary.refreshes else "")
            + f" · {wtxt}")


# -- output files: part file, sidecar, names ---------------------------------------------------
#
# Everything here treats the directory as possibly shared with someone hostile and the sidecar
# as possibly tampered with: FILE.part is never opened through a symlink, the sidecar is replaced
# through a fresh temporary file, and nothing a sidecar says is used before it is validated
# (then the size, validators and URL identity are checked against the server).

MAX_SIDECAR_BYTES = 1 << 20  # a real one lists a few spans per connection: ~30 bytes each
MAX_SIDECAR_SPANS = 4096
MAX_VALIDATOR_CHARS = 1024
SIDECAR_SUFFIX = ".part.json"


class Spans:
    """Sorted, merged, half-open ``[start, stop)`` spans of bytes known to be in FILE.part."""

    def __init__(self, spans: list[tuple[int, int]] | None = None) -> None:
        self._s: list[list[int]] = _merged(spans or [])

    def add(self, a: int, b: int) -> None:
        """Record ``[a, b)``: a binary search and a local merge (pieces arrive in order per chunk,
        so this usually extends one span), never a sort of the whole list."""
        if b <= a:
            return
        s = self._s
        i = bisect.bisect_right(s, a, key=lambda span: span[0])
        if i and s[i - 1][1] >= a:
            i -= 1
            s[i][1] = max(s[i][1], b)
        else:
            s.insert(i, [a, b])
        j = i + 1
        while j < len(s) and s[j][0] <= s[i][1]:
            s[i][1] = max(s[i][1], s[j][1])
            j += 1
        del s[i + 1:j]

    def clip(self, limit: int) -> None:
        self._s = [[a, min(b, limit)] for a, b in self._s if a < limit]

    def total(self) -> int:
        return sum(b - a for a, b in self._s)

    def covers(self, size: int) -> bool:
        return size == 0 or (len(self._s) == 1 and self._s[0][0] == 0 and self._s[0][1] >= size)

    def as_list(self) -> list[list[int]]:
        return [list(x) for x in self._s]

    def __len__(self) -> int:
        return len(self._s)


def _merged(spans) -> list[list[int]]:
    """One sort, one pass: overlapping and touching spans joined."""
    out: list[list[int]] = []
    for a, b in sorted((a, b) for a, b in spans if b > a):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


class SidecarInvalid(ValueError):
    """The sidecar cannot be trusted; the message says why (shown with "starting over")."""


def _no_floats(text: str) -> Any:
    raise SidecarInvalid(f"a number that is not an integer ({text[:40]})")


def read_sidecar(path: str) -> dict[str, Any]:
    """The sidecar's JSON object, read without following a symlink and bounded in size;
    only integers are accepted as numbers (``1e400``, ``NaN`` and ``1.5`` are refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise SidecarInvalid(f"it cannot be opened ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SidecarInvalid("it is not a regular file")
        raw = f.read(MAX_SIDECAR_BYTES + 1)
    if len(raw) > MAX_SIDECAR_BYTES:
        raise SidecarInvalid(f"it is larger than {human_bytes(MAX_SIDECAR_BYTES)}")
    try:
        data = json.loads(raw.decode("utf-8"), parse_float=_no_floats, parse_constant=_no_floats)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise SidecarInvalid(f"it is not valid JSON ({e})") from None
    except ValueError as e:  # an integer too long to convert, or _no_floats
        raise SidecarInvalid(str(e)[:200]) from None
    if not isinstance(data, dict):
        raise SidecarInvalid("it is not a JSON object")
    return data


def _int_field(d: dict[str, Any], key: str, *, least: int, most: int | None = None) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < least or (most is not None and v > most):
        bound = f"{least}..{most}" if most is not None else f">= {least}"
        raise SidecarInvalid(f"{key} must be an integer {bound}, not {str(v)[:40]}")
    return v


def _str_field(d: dict[str, Any], key: str) -> str | None:
    v = d.get(key)
    if v is not None and (not isinstance(v, str) or len(v) > MAX_VALIDATOR_CHARS):
        raise SidecarInvalid(f"{key} must be a short string")
    return v


def _done_field(d: dict[str, Any], size: int) -> list[list[int]]:
    done = d.get("done")
    if not isinstance(done, list):
        raise SidecarInvalid("done must be a list of [start, stop] spans")
    if len(done) > MAX_SIDECAR_SPANS:
        raise SidecarInvalid(f"it lists {len(done)} spans (at most {MAX_SIDECAR_SPANS})")
    for i, span in enumerate(done):
        if (not isinstance(span, list) or len(span) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in span)):
            raise SidecarInvalid(f"done[{i}] is not a pair of integers")
        a, b = span
        if not 0 <= a < b <= size:
            raise SidecarInvalid(f"done[{i}] = [{a}, {b}] is not within 0 <= start < stop <= size ({size})")
    return _merged(done)


def url_identity(url: str) -> tuple[str, ...]:
    """What names the object in a URL, across re-signing and refreshes: googlevideo's id and itag
    (its host and signature change every time), else the host and path."""
    parts = urlsplit(url)
    segs = parts.path.split("/")
    if "videoplayback" in segs:
        after = segs[segs.index("videoplayback") + 1:]
        path_params = dict(zip(after[::2], after[1::2]))  # the /name/value/ path form
        return ("videoplayback", url_param(url, "id") or path_params.get("id", ""),
                url_param(url, "itag") or path_params.get("itag", ""))
    return ((parts.hostname or "").lower(), parts.path)


@dataclass
class SidecarState:
    url: str
    size: int
    etag: str | None
    last_modified: str | None
    chunk_size: int
    done: list[list[int]]
    lmt: str | None = None

    @classmethod
    def parse(cls, d: dict[str, Any]) -> SidecarState:
        """Validated fields, or :class:`SidecarInvalid` saying which one is wrong."""
        if d.get("version") != SIDECAR_VERSION:
            raise SidecarInvalid(f"unknown version {str(d.get('version'))[:20]}")
        if d.get("size") is None:
            raise SidecarInvalid("the object's size was unknown when it was started")
        size = _int_field(d, "size", least=1)  # a 0-byte object has nothing to resume
        url = _str_field(d, "url")
        if not url:
            raise SidecarInvalid("it names no URL")
        return cls(url=url, size=size, etag=_str_field(d, "etag"), last_modified=_str_field(d, "last_modified"),
                   chunk_size=_int_field(d, "chunk_size", least=1), done=_done_field(d, size),
                   lmt=_str_field(d, "lmt"))

    @classmethod
    def load(cls, path: str) -> SidecarState:
        return cls.parse(read_sidecar(path))


def open_part_fd(path: str) -> int:
    """FILE.part opened read-write (created if missing) without following a symlink, and only if it
    is a regular file: a planted ``FILE.part -> victim`` must never get the victim overwritten."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LocalIOError(f"{path} is a symbolic link: refusing to write through it "
                               f"(remove it, or choose another -o)", e.errno) from None
        raise local_io_error(e, path, "open") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise LocalIOError(f"{path} is not a regular file: refusing to write into it "
                           f"(remove it, or choose another -o)")
    os.set_blocking(fd, True)
    return fd


def refuse_unsafe_part(path: str) -> None:
    """Fail early, before any resume logic, on a FILE.part that is a symlink or not a regular file
    (``open_part_fd`` enforces the same at the moment of opening)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if stat.S_ISLNK(mode):
        raise LocalIOError(f"{path} is a symbolic link: refusing to write through it "
                           f"(remove it, or choose another -o)", errno.ELOOP)
    if not stat.S_ISREG(mode):
        raise LocalIOError(f"{path} is not a regular file: refusing to write into it "
                           f"(remove it, or choose another -o)")


def write_file_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text``: written to a fresh ``mkstemp`` file in the same directory
    (never a predictable name someone could plant a symlink at), fsynced, then renamed over."""
    directory, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{base[:64]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def is_stream_target(path: str) -> bool:
    """A device, FIFO or socket: written in order like stdout, never replaced or given a FILE.part."""
    try:
        mode = os.stat(path).st_mode  # following symlinks: /dev/stdout, /dev/fd/N are the user's choice
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


async def open_stream_target(path: str, display: Display) -> int:
    """``path`` (a device or FIFO) opened for writing. A FIFO without a reader is waited for as
    curl does, but by polling, so Ctrl-C still works meanwhile."""
    waiting = False
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: a FIFO nobody reads yet
                raise local_io_error(e, path, "open") from e
            if not waiting:
                waiting = True
                display.note(f"{PROG}: waiting for a reader on {path}")
            await asyncio.sleep(0.05)
            continue
        os.set_blocking(fd, True)
        return fd


def name_max(directory: str) -> int:
    """The longest file name (bytes) the filesystem takes, less room for ``.part.json``."""
    try:
        limit = os.pathconf(directory or ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    return max(16, min(limit, 255) - len(SIDECAR_SUFFIX))


def safe_file_name(name: str, fallback: str = "download", directory: str = ".") -> str:
    """A derived file name (from a URL or a title) made safe to create: no path separators or
    control characters, no bidi or other format controls (U+202E makes ``gpj.exe`` read as
    ``exe.jpg``), no leading dot, and shortened to the filesystem's limit keeping the extension."""
    name = "".join("_" if c in "/\\" or unicodedata.category(c) == "Cc" else c
                   for c in name if unicodedata.category(c) != "Cf")
    name = name.strip().lstrip(".").strip()
    name = name or fallback
    limit = name_max(directory)
    if len(name.encode()) <= limit:
        return name
    stem, ext = os.path.splitext(name)
    if len(ext.encode()) > 16:
        stem, ext = name, ""
    stem = stem.encode()[: limit - len(ext.encode())].decode("utf-8", errors="ignore").rstrip()
    return (stem or fallback[:16]) + ext


class PartFile:
    """``FILE.part`` written at offsets, plus its sidecar ``FILE.part.json``.

    The sidecar lists only spans whose bytes were written *and* flushed with
    ``fdatasync`` before the sidecar was replaced, so after a crash, a kill or
    a power loss every span it lists is really in the file.
    """

    def __init__(self, final: str, *, url: str, chunk_size: int) -> None:
        self.final = final
        self.path = final + ".part"
        self.sidecar = final + SIDECAR_SUFFIX
        self.url = redact_url(url)
        self.lmt = url_param(url, "lmt")
        self.chunk_size = chunk_size
        self.size: int | None = None
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.spans = Spans()
        self.fd: int | None = None
        self.written = 0  # bytes written by this run
        self._lock = threading.Lock()
        self._saved_seq = 0
        self._seq = 0
        self._pending: concurrent.futures.Future | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rangestream-save")
        self._last_save = 0.0

    # opening -----------------------------------------------------------------------------
    def open(self, *, fresh: bool) -> None:
        self.fd = open_part_fd(self.path)
        try:
            # Two runs writing one FILE.part would corrupt each other's sidecar: refuse the second.
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise RangestreamError(f"{self.path} is being written by another rangestream right now") from None
        except OSError:
            pass  # a filesystem without locks: go on
        if fresh:
            try:
                os.ftruncate(self.fd, 0)
            except OSError as e:
                raise local_io_error(e, self.path, "truncate") from e
            self.spans = Spans()
            self.written = 0
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.sidecar)

    def allocate(self, size: int) -> None:
        """Extend FILE.part to ``size`` (sparse) after checking the free space."""
        assert self.fd is not None
        st = os.fstat(self.fd)
        need = size - self.spans.total()
        try:
            vfs = os.fstatvfs(self.fd)
            free = vfs.f_bavail * vfs.f_frsize
        except OSError:
            free = None
        if free is not None and need > free and stat.S_ISREG(st.st_mode):
            raise LocalIOError(
                f"not enough space for {self.path}: {human_bytes(need)} still to download, "
                f"{human_bytes(free)} free", errno.ENOSPC)
        if st.st_size < size:
            try:
                os.ftruncate(self.fd, size)
            except OSError as e:
                raise local_io_error(e, self.path, "extend") from e

    # writing -----------------------------------------------------------------------------
    def write(self, offset: int, data: bytes) -> None:
        fd = self.fd
        assert fd is not None
        view = memoryview(data)
        pos = offset
        try:
            while view:
                n = os.pwrite(fd, view, pos)
                view = view[n:]
                pos += n
        except OSError as e:
            self.spans.add(offset, pos)  # what did land
            self.written += pos - offset
            raise local_io_error(e, self.path, "write") from e
        self.spans.add(offset, pos)
        self.written += len(data)

    # checkpoints ---------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        self._seq += 1
        return {
            "version": SIDECAR_VERSION,
            "url": self.url,
            "size": self.size,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "lmt": self.lmt,
            "chunk_size": self.chunk_size,
            "done": self.spans.as_list(),
            "bytes_done": self.spans.total(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "_seq": self._seq,
        }

    def _persist(self, snap: dict[str, Any], fd: int | None) -> None:
        # 1. the bytes the snapshot lists are on disk; 2. the sidecar replaced atomically.
        if fd is not None:
            os.fdatasync(fd)
        seq = snap.pop("_seq")
        with self._lock:
            if seq <= self._saved_seq:
                return  # a newer snapshot is already saved
            write_file_atomically(self.sidecar, json.dumps(snap) + "\n")
            self._saved_seq = seq

    def maybe_checkpoint(self) -> None:
        """Save in the background every CHECKPOINT_EVERY seconds (one save in flight at most)."""
        now = time.monotonic()
        if now - self._last_save < CHECKPOINT_EVERY:
            return
        if self._pending is not None and not self._pending.done():
            return
        if self._pending is not None:
            err = self._pending.exception()
            self._pending = None
            if err is not None:
                raise local_io_error(err, self.sidecar, "save") if isinstance(err, OSError) else err
        self._last_save = now
        self._pending = self._pool.submit(self._persist, self._snapshot(), self.fd)

    def checkpoint_now(self) -> None:
        """Synchronous save (at exit, on error or interrupt)."""
        self._wait_pending()
        try:
            self._persist(self._snapshot(), self.fd)
        except OSError as e:
            raise local_io_error(e, self.sidecar, "save") from e

    def _wait_pending(self) -> None:
        if self._pending is not None:
            with contextlib.suppress(Exception):
                self._pending.result(timeout=30)
            self._pending = None

    # the end ---------------------------------------------------------------------------------
    def finish(self) -> None:
        """fsync, rename FILE.part -> FILE, delete the sidecar."""
        self._wait_pending()
        assert self.fd is not None
        try:
            if self.size is not None:
                os.ftruncate(self.fd, self.size)
            os.fsync(self.fd)
        except OSError as e:
            raise local_io_error(e, self.path, "flush") from e
        self.close()
        try:
            os.replace(self.path, self.final)
        except OSError as e:
            raise local_io_error(e, self.final, "rename to") from e
        with contextlib.suppress(OSError):
            os.unlink(self.sidecar)
        with contextlib.suppress(OSError):
            dfd = os.open(os.path.dirname(os.path.abspath(self.final)) or ".", os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def discard(self) -> None:
        """Remove FILE.part and the sidecar (a fresh run that wrote nothing)."""
        self._wait_pending()
        self.close()
        for p in (self.path, self.sidecar):
            with contextlib.suppress(OSError):
                os.unlink(p)

    def close(self) -> None:
        self._wait_pending()
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def shutdown(self) -> None:
        self.close()
        self._pool.shutdown(wait=True)


def local_io_error(e: BaseException, path: str, action: str) -> LocalIOError:
    code = getattr(e, "errno", None)
    reason = getattr(e, "strerror", None) or str(e)
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return LocalIOError(f"disk full: cannot {action} {path} ({reason})", code)
    if code == errno.EFBIG:
        return LocalIOError(f"file too large: cannot {action} {path} ({reason}; a file size limit "
                            f"or the filesystem's maximum)", code)
    return LocalIOError(f"cannot {action} {path}: {reason}", code)


# -- stdout ------------------------------------------------------------------------------------


class StdoutWriter:
    """Writes to fd 1 from a worker thread, so a slow pipe never blocks the event loop;
    pieces that arrive meanwhile are gathered (bounded) into the next write."""

    LIMIT = 8 << 20

    def __init__(self, fd: int = 1) -> None:
        self.fd = fd
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rangestream-stdout")
        self._pending: asyncio.Future | None = None
        self._buf: list[bytes] = []
        self._buffered = 0
        self.written = 0

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [])
                continue
            view = view[n:]

    def _submit(self) -> None:
        data = b"".join(self._buf)
        self._buf.clear()
        self._buffered = 0
        self._pending = asyncio.get_running_loop().run_in_executor(self._pool, self._write_all, data)

    async def write(self, data: bytes) -> None:
        self._buf.append(data)
        self._buffered += len(data)
        self.written += len(data)
        if self._pending is not None:
            if not self._pending.done() and self._buffered < self.LIMIT:
                return
            await self._pending  # raises the write's error (BrokenPipeError, ENOSPC...)
            self._pending = None
        self._submit()

    async def close(self) -> None:
        if self._pending is not None:
            await self._pending
            self._pending = None
        if self._buf:
            self._submit()
            await self._pending
            self._pending = None
        self._pool.shutdown(wait=False)


def _silence_stdout() -> None:
    """After a broken pipe: point fd 1 at /dev/null so the interpreter's final flush stays quiet."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# -- get ------------------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    display: Display
    summary: Summary
    interrupt_note: str | None = None
    hint: str | None = None
    ordered_output: str | None = None  # "-" or a device/FIFO path, written in order


def _resume_state(part: PartFile, url: str) -> tuple[SidecarState | None, str | None]:
    """The sidecar to resume from, or (None, why not). Only what passes validation is returned;
    the size and validators are then checked against the server by ``_download_into``."""
    if not os.path.lexists(part.path):
        return None, None
    try:
        state = SidecarState.load(part.sidecar)
    except SidecarInvalid as e:
        return None, f"its sidecar {os.path.basename(part.sidecar)} is not usable: {e}"
    if url_identity(state.url) != url_identity(redact_url(url)):
        return None, f"its sidecar is for another URL ({redact_url(state.url)[:200]})"
    try:
        actual = os.lstat(part.path).st_size
    except OSError:
        return None, None
    spans = Spans([tuple(x) for x in state.done])  # type: ignore[misc]
    spans.clip(min(actual, state.size))
    state.done = spans.as_list()
    return state, None


def _validators_mismatch(state: SidecarState, current: dict[str, Any]) -> str | None:
    if state.etag and current.get("etag") and current["etag"] != state.etag:
        return f"its ETag changed ({state.etag} -> {current['etag']})"
    if state.last_modified and current.get("last_modified") and current["last_modified"] != state.last_modified:
        return f"its Last-Modified changed ({state.last_modified} -> {current['last_modified']})"
    return None


async def run_get(ctx: Context) -> int:
    from ..refresh import is_page_url

    args = ctx.args
    url = check_url(args.url)
    ctx.summary.url = redact_url(url)
    ctx.summary.window = args.window
    if args.resolve or is_page_url(url):
        return await run_get_page(ctx, url)
    if args.ytdl_format is not None or args.max_height is not None:
        raise UsageError("--format and --max-height choose among the formats of a page URL (YouTube, or "
                         "any URL with --resolve); this is a direct URL")
    return await _get_url(ctx, url, default_output_name(url))


async def _get_url(ctx: Context, url: str, default_name: str) -> int:
    args = ctx.args
    if args.output == "-":
        _check_stdout(args)
        return await _get_stdout(ctx, url)
    out = args.output or safe_file_name(default_name)
    if os.path.isdir(out):
        out = os.path.join(out, safe_file_name(default_name, directory=out))
    ctx.summary.output = out
    if is_stream_target(out):
        return await _get_device(ctx, url, out)
    return await _get_file(ctx, url, out)


async def _get_device(ctx: Context, url: str, out: str) -> int:
    """``-o /dev/null``, ``-o FIFO``: the bytes in order into it, as to stdout (no FILE.part, no
    sidecar next to a device, never replaced by a regular file, even with --force)."""
    fd = await open_stream_target(out, ctx.display)
    try:
        if os.isatty(fd) and not ctx.args.force:
            raise UsageError(f"refusing to write binary data to the terminal {out}: --force to insist")
        ctx.summary.extra["output_kind"] = "fifo" if stat.S_ISFIFO(os.fstat(fd).st_mode) else "device"
        return await _get_ordered(ctx, url, fd, out)
    finally:
        os.close(fd)


def _check_stdout(args: argparse.Namespace) -> None:
    if sys.stdout is None:
        raise UsageError("stdout is closed: give -o FILE, or run with stdout open")
    if sys.stdout.isatty() and not args.force:
        raise UsageError("refusing to write binary data to a terminal: redirect stdout, "
                         "or use -o FILE (--force to insist)")


async def _get_stdout(ctx: Context, url: str) -> int:
    sys.stdout.flush()
    return await _get_ordered(ctx, url, sys.stdout.fileno(), "-")


async def _get_ordered(ctx: Context, url: str, fd: int, output: str) -> int:
    """The object in order into ``fd`` (stdout, a device, a FIFO); ``output`` names it."""
    args, display, summary = ctx.args, ctx.display, ctx.summary
    summary.output = output
    ctx.ordered_output = output
    writer = StdoutWriter(fd)
    label = "stdout" if output == "-" else os.path.basename(output)
    hasher = hashlib.sha256() if args.sha256 else None
    started = time.monotonic()
    client = make_client(args)
    stream = None
    try:
        async with client:
            stream = client.open_stream(url, **stream_options(args))
            async with stream:
                summary.size = stream.size
                display.start(label, stream.size)

                def tick() -> None:
                    display.update(stream.delivered, stream.size, active=stream.active,
                                   retries=stream.stats.retries)

                async with ticking(tick):
                    try:
                        try:
                            async for data in stream:
                                if hasher is not None:
                                    hasher.update(data)
                                await writer.write(data)
                        except RangestreamError:
                            # What arrived before the failure is the consumer's: hand it over, so
                            # the bytes out match the error's "after N bytes".
                            with contextlib.suppress(OSError):
                                await writer.close()
                            raise
                        await writer.close()
                    except OSError as e:
                        if _is_broken_pipe(e):
                            raise
                        raise local_io_error(e, "stdout" if output == "-" else output, "write to") from e
                display.stop()
    finally:
        display.stop()
        summary.seconds = time.monotonic() - started
        if stream is not None:
            summary.bytes = stream.delivered
            summary.add_stats(stream)
            if summary.size is None:
                summary.size = stream.size
    if hasher is not None:
        summary.sha256 = hasher.hexdigest()
    summary.ok = True
    if not args.json:
        display.note(summary_line(summary))
    if summary.sha256:
        display.note(f"sha256 {summary.sha256}  {output}")
    return EXIT_OK


async def _get_file(ctx: Context, url: str, out: str) -> int:
    args, display, summary = ctx.args, ctx.display, ctx.summary
    part = PartFile(out, url=url, chunk_size=args.chunk_size)
    refuse_unsafe_part(part.path)
    if os.path.exists(out) and not os.path.lexists(part.path) and not args.force:
        if os.path.isdir(out):
            raise LocalIOError(f"{out} is a directory")
        display.note(f"{out} already exists ({human_bytes(os.path.getsize(out))}); nothing to do "
                     f"(--force downloads it again)")
        summary.ok, summary.output = True, out
        summary.size = os.path.getsize(out)
        summary.extra["skipped"] = "exists"
        return EXIT_OK

    state, why_not = (None, None) if args.force else _resume_state(part, url)
    if args.force and os.path.lexists(part.path):
        why_not = "--force"
    if why_not:
        display.warn(f"cannot resume {part.path}: {why_not}; starting over")
        summary.restarted = why_not
    started = time.monotonic()
    client = make_client(args)
    try:
        async with client:
            for attempt in range(2):
                restart = await _download_into(ctx, client, url, part, state)
                if restart is None:
                    break
                display.warn(f"cannot resume {part.path}: {restart}; starting over")
                summary.restarted = restart
                state = None
            else:  # pragma: no cover - _download_into restarts at most once
                raise RangestreamError("could not start the download")
    except BaseException as e:
        summary.seconds = time.monotonic() - started
        _after_failure(ctx, part, e)
        raise
    finally:
        display.stop()
        part.shutdown()
    summary.seconds = time.monotonic() - started
    summary.ok = True
    if args.sha256:
        summary.sha256 = await asyncio.to_thread(_sha256_file, out)
    if not args.json:
        display.note(summary_line(summary))
    if summary.sha256:
        display.note(f"sha256 {summary.sha256}  {out}")
    return EXIT_OK


def _after_failure(ctx: Context, part: PartFile, e: BaseException) -> None:
    """Save what arrived (or clean up a run that got nothing), and say how to go on."""
    summary = ctx.summary
    if part.fd is None:
        return
    done = part.spans.total()
    if (done == 0 and summary.resumed_from == 0) or isinstance(e, ObjectChangedError):
        # Nothing worth keeping: a resume would only find out that it has to start over.
        part.discard()
        return
    try:
        part.checkpoint_now()
        saved = True
    except LocalIOError as se:
        saved = False
        ctx.display.error(f"could not save the sidecar: {se}")
    part.close()
    total = f" of {human_bytes(part.size)}" if part.size is not None else ""
    note = (f"{human_bytes(done)}{total} saved in {part.path}"
            + ("; run the same command again to resume" if saved else ""))
    if isinstance(e, (asyncio.CancelledError, KeyboardInterrupt, Interrupted)):
        ctx.interrupt_note = note
    else:
        ctx.hint = note


async def _download_into(ctx: Context, client, url: str, part: PartFile,
                         state: SidecarState | None) -> str | None:
    """One pass. Returns None when FILE is complete, or the reason a resume must start over."""
    args, display, summary = ctx.args, ctx.display, ctx.summary
    opts = stream_options(args)
    resuming = state is not None
    if resuming:
        assert state is not None and state.size is not None
        part.open(fresh=False)
        part.size, part.etag, part.last_modified = state.size, state.etag, state.last_modified
        part.spans = Spans([tuple(x) for x in state.done])  # type: ignore[misc]
        listed_end = max((stop for _, stop in state.done), default=0)
        assert part.fd is not None
        if os.fstat(part.fd).st_size < listed_end:
            # Checked under the lock: another run may have finished (renamed FILE.part away)
            # between our reading the sidecar and opening, leaving us a new, empty file.
            part.close()
            return f"{part.path} is shorter than its sidecar says"
        if state.lmt and part.lmt and state.lmt != part.lmt:
            part.close()
            return f"the URL's lmt changed ({state.lmt} -> {part.lmt}): another version of the object"
        gaps = missing_ranges(state.size, [tuple(x) for x in state.done])  # type: ignore[misc]
        # Nothing missing still asks the server (for the last byte): its size and validators
        # must confirm the sidecar before FILE.part becomes FILE.
        opts["ranges"] = [(g.start, g.stop) for g in gaps] or [(state.size - 1, state.size)]
        expect = {"etag": state.etag, "last_modified": state.last_modified}
        if any(expect.values()):
            opts["expect_validators"] = expect
        else:
            display.warn("the server gave no ETag or Last-Modified: resuming on the size alone")
        summary.resumed_from = part.spans.total()
        display.note(f"Resuming {part.path}: {human_bytes(summary.resumed_from)} of "
                     f"{human_bytes(state.size)} already there, {len(gaps)} span{'s' if len(gaps) != 1 else ''} "
                     f"missing")
    else:
        part.open(fresh=True)
        summary.resumed_from = 0

    stream = client.open_stream(url, **opts)
    try:
        try:
            await stream.__aenter__()
        except ObjectChangedError as e:
            if resuming:
                part.close()
                return f"the object changed on the server since it was started ({e.reason})"
            raise
        try:
            if resuming and stream.size != state.size:  # type: ignore[union-attr]
                part.close()
                return (f"the server now reports {stream.size if stream.size is not None else 'no'} bytes, "
                        f"{part.path} was for {state.size}")  # type: ignore[union-attr]
            part.size = summary.size = stream.size
            if stream.size is not None:
                part.allocate(stream.size)
            display.start(os.path.basename(part.final), stream.size, part.spans.total())
            first = True

            def tick() -> None:
                display.update(part.spans.total(), stream.size, active=stream.active,
                               retries=stream.stats.retries)

            async with ticking(tick):
                try:
                    async for offset, data in stream.unordered():
                        if first:
                            first = False
                            v = stream.validators
                            if resuming and (why := _validators_mismatch(state, v)):  # type: ignore[arg-type]
                                part.close()
                                return f"the object changed on the server since it was started ({why})"
                            part.etag, part.last_modified = v.get("etag"), v.get("last_modified")
                        part.write(offset, data)
                        part.maybe_checkpoint()
                except ObjectChangedError as e:
                    if resuming and part.written == 0:
                        part.close()
                        return f"the object changed on the server since it was started ({e.reason})"
                    raise
            display.stop()
            if stream.size is None:
                part.size = summary.size = stream.size or part.spans.total()
            if part.size is not None and not part.spans.covers(part.size):
                raise RangestreamError(f"internal error: the download ended with bytes missing "
                                       f"({part.spans.as_list()[:4]}...)")
            part.finish()
        finally:
            await stream.__aexit__(None, None, None)
    finally:
        summary.bytes += part.written
        summary.add_stats(stream)
    return None


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()


# -- mux -------------------------------------------------------------------------------------


async def run_mux(ctx: Context) -> int:
    args, summary = ctx.args, ctx.summary
    video_url, audio_url = check_url(args.video_url), check_url(args.audio_url)
    summary.url = redact_url(video_url)
    summary.extra["audio_url"] = redact_url(audio_url)
    summary.window = args.window
    out = args.output
    if out is None:
        raise UsageError("mux needs -o FILE (.mp4, .mkv, .webm) or -o - with --format")
    fmt = args.format
    if fmt is None and out != "-":
        fmt = _container_of(out)
        if fmt is None:
            raise UsageError(f"cannot tell the container from {out!r}: use .mp4, .mkv or .webm, or --format")
    if out != "-" and os.path.exists(out) and not args.force and not is_stream_target(out):
        raise UsageError(f"{out} exists; pass --force to overwrite it")
    opts = stream_options(args)
    return await _mux_into(ctx, [("video", video_url, opts), ("audio", audio_url, opts)], out, fmt or "mp4")


_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "mkv", ".webm": "webm"}


def _container_of(path: str) -> str | None:
    return _CONTAINERS.get(os.path.splitext(path)[1].lower())


def _open_locked(path: str) -> Any:
    """``path`` opened for writing under an exclusive lock, emptied; refused if another run holds it,
    if it is a symlink or not a regular file (as FILE.part for ``get``)."""
    fd = open_part_fd(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RangestreamError(f"{path} is being written by another rangestream run") from None
    os.ftruncate(fd, 0)
    return os.fdopen(fd, "wb")


async def _mux_into(ctx: Context, inputs: list[tuple[str, str, dict[str, Any]]], out: str, fmt: str) -> int:
    """Fetch the (video, audio) inputs, each ``(name, url, stream options)``, and mux them into
    ``out`` (via ``out.part``, renamed when complete) or stdout (``-``)."""
    from ..muxer import mux as mux_streams  # PyAV loads only for this subcommand

    args, display, summary = ctx.args, ctx.display, ctx.summary
    part = out + ".part"
    part_file = None
    if out == "-":
        _check_stdout(args)
        sink: Any = "-"
    elif is_stream_target(out):  # a device or FIFO: written in order, no out.part next to it
        sink = os.fdopen(await open_stream_target(out, display), "wb")
        ctx.ordered_output = out
    else:
        part_file = _open_locked(part)  # a second run to the same output must not truncate ours
        sink = part_file
    summary.output = out
    started = time.monotonic()
    streams: dict[str, Any] = {}
    client = make_client(args)
    try:
        async with client, contextlib.AsyncExitStack() as stack:
            for name, url, opts in inputs:
                try:
                    streams[name] = await stack.enter_async_context(client.open_stream(url, **opts))
                except RangestreamError as e:
                    raise MuxError(f"cannot open: {e}", input=name) from e
            v, a = streams["video"], streams["audio"]
            total = v.size + a.size if v.size is not None and a.size is not None else None
            display.start("mux", total)

            def tick() -> None:
                display.update(v.delivered + a.delivered, total, active=v.active + a.active,
                               retries=v.stats.retries + a.stats.retries)

            async with ticking(tick):
                result = await mux_streams(v, a, sink, fmt)
            display.stop()
        if part_file is not None:
            try:
                part_file.flush()
                os.replace(part, out)  # still under our lock
            except OSError as e:
                raise local_io_error(e, out, "rename to") from e
    except BaseException:
        if part_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(part)  # ours: we hold its lock
        raise
    finally:
        if sink != "-":  # out.part, or the device/FIFO
            with contextlib.suppress(OSError):
                sink.close()
        display.stop()
        summary.seconds = time.monotonic() - started
        for s in streams.values():
            summary.bytes += s.delivered
            summary.add_stats(s)
    summary.ok = True
    summary.size = result.bytes_written
    summary.extra.update({"format": result.format, "bytes_written": result.bytes_written,
                          "codecs": result.codecs, "duration": result.duration, "packets": result.packets})
    if getattr(args, "sha256", False) and out != "-":
        summary.sha256 = await asyncio.to_thread(_sha256_file, out)
    if not args.json:
        codecs = " + ".join(result.codecs.get(k, "?") for k in ("video", "audio"))
        dur = f", {result.duration:.1f} s of media" if result.duration else ""
        display.note(summary_line(summary) + f" · {codecs}{dur}, {human_bytes(result.bytes_written)} written")
    if summary.sha256:
        display.note(f"sha256 {summary.sha256}  {out}")
    return EXIT_OK


# -- page URLs (yt-dlp) -------------------------------------------------------------------------


async def run_get_page(ctx: Context, page_url: str) -> int:
    """``get`` of a page URL: yt-dlp picks the format(s); one is downloaded like any URL, a
    video+audio pair is muxed into one file. Expired stream URLs are re-resolved from the page."""
    from ..headers import merge_headers
    from ..refresh import Resolver, output_name

    args, display, summary = ctx.args, ctx.display, ctx.summary
    resolver = Resolver(args.ytdl_format, max_height=args.max_height, proxy=args.proxy,
                        cookies_file=args.cookies)
    display.note(f"{PROG}: resolving {redact_url(page_url)} with yt-dlp")
    res = await resolver.resolve(page_url)
    summary.extra.update({"page_url": redact_url(page_url), "title": res.title,
                          "formats": [f.format_id for f in res.formats]})
    display.note(f"{PROG}: {res.title}: " + " + ".join(f.describe() for f in res.formats))
    user_headers = dict(args.header or [])

    def options_for(f) -> dict[str, Any]:
        opts = stream_options(args)  # --refresh-command, if given, replaces the built-in re-resolve
        opts.setdefault("refresh", resolver.hook(page_url, f))
        headers = merge_headers(f.http_headers, user_headers)
        if headers:
            opts["headers"] = headers
        return opts

    if not res.needs_mux:
        f = res.video
        summary.url = redact_url(f.url)
        opts = options_for(f)
        args._refresh, args._headers = opts["refresh"], opts.get("headers")
        return await _get_url(ctx, f.url, output_name(res.title, f.ext, res.id or "download"))

    video, audio = res.formats
    summary.url = redact_url(video.url)
    summary.extra["audio_url"] = redact_url(audio.url)
    out = args.output
    container = _container_of(out) if out and out != "-" else None
    if container is None:
        container = res.ext if res.ext in ("mp4", "webm", "mkv") else "mkv"
    if out != "-":
        name = output_name(res.title, container, res.id or "download")
        out = out or safe_file_name(name)
        if os.path.isdir(out):
            out = os.path.join(out, safe_file_name(name, directory=out))
        if os.path.exists(out) and not args.force and not is_stream_target(out):
            display.note(f"{out} already exists ({human_bytes(os.path.getsize(out))}); nothing to do "
                         f"(--force downloads it again)")
            summary.ok, summary.output = True, out
            summary.size = os.path.getsize(out)
            summary.extra["skipped"] = "exists"
            return EXIT_OK
    return await _mux_into(ctx, [("video", video.url, options_for(video)), ("audio", audio.url, options_for(audio))],
                           out, container)


# -- errors -> exit codes ------------------------------------------------------------------------


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or (e.__context__ if not e.__suppress_context__ else None)


TLS_HINT = ("the server's certificate is not trusted: give its CA with --cacert FILE (or SSL_CERT_FILE), "
            "or, knowing that anyone on the path can then read and change the bytes, --insecure (-k)")


def classify(e: BaseException) -> tuple[int, str, str | None]:
    """(exit code, message, hint) for an exception that ends a command."""
    if isinstance(e, UsageError):
        return EXIT_USAGE, str(e), None
    if isinstance(e, LocalIOError):
        hint = "free some space and run the same command again" if e.errno in (
            errno.ENOSPC, getattr(errno, "EDQUOT", -1)) else None
        return EXIT_LOCAL_IO, str(e), hint
    if isinstance(e, MuxError):
        inner = next((c for c in _chain(e) if c is not e and isinstance(c, (StreamError, InvalidURLError, OSError))),
                     None)
        if isinstance(inner, OSError) and not isinstance(inner, BrokenPipeError):
            return EXIT_LOCAL_IO, str(e), None
        if inner is not None:
            code, _, hint = classify(inner)
            return code, str(e), hint
        return EXIT_FAILURE, str(e), None
    if isinstance(e, ObjectChangedError):
        return EXIT_CHANGED, str(e), "run the same command again to download the new version from the start"
    if isinstance(e, TLSError):
        return EXIT_NETWORK, str(e), TLS_HINT
    if isinstance(e, ProxyError):
        return EXIT_PROXY, str(e), ("the proxy wants credentials: give them in the proxy URL "
                                    "(--proxy http://USER:PASS@host:port), or check them")
    if isinstance(e, TooManyRedirectsError):
        return EXIT_HTTP, str(e), "the server redirects in a loop (or too many times): check the URL"
    if isinstance(e, URLExpiredError):
        return EXIT_HTTP, str(e), ("the signed URL has expired or is not valid for this client: get a fresh "
                                   "one (e.g. yt-dlp -g) and run again; a download to a file resumes where it "
                                   "stopped if the object is unchanged")
    if isinstance(e, HTTPStatusError):
        what = {404: "not found", 410: "gone", 400: "bad request", 405: "method not allowed"}.get(e.status)
        msg = f"{what}: {e}" if what else str(e)
        return EXIT_HTTP, msg, None
    if isinstance(e, RetriesExhaustedError):
        return EXIT_NETWORK, str(e), "check the host, your network or --proxy; more --retries or --timeout may help"
    if isinstance(e, InvalidURLError):
        return EXIT_USAGE, str(e), None
    if isinstance(e, StreamError):
        if any(isinstance(c, InvalidURLError) for c in _chain(e)):
            return EXIT_USAGE, str(e), None
        return EXIT_FAILURE, str(e), None
    from ..refresh import ResolveError, ResolverUnavailable

    if isinstance(e, ResolverUnavailable):
        return EXIT_FAILURE, str(e), None
    if isinstance(e, ResolveError):
        if e.status is not None:
            return EXIT_HTTP, str(e), None
        if e.network:
            return EXIT_NETWORK, str(e), "check the host, your network or --proxy"
        return EXIT_FAILURE, str(e), "yt-dlp could not resolve the page; -v shows its messages"
    if isinstance(e, RangestreamError):
        return EXIT_FAILURE, str(e), None
    if isinstance(e, OSError):
        return EXIT_LOCAL_IO, str(local_io_error(e, getattr(e, "filename", None) or "output", "write")), None
    return EXIT_FAILURE, f"internal error: {type(e).__name__}: {e}", "run with --debug for a traceback, and report it"


def _is_broken_pipe(e: BaseException) -> bool:
    return any(isinstance(c, BrokenPipeError) or (isinstance(c, OSError) and c.errno == errno.EPIPE)
               for c in _chain(e))


# -- running a command --------------------------------------------------------------------------


async def _guarded(fn: Callable[[], Awaitable[int]]) -> int:
    """Run ``fn`` with SIGINT/SIGTERM turned into a cancellation (so every ``finally`` runs,
    the sidecar is saved), then raise :class:`Interrupted`. A second signal exits at once."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    got: list[int] = []

    def on_signal(signum: int) -> None:
        if got:
            os.write(2, f"\n{PROG}: interrupted again, exiting now\n".encode())
            os._exit(128 + signum)
        got.append(signum)
        task.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        return await fn()
    except asyncio.CancelledError:
        if got:
            task.uncancel()
            raise Interrupted(got[0]) from None
        raise
    finally:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


def _execute(args: argparse.Namespace, display: Display, summary: Summary,
             runner: Callable[[Context], Awaitable[int]]) -> int:
    ctx = Context(args, display, summary)
    setup_logging(display, args)
    code = EXIT_FAILURE
    try:
        code = asyncio.run(_guarded(lambda: runner(ctx)))
    except (Interrupted, KeyboardInterrupt) as e:
        display.stop()
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        code = 128 + signum
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        summary.error = what
        display.console.print(f"{PROG}: {what}" + (f"; {ctx.interrupt_note}" if ctx.interrupt_note else ""),
                              style="yellow", markup=False, highlight=False)
    except BaseException as e:  # noqa: BLE001 - every failure becomes a message and an exit code
        display.stop()
        if isinstance(e, SystemExit):
            raise
        if _is_broken_pipe(e) and (getattr(args, "output", None) == "-" or ctx.ordered_output):
            if getattr(args, "output", None) == "-":
                _silence_stdout()
            summary.error = "broken pipe"
            code = EXIT_BROKEN_PIPE
        else:
            code, message, hint = classify(e)
            message = redact_text(message)  # last line of defence: no signature or password leaves
            summary.error = message
            if getattr(args, "debug", False):
                # Frames show exception texts (a refresh command's stderr, URLs): redacted like the rest.
                sys.stderr.write(redact_text("".join(traceback.format_exception(e))))
                sys.stderr.flush()
            display.error(message)
            for extra in (ctx.hint, hint):
                if extra:
                    display.console.print(f"{PROG}: {extra}", markup=False, highlight=False)
    summary.exit_code = code
    if getattr(args, "json", False) or getattr(args, "json_file", None):
        write_json_summary(args, summary, display.console)
    return code


# -- argparse -----------------------------------------------------------------------------------


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())
    env = "\n".join(f"  {name:<24}{text}" for name, text in ENV_VARS.items())
    return (f"exit codes:\n{codes}\n\nenvironment:\n{env}\n\n"
            "examples:\n"
            "  rangestream get 'https://…/videoplayback?…' -o video.mp4\n"
            "  rangestream get URL -o - | ffplay -\n"
            "  rangestream get URL -o - --quiet | sha256sum\n"
            "  rangestream get 'https://www.youtube.com/watch?v=ID' --max-height 1080\n"
            "  rangestream demo\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def _network_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("transfer")
    g.add_argument("--chunk-size", type=_size_arg, metavar="SIZE",
                   help="bytes per Range request: 9.5M, 10MiB, 65536 (default 9.5M; $RANGESTREAM_CHUNK_SIZE). "
                        "googlevideo throttles requests over ~10 MB")
    g.add_argument("--window", type=_window_arg, metavar="N|auto",
                   help=f"Range requests in flight (1..{MAX_WINDOW}): 1 = sequential, 2 = next-request prefetch, "
                        "auto = adapt to the link (default auto; $RANGESTREAM_WINDOW)")
    g.add_argument("--max-window", type=_max_window_arg, default=8, metavar="N",
                   help=f"the most requests --window auto may use (1..{MAX_WINDOW}, default 8)")
    g.add_argument("--max-buffer", type=_size_arg, metavar="SIZE",
                   help="bytes chunks after the current one may read ahead (default: the engine's choice)")
    g.add_argument("--range-mode", choices=["header", "query"], default="header",
                   help="how to ask for a range: a Range header (default), or googlevideo's range=a-b "
                        "query parameter sent as a POST, as YouTube's web player does (needs clen in the URL)")
    g.add_argument("--retries", type=_count_arg, metavar="N",
                   help="retries per chunk after its first request (default 3; $RANGESTREAM_RETRIES)")
    g.add_argument("--backoff", type=_backoff_arg, default=1.0, metavar="SECONDS",
                   help="retry backoff base: retry n waits SECONDS * 2^(n-1), +-10%% (default 1)")
    g.add_argument("--timeout", type=_seconds_arg, metavar="SECONDS",
                   help="connect + response-headers timeout per request (default 30; $RANGESTREAM_TIMEOUT)")
    g.add_argument("--idle-timeout", type=_seconds_arg, default=20.0, metavar="SECONDS",
                   help="longest silence while reading a body before it is retried (default 20)")
    g.add_argument("--prefetch-timeout", type=_seconds_arg, default=5.0, metavar="SECONDS",
                   help="how long a prefetched request may still wait for headers once it is needed (default 5)")
    g.add_argument("-H", "--header", type=_header_arg, action="append", metavar="'NAME: VALUE'",
                   help="extra request header (repeatable)")
    g.add_argument("--proxy", metavar="URL",
                   help="proxy: http://, https://, socks5://, socks5h://, socks4://, socks4a:// "
                        "[user:pass@]host:port ($RANGESTREAM_PROXY)")
    g.add_argument("--cookies", metavar="FILE",
                   help="Netscape-format cookies file, as yt-dlp --cookies or curl -c write ($RANGESTREAM_COOKIES)")
    g.add_argument("--requests-per-second", type=_rate_arg, metavar="N",
                   help=f"at most N request starts per second per host ({MIN_RATE:g}..{MAX_RATE:g}; "
                        "default: no limit)")
    g.add_argument("--cacert", metavar="FILE",
                   help="trust the CA certificates in FILE (PEM) for https:// URLs, as curl --cacert "
                        "($RANGESTREAM_CACERT; SSL_CERT_FILE also works)")
    g.add_argument("-k", "--insecure", action="store_true",
                   help="do not verify TLS certificates (as curl -k): anyone on the path can read and "
                        "change the bytes")
    g.add_argument("--impersonate", metavar="BROWSER",
                   help="present a real browser's TLS and HTTP/2 fingerprint (chrome, safari, firefox, "
                        "or a version like chrome131); needs pip install 'rangestream[impersonate]'")
    g.add_argument("--refresh-command", metavar="CMD",
                   help="shell command that prints a fresh URL when the CDN says the URL expired (401/403), "
                        "e.g. 'yt-dlp -g -f 137 https://youtu.be/ID'; the old one is in $RANGESTREAM_EXPIRED_URL")


def _output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary (errors are still shown)")
    g.add_argument("--json", action="store_true",
                   help="print a machine-readable summary (one JSON line) last on stderr: bytes, seconds, "
                        "mb_per_s, requests, retries, refreshes, window, sha256...")
    g.add_argument("--json-file", metavar="PATH", help="write the JSON summary to PATH")
    g.add_argument("-v", "--verbose", action="store_true", help="also show the engine's informational messages")
    g.add_argument("--debug", action="store_true", help="show a traceback with errors")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter,
        description="Stream large files from Range-capable CDNs (YouTube's googlevideo first) as a window "
                    "of ~9.5 MB Range requests, in order, with retries and resume.",
        epilog=_epilog())
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    get = sub.add_parser(
        "get", help="download one object to a file (resumable) or to stdout", formatter_class=_Formatter,
        description="Download URL to FILE (via FILE.part and a sidecar FILE.part.json; run again after a "
                    "crash, Ctrl-C or a network loss to resume) or, with -o -, stream it to stdout in order.",
        epilog=_epilog())
    get.add_argument("url", metavar="URL")
    get.add_argument("-o", "--output", metavar="FILE|-",
                     help="where to save; '-' streams to stdout; a directory keeps the URL's name "
                          "(default: the last part of the URL's path)")
    get.add_argument("--force", action="store_true",
                     help="download again even if FILE exists (it is replaced only once the new copy is "
                          "complete); ignore a FILE.part; allow binary output to a terminal")
    get.add_argument("--sha256", action="store_true", help="print the SHA-256 of what was downloaded")
    page = get.add_argument_group(
        "page URLs (yt-dlp: pip install 'rangestream[youtube]')",
        "A YouTube page URL (youtube.com, youtu.be), or any URL with --resolve, is resolved with yt-dlp "
        "into stream URLs: separate video and audio are muxed into one file (named after the title), a "
        "combined format is downloaded as is. A stream URL that expires mid-download is re-resolved "
        "from the page and the download continues from the byte reached, in the same format.")
    page.add_argument("--resolve", action="store_true",
                      help="resolve URL with yt-dlp even if it is not a YouTube page (any site or manifest "
                           "yt-dlp's extractors know, its generic extractor included)")
    page.add_argument("-f", "--format", dest="ytdl_format", metavar="SELECTOR",
                      help="yt-dlp format selector (default 'bv*+ba/b': best video + best audio, else the "
                           "best combined format); only plain http(s) formats are chosen, never HLS/DASH "
                           "manifests")
    page.add_argument("--max-height", type=_positive_int_arg, metavar="N",
                      help="video no taller than N pixels (adds [height<=?N] to the selector's video part)")
    _network_options(get)
    _output_options(get)

    mux = sub.add_parser(
        "mux", help="fetch a video and an audio URL and mux them into one file", formatter_class=_Formatter,
        description="Fetch VIDEO_URL and AUDIO_URL at once and stream-copy them into one container "
                    "(fragmented MP4, MKV or WebM), never re-encoding.", epilog=_epilog())
    mux.add_argument("video_url", metavar="VIDEO_URL")
    mux.add_argument("audio_url", metavar="AUDIO_URL")
    mux.add_argument("-o", "--output", metavar="FILE|-", help="out.mp4, out.mkv, out.webm, or - for stdout")
    mux.add_argument("--format", choices=["mp4", "mkv", "webm"], help="container (default: from FILE's extension; mp4 for -)")
    mux.add_argument("--force", action="store_true", help="overwrite FILE; allow binary output to a terminal")
    _network_options(mux)
    _output_options(mux)

    sub.add_parser("serve", help="HTTP service: /stream?url= (a Range-capable proxy) and /mux?video=&audio= "
                                 "(rangestream serve --help for its flags)", add_help=False)
    sub.add_parser("origin", help="run the emulated CDN (rangestream origin --help for its flags)",
                   add_help=False)

    demo = sub.add_parser(
        "demo", help="the offline demo: sequential vs prefetch vs auto window on an emulated YouTube CDN",
        formatter_class=_Formatter,
        description="Start the emulated CDN (YouTube-like profile) on a free loopback port, download one "
                    "object with window 1, 2 and auto, verify each SHA-256, and compare their time and "
                    "throughput with the link limit. Then mux a generated video and audio into demo.mp4. "
                    "Needs no network.")
    demo.add_argument("--size", type=_size_arg, default=200 * MB, metavar="SIZE", help="object size (default 200M)")
    demo.add_argument("--chunk-size", type=_size_arg, default=DEFAULT_CHUNK_SIZE, metavar="SIZE",
                      help="Range request size (default 9.5M)")
    demo.add_argument("--out", default="demo.mp4", metavar="FILE", help="where to write the muxed clip (default demo.mp4)")
    demo.add_argument("--no-mux", action="store_true", help="skip the muxing part")
    demo.add_argument("--debug", action="store_true", help="show a traceback with errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the run's own handlers are installed
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "origin":
        from ..origin import main as origin_main

        return origin_main(argv[1:])
    if argv and argv[0] == "serve":
        from ..service import main as serve_main

        return serve_main(argv[1:])
    if argv and argv[0] == "sign":
        from ..service import sign_main

        return sign_main(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, message already printed)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    console = make_console()
    display = Display(console, quiet=getattr(args, "quiet", False))
    summary = Summary(command=args.command)
    if args.command in ("get", "mux"):
        args._refresh = refresh_hook(args.refresh_command, display)
        try:
            _apply_env(args)
        except UsageError as e:
            display.error(str(e))
            return EXIT_USAGE
        runner = run_get if args.command == "get" else run_mux
        return _execute(args, display, summary, runner)
    if args.command == "demo":
        from .demo import run_demo

        return _execute(args, display, summary, run_demo)
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE  # pragma: no cover
