"""What the CLI shows on stderr: progress (rich on a terminal, imported only then; plain lines
otherwise), notes, warnings, errors, and the summary (a line, or JSON)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..output import human_bytes
from ..redact import redact_text
from .exits import EXIT_FAILURE, PROG

MB = 1_000_000


PLAIN_PROGRESS_EVERY = 2.0  # seconds between plain progress lines when stderr is not a terminal


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


# rich leaves these out of any text it prints (backspace, carriage return...); so does PlainConsole.
_CONTROL = str.maketrans({c: None for c in (7, 8, 11, 12, 13)})


class PlainConsole:
    """stderr when it is not a terminal: what rich would print there (text and a newline, no
    styles, no wrapping), without importing rich."""

    is_terminal = False

    @property
    def file(self) -> TextIO:
        return sys.stderr  # looked up each time, as rich does (tests and pytest swap it)

    def print(self, message: str = "", *, style: str | None = None, markup: bool = False,
              highlight: bool = False) -> None:
        self.file.write(str(message).translate(_CONTROL) + "\n")
        self.file.flush()


def stderr_is_terminal() -> bool:
    """rich's own test: TTY_COMPATIBLE and FORCE_COLOR first, then isatty."""
    tty_compatible = os.environ.get("TTY_COMPATIBLE", "")
    if tty_compatible in ("0", "1"):
        return tty_compatible == "1"
    force_color = os.environ.get("FORCE_COLOR")
    if force_color is not None:
        return force_color != ""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except ValueError:  # closed
        return False


def make_console() -> Any:
    """A rich Console on a terminal (the progress bar, colours); a PlainConsole otherwise."""
    if not stderr_is_terminal():
        return PlainConsole()
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, quiet=False)


# C0/C1 controls (ESC starts terminal sequences: colours, the window title, hyperlinks) other
# than the newline and tab our own messages use, and Unicode's line/paragraph separators.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def terminal_safe(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b``): messages quote titles, URLs and
    lines of ``-i`` files, which a hostile page or list could fill with terminal escapes."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                         else f"\\u{ord(m.group()):04x}", text)


class Display:
    """Progress on stderr: a rich bar on a terminal, a plain line every ~2 s otherwise,
    nothing with ``--quiet``. Also where warnings and the summary are printed."""

    def __init__(self, console: Any, *, quiet: bool = False, plain_every: float = PLAIN_PROGRESS_EVERY) -> None:
        self.console = console
        self.quiet = quiet
        self.mode = "quiet" if quiet else ("rich" if console.is_terminal else "plain")
        self.plain_every = plain_every
        self._progress: Any = None  # rich.progress.Progress on a terminal
        self._task: Any = None
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
            self.console.print(terminal_safe(message), style=style, markup=False, highlight=False)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"{PROG}: warning: {terminal_safe(message)}", style="yellow", markup=False,
                               highlight=False)

    def error(self, message: str) -> None:
        """Errors are shown even with --quiet."""
        self.console.print(f"{PROG}: error: {terminal_safe(message)}", style="bold red", markup=False,
                           highlight=False)

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
async def ticking(fn: Callable[[], None], every: float = 0.1) -> AsyncIterator[None]:
    task = asyncio.ensure_future(_ticker(fn, every))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


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

    def add_stats(self, stream: Any) -> None:
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


def write_json_summary(args: argparse.Namespace, summary: Summary, console: Any) -> None:
    import json  # --json and --json-file only

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
