"""``rangestream`` as a real subprocess for the CLI's tests (tests/test_cli*.py, test_pool_cli.py,
hostile/), and an RSS feed for its playlists. Started with ``asyncio.create_subprocess_exec``: the
servers the CLI talks to run in the test's own event loop, which a blocking ``subprocess.run`` would stop."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any, Self

from aiohttp import web


def cli_env(**extra: str) -> dict[str, str]:
    """This environment without the user's RANGESTREAM_* defaults and COLUMNS, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANGESTREAM_")}
    env.pop("COLUMNS", None)
    env.update(extra)
    return env


async def start(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                stdout: Any = asyncio.subprocess.PIPE, **kw: Any) -> asyncio.subprocess.Process:
    """``rangestream ARGS`` started (stdin empty, stderr piped); ``env`` defaults to :func:`cli_env`."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rangestream", *args, cwd=cwd, env=env or cli_env(),
        stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=asyncio.subprocess.PIPE, **kw)


async def run(*args: str, timeout: float = 30, **kw: Any) -> tuple[int, bytes, str]:
    """``rangestream ARGS`` to the end: (exit code, stdout, stderr). A run past ``timeout`` is
    killed and fails the test."""
    proc = await start(*args, **kw)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"rangestream {' '.join(args)} still running after {timeout} s") from None
    assert proc.returncode is not None
    return proc.returncode, out or b"", err.decode(errors="replace")



class LoopbackApp:
    """An aiohttp app on 127.0.0.1 for one test, used as ``async with``: ``route`` is served by
    ``_handle`` and ``url`` is ``path`` on its port."""

    route = "/{tail:.*}"
    path = "/"
    url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get(self.route, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}{self.path}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


class Feed(LoopbackApp):
    """An RSS feed on a loopback server (yt-dlp's generic extractor lists its items), noting each
    request's (path, source address). It lists ``items`` (title, link), then ``media``: bodies it
    serves itself at /v0.mp4, /v1.mp4, ... titled "Episode 0", "Episode 1", ..."""

    route = "/{name}"
    path = "/feed.xml"

    def __init__(self, items: list[tuple[str, str]] | None = None, media: list[bytes] | None = None) -> None:
        self.items, self.media = items or [], media or []
        self.asked: list[tuple[str, str]] = []
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.asked.append((request.path, request.remote or ""))
        if request.path != "/feed.xml":
            return web.Response(body=self.media[int(request.path[2:-4])], content_type="video/mp4")
        here = self.url.rsplit("/", 1)[0]
        listed = self.items + [(f"Episode {i}", f"{here}/v{i}.mp4") for i in range(len(self.media))]
        body = "".join(f"<item><title>{t}</title><link>{u.replace('&', '&amp;')}</link></item>" for t, u in listed)
        return web.Response(text=f'<?xml version="1.0"?><rss version="2.0"><channel><title>My list</title>'
                                 f"{body}</channel></rss>", content_type="application/rss+xml")

