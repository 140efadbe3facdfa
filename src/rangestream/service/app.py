"""The aiohttp application: routes, the middleware (auth, errors, the request log)
and the shared client's lifetime."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
import time
import traceback
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from ..client import Client
from ..redact import is_secret_param, redact_text, redact_url
from .guard import GuardedTransport
from .handlers import STARTED, mux_handler, stream_handler
from .options import ServerOptions
from .protocol import HANDLER_ARGS
from .replies import Reply, json_error, log_safe
from .state import STATE, State

log = logging.getLogger("rangestream.service")

_URL_PARAMS = ("url", "video", "audio")


def make_app(options: ServerOptions | None = None) -> web.Application:
    """The aiohttp application. Run it with ``handler_cancellation=True`` (``AppRunner``,
    ``web.run_app``; ``TestServer`` does by default) so a player that leaves cancels
    its upstream requests even while they wait for bytes, and with ``access_log=None``
    (aiohttp's access log would print whole upstream URLs; this app logs redacted ones)."""
    options = options or ServerOptions()
    app = web.Application(middlewares=[_middleware], handler_args=HANDLER_ARGS)
    state = State(options)
    app[STATE] = state

    async def client_ctx(app: web.Application) -> AsyncIterator[None]:
        defaults = {"window": "auto", "max_buffer": options.read_ahead, **dict(options.stream_options)}
        if options.proxies is not None:  # one guarded transport per proxy of the pool
            state.client = Client(proxies=options.proxies, **defaults,
                                  transport_factory=lambda proxy: GuardedTransport(state.guard, proxy=proxy))
        else:
            state.client = Client(transport=GuardedTransport(state.guard), **defaults)
        try:
            yield
        finally:
            await state.client.aclose()

    app.cleanup_ctx.append(client_ctx)
    app.router.add_get("/stream", stream_handler)  # and HEAD
    app.router.add_get("/mux", mux_handler, allow_head=False)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics, allow_head=False)
    _add_page_routes(app)
    return app


def _add_page_routes(app: web.Application) -> None:
    """The page and /watch, when that module is part of this install."""
    if importlib.util.find_spec(f"{__package__}.page") is None:
        return
    page = importlib.import_module(f"{__package__}.page")
    page.add_routes(app)


def begin_drain(app: web.Application) -> None:
    """From now on /healthz answers 503 and new streams are refused (SIGTERM does this
    before the listener closes and running streams get their grace period)."""
    app[STATE].draining = True


async def _healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.draining:
        return web.json_response({"status": "draining", "active_streams": state.active, "worker": os.getpid()},
                                 status=503, headers={"Cache-Control": "no-store"})
    pool = state.options.proxies
    if pool is not None and not pool.usable:  # every proxy cooling or quarantined: nothing can be fetched
        return web.json_response({"status": "no usable proxy", "active_streams": state.active,
                                  "worker": os.getpid()}, status=503, headers={"Cache-Control": "no-store"})
    return web.json_response({"status": "ok", "active_streams": state.active, "worker": os.getpid()},
                             headers={"Cache-Control": "no-store"})


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.options.proxies is not None:
        state.metrics.observe_proxies(state.options.proxies.snapshot())
    body, ctype = state.metrics.exposition()
    resp = web.Response(body=body, headers={"Cache-Control": "no-store"})
    resp.headers["Content-Type"] = ctype
    return resp


def log_target(request: web.Request) -> str:
    parts = []
    for key, value in request.query.items():
        if key in _URL_PARAMS:
            parts.append(f"{key}={redact_url(value)}")
        elif is_secret_param(key):
            parts.append(f"{key}=REDACTED")
        else:
            parts.append(f"{key}={value[:64]}")
    return log_safe(request.path + ("?" + "&".join(parts) if parts else ""))


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    started = request[STARTED] = time.monotonic()
    status: int | str = 500
    try:
        state.admit(request)
        resp = await handler(request)
        status = resp.status
        return resp
    except Reply as r:
        status = r.status
        if r.refusal:
            state.metrics.refusals.labels(r.refusal).inc()
        elif r.kind:
            state.metrics.errors.labels(r.kind).inc()
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
        state.metrics.errors.labels("internal").inc()
        detail = "".join(traceback.format_exception(e))
        log.error("internal error on %s: %s", log_target(request), redact_text(detail))
        return json_error(500, "internal error")
    finally:
        log.info("%s %s -> %s in %.2fs", request.method, log_target(request), status,
                 time.monotonic() - started)
