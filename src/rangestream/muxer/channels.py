"""Bounded byte channels between the event loop and the worker thread.

Each channel has two ends, like anyio's memory object streams: one side only
sends, the other only receives, and each end is used by one side only.

- input (:func:`input_channel`): the loop sends (:class:`LoopSender`, used by
  the pump of one input), the worker thread reads (:class:`ThreadReader`, a
  non-seekable file that the demuxer reads from);
- output (:func:`output_channel`, for async sinks): the worker thread sends
  (:class:`ThreadSender`, behind the muxer's output file), the loop receives
  (:class:`LoopReceiver`, drained into the sink).

A channel holds at most ``limit`` bytes plus one piece: the sender waits while
it is full, so memory stays bounded whichever side is slower. :class:`Abort`,
shared by the whole mux, wakes every waiter on every channel at once; the loop
ends then raise :class:`Aborted`, the thread ends return (see each).
"""

from __future__ import annotations

import asyncio
import collections
import io
import threading

DEFAULT_READ_SIZE = 256 * 1024


class Aborted(Exception):
    """The mux is being torn down; raised by the loop ends of every channel."""


class Abort(threading.Event):
    """The mux is being torn down: once set, every channel it was given wakes all its waiters."""

    def __init__(self) -> None:
        super().__init__()
        self._buffers: list[_Buffer] = []

    def watch(self, buffer: _Buffer) -> None:
        self._buffers.append(buffer)

    def set(self) -> None:
        super().set()
        for buffer in self._buffers:
            buffer.wake_all()


class _Buffer:
    """The state both ends of one channel share; every field is guarded by ``cond``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int, abort: Abort) -> None:
        self.loop = loop
        self.limit = max(1, limit)
        self.abort = abort
        self.cond = threading.Condition()
        self.chunks: collections.deque[bytes] = collections.deque()
        self.head = 0  # bytes of chunks[0] already read
        self.buffered = 0
        self.eof = False
        self.loop_wakeup = asyncio.Event()  # touched only on the loop
        self.reader_waiting = False  # the thread waits on an empty buffer
        abort.watch(self)

    def wake_loop(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.loop_wakeup.set)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass

    def close(self) -> None:
        with self.cond:
            self.eof = True
            self.cond.notify_all()
        self.wake_loop()

    def wake_all(self) -> None:
        with self.cond:
            self.cond.notify_all()
        self.wake_loop()


# --------------------------------------------------------------------------
# input: loop -> worker thread
# --------------------------------------------------------------------------


class LoopSender:
    """The loop's end of an input channel."""

    def __init__(self, buffer: _Buffer) -> None:
        self._buf = buffer

    @property
    def reader_waiting(self) -> bool:
        """The demuxer waits on an empty channel: a partial block is worth sending now."""
        return self._buf.reader_waiting

    async def send(self, data: bytes) -> None:
        """Queue ``data``, waiting while the channel is full; :class:`Aborted` once aborted."""
        buf = self._buf
        while True:
            with buf.cond:
                if buf.abort.is_set():
                    raise Aborted()
                if buf.buffered < buf.limit:
                    buf.chunks.append(data)
                    buf.buffered += len(data)
                    buf.cond.notify_all()
                    return
                buf.loop_wakeup.clear()
            await buf.loop_wakeup.wait()

    def close(self) -> None:
        """End of data: the reader gets b"" once it has read everything queued."""
        self._buf.close()


class ThreadReader(io.RawIOBase):
    """The worker thread's end of an input channel: a non-seekable file for the demuxer."""

    def __init__(self, buffer: _Buffer, read_size: int = DEFAULT_READ_SIZE) -> None:
        self._buf = buffer
        self._read_size = read_size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:  # PyAV calls this; the channel belongs to the mux
        pass

    def read(self, n: int | None = -1) -> bytes:
        """Up to ``n`` bytes; b"" at end of data, or once aborted.

        (Raising here would not help: FFmpeg may call again within the same
        call, and PyAV keeps only one exception; the worker checks the abort
        flag itself after every FFmpeg call.)
        """
        n = n if n and n > 0 else self._read_size
        buf = self._buf
        with buf.cond:
            while not buf.chunks:
                if buf.abort.is_set() or buf.eof:
                    return b""
                buf.reader_waiting = True
                try:
                    buf.cond.wait()
                finally:
                    buf.reader_waiting = False
            if buf.abort.is_set():
                return b""
            was_full = buf.buffered >= buf.limit
            parts = _take(buf, n)
            wake = was_full and buf.buffered < buf.limit
        if wake:
            buf.wake_loop()
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _take(buf: _Buffer, n: int) -> list[bytes]:
    """Pop up to ``n`` bytes off the front (``buf.cond`` held), slicing only a partly read chunk."""
    parts = []
    got = 0
    while buf.chunks and got < n:
        chunk = buf.chunks[0]
        avail = len(chunk) - buf.head
        take = min(avail, n - got)
        if buf.head == 0 and take == len(chunk):
            parts.append(chunk)
        else:
            parts.append(chunk[buf.head : buf.head + take])
        got += take
        if take == avail:
            buf.chunks.popleft()
            buf.head = 0
        else:
            buf.head += take
    buf.buffered -= got
    return parts


def input_channel(loop: asyncio.AbstractEventLoop, limit: int, abort: Abort,
                  read_size: int = DEFAULT_READ_SIZE) -> tuple[LoopSender, ThreadReader]:
    buffer = _Buffer(loop, limit, abort)
    return LoopSender(buffer), ThreadReader(buffer, read_size)


# --------------------------------------------------------------------------
# output: worker thread -> loop
# --------------------------------------------------------------------------


class ThreadSender:
    """The worker thread's end of an output channel."""

    def __init__(self, buffer: _Buffer) -> None:
        self._buf = buffer

    def send(self, data: bytes) -> None:
        """Queue output, waiting while the channel is full; dropped once aborted."""
        buf = self._buf
        with buf.cond:
            while buf.buffered >= buf.limit and not buf.abort.is_set():
                buf.cond.wait()
            if buf.abort.is_set():
                return
            buf.chunks.append(data)
            buf.buffered += len(data)
        buf.wake_loop()

    def close(self) -> None:
        """End of data: the receiver gets None once it has taken everything queued."""
        self._buf.close()


class LoopReceiver:
    """The loop's end of an output channel."""

    def __init__(self, buffer: _Buffer) -> None:
        self._buf = buffer

    async def receive(self) -> bytes | None:
        """Everything queued, waiting for some; None at end of data; :class:`Aborted` once aborted."""
        buf = self._buf
        while True:
            with buf.cond:
                if buf.abort.is_set():
                    raise Aborted()
                if buf.chunks:
                    parts = list(buf.chunks)
                    buf.chunks.clear()
                    buf.buffered = 0
                    buf.cond.notify_all()
                    return parts[0] if len(parts) == 1 else b"".join(parts)
                if buf.eof:
                    return None
                buf.loop_wakeup.clear()
            await buf.loop_wakeup.wait()


def output_channel(loop: asyncio.AbstractEventLoop, limit: int, abort: Abort) -> tuple[ThreadSender, LoopReceiver]:
    buffer = _Buffer(loop, limit, abort)
    return ThreadSender(buffer), LoopReceiver(buffer)
