"""Where the muxer's output goes: a path, ``"-"`` (stdout), a binary file-like object, or an async writer.

The muxer (worker thread) writes to an :class:`OutFile` in front of the real
sink. Seekable sinks (paths, seekable files) get a seekable one, so Matroska
can go back to write its duration and cues; pipes, stdout and async writers
get a non-seekable one. An async writer is fed through an output channel that
the event loop drains (:meth:`Sink.drain`), so the worker never blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import MuxError
from .channels import Abort, LoopReceiver, output_channel

Write = Callable[[bytes], Any]
Seek = Callable[[int, int], int]
Closer = Callable[[], Any]


class OutFile:
    """What the muxer writes to (worker thread), in front of the real sink.

    Until :meth:`release`, writes are held in memory, so nothing reaches the
    sink unless the container header was written successfully. A write that
    fails is remembered in ``error`` (the sink went away).
    """

    def __init__(self, write: Write, abort: Abort, *, closer: Closer | None = None) -> None:
        self._write = write
        self._closer = closer
        self._abort = abort
        self._hold: io.BytesIO | None = io.BytesIO()
        self.pos = 0
        self.size = 0
        self.error: BaseException | None = None
        self.discard = False  # set after a failure: write nothing more

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def _stopped(self) -> bool:
        return self._abort.is_set() or self.discard or self.error is not None

    def _forward(self, data: bytes) -> None:
        # After an abort or a failure nothing more reaches the sink. Only the
        # first sink error is raised: FFmpeg may write again within the same
        # call, and PyAV keeps one exception; the worker checks ``error``.
        if self._stopped():
            return
        try:
            self._write(data)
        except BaseException as e:
            self.error = e
            raise
        self.pos += len(data)
        if self.pos > self.size:
            self.size = self.pos

    def write(self, data: bytes) -> int:
        if self._hold is not None:
            return self._hold.write(data)
        self._forward(data)
        return len(data)

    def release(self) -> None:
        """The header is good: send what was held, and everything from now on, to the sink."""
        hold, self._hold = self._hold, None
        if hold is not None and hold.getbuffer().nbytes:
            end = hold.tell()
            self._forward(hold.getvalue())
            if end != self.pos:
                self.seek(end)

    def seek(self, offset: int, whence: int = 0) -> int:  # overridden where seekable
        raise io.UnsupportedOperation("seek")

    def close(self) -> None:  # PyAV calls it after the trailer; the real close is finish()
        pass

    def finish(self) -> None:
        closer, self._closer = self._closer, None
        if closer is not None:
            closer()


class SeekableOutFile(OutFile):
    def __init__(self, write: Write, abort: Abort, *, seek: Seek, closer: Closer | None = None) -> None:
        super().__init__(write, abort, closer=closer)
        self._seek = seek

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if self._hold is not None:
            return self._hold.seek(offset, whence)
        if self._stopped():
            return self.pos
        try:
            self.pos = self._seek(offset, whence)
        except BaseException as e:
            self.error = e
            raise
        return self.pos

    def tell(self) -> int:
        return self._hold.tell() if self._hold is not None else self.pos


class PathFile:
    """A file created at the first byte written (so a refused mux leaves none)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._f: io.BufferedWriter | None = None

    def _file(self) -> io.BufferedWriter:
        if self._f is None:
            self._f = open(self.path, "wb")  # closed by close(), from OutFile.finish()
        return self._f

    def write(self, data: bytes) -> None:
        self._file().write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file().seek(offset, whence)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


@dataclass
class Sink:
    out: OutFile
    receiver: LoopReceiver | None = None  # async sinks: the loop drains it into ``awrite``
    awrite: Callable[[bytes], Awaitable[Any]] | None = None
    description: str = "sink"

    async def drain(self) -> None:
        """Hand the worker's output to an async sink until the muxer has finished."""
        assert self.receiver is not None and self.awrite is not None
        while True:
            data = await self.receiver.receive()
            if data is None:
                return
            await self.awrite(data)


def _is_async_callable(fn: Any) -> bool:
    # An object whose __call__ is a coroutine function (fn itself is not) counts too.
    return inspect.iscoroutinefunction(fn) or (callable(fn) and inspect.iscoroutinefunction(fn.__call__))


def make_sink(sink: Any, loop: asyncio.AbstractEventLoop, queue_bytes: int, abort: Abort) -> Sink:
    """The :class:`Sink` for what :func:`~rangestream.mux` was given; :class:`MuxError` if it cannot write."""
    if isinstance(sink, (str, os.PathLike)) and os.fspath(sink) != "-":
        pf = PathFile(os.fspath(sink))
        return Sink(SeekableOutFile(pf.write, abort, seek=pf.seek, closer=pf.close), description=pf.path)
    if isinstance(sink, str) and sink == "-":
        stdout = sys.stdout.buffer
        return Sink(OutFile(stdout.write, abort, closer=stdout.flush), description="stdout")
    write = getattr(sink, "write", None)
    if write is None:
        raise MuxError(f"cannot write to {type(sink).__name__}: need a path, '-', or an object with write()")
    drain = getattr(sink, "drain", None)
    if _is_async_callable(write) or (drain is not None and _is_async_callable(drain)):
        return _async_sink(sink, write, drain, loop, queue_bytes, abort)
    # A binary file-like object: written from the worker thread.
    seekable = False
    with contextlib.suppress(Exception):
        seekable = bool(sink.seekable()) and hasattr(sink, "seek")
    flush = getattr(sink, "flush", None)
    if seekable:
        return Sink(SeekableOutFile(write, abort, seek=sink.seek, closer=flush), description=type(sink).__name__)
    return Sink(OutFile(write, abort, closer=flush), description=type(sink).__name__)


def _async_sink(sink: Any, write: Any, drain: Any, loop: asyncio.AbstractEventLoop, queue_bytes: int,
                abort: Abort) -> Sink:
    sender, receiver = output_channel(loop, queue_bytes, abort)
    if _is_async_callable(write):
        awrite = write
    else:  # asyncio.StreamWriter-like: write() buffers, drain() waits

        async def awrite(data: bytes) -> None:
            write(data)
            await drain()

    return Sink(OutFile(sender.send, abort, closer=sender.close), receiver, awrite, type(sink).__name__)
