"""The HTTP service: proxies and muxes streams for players and browsers, safe to expose.

    rangestream serve [--host 127.0.0.1] [--port 8080] [--token TOKEN] [--allow-private]
                      [--allow-host SUFFIX ...] [--max-streams 8]

Endpoints
---------
``GET|HEAD /stream?url=<upstream URL>``
    One object through the engine (a shared :class:`~rangestream.Client`,
    ``window="auto"``). The player's ``Range`` (``bytes=a-``, ``bytes=a-b``,
    ``bytes=-n``; one range) is honoured: 206 with ``Content-Range``, or 416 when
    it starts at or past the end. Without ``Range``: 200 with the whole object.
    ``Content-Type`` comes from the upstream URL's ``mime=`` parameter
    (googlevideo carries it), else ``application/octet-stream``. Headers are sent
    only once the first body byte arrived, so an upstream failure is still a
    clean status; a failure after that closes the connection (the player sees a
    short body, never a silently truncated "complete" one). A player that goes
    away cancels the upstream requests at once.
``GET /mux?video=<url>&audio=<url>&format=mp4|webm|mkv``
    Both inputs muxed on the fly (packets copied, never re-encoded) into a
    chunked 200 response (``video/mp4``, ``video/webm``, ``video/x-matroska``).
    No Range support: always 200 with the whole output (``Accept-Ranges: none``).
    An input failure before the first output byte is a 502 with a JSON error;
    after it, the connection is closed.

Every error is ``{"error": "..."}`` with upstream URLs redacted; never a traceback.

Safety
------
* Listens on 127.0.0.1 unless told otherwise; a non-loopback ``--host`` needs
  ``--token`` (or ``RANGESTREAM_TOKEN``), and then every request needs
  ``Authorization: Bearer TOKEN`` or ``?token=TOKEN`` (compared in constant time).
* Upstream URLs must be http(s). The SSRF guard refuses upstream hosts that are
  or resolve to loopback, private, link-local, shared, multicast or reserved
  addresses (403), checked before the request and again on every connection and
  redirect hop (a resolver that drops such addresses, a per-request hook for IP
  literals), unless ``--allow-private``. ``--allow-host SUFFIX`` (repeatable)
  restricts upstream hosts to those domains (also on redirects).
* At most ``--max-streams`` requests stream at once (a /mux counts once); more
  get 503 with ``Retry-After``.
* Logs show upstream URLs only through :func:`~rangestream.redact.redact_url`;
  aiohttp's access log (which would print whole query strings) is off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import signal
import socket
import sys
import time
import traceback
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver

from .client import Client
from .errors import (
    HTTPStatusError,
    InvalidURLError,
    MuxError,
    ObjectChangedError,
    RangestreamError,
    StreamError,
    URLExpiredError,
)
from .mux import mux
from .plan import size_from_url, url_param
from .redact import is_secret_param, redact_url
from .transport import AiohttpTransport

__all__ = ["ServerOptions", "make_app", "main", "UpstreamRefused"]

log = logging.getLogger("rangestream.server")

MUX_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "mkv": "video/x-matroska"}
_URL_PARAMS = ("url", "video", "audio")
_MIME = re.compile(r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+$")
_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>]+", re.I)
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.I)


@dataclass(frozen=True)
class ServerOptions:
    """What :func:`make_app` serves with.

    ``stream_options`` go to every ``open_stream`` (``chunk_size``, ``retry``,
    ``timeouts``, ...) on top of ``window="auto"``.
    """

    token: str | None = None
    allow_private: bool = False
    allow_hosts: tuple[str, ...] = ()
    max_streams: int = 8
    retry_after: int = 2  # seconds, with a 503 for too many streams
    stream_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_streams < 1:
            raise ValueError("max_streams must be >= 1")
        if self.token is not None and not self.token:
            raise ValueError("an empty token would let anyone in")


# --------------------------------------------------------------------------
# The SSRF guard
# --------------------------------------------------------------------------


class UpstreamRefused(ValueError):
    """The upstream host is not allowed (private address, not in the allowlist).

    A ``ValueError`` on purpose: raised inside the transport, it becomes a terminal
    :class:`InvalidURLError` (never retried)."""


def is_public_address(address: str) -> bool:
    """False for loopback, private, link-local, shared, multicast, reserved, unspecified."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            ip = mapped
    return ip.is_global and not ip.is_multicast


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class Guard:
    """Which upstream hosts may be fetched."""

    def __init__(self, *, allow_private: bool, allow_hosts: tuple[str, ...] = ()) -> None:
        self.allow_private = allow_private
        self.allow_hosts = tuple(h.strip().lower().strip(".") for h in allow_hosts if h.strip().strip("."))

    def check_name(self, host: str) -> str:
        """The allowlist and IP literals (no DNS); returns the normalised host."""
        h = host.lower().rstrip(".")
        if self.allow_hosts and not any(h == s or h.endswith("." + s) for s in self.allow_hosts):
            raise UpstreamRefused(f"upstream host {h} is not in the allowed hosts")
        if not self.allow_private and _is_ip(h) and not is_public_address(h):
            raise UpstreamRefused(f"upstream address {h} is not public")
        return h

    async def check(self, host: str, port: int) -> None:
        """Everything, resolving names (``OSError`` when the name does not resolve)."""
        h = self.check_name(host)
        if self.allow_private:
            return
        if _is_ip(h):
            return  # a literal: check_name decided
        infos = await asyncio.get_running_loop().getaddrinfo(h, port, type=socket.SOCK_STREAM)
        bad = sorted({str(info[4][0]) for info in infos if not is_public_address(str(info[4][0]))})
        if bad or not infos:
            raise UpstreamRefused(f"upstream host {h} resolves to a non-public address")


