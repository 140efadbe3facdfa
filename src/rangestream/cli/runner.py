"""Running one command: its context, Ctrl-C/SIGTERM as a cancellation, and every failure
turned into a message and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..output import silence_stdout
from ..redact import redact_text
from .args import make_client
from .exits import EXIT_BROKEN_PIPE, EXIT_FAILURE, EXIT_OK, PROG, Interrupted, classify, is_broken_pipe
from .ui import Display, Summary, setup_logging, terminal_safe, write_json_summary

if TYPE_CHECKING:
    from ..client import Client


@dataclass
class Context:
    args: argparse.Namespace
    display: Display
    summary: Summary
    interrupt_note: str | None = None
    hint: str | None = None
    ordered_output: str | None = None  # "-" or a device/FIFO path, written in order
    client: Client | None = None  # shared by every download of the command (one pool, one pacing)
    # (template fields, default name) -> path; awaited: a batch job waits there for its turn to be named
    place: Callable[[dict[str, object], str], Awaitable[str]] | None = None
    finished: str | None = None  # the command's one FILE, once renamed into place (complete)


@contextlib.asynccontextmanager
async def client_for(ctx: Context) -> AsyncIterator[Client]:
    """The command's shared client, or one of this download's own (closed when it ends)."""
    if ctx.client is not None:
        yield ctx.client
        return
    async with make_client(ctx.args) as client:
        yield client


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


def execute(args: argparse.Namespace, display: Display, summary: Summary,
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
        note = f"; {ctx.interrupt_note}" if ctx.interrupt_note else ""
        if ctx.finished is not None:
            # The signal came after FILE was renamed into place: the download is done.
            code, summary.error, summary.ok = EXIT_OK, None, True
            note = f" after {ctx.finished} was complete"
        display.console.print(terminal_safe(f"{PROG}: {what}{note}"), style="yellow", markup=False, highlight=False)
    except BaseException as e:  # noqa: BLE001 - every failure becomes a message and an exit code
        display.stop()
        if isinstance(e, SystemExit):
            raise
        if is_broken_pipe(e) and (getattr(args, "output", None) == "-" or ctx.ordered_output):
            if getattr(args, "output", None) == "-":
                silence_stdout()
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
                    display.console.print(terminal_safe(f"{PROG}: {extra}"), markup=False, highlight=False)
    summary.exit_code = code
    if getattr(args, "json", False) or getattr(args, "json_file", None):
        write_json_summary(args, summary, display.console)
    return code
