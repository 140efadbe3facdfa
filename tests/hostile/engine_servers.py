"""Hostile servers for the engine's guarantees: each models one thing real CDNs,
proxies and load balancers do, and keeps its own books (requests, times, bytes sent)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def payload(size: int, seed: int = 9) -> bytes:
    """Bytes with no period, so a byte at a wrong offset can never look right."""
    return random.Random(seed).randbytes(size)


def parse_range(request: web.Request) -> tuple[int, int | None] | None:
    """``(first, last)`` of a ``Range: bytes=first-[last]`` header (last inclusive, None if open)."""
    value = request.headers.get("Range")
    if not value:
        return None
    first, _, last = value.removeprefix("bytes=").partition("-")
    return int(first), int(last) if last else None


@dataclass
class Books:
    """What a hostile server saw and did."""

    requests: list[tuple[float, int | None]] = field(default_factory=list)  # (monotonic time, range start)
    sent: int = 0  # body bytes the server handed to its socket
    active: dict[int, int] = field(default_factory=dict)  # range start -> responses in progress

    def starts(self, start: int) -> list[float]:
        return [t for t, s in self.requests if s == start]

    def log(self, request: web.Request) -> tuple[int, int | None]:
        r = parse_range(request)
        self.requests.append((time.monotonic(), None if r is None else r[0]))
        return r if r is not None else (0, None)

    def busy(self, start: int) -> bool:
        return self.active.get(start, 0) > 0


async def send(resp: web.StreamResponse, books: Books, data: bytes, piece: int = 16 << 10,
               pause: float = 0.0) -> None:
    for i in range(0, len(data), piece):
        if pause and i:
            await asyncio.sleep(pause)
        await resp.write(data[i:i + piece])
        books.sent += len(data[i:i + piece])


def capped_unknown_total(data: bytes, books: Books, cap: int, end: str = "416") -> Handler:
    """Answers ``bytes a-b/*`` and never more than ``cap`` bytes per response (a CDN's or proxy's
    response cap). Past the end it says so with ``end``: a 416, an empty 200, or (``"total"``)
    the total appears in the response that reaches the end."""

    async def handler(request: web.Request) -> web.StreamResponse:
        a, b = books.log(request)
        if a >= len(data):
            if end == "empty200":
                return web.Response(status=200, body=b"")
            return web.Response(status=416, headers={"Content-Range": "bytes */*"})
        last = min(len(data) - 1, a + cap - 1, len(data) - 1 if b is None else b)
        total = str(len(data)) if end == "total" and last == len(data) - 1 else "*"
        resp = web.StreamResponse(status=206, headers={"Content-Range": f"bytes {a}-{last}/{total}"})
        resp.content_length = last + 1 - a
        await resp.prepare(request)
        await send(resp, books, data[a:last + 1])
        return resp

    return handler


def ignores_range(data: bytes, books: Books) -> Handler:
    """Always a 200 with the whole object, whatever Range says (many origins and proxies).
    Sends at about 13 MB/s, as a link would: on loopback the kernel would otherwise take
    megabytes at once, and the bytes sent would not show what the client asked for."""

    async def handler(request: web.Request) -> web.StreamResponse:
        books.log(request)
        resp = web.StreamResponse(status=200)
        resp.content_length = len(data)
        await resp.prepare(request)
        await send(resp, books, data, piece=64 << 10, pause=0.005)
        return resp

    return handler


def ranged(data: bytes, books: Books, *, total: Callable[[int], int] | None = None, pause: float = 0.0,
           first: Callable[[web.Request, int], Awaitable[web.StreamResponse | None]] | None = None,
           ) -> Handler:
    """A correct 206 server, except that ``total(a)`` may lie about the total of a response
    starting at ``a``; ``first(request, a)`` may answer instead (None falls through).
    Responses at offset 0 are paced by ``pause`` per 16 KB."""

    async def handler(request: web.Request) -> web.StreamResponse:
        a, b = books.log(request)
        last = len(data) - 1 if b is None else min(b, len(data) - 1)
        if first is not None:
            special = await first(request, a)
            if special is not None:
                return special
        books.active[a] = books.active.get(a, 0) + 1
        try:
            resp = web.StreamResponse(status=206, headers={
                "Content-Range": f"bytes {a}-{last}/{total(a) if total else len(data)}", "ETag": '"v1"'})
            resp.content_length = last + 1 - a
            await resp.prepare(request)
            await send(resp, books, data[a:last + 1], pause=pause if a == 0 else 0.0)
            return resp
        finally:
            books.active[a] -= 1

    return handler


def bursty(data: bytes, books: Books, burst: int, every: float) -> Handler:
    """A healthy server that sends ``burst`` bytes every ``every`` seconds (pacing
    proxies, some CDNs' throttles): silent most of the time, never stalled."""

    async def handler(request: web.Request) -> web.StreamResponse:
        a, b = books.log(request)
        last = len(data) - 1 if b is None else min(b, len(data) - 1)
        resp = web.StreamResponse(status=206, headers={"Content-Range": f"bytes {a}-{last}/{len(data)}"})
        resp.content_length = last + 1 - a
        await resp.prepare(request)
        body = data[a:last + 1]
        for i in range(0, len(body), burst):
            if i:
                await asyncio.sleep(every)
            await resp.write(body[i:i + burst])
            books.sent += len(body[i:i + burst])
        return resp

    return handler


async def hold(request: web.Request, seconds: float) -> bool:
    """Wait up to ``seconds`` (in 50 ms steps); False as soon as the client went away."""
    for _ in range(max(1, int(seconds / 0.05))):
        if request.transport is None or request.transport.is_closing():
            return False
        await asyncio.sleep(0.05)
    return True
