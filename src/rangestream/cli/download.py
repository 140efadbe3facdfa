"""One direct URL downloaded: into FILE (via FILE.part and its sidecar, resumable), or in order
into stdout, a device or a FIFO (``get``; ``page`` uses it for a single-format page)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import stat
import sys
import time
from typing import TYPE_CHECKING, Any

from ..engine.response import check_validators
from ..errors import (
    ObjectChangedError,
    RangestreamError,
)
from ..output import (
    LocalIOError,
    PartFile,
    SidecarInvalid,
    SidecarState,
    Spans,
    StdoutWriter,
    human_bytes,
    is_stream_target,
    local_io_error,
    open_stream_target,
    refuse_unsafe_part,
    safe_file_name,
    sha256_file,
    url_identity,
)
from ..redact import redact_url
from .args import stream_options
from .exits import EXIT_OK, PROG, Interrupted, UsageError, is_broken_pipe
from .runner import Context, client_for
from .ui import summary_line, ticking

if TYPE_CHECKING:
    from ..client import Client
    from ..engine import Stream




async def get_url(ctx: Context, url: str, default_name: str, fields: dict[str, object] | None = None) -> int:
    """``url`` into ``-o`` (a file, a directory, a template filled from ``fields``, stdout)."""
    args = ctx.args
    if args.output == "-":
        check_stdout(args)
        return await _get_stdout(ctx, url)
    if ctx.place is not None:
        out = await ctx.place(fields or {}, default_name)
    else:
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
    fd = await open_stream_target(out, lambda: ctx.display.note(f"{PROG}: waiting for a reader on {out}"))
    try:
        if os.isatty(fd) and not ctx.args.force:
            raise UsageError(f"refusing to write binary data to the terminal {out}: --force to insist")
        ctx.summary.extra["output_kind"] = "fifo" if stat.S_ISFIFO(os.fstat(fd).st_mode) else "device"
        return await _get_ordered(ctx, url, fd, out)
    finally:
        os.close(fd)


def check_stdout(args: argparse.Namespace) -> None:
    if sys.stdout is None:
        raise UsageError("stdout is closed: give -o FILE, or run with stdout open")
    if sys.stdout.isatty() and not args.force:
        raise UsageError("refusing to write binary data to a terminal: redirect stdout, "
                         "or use -o FILE (--force to insist)")


async def _get_stdout(ctx: Context, url: str) -> int:
    sys.stdout.flush()
    return await _get_ordered(ctx, url, sys.stdout.fileno(), "-")


def _sha256() -> Any:
    import hashlib  # --sha256 only: not part of every download's start-up

    return hashlib.sha256()


async def _get_ordered(ctx: Context, url: str, fd: int, output: str) -> int:
    """The object in order into ``fd`` (stdout, a device, a FIFO); ``output`` names it."""
    args, display, summary = ctx.args, ctx.display, ctx.summary
    summary.output = output
    ctx.ordered_output = output
    writer = StdoutWriter(fd)
    label = "stdout" if output == "-" else os.path.basename(output)
    hasher = _sha256() if args.sha256 else None
    started = time.monotonic()
    stream = None
    try:
        async with client_for(ctx) as client:
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
                        if is_broken_pipe(e):
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
    await download_file(ctx, url, out)
    skipped = summary.extra.get("skipped")
    if skipped and not (args.sha256 and skipped == "exists"):
        return EXIT_OK
    if args.sha256:  # also of a FILE already there ("nothing to do"): the hash asked for is of FILE
        try:
            summary.sha256 = await asyncio.to_thread(sha256_file, out)
        except OSError as e:
            raise local_io_error(e, out, "read") from e
    if not args.json and not skipped:
        display.note(summary_line(summary))
    if summary.sha256:
        display.note(f"sha256 {summary.sha256}  {out}")
    return EXIT_OK


async def download_file(ctx: Context, url: str, out: str, opts: dict[str, Any] | None = None, *,
                        keep_part: bool = False) -> None:
    """``url`` into ``out`` through ``out.part`` and its sidecar, resuming what they hold;
    ``opts``: the stream options (default: from the flags). ``summary.ok`` once ``out`` is whole;
    with ``keep_part`` the complete ``out.part`` and its sidecar stay (a mux input, read from there)."""
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
        return

    state, why_not = (None, None) if args.force else _resume_state(part, url)
    if args.force and os.path.lexists(part.path):
        why_not = "--force"
    if why_not:
        display.warn(f"cannot resume {part.path}: {why_not}; starting over")
        summary.restarted = why_not
    started = time.monotonic()
    try:
        async with client_for(ctx) as client:
            for _attempt in range(2):
                restart = await _download_into(ctx, client, url, part, state, opts, keep_part)
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


def _resume_state(part: PartFile, url: str) -> tuple[SidecarState | None, str | None]:
    """The sidecar to resume from, or (None, why not). Only what passes validation is returned;
    the size and validators are then checked against the server by ``_download_into``."""
    if not os.path.lexists(part.path):
        return None, None
    try:
        state = SidecarState.load(part.sidecar)
    except SidecarInvalid as e:
        return None, f"its sidecar {os.path.basename(part.sidecar)} is not usable: {e}"
    exact = not (state.etag or state.last_modified)  # then only the URL ties FILE.part to the object
    if url_identity(state.url, exact=exact) != url_identity(redact_url(url), exact=exact):
        return None, f"its sidecar is for another URL ({redact_url(state.url)[:200]})"
    try:
        actual = os.lstat(part.path).st_size
    except OSError:
        return None, None
    spans = Spans.of(state.done)
    spans.clip(min(actual, state.size))
    state.done = spans.as_list()
    return state, None


def _validators_mismatch(state: SidecarState, current: dict[str, Any]) -> str | None:
    """Compared as the engine does (check_validators): ``W/"a"`` is ``"a"`` (a proxy weakens the
    tag of the same version) and a date is an instant (``GMT`` or ``-0000``). A validator the
    sidecar recorded that the server no longer shows is a mismatch too: without it nothing says
    the bytes now served are the version FILE.part holds (another of the same size would splice)."""
    etag, modified = current.get("etag"), current.get("last_modified")
    if state.etag and not etag:
        return f"the server no longer shows its ETag {state.etag}"
    if state.last_modified and not modified:
        return f"the server no longer shows its Last-Modified {state.last_modified}"
    if check_validators(state.etag, None, etag, None):
        return f"its ETag changed ({state.etag} -> {etag})"
    if check_validators(None, state.last_modified, None, modified):
        return f"its Last-Modified changed ({state.last_modified} -> {modified})"
    return None


async def _download_into(ctx: Context, client: Client, url: str, part: PartFile,
                         state: SidecarState | None, base_opts: dict[str, Any] | None,
                         keep_part: bool = False) -> str | None:
    """One pass. Returns None when FILE is complete, or the reason a resume must start over."""
    opts = dict(base_opts) if base_opts is not None else stream_options(ctx.args)
    if state is not None:
        why = _open_for_resume(ctx, part, state, opts)
        if why is not None:
            return why
    else:
        part.open(fresh=True)
        ctx.summary.resumed_from = 0

    stream = client.open_stream(url, **opts)
    try:
        try:
            await stream.__aenter__()
        except ObjectChangedError as e:
            if state is not None:
                part.close()
                return f"the object changed on the server since it was started ({e.reason})"
            raise
        try:
            return await _fill(ctx, stream, part, state, keep_part)
        finally:
            await stream.__aexit__(None, None, None)
    finally:
        ctx.summary.bytes += part.written
        ctx.summary.add_stats(stream)


def _open_for_resume(ctx: Context, part: PartFile, state: SidecarState, opts: dict[str, Any]) -> str | None:
    """FILE.part opened to continue from ``state``, and ``opts`` asking only for what is missing;
    or the reason it cannot be continued."""
    display = ctx.display
    part.open(fresh=False)
    part.size, part.etag, part.last_modified = state.size, state.etag, state.last_modified
    part.spans = Spans.of(state.done)
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
    gaps = part.spans.gaps(state.size)
    # Nothing missing still asks the server (for the last byte): its size and validators
    # must confirm the sidecar before FILE.part becomes FILE.
    opts["ranges"] = [(g.start, g.stop) for g in gaps] or [(state.size - 1, state.size)]
    # The sidecar's validators are not handed to the engine (expect_validators): it would report
    # them as the stream's even when no response shows them. Unseeded, it pins what the server
    # really shows and _fill holds that to the sidecar before the first byte is written.
    if not (state.etag or state.last_modified):
        display.warn("the server gave no ETag or Last-Modified: resuming on the size alone")
    ctx.summary.resumed_from = part.spans.total()
    display.note(f"Resuming {part.path}: {human_bytes(ctx.summary.resumed_from)} of "
                 f"{human_bytes(state.size)} already there, {len(gaps)} span{'s' if len(gaps) != 1 else ''} "
                 f"missing")
    return None


async def _fill(ctx: Context, stream: Stream, part: PartFile, state: SidecarState | None,
                keep_part: bool = False) -> str | None:
    """The pieces written into FILE.part as they arrive, then FILE.part renamed to FILE; or the
    reason a resume must start over (the object is no longer the one the sidecar describes)."""
    display, summary = ctx.display, ctx.summary
    if state is not None and stream.size != state.size:
        part.close()
        return (f"the server now reports {stream.size if stream.size is not None else 'no'} bytes, "
                f"{part.path} was for {state.size}")
    part.size = summary.size = stream.size
    if stream.size is not None:
        part.allocate(stream.size)
    display.start(os.path.basename(part.final), stream.size, part.spans.total())
    first = True

    def tick() -> None:
        display.update(part.spans.total(), stream.size, active=stream.active, retries=stream.stats.retries)

    async with ticking(tick):
        try:
            async for offset, data in stream.unordered():
                if first:
                    first = False
                    v = stream.validators
                    if state is not None and (why := _validators_mismatch(state, v)):
                        part.close()
                        return f"the object changed on the server since it was started ({why})"
                    part.etag, part.last_modified = v.get("etag"), v.get("last_modified")
                part.write(offset, data)
                part.maybe_checkpoint()
        except ObjectChangedError as e:
            if state is not None and part.written == 0:
                part.close()
                return f"the object changed on the server since it was started ({e.reason})"
            raise
    display.stop()
    if stream.size is None:
        part.size = summary.size = stream.size or part.spans.total()
    if part.size is not None and not part.spans.covers(part.size):
        raise RangestreamError(f"internal error: the download ended with bytes missing "
                               f"({part.spans.as_list()[:4]}...)")
    if keep_part:
        part.checkpoint_now()  # every byte listed: a later run only confirms the object and reads it
        part.close()
    else:
        part.finish()
        ctx.finished = part.final  # a signal from here on still ends 0: FILE is complete
    return None
