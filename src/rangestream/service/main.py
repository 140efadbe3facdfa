"""``rangestream serve``: the command line and the serving loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import shlex
import signal
import sys

from aiohttp import web

from .app import make_app
from .options import ServerOptions


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _serve(options: ServerOptions, host: str, port: int) -> None:
    runner = web.AppRunner(make_app(options), handler_cancellation=True, access_log=None,
                           shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        shown = f"[{host}]" if ":" in host else host
        print(f"listening on http://{shown}:{bound}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rangestream serve",
        description="Serve /stream?url= (a proxied object, Range-capable for players) and "
                    "/mux?video=&audio=&format= (muxed on the fly) over HTTP.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--token", default=os.environ.get("RANGESTREAM_TOKEN") or None,
                        help="require 'Authorization: Bearer TOKEN' or ?token=TOKEN on every request "
                             "(default $RANGESTREAM_TOKEN); needed for a non-loopback --host")
    parser.add_argument("--allow-private", action="store_true",
                        help="allow upstreams on loopback/private/link-local addresses (SSRF guard off)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="SUFFIX",
                        help="only fetch from hosts in this domain (repeatable), e.g. googlevideo.com")
    parser.add_argument("--max-streams", type=_positive, default=8, metavar="N",
                        help="concurrent /stream and /mux requests (default 8); more get 503")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request (redacted) to stderr")
    return parser


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    return ServerOptions(token=args.token, allow_private=args.allow_private,
                         allow_hosts=tuple(args.allow_host), max_streams=args.max_streams)


async def create_app() -> web.Application:
    """The app factory for other servers (gunicorn's ``aiohttp.GunicornWebWorker``):
    ``gunicorn rangestream.service:create_app --worker-class aiohttp.GunicornWebWorker``.
    Its options are ``rangestream serve``'s flags, read from ``$RANGESTREAM_SERVE_ARGS``."""
    args = build_parser().parse_args(shlex.split(os.environ.get("RANGESTREAM_SERVE_ARGS", "")))
    return make_app(options_from_args(args))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not _is_loopback(args.host) and not args.token:
        parser.error(f"--host {args.host} is not loopback: pass --token TOKEN (or set RANGESTREAM_TOKEN)")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = options_from_args(args)
    try:
        asyncio.run(_serve(options, args.host, args.port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # e.g. the port is taken
        print(f"rangestream serve: {exc}", file=sys.stderr)
        return 1
    return 0
