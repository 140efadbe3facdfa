"""``rangestream demo``: the README's main command, offline.

1. Starts the emulated CDN (``rangestream.testing.origin``, YouTube-like profile: 150 ms
   to first byte, 16 MB/s per connection, a 64 MB/s link, requests over 10 MB
   throttled) as a subprocess on a free loopback port, so it has a core of its own.
2. Downloads the same object three times: sequentially (window 1), with the
   next-request prefetch (window 2) and with the adaptive window (``auto``), checking
   each SHA-256 against the content the origin generates.
3. Prints a table and bar charts of time and throughput, with the ratio to the
   link limit (size / link rate + one first-byte delay).
4. Muxes a generated H.264 video and AAC audio, served by an in-process origin,
   into ``demo.mp4`` (when ``rangestream.mux`` and ``rangestream.testing.media`` are there).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import RangestreamError
from ..output import human_bytes, open_locked
from ..testing.origin import PROFILES, object_bytes
from .exits import EXIT_FAILURE, EXIT_OK
from .runner import Context
from .ui import MB, ticking

OBJECT = "demo"
BAR = 40


def _die_with_parent() -> None:
    """In the origin child, before exec: on Linux, be killed when the demo dies, even by
    SIGKILL, so no emulated CDN is left listening after a crashed demo."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class RunResult:
    label: str
    window: int | str
    seconds: float
    bytes: int
    requests: int
    retries: int
    window_max: int
    sha_ok: bool

    @property
    def mbps(self) -> float:
        return self.bytes / self.seconds / MB if self.seconds > 0 else 0.0


def expected_sha256(name: str, size: int, version: int = 0) -> str:
    h = hashlib.sha256()
    step = 4 << 20
    for pos in range(0, size, step):
        h.update(object_bytes(name, size, version, pos, min(size, pos + step)))
    return h.hexdigest()


def best_window() -> int | str:
    """``"auto"`` when the engine accepts it, else 4."""
    from ..client import Client

    try:
        Client().open_stream("http://127.0.0.1/", window="auto")
    except (TypeError, ValueError):
        return 4
    return "auto"


class OriginProcess:
    """``python -m rangestream.testing.origin`` in a subprocess: it gets the other core."""

    def __init__(self, profile: str = "youtube") -> None:
        self.profile = profile
        self.proc: asyncio.subprocess.Process | None = None
        self.base_url = ""
        self._err = tempfile.TemporaryFile()

    async def start(self, timeout: float = 20.0) -> str:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rangestream.testing.origin", "--profile", self.profile, "--port", "0",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=self._err,
            preexec_fn=_die_with_parent)
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            line = b""
        text = line.decode(errors="replace").strip()
        if not text.startswith("listening on "):
            self._err.seek(0)
            err = self._err.read().decode(errors="replace").strip()
            raise RangestreamError(f"the emulated CDN did not start: {text or err or 'no output'}")
        self.base_url = text.split()[-1]
        return self.base_url

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            self._err.close()
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self._err.close()

    def url(self, name: str, size: int) -> str:
        expire = int(time.time()) + 6 * 3600
        return (f"{self.base_url}/videoplayback?id={name}&clen={size}&expire={expire}&itag=137"
                f"&source=youtube&requiressl=yes&mime=video%2Fmp4&sig=0123456789abcdef")


async def _download(ctx: Context, url: str, label: str, window: int | str, chunk_size: int,
                    expected: str) -> RunResult:
    from ..client import Client
    from ..retry import Retry

    display = ctx.display
    hasher = hashlib.sha256()
    opts: dict[str, Any] = {"chunk_size": chunk_size, "window": window, "retry": Retry(attempts=5, backoff=0.5)}
    started = time.monotonic()
    async with Client() as client:
        stream = client.open_stream(url, **opts)
        async with stream:
            display.start(label, stream.size)

            def tick() -> None:
                display.update(stream.delivered, stream.size, active=stream.active, retries=stream.stats.retries)

            async with ticking(tick):
                async for data in stream:
                    hasher.update(data)
            seconds = time.monotonic() - started
            display.stop()
    s = stream.stats
    return RunResult(label, window, seconds, stream.delivered, s.requests, s.retries, s.window_max,
                     hasher.hexdigest() == expected)


def _table(results: list[RunResult], size: int, link_seconds: float, link_rate: float) -> Table:
    t = Table(title=f"{human_bytes(size)} from the emulated YouTube CDN", title_justify="left")
    for name, justify in (("mode", "left"), ("window", "right"), ("seconds", "right"), ("MB/s", "right"),
                          ("speed-up", "right"), ("of link", "right"), ("requests", "right"),
                          ("retries", "right"), ("sha256", "center")):
        t.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    base = results[0].seconds
    for r in results:
        w = f"auto, max {r.window_max}" if r.window == "auto" else str(r.window)
        t.add_row(r.label, w, f"{r.seconds:.2f}", f"{r.mbps:.1f}", f"{base / r.seconds:.1f}x",
                  f"{100 * link_seconds / r.seconds:.0f}%", str(r.requests), str(r.retries),
                  Text("ok", style="green") if r.sha_ok else Text("MISMATCH", style="bold red"))
    t.add_row("link limit", "", f"{link_seconds:.2f}", f"{size / link_seconds / MB:.1f}",
              f"{base / link_seconds:.1f}x", "100%", "", "", "", style="dim")
    return t


