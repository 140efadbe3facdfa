"""Helpers for the service's tests: the app on a loopback TestServer run as `rangestream serve`
runs it, and `rangestream serve` as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from rangestream.service import ServerOptions, make_app
from rangestream.testing import FAST_RETRY

try:
    from rangestream.service import ServiceRunner
except ImportError:  # the code before the service's connection layer existed
    ServiceRunner = None

SRC = str(Path(__file__).resolve().parents[1] / "src")
# Fail fast: the default policy backs off 1 s, 2 s, 4 s.
FAST = {"retry": FAST_RETRY}


def q(url: str) -> str:
    return quote(url, safe="")


class _Server(TestServer):
    async def _make_runner(self, **kwargs):
        if ServiceRunner is not None:
            return ServiceRunner(self.app, **kwargs)
        return web.AppRunner(self.app, access_log=None, **kwargs)


@asynccontextmanager
async def serve(**options) -> AsyncIterator[TestClient]:
    """The app on 127.0.0.1 with the emulated CDN allowed (it is on loopback)."""
    options.setdefault("allow_private", True)
    options.setdefault("stream_options", FAST)
    app = make_app(ServerOptions(**options))
    async with TestClient(_Server(app, host="127.0.0.1")) as client:
        yield client


@contextmanager
def serve_process(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m rangestream.service --port 0 ARGS`; yields (process, base URL)."""
    environ = {**os.environ, "PYTHONPATH": SRC, **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "rangestream.service", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://"), (line, proc.stderr.read() if proc.poll() is not None else "")
        yield proc, line.split()[2]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Bounded polling of a real condition."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
