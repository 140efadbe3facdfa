"""What the service runs with: one frozen value built by the command line or a caller."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServerOptions:
    """What :func:`~rangestream.service.make_app` serves with.

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
