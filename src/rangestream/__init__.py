"""rangestream: stream large objects from Range-capable CDNs as a window of
Range requests, delivered strictly in order, with retries that lose nothing.

    async with rangestream.open_stream(url) as stream:
        async for data in stream:
            ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client, open_stream
    from .engine import ChunkTrace, Stats, Stream
    from .errors import (
        HTTPStatusError,
        InvalidURLError,
        MuxError,
        ObjectChangedError,
        ProxyError,
        RangestreamError,
        RetriesExhaustedError,
        StreamError,
        TLSError,
        TooManyRedirectsError,
        TransientError,
        URLExpiredError,
    )
    from .muxer import MuxResult, mux, mux_urls
    from .plan import DEFAULT_CHUNK_SIZE, ByteRange
    from .proxypool import NoProxyAvailableError, ProxyListError, ProxyPool
    from .retry import Retry, Timeouts

__version__ = "0.1.0"

__all__ = [
    "open_stream",
    "Client",
    "Stream",
    "Stats",
    "ChunkTrace",
    "Retry",
    "Timeouts",
    "ByteRange",
    "DEFAULT_CHUNK_SIZE",
    "RangestreamError",
    "InvalidURLError",
    "StreamError",
    "HTTPStatusError",
    "URLExpiredError",
    "RetriesExhaustedError",
    "ObjectChangedError",
    "TransientError",
    "TLSError",
    "ProxyError",
    "ProxyPool",
    "ProxyListError",
    "NoProxyAvailableError",
    "TooManyRedirectsError",
    "MuxError",
    "mux",
    "mux_urls",
    "MuxResult",
]

# Each public name's module, imported on first use (PEP 562): ``import rangestream.cli`` (or any
# submodule) runs this file first, and the command line's start-up should pay only for what the
# command runs, not for the muxer, the proxy pool or the transports of every other use.
_WHERE = {
    "open_stream": "client",
    "Client": "client",
    "Stream": "engine",
    "Stats": "engine",
    "ChunkTrace": "engine",
    "Retry": "retry",
    "Timeouts": "retry",
    "ByteRange": "plan",
    "DEFAULT_CHUNK_SIZE": "plan",
    "RangestreamError": "errors",
    "InvalidURLError": "errors",
    "StreamError": "errors",
    "HTTPStatusError": "errors",
    "URLExpiredError": "errors",
    "RetriesExhaustedError": "errors",
    "ObjectChangedError": "errors",
    "TransientError": "errors",
    "TLSError": "errors",
    "ProxyError": "errors",
    "TooManyRedirectsError": "errors",
    "MuxError": "errors",
    "ProxyPool": "proxypool",
    "ProxyListError": "proxypool",
    "NoProxyAvailableError": "proxypool",
    "mux": "muxer",
    "mux_urls": "muxer",
    "MuxResult": "muxer",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
