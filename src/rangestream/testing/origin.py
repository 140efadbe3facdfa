"""An emulated Range-capable CDN (googlevideo-like) for tests, benchmarks and the demo.

Objects are generated on the fly from (name, size, version), so a 1 GB object costs
no memory. Every request is recorded, and faults can be scripted (`inject`), forced
per URL (`fault=` knob) or drawn at random from a seeded RNG.

URL forms (build them with `Origin.url` / `Origin.media_url`):
    /data/{name}/{size}.bin                 generated object
    /media/{name}                           bytes registered with `add_object`
    /videoplayback?id=&clen=&expire=&...    googlevideo form; `range=a-b` also accepted
Any Profile field can be overridden per URL as a query parameter (`rate=1e6`), plus
`fault=<kind>` (applied to every request of that URL) and `fault_at=<body offset>`.

``Origin(tls=True)`` (``--tls`` on the command line) serves HTTPS with a certificate for
127.0.0.1 and localhost issued at start-up by a throw-away CA (``trustme``); the CA's PEM is
written to ``Origin.ca_path`` (printed as ``ca-cert PATH``) for clients to trust (``--cacert``).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import email.utils
import hashlib
import hmac
import ipaddress
import os
import random
import signal
import socket
import ssl
import struct
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from aiohttp import web

try:                      # only for the Linux send-queue check before a reset
    import fcntl
    import termios
except ImportError:       # pragma: no cover
    fcntl = termios = None  # type: ignore[assignment]

__all__ = ["Origin", "Profile", "PROFILES", "FAULT_KINDS", "object_bytes", "RequestRecord", "main"]

FAULT_KINDS: tuple[str, ...] = ("reset", "truncate", "stall", "503", "503-retry-after", "429",
                                "ignore-range", "bad-content-range", "403")
_BODY_FAULTS = frozenset({"reset", "truncate", "stall", "expire"})
_STATUS_FAULTS = {"503": 503, "503-retry-after": 503, "429": 429, "403": 403}
# "changed" and "status" exist only as scripted/knob faults; they are not random-draw kinds by default.
_ALL_KINDS = frozenset(FAULT_KINDS) | {"changed", "status"}


@dataclass(frozen=True)
class Profile:
    ttfb: float = 0.0
    rate: float | None = None
    link_rate: float | None = None
    throttle_over: int | None = None
    throttle_rate: float = 256_000.0
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    stall_seconds: float = 30.0
    retry_after: int | None = 1
    changed_after: int | None = None

    def __post_init__(self) -> None:
        bad = [k for k in self.fault_kinds if k not in _ALL_KINDS or k == "status"]
        if bad:
            raise ValueError(f"unknown fault kinds {bad}")
        for name in ("rate", "link_rate", "throttle_rate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0.0 <= self.fault_rate <= 1.0 or self.ttfb < 0 or self.stall_seconds < 0:
            raise ValueError("fault_rate must be in [0, 1]; ttfb and stall_seconds >= 0")


_YOUTUBE = Profile(ttfb=0.15, rate=16e6, link_rate=64e6, throttle_over=10_000_000, throttle_rate=256e3)
PROFILES: dict[str, Profile] = {
    "fast": Profile(),
    "youtube": _YOUTUBE,
    # 8 s stalls: longer than a client idle timeout of a few seconds (so the timeout is what
    # catches them), short enough that a client without one is only delayed, not hung.
    "lossy": dataclasses.replace(_YOUTUBE, fault_rate=0.05, fault_kinds=("reset", "503", "stall"),
                                 stall_seconds=8.0),
}


@dataclass
class RequestRecord:
    id: int
    method: str
    path: str
    query: dict[str, str]
    range: str | None
    start: float
    first_byte: float | None = None
    end: float | None = None
    status: int | None = None
    bytes_sent: int = 0
    outcome: str = ""
    fault: str | None = None
    peer: str = ""
    name: str | None = None      # object served (extension: lets tests filter the log per object)
    version: int | None = None   # object version served (extension)


# --- deterministic content --------------------------------------------------------------

_BLOCK = 64 * 1024
_BASE_LEN = 1 << 20           # power of two: block offsets k*odd mod 2**20 never repeat below 64 GiB
_MULT = 0x9E3779B1            # odd, so k -> k*_MULT mod 2**20 is a bijection
_MASK64 = (1 << 64) - 1


@lru_cache(maxsize=64)
def _base(name: str, size: int, version: int) -> tuple[memoryview, int, int]:
    digest = hashlib.sha256(f"rangestream\0{name}\0{size}\0{version}".encode()).digest()
    key = int.from_bytes(digest[:8], "big")
    salt = int.from_bytes(digest[8:16], "big")
    # Extra block at the end so every per-block slice is contiguous (no wrap-around).
    data = random.Random(int.from_bytes(digest[16:], "big")).randbytes(_BASE_LEN + _BLOCK)
    return memoryview(data), key, salt


def expected_sha256(name: str, size: int, version: int = 0) -> str:
    """The sha256 of a generated object, computed without an origin (benchmarks, tests)."""
    h = hashlib.sha256()
    step = 8 << 20
    for a in range(0, size, step):
        h.update(object_bytes(name, size, version, a, min(a + step, size)))
    return h.hexdigest()


def object_bytes(name: str, size: int, version: int, start: int, stop: int) -> bytes:
    """Bytes [start, stop) of generated object (name, size, version).

    Each 64 KiB block k is an 8-byte header (k xor a per-version key) followed by a slice of a
    random 1 MiB buffer at a per-block offset, so no two blocks are equal and a shift of any
    size changes the hash, while building a block costs only a memcpy.
    """
    start, stop = max(0, start), min(stop, size)
    if stop <= start:
        return b""
    base, key, salt = _base(name, size, version)
    parts: list[bytes | memoryview] = []
    k, pos = start // _BLOCK, start
    while pos < stop:
        block_start = k * _BLOCK
        a, b = pos - block_start, min(stop - block_start, _BLOCK)
        if a < 8:
            parts.append(((k ^ key) & _MASK64).to_bytes(8, "big")[a:min(b, 8)])
        if b > 8:
            off = (k * _MULT + salt) % _BASE_LEN
            parts.append(base[off + max(a, 8) - 8:off + b - 8])
        pos, k = block_start + b, k + 1
    return b"".join(parts)


# --- helpers ------------------------------------------------------------------------------

def _opt(conv: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda s: None if s.lower() in ("", "none") else conv(s)


def _int(s: str) -> int:
    return int(float(s)) if any(c in s for c in ".eE") else int(s)


_KNOBS: dict[str, Callable[[str], Any]] = {
    "ttfb": float, "rate": _opt(float), "link_rate": _opt(float), "throttle_over": _opt(_int),
    "throttle_rate": float, "fault_rate": float, "seed": _int, "stall_seconds": float,
    "fault_kinds": lambda s: tuple(k for k in s.split(",") if k),
    "retry_after": _opt(_int), "changed_after": _opt(_int),
}
_EXTRA_KNOBS = ("fault", "fault_at")
_REC = web.RequestKey("rec", RequestRecord)


def _knob_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return ",".join(value)
    return repr(value) if isinstance(value, float) else str(value)


def _parse_range(header: str, size: int) -> tuple[int, int] | Literal[False] | None:
    """(start, stop) for a satisfiable single range, False if unsatisfiable, None to ignore it."""
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        n = int(last)
        return (max(0, size - n), size) if n > 0 and size > 0 else False
    a = int(first)
    if last != "" and int(last) < a:
        return None          # RFC 9110: an invalid range-spec makes the whole header ignorable
    if a >= size:
        return False
    return a, size if last == "" else min(int(last) + 1, size)


def _body_fault_at(length: int, at: int | None, frac: float) -> int:
    """Where in a body of ``length`` bytes a body fault strikes: ``at`` if scripted, else a drawn
    point inside the body, never at its very start or end."""
    if at is not None:
        return min(at, length)
    return min(max(int(length * (0.1 + 0.8 * frac)), 1 if length > 1 else 0), max(length - 1, 0))


def _served_range(qrange: str | None, header_range: str | None, size: int) -> tuple[int, int, bool]:
    """(start, stop, partial) of the body for a ``range=`` parameter or a Range header (``None``
    when absent or when If-Range no longer matches: the whole object)."""
    if qrange is not None:
        first, _, last = qrange.partition("-")
        if not (first.isdigit() and (last.isdigit() or last == "")) or (last and int(last) < int(first)):
            raise _Reject(400, f"bad range parameter {qrange!r}")
        if int(first) >= size:
            raise _Reject(416, "range not satisfiable", {"Content-Range": f"bytes */{size}"})
        return int(first), size if last == "" else min(size, int(last) + 1), False
    if header_range is not None:
        parsed = _parse_range(header_range, size)
        if parsed is False:
            raise _Reject(416, "range not satisfiable", {"Content-Range": f"bytes */{size}"})
        if parsed:
            return parsed[0], parsed[1], True
    return 0, size, False


class _Reject(ValueError):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


@dataclass
class _Scripted:
    kind: str
    count: int
    name: str | None
    at: int | None
    retry_after: int | None
    status: int | None
    start: int | None = None  # only requests whose range starts here
    delay: float = 0.0  # "delay": hold the response headers this long
    rate: float | None = None  # "slow": serve this response at this rate


@dataclass(frozen=True)
class _Obj:
    name: str
    size: int
    version: int
    data: bytes | None          # registered bytes at this version; None for generated objects
    content_type: str


@dataclass
class _Registered:
    data: bytes
    content_type: str
    version: int                # the version at which `data` was registered
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256(self.data).hexdigest()


class _Link:
    """Shared link: a virtual clock handing out transmission slots first come, first served."""

    BURST = 0.02   # seconds of idle credit a sender may catch up on

    def __init__(self) -> None:
        self._next = 0.0

    async def take(self, nbytes: int, rate: float) -> None:
        now = time.monotonic()
        slot = max(self._next, now - self.BURST)
        self._next = slot + nbytes / rate
        if slot > now:
            await asyncio.sleep(slot - now)


# --- the server ---------------------------------------------------------------------------

class Origin:
    def __init__(self, profile: Profile | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 allow_remote: bool = False, tls: bool = False) -> None:
        if not allow_remote and not _is_loopback(host):
            raise ValueError(f"refusing to listen on non-loopback host {host!r}")
        self.tls = tls
        self.ca_path: str | None = None  # with tls: the PEM file of the CA that issued its certificate
        self.profile: Profile = profile or PROFILES["fast"]
        self.host, self.port = host, port
        self.base_url = ""
        self.log: list[RequestRecord] = []
        self._runner: web.AppRunner | None = None
        self._versions: dict[str, int] = {}
        self._registered: dict[str, _Registered] = {}
        self._translated: dict[tuple[str, int], bytes] = {}
        self._scripted: list[_Scripted] = []
        self._pending_delay = 0.0
        self._pending_rate: float | None = None
        self._revoked: set[tuple[str, tuple[tuple[str, str], ...]]] = set()  # URLs expired by "expire"
        self._object_requests: dict[str, int] = {}
        self._auto_changed: set[str] = set()
        self._start_counts: dict[tuple[str, int], int] = {}
        self._link = _Link()
        self._active = 0
        self._secret = b"rangestream-origin"

    # lifecycle
    async def start(self) -> None:
        app = web.Application(middlewares=[self._record_middleware])
        app.router.add_route("*", "/data/{name}/{size}.bin", self._handle)
        app.router.add_route("*", "/media/{name}", self._handle)
        app.router.add_route("*", "/videoplayback", self._handle)
        # handler_cancellation: a client that goes away must cancel a stalled or paced handler.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        ssl_context = self._tls_context() if self.tls else None
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.base_url = f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def _tls_context(self) -> ssl.SSLContext:
        """A server context with a certificate for this host from a CA made now (nothing
        lives on disk but the CA's public PEM, removed on close)."""
        import trustme  # a test/benchmark dependency: only needed with tls

        ca = trustme.CA()
        names = sorted({self.host, "127.0.0.1", "localhost"})
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(ctx)
        fd, path = tempfile.mkstemp(prefix="rangestream-origin-ca-", suffix=".pem")
        with os.fdopen(fd, "wb") as f:
            f.write(ca.cert_pem.bytes())
        self.ca_path = path
        return ctx

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if self.ca_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.ca_path)
            self.ca_path = None
        if runner is None:
            return
        # Abort first: a graceful shutdown would wait for stalled handlers.
        for handler in runner.server.connections if runner.server else []:
            if handler.transport is not None:
                handler.transport.abort()
        try:
            await asyncio.wait_for(runner.cleanup(), timeout=5.0)
        except TimeoutError:
            pass

    async def __aenter__(self) -> Origin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def open_connections(self) -> int:
        server = self._runner.server if self._runner else None
        return len(server.connections) if server else 0

    @property
    def request_count(self) -> int:
        return len(self.log)

    async def wait_idle(self, timeout: float = 3.0, *, connections: bool = True) -> bool:
        """Wait until no request is being served and, with ``connections``, no connection is
        open (a client's idle keep-alive connections count); False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while (connections and self.open_connections) or self._active:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # objects
    def version(self, name: str) -> int:
        return self._versions.get(name, 0)

    def change(self, name: str) -> None:
        self._versions[name] = self.version(name) + 1

    def add_object(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        old = self._registered.get(name)
        if old is not None and old.data != data:
            self.change(name)
        self._registered[name] = _Registered(bytes(data), content_type, self.version(name))
        return self.media_url(name)

    def content(self, name: str, size: int, version: int = 0) -> bytes:
        obj = self._object(name, size, version)
        return bytes(self._read(obj, 0, size))

    def sha256(self, name: str, size: int, version: int = 0) -> str:
        obj, h = self._object(name, size, version), hashlib.sha256()
        for pos in range(0, size, 4 << 20):
            h.update(self._read(obj, pos, min(size, pos + (4 << 20))))
        return h.hexdigest()

    def inject(self, kind: str, *, count: int = 1, name: str | None = None, at: int | None = None,
               retry_after: int | None = None, status: int | None = None, start: int | None = None,
               delay: float = 0.0, rate: float | None = None) -> None:
        """Script a fault for the next ``count`` matching requests. ``start`` matches the
        first byte asked for (to aim at one chunk); kind ``"delay"`` holds the response
        headers for ``delay`` seconds (a slow prefetch); kind ``"slow"`` serves the body at
        ``rate`` bytes/s (a straggler); kind ``"expire"`` lets the URL expire in the middle of
        the body: ``at`` bytes are sent, the connection is closed cleanly (every byte sent
        reaches the client), and from then on that URL gets 403 (a refreshed URL works)."""
        if kind not in _ALL_KINDS and kind not in ("delay", "slow", "expire"):
            raise ValueError(f"unknown fault kind {kind!r}")
        if kind == "status" and status is None:
            raise ValueError('inject("status") needs status=')
        self._scripted.append(_Scripted(kind, count, name, at, retry_after, status, start, delay, rate))

    # URLs
    def url(self, size: int, name: str = "obj", *, youtube: bool = False, expire: float | None = None,
            **knobs: Any) -> str:
        if not youtube:
            return self._with_knobs(f"{self._base()}/data/{_q(name)}/{size}.bin", {}, knobs)
        return self._youtube_url(name, size, expire, knobs)

    def media_url(self, name: str, youtube: bool = False, **knobs: Any) -> str:
        reg = self._registered[name]
        if youtube:
            return self._youtube_url(name, len(reg.data), knobs.pop("expire", None), knobs)
        return self._with_knobs(f"{self._base()}/media/{_q(name)}", {}, knobs)

    def _youtube_url(self, name: str, size: int, expire: float | None, knobs: dict[str, Any]) -> str:
        expire = time.time() + 6 * 3600 if expire is None else expire
        signed = f"{name}|{size}|{int(expire)}".encode()
        params = {"id": name, "clen": str(size), "expire": str(int(expire)), "itag": "137",
                  "lmt": str(self._lmt(name, self.version(name))),
                  "sig": hmac.new(self._secret, signed, "sha256").hexdigest()[:40],
                  "lsig": hmac.new(self._secret, b"l" + signed, "sha256").hexdigest()[:40],
                  "source": "youtube", "requiressl": "yes", "mime": "video/mp4"}
        return self._with_knobs(f"{self._base()}/videoplayback", params, knobs)

    def _with_knobs(self, url: str, params: dict[str, str], knobs: dict[str, Any]) -> str:
        for key, value in knobs.items():
            if key not in _KNOBS and key not in _EXTRA_KNOBS:
                raise TypeError(f"unknown knob {key!r}")
            params[key] = _knob_text(value)
        return f"{url}?{urllib.parse.urlencode(params)}" if params else url

    def _base(self) -> str:
        if not self.base_url:
            raise RuntimeError("Origin is not started")
        return self.base_url

    # object internals
    def _object(self, name: str, size: int, version: int | None = None) -> _Obj:
        version = self.version(name) if version is None else version
        reg = self._registered.get(name)
        if reg is None:
            return _Obj(name, size, version, None, "application/octet-stream")
        if size != len(reg.data):
            raise _Reject(400, f"object {name!r} has {len(reg.data)} bytes, not {size}")
        if version < reg.version:
            raise ValueError(f"version {version} of {name!r} was replaced")
        return _Obj(name, size, version, self._registered_bytes(name, reg, version), reg.content_type)

    def _registered_bytes(self, name: str, reg: _Registered, version: int) -> bytes:
        if version == reg.version:
            return reg.data
        key = (name, version)
        if key not in self._translated:
            # A byte rotation with no fixed point: every byte differs, real media stays cheap to vary.
            shift = 1 + (version - reg.version - 1) % 255
            table = bytes((b + shift) % 256 for b in range(256))
            self._translated[key] = reg.data.translate(table)
        return self._translated[key]

    def _read(self, obj: _Obj, start: int, stop: int) -> bytes | memoryview:
        if obj.data is not None:
            return memoryview(obj.data)[start:stop]
        return object_bytes(obj.name, obj.size, obj.version, start, stop)

    def _modified(self, name: str, version: int) -> int:
        digest = hashlib.sha256(name.encode()).digest()
        return 1_700_000_000 + int.from_bytes(digest[:3], "big") + version * 3600

    def _lmt(self, name: str, version: int) -> int:
        micros = int.from_bytes(hashlib.sha256(b"lmt" + name.encode()).digest()[:4], "big") % 1_000_000
        return self._modified(name, version) * 1_000_000 + micros

    def _etag(self, obj: _Obj) -> str:
        reg = self._registered.get(obj.name)
        salt = reg.digest if reg else "gen"
        return '"' + hashlib.sha256(f"{obj.name}|{obj.size}|{obj.version}|{salt}".encode()).hexdigest()[:24] + '"'

    # request handling
    @web.middleware
    async def _record_middleware(self, request: web.Request,
                                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                 ) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        rec = RequestRecord(id=len(self.log), method=request.method, path=request.path,
                            query=dict(request.query), range=request.headers.get("Range"),
                            start=time.monotonic(), peer=f"{peer[0]}:{peer[1]}" if peer else "?")
        self.log.append(rec)
        request[_REC] = rec
        self._active += 1
        try:
            return await handler(request)
        except web.HTTPException as exc:      # router errors (404, 405)
            rec.status, rec.outcome = exc.status, "status"
            raise
        except asyncio.CancelledError:
            rec.outcome = rec.outcome or "client-closed"
            raise
        finally:
            rec.end = time.monotonic()
            self._active -= 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rec = request[_REC]
        try:
            return await self._serve(request, rec)
        except _Reject as rej:
            return await self._send_status(request, rec, rej.status, rej.message, rej.headers)
        except ConnectionResetError:
            # Returning lets aiohttp drop the connection quietly instead of logging an error.
            rec.outcome = rec.outcome or "client-closed"
            return web.Response(status=499)

    async def _serve(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD", "POST"):
            raise _Reject(405, "method not allowed", {"Allow": "GET, HEAD, POST"})
        query = request.query
        profile, forced, forced_at = self._request_profile(query)
        if request.can_read_body:
            await request.read()      # the web player's tiny POST body; read so keep-alive works
        if profile.ttfb:
            await asyncio.sleep(profile.ttfb)
        name, size = self._identify(request)
        rec.name = name
        if _url_key(request) in self._revoked:
            raise _Reject(403, "expired")
        self._object(name, size)      # validates clen against registered data before counting
        self._maybe_auto_change(name, profile)

        qrange = query.get("range")
        if qrange is not None:
            rec.range = f"query:{qrange}"
        header_range = request.headers.get("Range") if qrange is None else None
        range_start = self._range_start(qrange, header_range, size)
        has_body = request.method != "HEAD"
        fault, at, frac, retry_after, status = self._pick_fault(profile, forced, forced_at, name,
                                                                range_start, has_body)
        rec.fault = fault
        if fault == "delay":
            delay, self._pending_delay = self._pending_delay, 0.0
            await asyncio.sleep(delay)
            fault = None
        if fault == "slow":
            profile = dataclasses.replace(profile, rate=self._pending_rate)
            fault = None
        if fault == "changed":
            self.change(name)
        obj = self._object(name, size)
        rec.version = obj.version
        if fault in _STATUS_FAULTS or fault == "status":
            code = status if fault == "status" else _STATUS_FAULTS[fault]
            assert code is not None  # only inject() scripts "status", and it requires status=
            if retry_after is None and fault in ("429", "503-retry-after"):
                retry_after = profile.retry_after
            headers: dict[str, str] = {} if retry_after is None else {"Retry-After": str(retry_after)}
            return await self._send_status(request, rec, code, f"injected fault {fault}", headers)

        etag, modified = self._etag(obj), self._modified(name, obj.version)
        headers = {"Accept-Ranges": "bytes", "ETag": etag, "Content-Type": obj.content_type,
                   "Last-Modified": email.utils.formatdate(modified, usegmt=True)}
        if_range_ok = header_range is not None and self._if_range_ok(request.headers.get("If-Range"), etag, modified)
        start, stop, partial = _served_range(qrange, header_range if if_range_ok else None, size)
        if fault == "ignore-range":
            start, stop, partial = 0, size, False
        elif fault == "bad-content-range" and (partial or qrange is not None):
            start, stop = self._shifted(start, stop, size)
        if partial:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        # googlevideo answers its `range=` parameter with a plain 200 of exactly those bytes.
        resp = web.StreamResponse(status=206 if partial else 200, headers=headers)
        resp.content_length = stop - start
        rec.status = resp.status
        await resp.prepare(request)
        if not has_body:
            rec.outcome = "head"
            return resp
        body_at = _body_fault_at(stop - start, at, frac) if fault in _BODY_FAULTS else None
        await self._send_body(request, resp, rec, profile, obj, start, stop, fault, body_at)
        return resp

    def _request_profile(self, query: Mapping[str, str]) -> tuple[Profile, str | None, int | None]:
        overrides: dict[str, Any] = {}
        try:
            for key, conv in _KNOBS.items():
                if key in query:
                    overrides[key] = conv(query[key])
            profile = dataclasses.replace(self.profile, **overrides) if overrides else self.profile
            forced = query.get("fault")
            if forced is not None and forced not in _ALL_KINDS - {"status"}:
                raise ValueError(f"unknown fault {forced!r}")
            forced_at = _int(query["fault_at"]) if "fault_at" in query else None
        except ValueError as exc:
            raise _Reject(400, f"bad knob: {exc}") from None
        return profile, forced, forced_at

    def _identify(self, request: web.Request) -> tuple[str, int]:
        match = request.match_info
        if "size" in match:
            if not match["size"].isdigit():
                raise _Reject(400, "size must be an integer")
            return match["name"], int(match["size"])
        if "name" in match:
            reg = self._registered.get(match["name"])
            if reg is None:
                raise _Reject(404, "no such object")
            return match["name"], len(reg.data)
        query = request.query
        if "id" not in query or not query.get("clen", "").isdigit():
            raise _Reject(400, "videoplayback needs id and a numeric clen")
        try:
            expire = float(query.get("expire", "inf"))
        except ValueError:
            raise _Reject(400, "bad expire") from None
        if expire < time.time():
            raise _Reject(403, "expired")
        return query["id"], int(query["clen"])

    def _maybe_auto_change(self, name: str, profile: Profile) -> None:
        # Once per object: a client that restarts on a change must be able to finish eventually.
        seen = self._object_requests.get(name, 0)
        self._object_requests[name] = seen + 1
        if profile.changed_after is not None and seen >= profile.changed_after and name not in self._auto_changed:
            self._auto_changed.add(name)
            self.change(name)

    @staticmethod
    def _range_start(qrange: str | None, header: str | None, size: int) -> int:
        if qrange is not None:
            first = qrange.partition("-")[0]
            return int(first) if first.isdigit() else 0
        parsed = _parse_range(header, size) if header else None
        return parsed[0] if isinstance(parsed, tuple) else 0

    def _pick_fault(self, profile: Profile, forced: str | None, forced_at: int | None, name: str,
                    range_start: int, has_body: bool
                    ) -> tuple[str | None, int | None, float, int | None, int | None]:
        # Keyed by what was asked for, not by arrival order, so concurrent clients replay identically.
        key = (name, range_start)
        nth = self._start_counts.get(key, 0)
        if has_body:
            self._start_counts[key] = nth + 1
        rng = random.Random(f"{profile.seed}|{name}|{range_start}|{nth}")
        draw, kind, frac = rng.random(), rng.choice(profile.fault_kinds or ("reset",)), rng.random()

        def applies(k: str) -> bool:
            return has_body or k in _STATUS_FAULTS or k in ("status", "changed")

        for entry in self._scripted:
            if (entry.count > 0 and (entry.name is None or entry.name == name) and applies(entry.kind)
                    and (entry.start is None or entry.start == range_start)):
                entry.count -= 1
                self._scripted = [e for e in self._scripted if e.count > 0]
                if entry.kind == "delay":
                    self._pending_delay = entry.delay
                if entry.kind == "slow":
                    self._pending_rate = entry.rate
                return entry.kind, entry.at, frac, entry.retry_after, entry.status
        if forced is not None and applies(forced):
            return forced, forced_at, frac, None, None
        if has_body and profile.fault_kinds and draw < profile.fault_rate:
            return kind, None, frac, None, None
        return None, None, frac, None, None

    @staticmethod
    def _if_range_ok(if_range: str | None, etag: str, modified: int) -> bool:
        if if_range is None:
            return True
        if_range = if_range.strip()
        if if_range.startswith('"'):
            return if_range == etag       # strong comparison: a W/ tag never matches
        parsed = email.utils.parsedate_tz(if_range)
        return parsed is not None and email.utils.mktime_tz(parsed) == modified

    @staticmethod
    def _shifted(start: int, stop: int, size: int) -> tuple[int, int]:
        length = stop - start
        new_start = start + 1000 if start + 1000 < size else max(0, start - 1000)
        if new_start == start:
            new_start = (start + 1) % max(size, 1)
        return new_start, min(size, new_start + length)

    async def _send_status(self, request: web.Request, rec: RequestRecord, status: int, message: str,
                           headers: Mapping[str, str]) -> web.StreamResponse:
        body = f"{status} {message}\n".encode()
        resp = web.StreamResponse(status=status, headers={**headers, "Content-Type": "text/plain"})
        resp.content_length = len(body)
        rec.status, rec.outcome = status, "status"
        await resp.prepare(request)
        if request.method != "HEAD":
            await resp.write(body)
            rec.first_byte, rec.bytes_sent = time.monotonic(), len(body)
        return resp

    async def _send_body(self, request: web.Request, resp: web.StreamResponse, rec: RequestRecord,
                         profile: Profile, obj: _Obj, start: int, stop: int, fault: str | None,
                         at: int | None) -> None:
        length = stop - start
        limit = length if at is None else at
        rate = profile.rate
        if profile.throttle_over is not None and length > profile.throttle_over:
            rate = profile.throttle_rate if rate is None else min(rate, profile.throttle_rate)
        slowest = min(r for r in (rate, profile.link_rate, float("inf")) if r is not None)
        # ~10 ms worth per write when paced, so the pacing is smooth; big writes otherwise.
        piece = 256 * 1024 if slowest == float("inf") else max(1024, min(256 * 1024, int(slowest / 100)))
        began, sent = time.monotonic(), 0
        if limit == 0:
            await resp.write(b"")       # flush the headers so the client sees a started response
        while sent < limit:
            n = min(piece, limit - sent)
            if profile.link_rate is not None:
                await self._link.take(n, profile.link_rate)
            await resp.write(self._read(obj, start + sent, start + sent + n))
            if rec.first_byte is None:
                rec.first_byte = time.monotonic()
            sent += n
            rec.bytes_sent = sent
            if rate is not None:
                delay = began + sent / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        if fault not in _BODY_FAULTS:
            rec.outcome = "complete"
            return
        transport = request.transport
        if fault == "stall":
            rec.outcome = "stalled"
            deadline = time.monotonic() + profile.stall_seconds
            # Polls too: ends early when the client goes away even if cancellation is not delivered.
            while time.monotonic() < deadline and transport is not None and not transport.is_closing():
                await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        elif fault == "reset":
            rec.outcome = "reset"
            if transport is not None:
                # An RST discards whatever is still queued, so let the `at` bytes reach the client first.
                await _flush(transport, 1.0)
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            return
        elif fault == "expire":
            # Expired while this body was in flight: the CDN ends it, and refuses the URL from now on.
            rec.outcome = "expired"
            self._revoked.add(_url_key(request))
        else:
            rec.outcome = "truncated"
        if transport is not None:
            transport.close()           # flushes what was written, then FIN


async def _flush(transport: asyncio.WriteTransport, timeout: float) -> None:
    """Wait (bounded) until asyncio's buffer and the kernel's send queue are empty."""
    deadline = time.monotonic() + timeout
    sock = transport.get_extra_info("socket")
    while not transport.is_closing() and time.monotonic() < deadline:
        if not transport.get_write_buffer_size() and _kernel_unsent(sock) == 0:
            return
        await asyncio.sleep(0.002)


def _kernel_unsent(sock: Any) -> int:
    # SIOCOUTQ (same number as TIOCOUTQ): bytes not yet acknowledged by the peer. Linux only;
    # elsewhere we settle for asyncio's buffer being empty.
    if sock is None or termios is None or not hasattr(termios, "TIOCOUTQ"):
        return 0
    try:
        unsent: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        return unsent
    except OSError:
        return 0


def _url_key(request: web.Request) -> tuple[str, tuple[tuple[str, str], ...]]:
    # The URL's identity without googlevideo's per-request range= parameter.
    return request.path, tuple(sorted((k, v) for k, v in request.query.items() if k != "range"))


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- command line -------------------------------------------------------------------------

async def _serve_forever(origin: Origin) -> None:
    await origin.start()
    print(f"listening on {origin.base_url}", flush=True)
    if origin.ca_path is not None:
        print(f"ca-cert {origin.ca_path}", flush=True)  # what clients pass to --cacert
    print(f"  plain:   {origin.url(100_000_000, 'sample')}", flush=True)
    print(f"  youtube: {origin.url(100_000_000, 'sample', youtube=True)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    except (NotImplementedError, RuntimeError):
        pass
    try:
        await stop.wait()
    finally:
        await origin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rangestream origin", description="Run the emulated CDN.")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="fast")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    parser.add_argument("--tls", action="store_true",
                        help="serve HTTPS with a certificate from a CA made at start-up; its PEM file is "
                             "printed as 'ca-cert PATH' (for --cacert)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port: a port is 0..65535 (0 picks a free one), not {args.port}")
    try:
        origin = Origin(PROFILES[args.profile], host=args.host, port=args.port,
                        allow_remote=args.allow_remote, tls=args.tls)
    except ValueError as exc:
        parser.error(f"{exc} (pass --allow-remote to override)")
    try:
        asyncio.run(_serve_forever(origin))
    except KeyboardInterrupt:
        pass
    except OSError as exc:       # e.g. the port is taken
        print(f"rangestream origin: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
