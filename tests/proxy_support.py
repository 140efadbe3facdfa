"""Proxies and an origin on loopback for proxy-pool tests.

:class:`LoopbackProxy` listens on 127.0.0.1 and speaks HTTP (absolute-form forwarding and
``CONNECT`` tunnels) and SOCKS5 on the same port; its OUTGOING connections leave from its
own ``source`` address (127.0.0.2, 127.0.0.3, ...), so an origin can tell which proxy a
request came through. ``await proxy.set_mode(...)`` makes it fail on demand:

- ``"refuse"``: stops listening (connections are refused); ``"ok"`` listens again on the same port;
  ``await proxy.kill()`` also cuts the connections already open through it;
- ``"407"``: answers HTTP 407 (SOCKS5: no acceptable method) to every request;
- ``"reset"``: resets every connection as soon as it is accepted.

:class:`SourceOrigin` is a tiny Range-capable aiohttp origin that records each request's
source address (``request.remote``) and answers a bot check (403, "Sign in to confirm
you're not a bot") to requests from the addresses in ``bot_check_from`` (or, with
``bot_check_after[address] = n``, to that address's requests after its first ``n``);
``gate`` (an ``asyncio.Event``) holds every request until it is set.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Literal
from urllib.parse import quote, urlsplit

from aiohttp import web

Mode = Literal["ok", "refuse", "407", "reset"]
BOT_CHECK_BODY = "Sign in to confirm you\u2019re not a bot. This helps protect our community."
_HOP_HEADERS = {"proxy-authorization", "proxy-connection", "connection", "keep-alive"}


class LoopbackProxy:
    def __init__(self, source: str, *, credentials: tuple[str, str] | None = None) -> None:
        self.source = source
        self.credentials = credentials
        self.mode: Mode = "ok"
        self.port = 0
        self.accepted = 0
        self.carried: list[tuple[str, str, int]] = []  # (kind, host, port) per connection made upstream
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self._userinfo()}127.0.0.1:{self.port}"

    @property
    def socks_url(self) -> str:
        return f"socks5://{self._userinfo()}127.0.0.1:{self.port}"

    def _userinfo(self) -> str:
        if self.credentials is None:
            return ""
        return f"{quote(self.credentials[0], safe='')}:{quote(self.credentials[1], safe='')}@"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def set_mode(self, mode: Mode) -> None:
        if mode == "refuse" and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        elif mode != "refuse" and self._server is None:
            await self.start()
        self.mode = mode

    async def kill(self) -> None:
        """Die: refuse new connections and cut every connection open through it (tunnels too)."""
        await self.set_mode("refuse")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        try:
            if self.mode == "reset":
                _reset(writer)
                return
            first = await reader.readexactly(1)
            if first == b"\x05":
                await self._socks(reader, writer)
            else:
                await self._http(first, reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:  # kill() or close(): the connection ends here, quietly
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    # -- HTTP -----------------------------------------------------------------------------

    async def _http(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (first + await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")[:-2]
        method, target, version = request_line.split(" ", 2)
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
        if self.mode == "407" or not self._authorized(dict((k.lower(), v) for k, v in headers)):
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\"\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = await self._connect("connect", host.strip("[]"), int(port), writer)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            parts = urlsplit(target)
            upstream = await self._connect("http", parts.hostname or "", parts.port or 80, writer)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            kept = "".join(f"{k}: {v}\r\n" for k, v in headers if k.lower() not in _HOP_HEADERS)
            # One request per connection keeps the forwarding a plain byte pipe.
            upstream[1].write(f"{method} {path} {version}\r\n{kept}Connection: close\r\n\r\n".encode("latin-1"))
        await _splice(reader, writer, *upstream)

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.credentials is None:
            return True
        expected = base64.b64encode(":".join(self.credentials).encode()).decode()
        return headers.get("proxy-authorization") == f"Basic {expected}"

    async def _connect(self, kind: str, host: str, port: int, client: asyncio.StreamWriter
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            upstream = await asyncio.open_connection(host, port, local_addr=(self.source, 0))
        except OSError:
            if kind != "socks":
                client.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            raise
        self.carried.append((kind, host, port))
        return upstream

    # -- SOCKS5 ---------------------------------------------------------------------------

    async def _socks(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        methods = await reader.readexactly((await reader.readexactly(1))[0])
        wanted = 2 if self.credentials is not None else 0
        if self.mode == "407" or wanted not in methods:
            writer.write(b"\x05\xff")  # no acceptable method
            return
        writer.write(bytes([5, wanted]))
        if wanted == 2 and not await self._socks_login(reader, writer):
            return
        _, cmd, _, atyp = await reader.readexactly(4)
        host = await _socks_host(reader, atyp)
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if cmd != 1:
            writer.write(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")  # command not supported
            return
        try:
            upstream = await self._connect("socks", host, port, writer)
        except OSError:
            writer.write(b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00")  # connection refused
            raise
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton(self.source) + b"\x00\x00")
        await _splice(reader, writer, *upstream)

    async def _socks_login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await reader.readexactly(1)  # sub-negotiation version
        user = await reader.readexactly((await reader.readexactly(1))[0])
        password = await reader.readexactly((await reader.readexactly(1))[0])
        ok = (user.decode(), password.decode()) == self.credentials
        writer.write(b"\x01\x00" if ok else b"\x01\x01")
        return ok

    async def __aenter__(self) -> LoopbackProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _socks_host(reader: asyncio.StreamReader, atyp: int) -> str:
    if atyp == 1:
        return socket.inet_ntoa(await reader.readexactly(4))
    if atyp == 4:
        return socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
    if atyp == 3:
        return (await reader.readexactly((await reader.readexactly(1))[0])).decode()
    raise ValueError(f"bad SOCKS5 address type {atyp}")


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    writer.transport.abort()


async def _splice(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                  up_r: asyncio.StreamReader, up_w: asyncio.StreamWriter) -> None:
    await client_w.drain()
    upload = asyncio.create_task(_copy(client_r, up_w))
    try:
        await _copy(up_r, client_w)  # the upstream's answer ends the exchange
    finally:
        upload.cancel()
        with suppress(asyncio.CancelledError, OSError):
            await upload
        up_w.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


@asynccontextmanager
async def loopback_proxies(count: int, *, credentials: tuple[str, str] | None = None
                           ) -> AsyncIterator[list[LoopbackProxy]]:
    """``count`` started proxies egressing from 127.0.0.2, 127.0.0.3, ..."""
    proxies = [LoopbackProxy(f"127.0.0.{i + 2}", credentials=credentials) for i in range(count)]
    try:
        for proxy in proxies:
            await proxy.start()
        yield proxies
    finally:
        for proxy in proxies:
            await proxy.close()


class SourceOrigin:
    """``GET /file`` (Range-capable) over ``body``; ``remotes`` lists each request's source address."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.remotes: list[str] = []
        self.bot_check_from: set[str] = set()
        # source address -> requests answered normally before that source meets bot checks
        self.bot_check_after: dict[str, int] = {}
        self.gate: asyncio.Event | None = None  # when set to an unset Event, requests wait for it
        self.url = ""
        self._runner: web.AppRunner | None = None

    def sources(self) -> set[str]:
        return set(self.remotes)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        remote = request.remote or ""
        self.remotes.append(remote)
        if self.gate is not None:
            await self.gate.wait()
        after = self.bot_check_after.get(remote)
        if remote in self.bot_check_from or (after is not None and self.remotes.count(remote) > after):
            return web.Response(status=403, text=BOT_CHECK_BODY)
        start, stop = _range(request.headers.get("Range"), len(self.body))
        if (start, stop) == (0, len(self.body)) and "Range" not in request.headers:
            return web.Response(body=self.body, content_type="application/octet-stream")
        return web.Response(status=206, body=self.body[start:stop], content_type="application/octet-stream",
                            headers={"Content-Range": f"bytes {start}-{stop - 1}/{len(self.body)}"})

    async def __aenter__(self) -> SourceOrigin:
        app = web.Application()
        app.router.add_get("/file", self._file)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/file"  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _range(header: str | None, size: int) -> tuple[int, int]:
    if not header or not header.startswith("bytes="):
        return 0, size
    first, _, last = header[len("bytes="):].split(",")[0].partition("-")
    start = int(first)
    return start, min(size, int(last) + 1) if last else size
