"""The SSRF guard: which upstream hosts the service may fetch, checked before the
request and again on every connection and redirect hop."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver

from ..errors import StreamError
from ..transport import AiohttpTransport


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
            raise UpstreamRefused(f"upstream host {h} is not in the allowed hosts", kind="not-allowed", host=h)
        if not self.allow_private and _is_ip(h) and not is_public_address(h):
            raise UpstreamRefused(f"upstream address {h} is not public", kind="not-public", host=h)
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
