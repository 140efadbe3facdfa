"""What the service runs with: one frozen value built by the command line or a caller."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..proxypool import ProxyPool

MiB = 1 << 20


@dataclass(frozen=True)
class ServerOptions:
    """What :func:`~rangestream.service.make_app` serves with.

    ``stream_options`` go to every ``open_stream`` (``chunk_size``, ``retry``,
    ``timeouts``, ...) on top of ``window="auto"`` and ``max_buffer=read_ahead``.

    ``loopback_only``: the service listens on loopback only, so a ``Host`` header
    that is not a loopback name or address (or one of ``public_hosts``) is a DNS
    rebinding attempt and refused.

    ``proxies``: a :class:`~rangestream.ProxyPool` every upstream request goes through, one
    proxy per client request (its probe, streams and page resolution), moving on when it dies
    or meets a bot check; ``/healthz`` answers 503 while none is usable.
    """

    token: str | None = None
    signing_key: str | None = None
    allow_private: bool = False
    allow_hosts: tuple[str, ...] = ()
    max_streams: int = 8
    max_streams_per_client: int = 0  # 0: no per-client cap
    retry_after: int = 2  # seconds, with a 503 for too many streams
    write_timeout: float = 30.0  # a client that reads nothing this long is dropped
    header_timeout: float = 10.0  # a request head must arrive within this
    read_ahead: int = 16 * MiB  # each stream's read-ahead budget (the engine's max_buffer)
    loopback_only: bool = True
    public_hosts: tuple[str, ...] = ()
    stream_options: Mapping[str, Any] = field(default_factory=dict)
    proxies: ProxyPool | None = None

    def __post_init__(self) -> None:
        if self.max_streams < 1:
            raise ValueError("max_streams must be >= 1")
        if self.max_streams_per_client < 0:
            raise ValueError("max_streams_per_client must be >= 0")
        if self.token is not None and not self.token:
            raise ValueError("an empty token would let anyone in")
        if self.signing_key is not None and not self.signing_key:
            raise ValueError("an empty signing key would sign anything")
        if not self.write_timeout > 0 or not self.header_timeout > 0:
            raise ValueError("timeouts must be positive")
        if self.read_ahead < 0:
            raise ValueError("read_ahead must be >= 0")
