"""HTTP transports: the only layer that talks to an HTTP library (see :mod:`.base` for the contract).

``CurlTransport`` is not re-exported: curl_cffi is an optional extra, so it is
imported from :mod:`rangestream.transports.curl` only when asked for.
"""

from .aiohttp import AiohttpTransport
from .base import Response, Transport

__all__ = ["AiohttpTransport", "Response", "Transport"]
