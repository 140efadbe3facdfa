"""A muxed download to a file that survives a crash: video and audio are fetched at once, each
into its own resumable ``FILE.video.part`` / ``FILE.audio.part`` with a sidecar (the same path as
``get -o FILE``), then muxed from those local files into ``FILE`` once both are complete; the parts
are removed only after a successful mux. A re-run fetches only what each part is missing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..errors import MuxError, RangestreamError
from ..output import SIDECAR_SUFFIX, local_io_error, open_locked, open_part_fd
from .download import download_file
from .progress import SumDisplay
from .runner import Context, client_for
from .ui import Summary

if TYPE_CHECKING:
    from ..muxer import MuxResult

READ_BLOCK = 1 << 20


def input_part(out: str, name: str) -> str:
    """Where input ``name`` of ``out`` is fetched to (``out.video``: ``out.video.part`` + sidecar)."""
    return f"{out}.{name}"


async def mux_via_parts(ctx: Context, inputs: list[tuple[str, str, dict[str, Any]]], out: str,
                        fmt: str) -> MuxResult:
    """Fetch every input into its part, then mux them into ``out`` (via ``out.part``, locked)."""
    display, summary = ctx.display, ctx.summary
    part = out + ".part"
    sink = open_locked(part)  # a second run to the same output must not truncate ours
    summary.output = out
    started = time.monotonic()
    whole = SumDisplay(display, os.path.basename(out), [name for name, _, _ in inputs])
    # --force is about replacing FILE (decided by the caller); the parts still resume, so the
    # same command run again after a crash continues instead of fetching everything again.
    args = argparse.Namespace(**{**vars(ctx.args), "force": False})
    subs = {name: Context(args, whole.part(name), Summary(command="get")) for name, _, _ in inputs}
    try:
        async with client_for(ctx) as client:
            for sub in subs.values():
                sub.client = client
            await _fetch_all(ctx, subs, inputs, out)
        display.stop()
        result = await _mux_files(out, [name for name, _, _ in inputs], sink, fmt)
        try:
            sink.flush()
            os.replace(part, out)  # still under our lock
        except OSError as e:
            raise local_io_error(e, out, "rename to") from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)  # ours: we hold its lock; the input parts stay for a re-run
        raise
    finally:
        with contextlib.suppress(OSError):
            sink.close()
        display.stop()
        summary.seconds = time.monotonic() - started
        for sub in subs.values():
            summary.bytes += sub.summary.bytes
            summary.resumed_from += sub.summary.resumed_from
            for key in ("requests", "retries", "refreshes", "splits"):
                setattr(summary, key, getattr(summary, key) + getattr(sub.summary, key))
            summary.window_max = max(summary.window_max, sub.summary.window_max)
            summary.connections_max = max(summary.connections_max, sub.summary.connections_max)
    for name, _, _ in inputs:
        for path in (input_part(out, name) + ".part", input_part(out, name) + SIDECAR_SUFFIX):
            with contextlib.suppress(OSError):
                os.unlink(path)
    return result


async def _fetch_all(ctx: Context, subs: dict[str, Context], inputs: list[tuple[str, str, dict[str, Any]]],
                     out: str) -> None:
    """Both inputs at once; the first failure stops the other (its part and sidecar saved)."""
    tasks = {name: asyncio.create_task(download_file(subs[name], url, input_part(out, name), opts,
                                                     keep_part=True), name=f"rangestream-mux-{name}")
             for name, url, opts in inputs}
    try:
        await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        saved = [input_part(out, n) + ".part" for n in tasks if os.path.exists(input_part(out, n) + ".part")]
        ctx.interrupt_note = (f"what arrived is kept in {' and '.join(saved)}; run the same command again "
                              f"to resume") if saved else None
    for name, task in tasks.items():
        if not task.cancelled() and (e := task.exception()) is not None:
            ctx.hint = ctx.interrupt_note
            if not isinstance(e, RangestreamError):
                raise e  # local I/O, a refused part file: their own exit codes
            raise MuxError(f"cannot fetch: {e}", input=name) from e


async def _mux_files(out: str, names: list[str], sink: Any, fmt: str) -> MuxResult:
    from ..muxer import mux as mux_streams  # PyAV loads only for this

    video, audio = (_read_part(input_part(out, name) + ".part") for name in names)
    return await mux_streams(video, audio, sink, fmt)


async def _read_part(path: str) -> AsyncIterator[bytes]:
    """A complete part file, in blocks read off the event loop (a local stream copy reads at
    hundreds of MB/s; the muxer's queue bounds what waits in memory)."""
    fd = open_part_fd(path)  # no symlink followed, a regular file
    try:
        while block := await asyncio.to_thread(os.read, fd, READ_BLOCK):
            yield block
    finally:
        os.close(fd)
