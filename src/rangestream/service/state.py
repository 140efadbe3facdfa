"""Per-app state shared by the middleware and the handlers: the guard, the shared
client, who may ask (token, signed links, Host, Sec-Fetch-Site), the stream slots
and the metrics."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ..client import Client, checked_lease
from ..engine import Stream
from ..proxypool import Lease, NoProxyAvailableError
from . import signing
from .guard import Guard, UpstreamRefused
from .metrics import Metrics
from .options import ServerOptions
from .replies import Reply

# Endpoints that act on upstream URLs: signed links apply to these. /watch and /watch/info
# are the page's endpoints (service/page.py).
SIGNED_PATHS = frozenset({"/stream", "/mux", "/watch", "/watch/info"})
# Cross-site browser requests to these are refused (unless signed): the above, the metrics,
# and a fetch's progress (it names the title being fetched).
API_PATHS = SIGNED_PATHS | {"/metrics", "/watch/progress"}
OPEN_PATHS = frozenset({"/healthz"})  # for load balancers: never needs a token
# The proxy lease of the request being handled (its task): every stream it opens goes through it.
_LEASE: ContextVar[Lease | None] = ContextVar("rangestream_lease", default=None)


def request_lease() -> Lease | None:
    """The proxy lease of the request being handled (``State.slot`` holds it), or None without a
    pool or outside a slot: its page resolution and its streams go through it."""
    return _LEASE.get()


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def _loopback_host(host: str) -> bool:
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _loopback_peer(remote: str | None) -> bool:
    """The TCP peer is on this host's loopback (127.0.0.0/8, ::1, or ::ffff:127.x.y.z)."""
    try:
        address = ipaddress.ip_address((remote or "").split("%")[0])
    except ValueError:
        return False  # no address (a UNIX socket): not known to be loopback
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _host_name(header: str) -> str:
    try:
        return urlsplit(f"//{header}").hostname or ""
    except ValueError:
        return ""


