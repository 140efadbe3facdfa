"""``rangestream mux``: a video and an audio URL fetched at once and muxed into one file or stdout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from ..errors import (
    MuxError,
    RangestreamError,
)
from ..output import human_bytes, is_stream_target, open_stream_target, sha256_file
from ..redact import redact_url
from .args import check_url, stream_options
from .download import check_stdout
from .exits import EXIT_OK, PROG, UsageError
from .runner import Context, client_for
from .ui import summary_line, ticking

if TYPE_CHECKING:
    from ..muxer import MuxResult


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
        fmt = container_of(out)
        if fmt is None:
            raise UsageError(f"cannot tell the container from {out!r}: use .mp4, .mkv or .webm, or --format")
    if out != "-" and os.path.exists(out) and not args.force and not is_stream_target(out):
        raise UsageError(f"{out} exists; pass --force to overwrite it")
    opts = stream_options(args)
    return await mux_into(ctx, [("video", video_url, opts), ("audio", audio_url, opts)], out, fmt or "mp4")


_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "mkv", ".webm": "webm"}


def container_of(path: str) -> str | None:
    return _CONTAINERS.get(os.path.splitext(path)[1].lower())


def _share_connections(ctx: Context, inputs: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Each input gets half of this download's --max-connections share."""
    share = getattr(ctx.args, "_connections", None) or getattr(ctx.args, "max_connections", None)
    if not share:
        return
    half = max(1, share // len(inputs))
    for _, _, opts in inputs:
        if "ceiling" in opts:
            opts["ceiling"] = min(opts["ceiling"], half)
        elif isinstance(opts.get("window"), int):
            opts["window"] = min(opts["window"], half)


async def mux_into(ctx: Context, inputs: list[tuple[str, str, dict[str, Any]]], out: str, fmt: str) -> int:
    """Fetch the (video, audio) inputs, each ``(name, url, stream options)``, and mux them into
    ``out``: a file through resumable parts (``muxfiles``), or on the fly into stdout (``-``), a
    device or a FIFO."""
    inputs = [(name, url, dict(opts)) for name, url, opts in inputs]
    _share_connections(ctx, inputs)
    if out != "-" and not is_stream_target(out):
        from .muxfiles import mux_via_parts

        result = await mux_via_parts(ctx, inputs, out, fmt)
        await _report(ctx, result, out)
        return EXIT_OK
    display, summary = ctx.display, ctx.summary
    sink = await _open_sink(ctx, out)
    summary.output = out
    started = time.monotonic()
    streams: dict[str, Any] = {}
    try:
        result = await _fetch_and_mux(ctx, inputs, sink, fmt, streams)
    finally:
        if sink != "-":  # the device/FIFO
            with contextlib.suppress(OSError):
                sink.close()
        display.stop()
        summary.seconds = time.monotonic() - started
        for s in streams.values():
            summary.bytes += s.delivered
            summary.add_stats(s)
    await _report(ctx, result, out)
    return EXIT_OK


async def _open_sink(ctx: Context, out: str) -> Any:
    """Where the muxer writes on the fly: ``"-"`` (stdout), or a device/FIFO opened for writing."""
    if out == "-":
        check_stdout(ctx.args)
        return "-"
    fd = await open_stream_target(out, lambda: ctx.display.note(f"{PROG}: waiting for a reader on {out}"))
    ctx.ordered_output = out
    return os.fdopen(fd, "wb")


async def _fetch_and_mux(ctx: Context, inputs: list[tuple[str, str, dict[str, Any]]], sink: Any, fmt: str,
                         streams: dict[str, Any]) -> MuxResult:
    """Both inputs opened (recorded in ``streams``) and muxed into ``sink``, with progress."""
    from ..muxer import mux as mux_streams  # PyAV loads only for this subcommand

    display = ctx.display
    async with client_for(ctx) as client, contextlib.AsyncExitStack() as stack:
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
    return result


async def _report(ctx: Context, result: MuxResult, out: str) -> None:
    args, display, summary = ctx.args, ctx.display, ctx.summary
    summary.ok = True
    summary.size = result.bytes_written
    summary.extra.update({"format": result.format, "bytes_written": result.bytes_written,
                          "codecs": result.codecs, "duration": result.duration, "packets": result.packets})
    if getattr(args, "sha256", False) and out != "-":
        summary.sha256 = await asyncio.to_thread(sha256_file, out)
    if not args.json:
        codecs = " + ".join(result.codecs.get(k, "?") for k in ("video", "audio"))
        dur = f", {result.duration:.1f} s of media" if result.duration else ""
        display.note(summary_line(summary) + f" · {codecs}{dur}, {human_bytes(result.bytes_written)} written")
    if summary.sha256:
        display.note(f"sha256 {summary.sha256}  {out}")
