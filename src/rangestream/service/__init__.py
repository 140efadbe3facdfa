"""The HTTP service: proxies and muxes streams for players and browsers, safe to expose.

    rangestream serve [--host 127.0.0.1] [--port 8080] [--token TOKEN] [--allow-private]
                      [--allow-host SUFFIX ...] [--max-streams 8]

Endpoints
---------
``GET|HEAD /stream?url=<upstream URL>``
    One object through the engine (a shared :class:`~rangestream.Client`,
    ``window="auto"``). The player's ``Range`` (``bytes=a-``, ``bytes=a-b``,
    ``bytes=-n``; one range) is honoured: 206 with ``Content-Range``, or 416 when
    it starts at or past the end. Without ``Range``: 200 with the whole object.
    ``Content-Type`` comes from the upstream URL's ``mime=`` parameter
    (googlevideo carries it), else ``application/octet-stream``. Headers are sent
    only once the first body byte arrived, so an upstream failure is still a
    clean status; a failure after that closes the connection (the player sees a
    short body, never a silently truncated "complete" one). A player that goes
    away cancels the upstream requests at once.
``GET /mux?video=<url>&audio=<url>&format=mp4|webm|mkv``
    Both inputs muxed on the fly (packets copied, never re-encoded) into a
    chunked 200 response (``video/mp4``, ``video/webm``, ``video/x-matroska``).
    No Range support: always 200 with the whole output (``Accept-Ranges: none``).
    An input failure before the first output byte is a 502 with a JSON error;
    after it, the connection is closed.

Every error is ``{"error": "..."}`` with upstream URLs redacted; never a traceback.

Modules: ``options`` (ServerOptions), ``guard`` (the SSRF guard), ``state`` (per-app
state: auth, slots), ``replies`` (error answers), ``handlers`` (/stream, /mux),
``app`` (the application and its middleware), ``main`` (the command line).
"""

from __future__ import annotations

from .app import begin_drain, make_app
from .guard import Guard, GuardedTransport, UpstreamRefused, classify_address
from .handlers import parse_range
from .main import create_app, main
from .options import ServerOptions
from .protocol import ServiceRunner
from .signing import sign, sign_main, verify

__all__ = [
    "Guard", "GuardedTransport", "ServerOptions", "ServiceRunner", "UpstreamRefused", "begin_drain",
    "classify_address", "create_app", "main", "make_app", "parse_range", "sign", "sign_main", "verify",
]
