"""Shared checks for the hostile-server suite.

Each hostile server is a small aiohttp app on loopback that models one thing
real CDNs, proxies and load balancers do. Every server is checked the same way,
through the library and through the CLI (``-o FILE`` and ``-o -``): the output
is exactly the object, or the failure is the documented one and no final file
is left behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from cli_support import run

import rangestream

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(handler: Handler, path: str = "/x", methods: tuple[str, ...] = ("GET",)) -> AsyncIterator[str]:
    """Serve ``handler`` at ``path`` on 127.0.0.1; yields the URL (``path`` may carry a query)."""
    app = web.Application()
    route = path.split("?", 1)[0]
    for m in methods:
        app.router.add_route(m, route, handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        await runner.cleanup()


async def fetch(url: str, *, unordered: bool = False, **options: Any) -> bytes:
    """The whole object through the library (ordered, or written at offsets like ``get -o FILE``)."""
    async with rangestream.open_stream(url, **options) as stream:
        if not unordered:
            return b"".join([piece async for piece in stream])
        out = bytearray()
        async for offset, piece in stream.unordered():
            if len(out) < offset + len(piece):
                out.extend(bytes(offset + len(piece) - len(out)))
            out[offset:offset + len(piece)] = piece
        return bytes(out)


async def cli(*args: str, timeout: float = 60, cwd: Path | None = None) -> tuple[int, bytes, str]:
    """``rangestream ARGS`` as a subprocess; returns (exit code, stdout, stderr)."""
    return await run(*args, timeout=timeout, cwd=cwd)


async def check_cli(url: str, tmp_path: Path, *, expected: bytes | None = None, exit_code: int = 0,
                    args: tuple[str, ...] = ()) -> None:
    """``get URL -o FILE`` and ``get URL -o -``: exactly ``expected`` with exit 0, or the
    documented ``exit_code`` with no final file (stdout then holds a prefix of the object at most)."""
    assert (expected is None) == (exit_code != 0), "give the bytes for a success, or an exit code for a failure"
    target = tmp_path / "out.bin"
    rc, _, err = await cli("get", url, "-o", str(target), "--quiet", *args)
    assert rc == exit_code, f"-o FILE: exit {rc}, wanted {exit_code}: {err[-2000:]}"
    if expected is not None:
        assert target.read_bytes() == expected, "-o FILE: the file differs from the object"
    else:
        assert not target.exists(), "-o FILE: a failed download left a final file"
        assert "Traceback" not in err, err
    rc, out, err = await cli("get", url, "-o", "-", "--quiet", *args)
    assert rc == exit_code, f"-o -: exit {rc}, wanted {exit_code}: {err[-2000:]}"
    if expected is not None:
        assert out == expected, "-o -: stdout differs from the object"
    else:
        assert "Traceback" not in err, err
