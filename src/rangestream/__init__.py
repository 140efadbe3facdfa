"""rangestream: stream large objects from Range-capable CDNs as a window of
Range requests, delivered strictly in order, with retries that lose nothing.

    async with rangestream.open_stream(url) as stream:
        async for data in stream:
            ...
"""

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