class State:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.guard = Guard(allow_private=options.allow_private, allow_hosts=options.allow_hosts)
        self.client: Client | None = None
        self.metrics = Metrics()
        self.active = 0
        self.per_client: dict[str, int] = {}
        self.draining = False
        self._token_digest = _digest(options.token) if options.token else None
        self._public_hosts = {h.lower().rstrip(".") for h in options.public_hosts}

    # -- who may ask ---------------------------------------------------------

    def _token_ok(self, request: web.Request) -> bool:
        if self._token_digest is None:
            return False
        given = None
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            given = value.strip()
        elif "token" in request.query:
            given = request.query["token"]
        return given is not None and hmac.compare_digest(_digest(given), self._token_digest)

    def admit(self, request: web.Request) -> None:
        """Raise the refusal for a request that may not proceed (Host, auth, cross-site)."""
        self._check_host(request)
        path = request.path
        if path in OPEN_PATHS:
            return
        signed = False
        if path in SIGNED_PATHS and self.options.signing_key and not self._token_ok(request):
            verdict = signing.verify(self.options.signing_key, path, request.query.items())
            if verdict == signing.UNSIGNED:
                raise Reply(401, "this link needs a signature (rangestream sign) or a token",
                            {"WWW-Authenticate": 'Bearer realm="rangestream"'}, refusal="unauthorized")
            if verdict != signing.VALID:
                raise Reply(403, f"the link's signature is {verdict}", refusal=verdict)
            signed = True
        elif self._token_digest is not None and not self._token_ok(request):
            raise Reply(401, "missing or wrong token (Authorization: Bearer TOKEN or ?token=)",
                        {"WWW-Authenticate": 'Bearer realm="rangestream"'}, refusal="unauthorized")
        if path == "/metrics" and self._token_digest is None and self.options.signing_key \
                and not _loopback_peer(request.remote):
            # Signed links are for media, not for the operator's numbers: without a token to ask
            # for, /metrics stays on this host (a scraper runs beside the service or gets a token).
            raise Reply(403, "/metrics answers only clients on this host's loopback unless the service "
                             "has a --token", refusal="metrics_not_loopback")
        if path in API_PATHS and not signed and request.headers.get("Sec-Fetch-Site", "") == "cross-site":
            raise Reply(403, "cross-site requests to this endpoint are refused (use a signed link)",
                        refusal="cross_site")

    def _check_host(self, request: web.Request) -> None:
        if not self.options.loopback_only:
            return
        header = request.headers.get("Host")
        if header is None:
            return  # HTTP/1.0 without Host: no browser sends that
        name = _host_name(header)
        if not (_loopback_host(name) or name.rstrip(".") in self._public_hosts):
            raise Reply(403, "Host header is not this loopback service (add it with --public-host)",
                        refusal="host_header")

    # -- slots ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def slot(self, request: web.Request) -> AsyncIterator[None]:
        opts = self.options
        if self.draining:
            raise Reply(503, "shutting down; retry on another instance", {"Retry-After": str(opts.retry_after)},
                        refusal="draining")
        if self.active >= opts.max_streams:
            raise Reply(503, f"busy: {opts.max_streams} streams already running; retry later",
                        {"Retry-After": str(opts.retry_after)}, refusal="max_streams")
        who = request.remote or "?"
        if opts.max_streams_per_client and self.per_client.get(who, 0) >= opts.max_streams_per_client:
            raise Reply(429, f"too many streams from one client (at most {opts.max_streams_per_client})",
                        {"Retry-After": str(opts.retry_after)}, refusal="per_client")
        self.active += 1
        self.per_client[who] = self.per_client.get(who, 0) + 1
        self.metrics.active_streams.inc()
        try:
            async with self._lease():
                yield
        finally:
            self.active -= 1
            self.metrics.active_streams.dec()
            left = self.per_client[who] - 1
            if left:
                self.per_client[who] = left
            else:
                del self.per_client[who]

    @contextlib.asynccontextmanager
    async def _lease(self) -> AsyncIterator[None]:
        """One proxy of the pool for this request, from its first upstream request to its last."""
        pool = self.options.proxies
        if pool is None:
            yield
            return
        try:
            lease = await checked_lease(pool).__aenter__()
        except NoProxyAvailableError:
            raise Reply(503, "no usable upstream proxy; retry later", {"Retry-After": str(self.options.retry_after)},
                        refusal="no_proxy") from None
        token = _LEASE.set(lease)
        try:
            yield
        finally:
            _LEASE.reset(token)
            await lease.__aexit__(None, None, None)

    # -- upstreams -----------------------------------------------------------

    async def upstream(self, request: web.Request, name: str) -> str:
        raw = request.query.get(name, "").strip()
        if not raw:
            raise Reply(400, f"missing ?{name}= (an http(s) upstream URL)")
        try:
            parts = urlsplit(raw)
            scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
        except ValueError:
            raise Reply(400, f"?{name}= is not a valid URL") from None
        if scheme not in ("http", "https"):
            raise Reply(400, f"?{name}= must be an http(s) URL")
        if not host:
            raise Reply(400, f"?{name}= has no host")
        try:
            await self.guard.check(host, port or (443 if scheme == "https" else 80))
        except UpstreamRefused as e:
            raise Reply(403, f"{e.reason} (the server refuses non-public upstreams)",
                        refusal=f"upstream_{e.kind.replace('-', '_')}") from None
        except OSError:
            raise Reply(502, f"cannot resolve the upstream host {host}", kind="dns") from None
        return raw

    def open_stream(self, url: str, **options: Any) -> Stream:
        assert self.client is not None
        lease = _LEASE.get()
        if lease is not None:
            options["lease"] = lease
        return self.client.open_stream(url, **options)


STATE: web.AppKey[State] = web.AppKey("rangestream_state", State)