class _PublicResolver(AbstractResolver):
    """Drops non-public addresses at connect time (DNS rebinding, redirects to internal names)."""

    def __init__(self) -> None:
        self._inner = aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[dict[str, Any]]:
        infos = await self._inner.resolve(host, port, family)
        public = [info for info in infos if is_public_address(str(info["host"]))]
        if not public:
            raise OSError(f"{host} resolves only to non-public addresses")
        return public

    async def close(self) -> None:
        await self._inner.close()


class GuardedTransport(AiohttpTransport):
    """The built-in aiohttp transport, with the guard on every request and connection."""

    def __init__(self, guard: Guard, **options: Any) -> None:
        super().__init__(**options)
        self._guard = guard
        self._resolvers: list[_PublicResolver] = []  # a connector does not close a resolver it was given

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            trace = aiohttp.TraceConfig()
            trace.on_request_start.append(self._on_request_start)
            resolver = None
            if not self._guard.allow_private:
                resolver = _PublicResolver()
                self._resolvers.append(resolver)
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit_per_host,
                                             ttl_dns_cache=300, resolver=resolver)
            self._session = aiohttp.ClientSession(
                connector=connector, read_bufsize=self._read_bufsize, auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None), trust_env=False, trace_configs=[trace],
            )
        return self._session

    async def aclose(self) -> None:
        await super().aclose()
        resolvers, self._resolvers = self._resolvers, []
        for resolver in resolvers:
            await resolver.close()

    async def _on_request_start(self, session: Any, ctx: Any, params: Any) -> None:
        # Every hop (the transport follows redirects itself, one request each).
        self._guard.check_name(params.url.raw_host or "")


# --------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------


