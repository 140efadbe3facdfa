"""The SSRF guard: which upstream hosts the service may fetch, checked before the
request and again on every connection and redirect hop."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ..errors import StreamError
from ..transports import AiohttpTransport


class UpstreamRefused(StreamError):
    """The upstream host is not allowed. ``kind`` says why (``"not-public"``: the
    address or what the name resolves to is not public; ``"not-allowed"``: not in
    ``--allow-host``), ``host`` names it.

    A terminal :class:`~rangestream.StreamError`: raised inside the transport it
    reaches the consumer with its type and is never retried."""

    def __init__(self, message: str, *, kind: str, host: str) -> None:
        self.kind = kind
        self.host = host
        super().__init__(message)


def find_refusal(error: BaseException | None) -> UpstreamRefused | None:
    """The :class:`UpstreamRefused` behind ``error`` (itself or a cause), if any."""
    seen = error
    for _ in range(6):
        if seen is None:
            return None
        if isinstance(seen, UpstreamRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


# Non-public IPv4 blocks (IANA special-purpose registry, RFC 6890 and successors), by name.
_V4_SPECIAL = tuple((ipaddress.IPv4Network(net), kind) for net, kind in (
    ("0.0.0.0/8", "this-network"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "shared"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "protocol-assignments"), ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4-relay"), ("192.168.0.0/16", "private"), ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"), ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"),
))
# Inside 2000::/3 (global unicast), the blocks that are not globally reachable unicast.
_V6_SPECIAL = tuple((ipaddress.IPv6Network(net), kind) for net, kind in (
    ("2001::/23", "protocol-assignments"),  # Teredo, benchmarking, ORCHID, ...
    ("2001:db8::/32", "documentation"), ("3fff::/20", "documentation"),
))
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPAT = ipaddress.IPv6Network("::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")


def _classify_v4(ip: ipaddress.IPv4Address) -> str:
    for net, kind in _V4_SPECIAL:
        if ip in net:
            return kind
    return "public"


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries: mapped, SIIT, compatible, NAT64, 6to4."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIIT or ip in _NAT64 or ip in _COMPAT:
        return low
    if ip in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)
    return None


def classify_address(address: str) -> str:
    """``"public"`` for a globally reachable unicast address, else what it is
    (``"loopback"``, ``"private"``, ``"link-local"``, ``"site-local"``, ``"nat64-local"``,
    ``"multicast"``, ...; ``"invalid"`` for a string that is no IP address).

    A pure function with its own tables, independent of the running Python's
    ``ipaddress.is_global``. IPv6 forms that embed an IPv4 address (mapped,
    SIIT, compatible, NAT64 64:ff9b::/96, 6to4) are judged by that address;
    other IPv6 is public only inside 2000::/3 minus the special blocks."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "invalid"
    if isinstance(ip, ipaddress.IPv4Address):
        return _classify_v4(ip)
    if int(ip) <= 1:
        return "loopback" if int(ip) == 1 else "unspecified"
    if ip in _NAT64_LOCAL:
        return "nat64-local"  # RFC 8215: local use only, wherever the IPv4 part sits
    embedded = _embedded_v4(ip)
    if embedded is not None:
        return _classify_v4(embedded)
    if ip in _SITE_LOCAL:
        return "site-local"
    if ip not in _GLOBAL_UNICAST:
        return _v6_kind(ip)
    for net, kind in _V6_SPECIAL:
        if ip in net:
            return kind
    return "public"


def _v6_kind(ip: ipaddress.IPv6Address) -> str:
    if ip.is_multicast:
        return "multicast"
    if ip.is_link_local:
        return "link-local"
    if ip in ipaddress.IPv6Network("fc00::/7"):
        return "private"
    return "reserved"


def is_public_address(address: str) -> bool:
    return classify_address(address) == "public"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _numeric_form(host: str) -> bool:
    """True for a host whose last label is a number (``2130706433``, ``127.1``,
    ``0177.0.0.1``, ``0x7f.1``, ``0``): URL parsers and C resolvers read these as
    IPv4 addresses in shorthand, octal or hex. Only the canonical dotted quad is an
    address the guard can judge; the rest are refused whatever they would mean."""
    last = host.rsplit(".", 1)[-1]
    return bool(last) and (last.isascii() and last.isdigit() or last.lower().startswith("0x"))


def _canonical_v4(host: str) -> bool:
    try:
        return str(ipaddress.IPv4Address(host)) == host
    except ValueError:
        return False


class Guard:
    """Which upstream hosts may be fetched."""

    def __init__(self, *, allow_private: bool, allow_hosts: tuple[str, ...] = ()) -> None:
        self.allow_private = allow_private
        self.allow_hosts = tuple(h.strip().lower().strip(".") for h in allow_hosts if h.strip().strip("."))

    def check_name(self, host: str) -> str:
        """The allowlist and IP literals (no DNS); returns the normalised host."""
        h = host.lower().rstrip(".")
        if self.allow_hosts and not any(h == s or h.endswith("." + s) for s in self.allow_hosts):
            raise UpstreamRefused(f"upstream host {h} is not in the allowed hosts", kind="not-allowed", host=h)
        if self.allow_private:
            return h
        if _numeric_form(h) and not _canonical_v4(h):
            raise UpstreamRefused(f"upstream host {h} is a numeric address form that is not a plain "
                                  "dotted quad: not public", kind="not-public", host=h)
        if _is_ip(h) and not is_public_address(h):
            raise UpstreamRefused(f"upstream address {h} is not public ({classify_address(h)})",
                                  kind="not-public", host=h)
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
            raise UpstreamRefused(f"upstream host {h} resolves to a non-public address", kind="not-public", host=h)


class _PublicResolver(AbstractResolver):
    """Drops non-public addresses at connect time (DNS rebinding, redirects to internal names)."""

    def __init__(self) -> None:
        self._inner = aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        infos = await self._inner.resolve(host, port, family)
        public = [info for info in infos if is_public_address(str(info["host"]))]
        if not public:
            # Terminal, not an OSError: aiohttp would make that a connection error, retried.
            raise UpstreamRefused(f"upstream host {host} resolves only to non-public addresses",
                                  kind="not-public", host=host)
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
