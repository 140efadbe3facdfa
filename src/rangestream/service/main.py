"""``rangestream serve``: the command line, the serving loop (graceful drain on
SIGTERM) and ``--workers N`` (several processes on one port)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import math
import os
import shlex
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from ..proxypool import ProxyListError, ProxyPool, add_pool_arguments, pool_from_args
from ..redact import redact_text
from .app import begin_drain, make_app
from .options import MiB, ServerOptions
from .protocol import ServiceRunner
from .state import STATE

log = logging.getLogger("rangestream.service")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _RedactFilter(logging.Filter):
    """aiohttp's own loggers may quote request lines (tokens, signed URLs): one
    redacted line, never a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        record.exc_info = None
        record.exc_text = None
        return True


def _quiet_aiohttp() -> None:
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access"):
        logging.getLogger(name).addFilter(_RedactFilter())


async def serve(options: ServerOptions, host: str, port: int, *, grace: float = 30.0,
                reuse_port: bool = False) -> None:
    """Serve until SIGINT/SIGTERM, then drain: /healthz turns 503, the listener
    closes, running streams get ``grace`` seconds to finish, then the rest are cut."""
    app = make_app(options)
    runner = ServiceRunner(app, shutdown_timeout=grace)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
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
        begin_drain(app)
        if app[STATE].active:
            log.warning("draining: %d stream(s) running, up to %gs to finish", app[STATE].active, grace)
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


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0 picks a free one), not {value}")
    return value


def _secret(what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text:  # an empty secret would let anyone in, or sign anything
            raise argparse.ArgumentTypeError(f"an empty {what} would let anyone in")
        return text
    return parse


def _host_suffix(text: str) -> str:
    # An empty suffix would be dropped, and an empty allow-list allows every host.
    if not text.strip().strip("."):
        raise argparse.ArgumentTypeError(f"a domain is needed, e.g. googlevideo.com, not {text!r}")
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rangestream serve",
        description="Serve /stream?url= (a proxied object, Range-capable for players), "
                    "/mux?video=&audio=&format= (muxed on the fly), /healthz and /metrics over HTTP.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--token", type=_secret("token"), default=os.environ.get("RANGESTREAM_TOKEN") or None,
                   help="require 'Authorization: Bearer TOKEN' or ?token=TOKEN (default $RANGESTREAM_TOKEN)")
    p.add_argument("--signing-key", type=_secret("signing key"), metavar="KEY",
                   default=os.environ.get("RANGESTREAM_SIGNING_KEY") or None,
                   help="/stream, /mux and /watch need a link signed with KEY (rangestream sign) or the "
                        "token (default $RANGESTREAM_SIGNING_KEY)")
    p.add_argument("--allow-private", action="store_true",
                   help="allow upstreams on loopback/private/link-local addresses (SSRF guard off)")
    p.add_argument("--allow-host", action="append", default=[], metavar="SUFFIX", type=_host_suffix,
                   help="only fetch from hosts in this domain (repeatable), e.g. googlevideo.com")
    p.add_argument("--public-host", action="append", default=[], metavar="NAME",
                   help="a Host name this service answers to besides loopback ones (repeatable)")
    p.add_argument("--max-streams", type=_positive, default=8, metavar="N",
                   help="concurrent /stream and /mux requests per worker (default 8); more get 503")
    p.add_argument("--max-streams-per-client", type=_positive, default=None, metavar="N",
                   help="concurrent streams per client address (default: no cap); more get 429")
    p.add_argument("--write-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                   help="drop a client that reads nothing for this long (default 30)")
    p.add_argument("--header-timeout", type=_seconds, default=10.0, metavar="SECONDS",
                   help="a request's head must arrive within this (default 10)")
    p.add_argument("--read-ahead", type=_positive, default=16, metavar="MiB",
                   help="read-ahead budget per stream in MiB (default 16)")
    p.add_argument("--grace", type=_seconds, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, time running streams get to finish (default 30)")
    p.add_argument("--workers", type=_positive, default=1, metavar="N",
                   help="worker processes sharing the port (SO_REUSEPORT; default 1)")
    add_pool_arguments(p, each="request")
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="log every request (redacted) to stderr")
    return p


def options_from_args(args: argparse.Namespace, proxies: ProxyPool | None = None) -> ServerOptions:
    return ServerOptions(proxies=proxies if proxies is not None else pool_from_args(args),
        token=args.token, signing_key=args.signing_key, allow_private=args.allow_private,
        allow_hosts=tuple(args.allow_host), max_streams=args.max_streams,
        max_streams_per_client=args.max_streams_per_client or 0, write_timeout=args.write_timeout,
        header_timeout=args.header_timeout, read_ahead=args.read_ahead * MiB,
        loopback_only=_is_loopback(args.host), public_hosts=tuple(args.public_host))


async def create_app() -> web.Application:
    """The app factory for other servers (gunicorn's ``aiohttp.GunicornWebWorker``):
    ``gunicorn rangestream.service:create_app --worker-class aiohttp.GunicornWebWorker``.
    Its options are ``rangestream serve``'s flags, read from ``$RANGESTREAM_SERVE_ARGS``
    (``--host`` there says whether the Host-header check for loopback applies)."""
    args = build_parser().parse_args(shlex.split(os.environ.get("RANGESTREAM_SERVE_ARGS", "")))
    _quiet_aiohttp()
    return make_app(options_from_args(args))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not _is_loopback(args.host) and not (args.token or args.signing_key):
        parser.error(f"--host {args.host} is not loopback: pass --token TOKEN or --signing-key KEY "
                     "(or set RANGESTREAM_TOKEN / RANGESTREAM_SIGNING_KEY)")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _quiet_aiohttp()
    try:  # checked before any worker starts
        pool = pool_from_args(args)
    except ProxyListError as e:  # the line is named, never its text (it may hold a password)
        parser.error(f"--proxy-file: {e}")
    if args.workers > 1:
        from .workers import supervise

        return supervise(argv, args.host, args.port, args.workers)
    options = options_from_args(args, pool)
    try:
        asyncio.run(serve(options, args.host, args.port, grace=args.grace, reuse_port=args.reuse_port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # e.g. the port is taken
        print(f"rangestream serve: {exc}", file=sys.stderr)
        return 1
    return 0