class _Reply(Exception):
    """An error answer: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return _json_error(self.status, self.message, self.headers)


def _json_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    text = redact_text(message)
    if len(text) > 400:
        text = text[:397] + "..."
    return web.json_response({"error": text}, status=status,
                             headers={"Cache-Control": "no-store", **(headers or {})})


def redact_text(text: str) -> str:
    """Every URL inside ``text`` through :func:`redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def _refused(error: BaseException) -> bool:
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, UpstreamRefused) or "UpstreamRefused" in str(seen):
            return True
        seen = seen.__cause__
    return False


def _reply_for(error: BaseException) -> _Reply:
    """An engine error as a status and a short, redacted message."""
    text = str(error) or type(error).__name__
    if _refused(error):
        return _Reply(403, "upstream refused: a request (or redirect) went to a non-public or "
                           "disallowed host")
    if isinstance(error, URLExpiredError):
        return _Reply(410, f"upstream URL expired or forbidden: {text}")
    if isinstance(error, HTTPStatusError):
        if error.status in (404, 410):
            return _Reply(error.status, f"upstream: {text}")
        return _Reply(502, f"upstream answered HTTP {error.status}: {text}")
    if isinstance(error, InvalidURLError):
        return _Reply(400, f"bad upstream URL: {text}")
    if isinstance(error, StreamError):
        return _Reply(502, f"upstream failed: {text}")
    return _Reply(502, f"upstream failed: {text}")


def _unsatisfiable(size: int | None) -> _Reply:
    return _Reply(416, "range not satisfiable",
                  {"Content-Range": f"bytes */{size}"} if size is not None else None)


def _upstream_416(error: BaseException) -> _Reply | None:
    """The engine's view of an upstream 416 at open (size not known beforehand)."""
    if isinstance(error, ObjectChangedError) and error.reason.startswith("HTTP 416"):
        m = re.search(r"bytes \*/(\d+)", error.reason)
        return _unsatisfiable(int(m.group(1)) if m else None)
    return None


# --------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------


class _State:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.guard = Guard(allow_private=options.allow_private, allow_hosts=options.allow_hosts)
        self.client: Client | None = None
        self.active = 0
        self._token_digest = _digest(options.token) if options.token else None

    def authorized(self, request: web.Request) -> bool:
        if self._token_digest is None:
            return True
        given = None
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            given = value.strip()
        elif "token" in request.query:
            given = request.query["token"]
        return given is not None and hmac.compare_digest(_digest(given), self._token_digest)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.active >= self.options.max_streams:
            raise _Reply(503, f"busy: {self.options.max_streams} streams already running; retry later",
                         {"Retry-After": str(self.options.retry_after)})
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    async def upstream(self, request: web.Request, name: str) -> str:
        raw = request.query.get(name, "").strip()
        if not raw:
            raise _Reply(400, f"missing ?{name}= (an http(s) upstream URL)")
        try:
            parts = urlsplit(raw)
            scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
        except ValueError:
            raise _Reply(400, f"?{name}= is not a valid URL") from None
        if scheme not in ("http", "https"):
            raise _Reply(400, f"?{name}= must be an http(s) URL")
        if not host:
            raise _Reply(400, f"?{name}= has no host")
        try:
            await self.guard.check(host, port or (443 if scheme == "https" else 80))
        except UpstreamRefused as e:
            raise _Reply(403, f"{e} (the server refuses non-public upstreams)") from None
        except OSError:
            raise _Reply(502, f"cannot resolve the upstream host {host}") from None
        return raw

    def open_stream(self, url: str, **options: Any) -> Any:
        assert self.client is not None
        return self.client.open_stream(url, **options)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


_STATE: web.AppKey[_State] = web.AppKey("rangestream_state", _State)


def make_app(options: ServerOptions | None = None) -> web.Application:
    """The aiohttp application. Run it with ``handler_cancellation=True`` (``AppRunner``,
    ``web.run_app``; ``TestServer`` does by default) so a player that leaves cancels
    its upstream requests even while they wait for bytes, and with ``access_log=None``
    (aiohttp's access log would print whole upstream URLs; this app logs redacted ones)."""
    options = options or ServerOptions()
    app = web.Application(middlewares=[_middleware])
    state = _State(options)
    app[_STATE] = state

    async def client_ctx(app: web.Application) -> AsyncIterator[None]:
        transport = GuardedTransport(state.guard)
        state.client = Client(transport=transport, **{"window": "auto", **dict(options.stream_options)})
        try:
            yield
        finally:
            await state.client.aclose()

    app.cleanup_ctx.append(client_ctx)
    app.router.add_get("/stream", _stream_handler)  # and HEAD
    app.router.add_get("/mux", _mux_handler, allow_head=False)
    return app


def _log_target(request: web.Request) -> str:
    parts = []
    for key, value in request.query.items():
        if key in _URL_PARAMS:
            parts.append(f"{key}={redact_url(value)}")
        elif is_secret_param(key):
            parts.append(f"{key}=REDACTED")
        else:
            parts.append(f"{key}={value[:64]}")
    return request.path + ("?" + "&".join(parts) if parts else "")


@web.middleware
async def _middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[_STATE]
    started = time.monotonic()
    status: int | str = 500
    try:
        if not state.authorized(request):
            raise _Reply(401, "missing or wrong token (Authorization: Bearer TOKEN or ?token=)",
                         {"WWW-Authenticate": 'Bearer realm="rangestream"'})
        resp = await handler(request)
        status = resp.status
        return resp
    except _Reply as r:
        status = r.status
        return r.response()
    except web.HTTPException as e:  # the router's 404 / 405
        status = e.status
        headers = {k: v for k, v in e.headers.items() if k.lower() == "allow"}
        return _json_error(e.status, e.reason.lower(), headers)
    except asyncio.CancelledError:
        status = "cancelled"
        raise
    except Exception as e:
        status = 500
        detail = "".join(traceback.format_exception(e))
        log.error("internal error on %s: %s", _log_target(request), redact_text(detail))
        return _json_error(500, "internal error")
    finally:
        log.info("%s %s -> %s in %.2fs", request.method, _log_target(request), status,
                 time.monotonic() - started)


# --------------------------------------------------------------------------
# /stream
# --------------------------------------------------------------------------


def parse_range(header: str | None) -> tuple[int | None, int | None] | None:
    """``bytes=a-b`` -> (a, b); ``bytes=a-`` -> (a, None); ``bytes=-n`` -> (None, n).

    None (serve the whole object, as RFC 9110 allows) for no header, several
    ranges, another unit or a malformed or backwards range."""
    if not header:
        return None
    m = _RANGE.match(header)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:
        return None, int(last)
    if last and int(last) < int(first):
        return None
    return int(first), (int(last) if last else None)


def _content_type(url: str) -> str:
    mime = url_param(url, "mime")
    if mime and _MIME.match(mime):
        return mime
    return "application/octet-stream"


async def _abort(request: web.Request) -> None:
    """Close the player's connection: a body cut short must not look complete."""
    if request.transport is not None:
        request.transport.abort()


async def _stream_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    url = await state.upstream(request, "url")
    spec = parse_range(request.headers.get("Range"))
    async with state.slot():
        return await _serve_stream(request, state, url, spec)


async def _probe_size(state: _State, url: str) -> int | None:
    async with contextlib.AsyncExitStack() as stack:
        try:
            stream = await stack.enter_async_context(state.open_stream(url, ranges=[(0, 1)]))
        except RangestreamError as e:
            raise _upstream_416(e) or _reply_for(e) from None
        return stream.size


async def _serve_stream(request: web.Request, state: _State, url: str,
                        spec: tuple[int | None, int | None] | None) -> web.StreamResponse:
    head = request.method == "HEAD"
    start, stop = 0, None
    if spec is not None:
        first, last = spec
        if first is None:  # the last n bytes: needs the size
            size = size_from_url(url)
            if size is None:
                size = await _probe_size(state, url)
            if size is None:
                spec = None  # the upstream will not say: serve the whole object
            elif last == 0 or size == 0:
                raise _unsatisfiable(size)
            else:
                start, stop = max(0, size - last), size
        else:
            start, stop = first, None if last is None else last + 1
    for ranged in ((True, False) if spec is not None else (False,)):
        if not ranged:
            start, stop = 0, None
        async with contextlib.AsyncExitStack() as stack:
            if head:
                ranges: list[tuple[int, int | None]] | None = [(start, start + 1)]
            else:
                ranges = [(start, stop)] if ranged else None
            try:
                stream = await stack.enter_async_context(state.open_stream(url, ranges=ranges))
            except RangestreamError as e:
                raise (_upstream_416(e) if ranged and start > 0 else None) or _reply_for(e) from None
            size = stream.size
            if ranged and size is None:
                continue  # no total from upstream: a 206 cannot be described; serve it all
            if ranged and size is not None and start >= size:
                raise _unsatisfiable(size)
            pieces = stream.__aiter__()
            stack.push_async_callback(pieces.aclose)
            try:
                first_piece = await pieces.__anext__()
            except StopAsyncIteration:
                first_piece = b""
            except RangestreamError as e:
                raise _reply_for(e) from None

            headers = {"Content-Type": _content_type(url), "Cache-Control": "no-store",
                       "X-Content-Type-Options": "nosniff",
                       "Accept-Ranges": "bytes" if size is not None else "none"}
            if ranged:
                assert size is not None
                end = size if stop is None else min(stop, size)
                status, length = 206, end - start
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            else:
                status, length = 200, size
            resp = web.StreamResponse(status=status, headers=headers)
            if length is not None:
                resp.content_length = length
            await resp.prepare(request)
            if head:
                return resp
            try:
                if first_piece:
                    await resp.write(first_piece)
                async for piece in pieces:
                    await resp.write(piece)
            except ConnectionResetError:
                return resp  # the player left; leaving the ``async with`` stops the upstream
            except RangestreamError as e:
                log.warning("/stream %s failed after the headers: %s", redact_url(url), redact_text(str(e)))
                await _abort(request)
                return resp
            await resp.write_eof()
            return resp
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------
# /mux
# --------------------------------------------------------------------------


class _LazySink:
    """An async writer that sends the response headers with the first byte, so an
    error before it can still be a proper status."""

    def __init__(self, request: web.Request, resp: web.StreamResponse) -> None:
        self.request = request
        self.resp = resp

    async def write(self, data: bytes) -> None:
        if not self.resp.prepared:
            await self.resp.prepare(self.request)
        await self.resp.write(data)


async def _mux_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    fmt = request.query.get("format", "mp4").lower()
    if fmt not in MUX_TYPES:
        raise _Reply(400, "format must be mp4, webm or mkv")
    video = await state.upstream(request, "video")
    audio = await state.upstream(request, "audio")
    async with state.slot(), contextlib.AsyncExitStack() as stack:
        streams = {}
        for name, url in (("video", video), ("audio", audio)):
            try:
                streams[name] = await stack.enter_async_context(state.open_stream(url))
            except RangestreamError as e:
                r = _reply_for(e)
                raise _Reply(r.status if r.status in (403, 404, 410) else 502, f"{name}: {r.message}") from None
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": MUX_TYPES[fmt], "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            "Accept-Ranges": "none"})
        resp.enable_chunked_encoding()
        try:
            await mux(streams["video"], streams["audio"], _LazySink(request, resp), fmt)
        except MuxError as e:
            if not resp.prepared:
                cause = e.__cause__
                if e.input and cause is not None and _refused(cause):
                    raise _Reply(403, f"{e.input}: upstream refused") from None
                raise _Reply(502, f"mux failed: {e}") from None
            if e.input is not None:
                log.warning("/mux failed after the headers: %s", redact_text(str(e)))
            await _abort(request)
            return resp
        except ConnectionResetError:
            return resp
        if not resp.prepared:  # nothing at all was written (cannot happen with real media)
            await resp.prepare(request)
        await resp.write_eof()
        return resp


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not _is_loopback(args.host) and not args.token:
        parser.error(f"--host {args.host} is not loopback: pass --token TOKEN (or set RANGESTREAM_TOKEN)")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = ServerOptions(token=args.token, allow_private=args.allow_private,
                            allow_hosts=tuple(args.allow_host), max_streams=args.max_streams)
    try:
        asyncio.run(_serve(options, args.host, args.port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # e.g. the port is taken
        print(f"rangestream serve: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
