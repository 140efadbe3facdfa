"""The aiohttp application: routes, the middleware (auth, errors, the request log)
and the shared client's lifetime."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import time
import traceback
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ..client import Client
from ..redact import is_secret_param, redact_text, redact_url
from .guard import GuardedTransport
from .handlers import mux_handler, stream_handler
from .options import ServerOptions
from .replies import Reply, json_error
from .state import STATE, State

log = logging.getLogger("rangestream.service")

_URL_PARAMS = ("url", "video", "audio")


def make_app(options: ServerOptions | None = None) -> web.Application:
    """The aiohttp application. Run it with ``handler_cancellation=True`` (``AppRunner``,
    ``web.run_app``; ``TestServer`` does by default) so a player that leaves cancels
    its upstream requests even while they wait for bytes, and with ``access_log=None``
    (aiohttp's access log would print whole upstream URLs; this app logs redacted ones)."""
    options = options or ServerOptions()
    app = web.Application(middlewares=[_middleware])
    state = State(options)
    app[STATE] = state

    async def client_ctx(app: web.Application) -> AsyncIterator[None]:
        transport = GuardedTransport(state.guard)
        state.client = Client(transport=transport, **{"window": "auto", **dict(options.stream_options)})
        try:
            yield
        finally:
            await state.client.aclose()

    app.cleanup_ctx.append(client_ctx)
    app.router.add_get("/stream", stream_handler)  # and HEAD
    app.router.add_get("/mux", mux_handler, allow_head=False)
    _add_page_routes(app)
    return app


def _add_page_routes(app: web.Application) -> None:
    """The page and /watch, when that module is part of this install."""
    if importlib.util.find_spec(f"{__package__}.page") is None:
        return
    page = importlib.import_module(f"{__package__}.page")
    page.add_routes(app)


def log_target(request: web.Request) -> str:
    parts = []
    for key, value in request.query.items():
        if key in _URL_PARAMS:
            parts.append(f"{key}={redact_url(value)}")
        elif is_secret_param(key):
            parts.append(f"{key}=REDACTED")
        else:
            parts.append(f"{key}={value[:64]}")
    return request.path + ("?" + "&".join(parts) if parts else "")


@web.middleware
async def _middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[STATE]
    started = time.monotonic()
    status: int | str = 500
    try:
        if not state.authorized(request):
            raise Reply(401, "missing or wrong token (Authorization: Bearer TOKEN or ?token=)",
                        {"WWW-Authenticate": 'Bearer realm="rangestream"'})
        resp = await handler(request)
        status = resp.status
        return resp
    except Reply as r:
        status = r.status
        return r.response()
    except web.HTTPException as e:  # the router's 404 / 405
        status = e.status
        headers = {k: v for k, v in e.headers.items() if k.lower() == "allow"}
        return json_error(e.status, e.reason.lower(), headers)
    except asyncio.CancelledError:
        status = "cancelled"
        raise
    except Exception as e:  # noqa: BLE001 -- any bug becomes a JSON 500, logged redacted
        status = 500
        detail = "".join(traceback.format_exception(e))
        log.error("internal error on %s: %s", log_target(request), redact_text(detail))
        return json_error(500, "internal error")
    finally:
        log.info("%s %s -> %s in %.2fs", request.method, log_target(request), status,
                 time.monotonic() - started)
