"""The ``rangestream`` command line: ``get``, ``mux``, ``serve``, ``sign``, ``origin`` and ``demo``.

``rangestream get URL -o FILE`` writes ``FILE.part`` at the offsets the pieces arrive at (any chunk
of the window, ``Stream.unordered()``), records the completed spans in ``FILE.part.json`` (the
sidecar, as aria2's control file), and renames ``FILE.part`` to ``FILE`` once every byte is there.
A later run resumes from the sidecar: only the missing spans are fetched, and only if the object's
size and validators (ETag, Last-Modified) still match. ``-o -`` streams the object to stdout in order.

Nothing but payload bytes ever goes to stdout with ``-o -``: progress, the summary, warnings,
errors and ``--json`` go to stderr.

Layout: ``args`` (parser, value parsers, environment), ``exits`` (exit codes, exception ->
exit code), ``ui`` (display, summary), ``runner`` (signals, failures -> messages), one module per
command (``get``, ``mux``, ``page``, ``serve``, ``demo``), each imported only when its command runs;
several downloads: ``jobs``, ``batch``, ``playlist``, ``progress``; a muxed file through resumable
parts: ``muxfiles``. Files and stdout are ``rangestream.output``'s.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Awaitable, Callable

from .args import apply_env, build_parser, refresh_hook
from .exits import EXIT_CODES, EXIT_USAGE, PROG, UsageError
from .proxies import with_proxy_pool
from .runner import Context, execute
from .serve import PASSTHROUGH
from .ui import Display, Summary, make_console

__all__ = ["main", "EXIT_CODES"]

Runner = Callable[[Context], Awaitable[int]]


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the run's own handlers are installed
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _lazy(module: str, name: str) -> Runner:
    """A command's runner, its module imported only when it runs (PyAV, rich, yt-dlp stay unloaded)."""

    async def run(ctx: Context) -> int:
        runner: Runner = getattr(importlib.import_module(module, __name__), name)
        return await runner(ctx)

    return run


def _network_command(runner: Runner) -> Callable[[argparse.Namespace, Display, Summary], int]:
    """``get`` and ``mux``: the environment's defaults and --refresh-command, then the runner."""

    def command(args: argparse.Namespace, display: Display, summary: Summary) -> int:
        args._refresh = refresh_hook(args.refresh_command, display)
        try:
            apply_env(args)
        except UsageError as e:
            display.error(str(e))
            return EXIT_USAGE
        return execute(args, display, summary, with_proxy_pool(runner))  # --proxy-file: a lease per job

    return command


def _local_command(runner: Runner) -> Callable[[argparse.Namespace, Display, Summary], int]:
    def command(args: argparse.Namespace, display: Display, summary: Summary) -> int:
        return execute(args, display, summary, runner)

    return command


COMMANDS = {
    "get": _network_command(_lazy(".get", "run_get")),
    "mux": _network_command(_lazy(".mux", "run_mux")),
    "demo": _local_command(_lazy(".demo", "run_demo")),
}


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:  # their own parsers and --help
        return PASSTHROUGH[argv[0]](argv[1:])
    parser = build_parser(COMMANDS)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, message already printed)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    command = getattr(args, "run", None)
    if command is None:
        parser.error(f"unknown command {args.command!r}")
    display = Display(make_console(), quiet=getattr(args, "quiet", False))
    return int(command(args, display, Summary(command=args.command)))
