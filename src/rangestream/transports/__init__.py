"""HTTP transports: the only layer that talks to an HTTP library (see :mod:`.base` for the contract).

:class:`Http1Transport` (asyncio only) is the default for direct connections;
:class:`AiohttpTransport` serves proxies. It is imported on first use, since aiohttp
alone costs a CLI run ~0.15 s of start-up. ``CurlTransport`` is not re-exported:
curl_cffi is an optional extra, imported from :mod:`rangestream.transports.curl` only
when asked for.
"""

from typing import TYPE_CHECKING, Any

from .base import Response, Transport
from .http1 import Http1Transport

if TYPE_CHECKING:
    from .aiohttp import AiohttpTransport

__all__ = ["AiohttpTransport", "Http1Transport", "Response", "Transport"]


def __getattr__(name: str) -> Any:
    if name == "AiohttpTransport":
        from .aiohttp import AiohttpTransport

        return AiohttpTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