def _bars(title: str, rows: list[tuple[str, float, str]], scale: float, style: str) -> Text:
    out = Text(title + "\n", style="bold")
    width = max(len(label) for label, _, _ in rows)
    for label, value, shown in rows:
        n = value / scale * BAR if scale > 0 else 0
        full = int(n)
        bar = "█" * full + ("▌" if n - full >= 0.5 else "")
        out.append(f"  {label:<{width}}  ")
        out.append(bar, style=style if label != "link limit" else "dim")
        out.append(f" {shown}\n")
    return out


async def _mux_demo(ctx: Context, console: Console, out: str, chunk_size: int) -> int:
    from ..muxer import mux_urls
    from ..testing import media
    from ..testing.origin import Origin

    display = ctx.display
    seconds = 10.0
    display.note(f"Encoding a {seconds:.0f} s test video (H.264) and tone (AAC) as DASH-like fragmented MP4...")
    video = await asyncio.to_thread(media.generate_clip, "h264-fmp4", seconds, width=640, height=360)
    audio = await asyncio.to_thread(media.generate_clip, "aac-fmp4", seconds)
    part = out + ".part"
    origin = Origin(PROFILES["youtube"])
    await origin.start()
    try:
        origin.add_object("demo-video", video, "video/mp4")
        origin.add_object("demo-audio", audio, "audio/mp4")
        vurl = origin.media_url("demo-video", youtube=True)
        aurl = origin.media_url("demo-audio", youtube=True)
        started = time.monotonic()
        # Opened as `mux -o` opens its out.part: never through a planted symlink, under a lock.
        sink = open_locked(part)
        try:
            result = await mux_urls(vurl, aurl, sink, "mp4", chunk_size=chunk_size, window="auto")
            sink.flush()
            os.replace(part, out)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part)  # ours: we opened it (not a symlink) and hold its lock
            raise
        finally:
            sink.close()
        took = time.monotonic() - started
    finally:
        await origin.close()
    codecs = " + ".join(result.codecs.get(k, "?") for k in ("video", "audio"))
    dur = f"{result.duration:.1f} s" if result.duration else "?"
    console.print(Text.assemble(
        ("Muxed ", "bold"), f"a generated video ({human_bytes(len(video))}) and audio ({human_bytes(len(audio))}), "
        f"fetched from the emulated CDN, into ", (os.path.abspath(out), "bold green"),
        f" ({human_bytes(result.bytes_written)}, {codecs}, {dur}) in {took:.2f} s. Play it: ffplay {out}"))
    return EXIT_OK


async def run_demo(ctx: Context) -> int:
    args, display = ctx.args, ctx.display
    size, chunk_size = args.size, args.chunk_size
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = max(console.width, 100)  # a log or a pipe: room for the table
    profile = PROFILES["youtube"]
    link_rate = profile.link_rate or 64e6
    link_seconds = size / link_rate + profile.ttfb
    best = best_window()
    modes: list[tuple[str, int | str]] = [("sequential", 1), ("next-request prefetch", 2),
                                          ("auto window" if best == "auto" else f"window {best}", best)]

    console.print(Text.assemble(
        ("rangestream demo", "bold"),
        f": {human_bytes(size)} in {human_bytes(chunk_size)} Range requests from an emulated YouTube CDN "
        f"({profile.ttfb * 1000:.0f} ms to first byte, {human_bytes(profile.rate)}/s per connection, "
        f"{human_bytes(link_rate)}/s link, requests over {human_bytes(profile.throttle_over)} throttled "
        f"to {human_bytes(profile.throttle_rate)}/s). No network needed."))
    expected_task = asyncio.ensure_future(asyncio.to_thread(expected_sha256, OBJECT, size))
    origin = OriginProcess("youtube")
    results: list[RunResult] = []
    try:
        await origin.start()
        display.note(f"Emulated CDN listening on {origin.base_url}")
        expected = await expected_task
        url = origin.url(OBJECT, size)
        for label, window in modes:
            r = await _download(ctx, url, label, window, chunk_size, expected)
            results.append(r)
            console.print(f"  {label:<21} {r.seconds:6.2f} s  {r.mbps:6.1f} MB/s  "
                          f"sha256 {'ok' if r.sha_ok else 'MISMATCH'}")
    finally:
        if not expected_task.done():
            expected_task.cancel()
        await origin.stop()

    console.print()
    console.print(_table(results, size, link_seconds, link_rate))
    console.print()
    time_rows = [(r.label, r.seconds, f"{r.seconds:.2f} s") for r in results]
    time_rows.append(("link limit", link_seconds, f"{link_seconds:.2f} s"))
    console.print(_bars("Time (shorter is better)", time_rows, max(v for _, v, _ in time_rows), "cyan"))
    rate_rows = [(r.label, r.mbps, f"{r.mbps:.1f} MB/s") for r in results]
    rate_rows.append(("link limit", size / link_seconds / MB, f"{size / link_seconds / MB:.1f} MB/s"))
    console.print(_bars("Throughput (longer is better)", rate_rows, max(v for _, v, _ in rate_rows), "green"))
    best_r, seq = results[-1], results[0]
    console.print(Text.assemble(
        (f"{best_r.label}", "bold"), f": {seq.seconds / best_r.seconds:.1f}x faster than sequential, "
        f"{100 * link_seconds / best_r.seconds:.0f}% of the link limit ({link_seconds:.2f} s)."))
    ctx.summary.extra["runs"] = [r.__dict__ | {"mbps": round(r.mbps, 2)} for r in results]
    if not all(r.sha_ok for r in results):
        display.error("a download did not match the expected SHA-256")
        return EXIT_FAILURE

    if not args.no_mux:
        console.print()
        return await _mux_demo(ctx, console, args.out, chunk_size)
    ctx.summary.ok = True
    return EXIT_OK
