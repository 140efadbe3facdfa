"""Per-response write deadline: a client that reads nothing for ``timeout`` seconds
while the service waits to write is cut off, and its upstream with it (leaving the
handler leaves the engine's stream), so clients that stop reading cannot hold slots."""

from __future__ import annotations

import asyncio

from aiohttp import web


class WriteTimeout(ConnectionResetError):
    """The client read nothing for the write timeout; its connection was aborted."""


class WriteWatch:
    """Writes to one response, measuring the client's progress by the transport's
    write buffer: while a write waits, the buffer only shrinks when the client reads.
    A slow client that keeps reading is never cut; one that reads nothing is."""

    def __init__(self, request: web.Request, timeout: float) -> None:
        self._request = request
        self._timeout = timeout
        self._tick = min(1.0, timeout / 4)
        self._loop = asyncio.get_running_loop()
        self._scope: asyncio.Timeout | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._size = 0
        self._progress = 0.0
        self.timed_out = False

    async def write(self, resp: web.StreamResponse, data: bytes) -> None:
        transport = self._request.transport
        if transport is None:
            raise ConnectionResetError("the client left")
        self._size = transport.get_write_buffer_size()
        self._progress = self._loop.time()
        try:
            async with asyncio.timeout(None) as scope:
                self._scope = scope
                self._handle = self._loop.call_later(self._tick, self._check)
                try:
                    await resp.write(data)
                finally:
                    self._handle.cancel()
                    self._scope = None
        except TimeoutError:
            self.timed_out = True
            transport.abort()
            raise WriteTimeout(f"the client read nothing for {self._timeout:g}s") from None

    def _check(self) -> None:
        transport = self._request.transport
        if self._scope is None or transport is None:
            return
        now = self._loop.time()
        size = transport.get_write_buffer_size()
        if size < self._size:
            self._size, self._progress = size, now
        if now - self._progress >= self._timeout:
            self._scope.reschedule(now)  # fires the timeout in the waiting write
            return
        self._handle = self._loop.call_later(self._tick, self._check)
