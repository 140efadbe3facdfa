"""A one-handler aiohttp server on loopback, for servers odder than the emulated CDN."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                route: str = "/x") -> AsyncIterator[str]:
    """Serve ``handler`` at ``route`` (an aiohttp pattern such as ``/{name}``, which must match
    ``/x``); yields the URL of ``/x``."""
    app = web.Application()
    app.router.add_get(route, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/x"
    finally:
        await runner.cleanup()
