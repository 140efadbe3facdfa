"""Progress of several downloads at once: on a terminal one rich line per running download plus a
total line (bytes, rate, ETA, downloads done/failed); off a terminal a plain total line every ~2 s.
Each download writes to its own :class:`JobDisplay`, which has the single download's interface."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..output import human_bytes
from .exits import PROG
from .ui import MB, Display, human_seconds, ticking


@dataclass
class _Line:
    label: str
    completed: int = 0
    total: int | None = None
    first: int = 0  # bytes already there when it started (a resume)
    task: Any = None
    running: bool = False


class MultiDisplay:
    def __init__(self, display: Display, jobs: int) -> None:
        self.parent = display
        self.console = display.console
        self.mode = display.mode
        self.jobs = jobs
        self.done = self.failed = self.skipped = 0
        self.lines: list[_Line] = []
        self._progress: Any = None
        self._total_task: Any = None
        self._started = time.monotonic()
        self._last_plain = self._started

    def job(self, label: str) -> JobDisplay:
        line = _Line(label)
        self.lines.append(line)
        return JobDisplay(self, line)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._start_rich()
        try:
            async with ticking(self.tick, 0.25):
                yield
        finally:
            self.stop()

    def _start_rich(self) -> None:
        if self.mode != "rich":
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
            TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console, transient=True, refresh_per_second=8)
        self._progress.start()
        self._total_task = self._progress.add_task("total", total=None, rate="", info="")

    def stop(self) -> None:
        if self._progress is not None:
            with contextlib.suppress(Exception):
                self._progress.stop()
        self._progress = None

    # one line ----------------------------------------------------------------------------
    def show(self, line: _Line, total: int | None, completed: int) -> None:
        line.total, line.completed, line.first, line.running = total, completed, completed, True
        if self._progress is not None and line.task is None:
            line.task = self._progress.add_task(line.label, total=total, completed=completed, rate="", info="")

    def update(self, line: _Line, completed: int, total: int | None, info: str) -> None:
        line.completed = completed
        if total is not None:
            line.total = total
        if self._progress is not None and line.task is not None:
            self._progress.update(line.task, completed=completed, total=line.total, info=info,
                                  rate=self._rate_text(line.completed - line.first, self._elapsed()))

    def finish(self, line: _Line, outcome: str) -> None:
        """``outcome``: "done", "failed" or "skipped"."""
        setattr(self, outcome, getattr(self, outcome) + 1)
        line.running = False
        if self._progress is not None and line.task is not None:
            with contextlib.suppress(Exception):
                self._progress.remove_task(line.task)
            line.task = None

    # the total ---------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return max(time.monotonic() - self._started, 1e-6)

    @staticmethod
    def _rate_text(nbytes: int, seconds: float) -> str:
        return f"{nbytes / seconds / MB:.1f} MB/s"

    def totals(self) -> tuple[int, int | None, float]:
        """(bytes there, total bytes if every download's size is known, rate of this run in B/s)."""
        have = sum(line.completed for line in self.lines)
        fetched = sum(line.completed - line.first for line in self.lines)
        sizes = [line.total for line in self.lines]
        known = len(self.lines) == self.jobs - self.skipped and all(s is not None for s in sizes)
        total = sum(s for s in sizes if s is not None) if known else None
        return have, total, fetched / self._elapsed()

    def total_text(self) -> str:
        have, total, rate = self.totals()
        running = sum(1 for line in self.lines if line.running)
        eta = human_seconds((total - have) / rate) if total is not None and rate > 0 else "?"
        text = (f"{human_bytes(have)} / {human_bytes(total)}, {rate / MB:.1f} MB/s, ETA {eta}, "
                f"{self.done + self.skipped}/{self.jobs} done, {self.failed} failed")
        return text + (f", {running} running" if running else "")

    def tick(self) -> None:
        if self._progress is not None:
            have, total, _ = self.totals()
            self._progress.update(self._total_task, completed=have, total=total, rate="",
                                  info=f"{self.done + self.skipped}/{self.jobs} done, {self.failed} failed")
        elif self.mode == "plain":
            now = time.monotonic()
            if now - self._last_plain >= self.parent.plain_every:
                self._last_plain = now
                self.console.print(f"{PROG}: total: {self.total_text()}", markup=False, highlight=False)


class JobDisplay(Display):
    """One download's view of a :class:`MultiDisplay`: messages go to the shared console, the
    progress to its line."""

    def __init__(self, multi: MultiDisplay, line: _Line) -> None:
        super().__init__(multi.console, quiet=multi.parent.quiet, plain_every=multi.parent.plain_every)
        self.multi, self.line = multi, line

    def note(self, message: str, style: str | None = None) -> None:
        super().note(f"{self.line.label} {message}", style)

    def warn(self, message: str) -> None:
        super().warn(f"{self.line.label} {message}")

    def start(self, label: str, total: int | None, completed: int = 0) -> None:
        self.multi.show(self.line, total, completed)

    def update(self, completed: int, total: int | None = None, *, active: int | None = None,
               retries: int = 0) -> None:
        info = f"{active} conn{'s' if active != 1 else ''}" if active is not None else ""
        self.multi.update(self.line, completed, total, info)

    def stop(self) -> None:
        pass  # the line stays until the download ends (MultiDisplay.finish)


class SumDisplay(Display):
    """The inputs of one mux fetched at once, shown as one progress (their sum) on ``parent``."""

    def __init__(self, parent: Display, label: str, names: list[str]) -> None:
        super().__init__(parent.console, quiet=parent.quiet, plain_every=parent.plain_every)
        self.parent, self.label = parent, label
        self.parts: dict[str, list[int | None]] = {n: [0, None] for n in names}  # completed, total
        self.started = False

    def part(self, name: str) -> Display:
        return _PartDisplay(self, name)

    def _sum(self) -> tuple[int, int | None]:
        done = sum(int(p[0] or 0) for p in self.parts.values())
        sizes = [p[1] for p in self.parts.values()]
        return done, (sum(s for s in sizes if s is not None) if all(s is not None for s in sizes) else None)

    def changed(self, name: str, completed: int, total: int | None, active: int | None, retries: int) -> None:
        p = self.parts[name]
        p[0] = completed
        if total is not None:
            p[1] = total
        done, size = self._sum()
        if not self.started:
            self.started = True
            self.parent.start(self.label, size, done)
        self.parent.update(done, size, active=active, retries=retries)


class _PartDisplay(Display):
    def __init__(self, whole: SumDisplay, name: str) -> None:
        super().__init__(whole.console, quiet=whole.quiet, plain_every=whole.plain_every)
        self.whole, self.name = whole, name

    def start(self, label: str, total: int | None, completed: int = 0) -> None:
        self.whole.changed(self.name, completed, total, None, 0)

    def update(self, completed: int, total: int | None = None, *, active: int | None = None,
               retries: int = 0) -> None:
        self.whole.changed(self.name, completed, total, active, retries)

    def stop(self) -> None:
        pass
