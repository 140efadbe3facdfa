"""The HTTP connection layer under the app: a header-read deadline (slowloris),
malformed requests answered with the documented JSON error, and aiohttp's own
server log redacted (it would print whole request lines: tokens, signed URLs)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from ..redact import redact_text
from .state import STATE

http_log = logging.getLogger("rangestream.service.http")

# Two signed googlevideo URLs (~6 kB each once percent-encoded) and a signature fit.
MAX_LINE = 32 * 1024
HANDLER_ARGS = {"max_line_size": MAX_LINE, "max_field_size": MAX_LINE, "logger": http_log}


class _Handler(RequestHandler):
    """aiohttp's connection handler plus a deadline for a request's head."""

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_count = 0
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count > before:
            self._disarm()  # a whole request head arrived
        elif data and self._head_timer is None:
            self._arm()  # the start of another request on a kept-alive connection

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_count = self._request_count
        self._head_timer = self._loop.call_later(self.header_timeout, self._head_deadline)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline(self) -> None:
        self._head_timer = None
        if self._request_count == self._head_count and self.transport is not None:
            http_log.info("closed a connection whose request head took over %ss", self.header_timeout)
            self.transport.close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # One redacted line, no traceback: aiohttp's messages may quote the request line.
        exc = kw.get("exc_info")
        kind = type(exc).__name__ if isinstance(exc, BaseException) else ""
        text = (args[0] % args[1:]) if args and len(args) > 1 else (args[0] if args else "")
        http_log.info("%s %s", redact_text(str(text)), kind)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        self.log_exception("malformed or failed request from %s", request.remote, exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started")
        text = "malformed request" if status < 500 else "internal error"
        if isinstance(exc, LineTooLong):
            text = f"request line or header too long (limit {MAX_LINE} bytes)"
        resp = web.Response(status=status, text=json.dumps({"error": text}), content_type="application/json",
                            headers={"Cache-Control": "no-store"})
        resp.force_close()
        return resp


class _Server(Server):
    def __init__(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - built by adoption only
        super().__init__(*args, **kwargs)

    def __call__(self) -> RequestHandler:
        kwargs = dict(self._kwargs)
        timeout = kwargs.pop("header_timeout", 10.0)
        handler = _Handler(self, loop=self._loop, **kwargs)
        handler.header_timeout = timeout
        return handler


class ServiceRunner(web.AppRunner):
    """``web.AppRunner`` with the service's connection handler (header deadline,
    JSON errors for malformed requests, redacted server log), handler cancellation
    on (a player that leaves cancels its upstream) and aiohttp's access log off
    (it would print whole upstream URLs; the app logs redacted ones)."""

    def __init__(self, app: web.Application, *, header_timeout: float | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("handler_cancellation", True)
        kwargs.setdefault("access_log", None)
        super().__init__(app, **kwargs)
        if header_timeout is None:
            header_timeout = app[STATE].options.header_timeout if STATE in app else 10.0
        self._header_timeout = header_timeout

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _Server
        server._kwargs.update(HANDLER_ARGS, header_timeout=self._header_timeout)
        return server
