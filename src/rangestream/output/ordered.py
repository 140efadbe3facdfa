"""In-order output: stdout, a device or a FIFO, written from a worker thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
import select
import stat
import sys
from collections.abc import Callable

from .errors import local_io_error


def is_stream_target(path: str) -> bool:
    """A device, FIFO or socket: written in order like stdout, never replaced or given a FILE.part."""
    try:
        mode = os.stat(path).st_mode  # following symlinks: /dev/stdout, /dev/fd/N are the user's choice
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


async def open_stream_target(path: str, on_wait: Callable[[], None] | None = None) -> int:
    """``path`` (a device or FIFO) opened for writing. A FIFO without a reader is waited for as
    curl does, but by polling, so Ctrl-C still works meanwhile; ``on_wait`` is called once when
    that wait begins (to tell the user)."""
    waiting = False
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: a FIFO nobody reads yet
                raise local_io_error(e, path, "open") from e
            if not waiting and on_wait is not None:
                on_wait()
            waiting = True
            await asyncio.sleep(0.05)
            continue
        os.set_blocking(fd, True)
        return fd


class StdoutWriter:
    """Writes to fd 1 from a worker thread, so a slow pipe never blocks the event loop;
    pieces that arrive meanwhile are gathered (bounded) into the next write."""

    # Gather little while a write is pending: bytes held here hide a slow reader from the
    # stream (its auto window would grow and read ahead for nothing) and add to the memory.
    LIMIT = 1 << 20

    def __init__(self, fd: int = 1) -> None:
        self.fd = fd
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rangestream-stdout")
        self._pending: asyncio.Future[None] | None = None
        self._buf: list[bytes] = []
        self._buffered = 0
        self.written = 0

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [])
                continue
            view = view[n:]

    def _submit(self) -> None:
        data = b"".join(self._buf)
        self._buf.clear()
        self._buffered = 0
        self._pending = asyncio.get_running_loop().run_in_executor(self._pool, self._write_all, data)

    async def write(self, data: bytes) -> None:
        self._buf.append(data)
        self._buffered += len(data)
        self.written += len(data)
        if self._pending is not None:
            if not self._pending.done() and self._buffered < self.LIMIT:
                return
            await self._pending  # raises the write's error (BrokenPipeError, ENOSPC...)
            self._pending = None
        self._submit()

    async def close(self) -> None:
        if self._pending is not None:
            await self._pending
            self._pending = None
        if self._buf:
            self._submit()
            assert self._pending is not None
            await self._pending
            self._pending = None
        self._pool.shutdown(wait=False)


def silence_stdout() -> None:
    """After a broken pipe: point fd 1 at /dev/null so the interpreter's final flush stays quiet."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
