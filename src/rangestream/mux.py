"""Mux a video stream and an audio stream into one container, as they arrive.

Streaming sites serve video and audio separately (YouTube's DASH formats:
H.264, VP9 or AV1 video; AAC or Opus audio; fragmented MP4 or WebM).
:func:`mux` consumes both byte streams at once and writes one container
through FFmpeg's own demuxers and muxers (PyAV), copying packets, never
re-encoding, so output starts at once and nothing touches the disk first.

How it runs
-----------
PyAV is blocking, so one worker thread does all of FFmpeg's work: it reads
each input through a file-like object fed by a bounded queue, picks the
packet with the smaller decoding timestamp (in seconds) of the two inputs,
and writes it to the output. On the event loop, one task per input pulls the
async iterator, coalesces small pieces (FFmpeg reads far faster in large
blocks) and feeds the queue, waiting whenever the queue holds
``queue_bytes``; so memory stays bounded and the loop never blocks. An async
sink is fed the same way in the other direction.

Containers
----------
``mp4``
    Fragmented MP4 (``movflags=frag_keyframe+empty_moov+default_base_moof``):
    playable while it grows, writable to a pipe. Holds H.264, HEVC, VP9 and
    AV1 video; AAC, Opus, MP3, AC-3... audio.
``mkv`` (Matroska)
    Holds anything. On a pipe the header has no duration (the packets are
    complete); on a file path it gets duration and cues.
``webm``
    VP8, VP9 or AV1 video with Vorbis or Opus audio only.

A combination the container cannot hold (H.264 in WebM, say) raises
:class:`~rangestream.errors.MuxError` after both inputs' headers are read and
BEFORE any byte reaches the sink; a path sink is not even created.

Inputs that cannot be streamed
------------------------------
A plain (non-fragmented) MP4 whose index, the ``moov`` box, comes after the
media data (``mdat``) can only be read by seeking to its end, which a stream
cannot do. Such an input is refused as soon as the ``mdat`` header goes by
(in the first few bytes of the stream), with a :class:`MuxError` naming the
input, instead of after reading the whole file. MP4 with ``moov`` first
("faststart") and fragmented MP4 (DASH, YouTube) stream fine.

Failures
--------
When an input fails (its iterator raises; the engine raises a
:class:`~rangestream.errors.StreamError` carrying ``.offset``), or its data
cannot be demuxed, the other input is cancelled and a :class:`MuxError` with
``input="video"`` or ``"audio"`` is raised, chained from the original, saying
how many bytes had arrived and how much media had been muxed. When the sink
goes away (its write raises, e.g. ``ConnectionResetError`` from an HTTP client
that left) both inputs are cancelled and a :class:`MuxError` with
``input=None`` is raised, chained likewise. Cancelling the task running
:func:`mux` does the same cleanup and re-raises ``CancelledError``. In every
case both input iterators are closed (``aclose()``) and the worker thread has
ended before :func:`mux` returns or raises.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import io
import os
import struct
import sys
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .errors import MuxError, RangestreamError, StreamError

__all__ = ["MuxResult", "mux", "mux_urls", "FORMATS"]

INPUTS = ("video", "audio")
DEFAULT_QUEUE_BYTES = 4 * 1024 * 1024
DEFAULT_READ_SIZE = 256 * 1024


# --------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Format:
    name: str  # FFmpeg muxer name
    options: tuple[tuple[str, str], ...] = ()
    video: frozenset[str] | None = None  # codecs allowed, None: ask FFmpeg
    audio: frozenset[str] | None = None


_MP4 = _Format("mp4", (("movflags", "frag_keyframe+empty_moov+default_base_moof"),))
_MKV = _Format("matroska")
_WEBM = _Format("webm", (), frozenset({"vp8", "vp9", "av1"}), frozenset({"vorbis", "opus"}))

#: Names accepted by ``format=`` (and sink extensions), mapped to the FFmpeg muxer used.
FORMATS: dict[str, _Format] = {
    "mp4": _MP4,
    "fmp4": _MP4,
    "m4v": _MP4,
    "mkv": _MKV,
    "matroska": _MKV,
    "webm": _WEBM,
}
_EXTENSIONS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "mkv", ".webm": "webm"}


def _resolve_format(format: str | None, sink: Any) -> _Format:
    if format is not None:
        key = format.lower().lstrip(".")
        if key not in FORMATS:
            raise MuxError(f"unknown format {format!r}; use one of: mp4, mkv, webm")
        return FORMATS[key]
    name: Any = None
    if isinstance(sink, (str, os.PathLike)):
        name = os.fspath(sink)
    else:
        name = getattr(sink, "name", None)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if isinstance(name, str) and name != "-":
        ext = os.path.splitext(name)[1].lower()
        if ext in _EXTENSIONS:
            return FORMATS[_EXTENSIONS[ext]]
        if ext:
            raise MuxError(f"cannot mux to a {ext!r} file; use .mp4, .mkv or .webm, or pass format=")
    raise MuxError("cannot tell the container from the sink; pass format='mp4', 'mkv' or 'webm'")


# --------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------


@dataclass
class MuxResult:
    """What :func:`mux` did."""

    format: str  #: FFmpeg muxer used: "mp4", "matroska" or "webm"
    bytes_written: int  #: size of the output (bytes handed to the sink)
    packets: dict[str, int]  #: packets muxed per input: {"video": n, "audio": m}
    seconds: float  #: wall-clock time of the whole mux
    input_bytes: dict[str, int] = field(default_factory=dict)  #: bytes consumed per input
    codecs: dict[str, str] = field(default_factory=dict)  #: codec per input
    duration: float | None = None  #: media seconds muxed (latest packet end)


# --------------------------------------------------------------------------
# A bounded byte queue between the event loop and the worker thread
# --------------------------------------------------------------------------


class _Aborted(Exception):
    """The mux is being torn down; raised on both sides of every channel."""


class _Channel:
    """Bytes between the loop and the worker, at most ``limit`` buffered (plus one piece).

    Input direction: ``aput`` (loop) / ``read`` (thread). Output direction:
    ``put`` (thread) / ``aget`` (loop). ``close()`` marks end of data;
    ``abort()`` wakes and fails both sides.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int, aborted: threading.Event) -> None:
        self._loop = loop
        self._limit = max(1, limit)
        self._aborted = aborted
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._head = 0  # bytes of _chunks[0] already read
        self._buffered = 0
        self._eof = False
        self._async_wakeup = asyncio.Event()  # touched only on the loop
        self.reader_waiting = False  # the thread waits on an empty queue: flush early

    # -- shared ---------------------------------------------------------

    def _wake_loop(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._async_wakeup.set)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass

    def close(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()
        self._wake_loop()

    def abort(self) -> None:
        """Wake every waiter; ``_aborted`` (shared by the whole mux) is already set."""
        with self._cond:
            self._cond.notify_all()
        self._wake_loop()

    # -- input direction ------------------------------------------------

    async def aput(self, data: bytes) -> None:
        while True:
            with self._cond:
                if self._aborted.is_set():
                    raise _Aborted()
                if self._buffered < self._limit:
                    self._chunks.append(data)
                    self._buffered += len(data)
                    self._cond.notify_all()
                    return
                self._async_wakeup.clear()
            await self._async_wakeup.wait()

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (worker thread); b"" at end of data, or once aborted.

        (Raising here would not help: FFmpeg may call again within the same
        call, and PyAV keeps only one exception; the worker checks the abort
        flag itself after every FFmpeg call.)
        """
        with self._cond:
            while not self._chunks:
                if self._aborted.is_set():
                    return b""
                if self._eof:
                    return b""
                self.reader_waiting = True
                try:
                    self._cond.wait()
                finally:
                    self.reader_waiting = False
            if self._aborted.is_set():
                return b""
            was_full = self._buffered >= self._limit
            parts = []
            got = 0
            while self._chunks and got < n:
                chunk = self._chunks[0]
                avail = len(chunk) - self._head
                take = min(avail, n - got)
                if self._head == 0 and take == len(chunk):
                    parts.append(chunk)
                else:
                    parts.append(chunk[self._head : self._head + take])
                got += take
                if take == avail:
                    self._chunks.popleft()
                    self._head = 0
                else:
                    self._head += take
            self._buffered -= got
            wake = was_full and self._buffered < self._limit
        if wake:
            self._wake_loop()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # -- output direction -----------------------------------------------

    def put(self, data: bytes) -> None:
        """Queue output (worker thread); dropped once aborted."""
        with self._cond:
            while self._buffered >= self._limit and not self._aborted.is_set():
                self._cond.wait()
            if self._aborted.is_set():
                return
            self._chunks.append(data)
            self._buffered += len(data)
        self._wake_loop()

    async def aget(self) -> bytes | None:
        """All buffered bytes (loop), or None at end of data."""
        while True:
            with self._cond:
                if self._aborted.is_set():
                    raise _Aborted()
                if self._chunks:
                    parts = list(self._chunks)
                    self._chunks.clear()
                    self._buffered = 0
                    self._cond.notify_all()
                    return parts[0] if len(parts) == 1 else b"".join(parts)
                if self._eof:
                    return None
                self._async_wakeup.clear()
            await self._async_wakeup.wait()


class _Reader(io.RawIOBase):
    """What the demuxer reads from: a non-seekable file over a :class:`_Channel`."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, n: int = -1) -> bytes:
        return self._channel.read(n if n and n > 0 else DEFAULT_READ_SIZE)

    def close(self) -> None:  # PyAV calls this; the channel belongs to mux()
        pass


# --------------------------------------------------------------------------
# Sinks
# --------------------------------------------------------------------------


class _OutFile:
    """What the muxer writes to (worker thread), in front of the real sink.

    Until :meth:`release`, writes are held in memory, so nothing reaches the
    sink unless the container header was written successfully. A write that
    fails is remembered in ``error`` (the sink went away).
    """

    def __init__(self, write, aborted: threading.Event, *, closer=None) -> None:
        self._write = write
        self._closer = closer
        self._aborted = aborted
        self._hold: io.BytesIO | None = io.BytesIO()
        self.pos = 0
        self.size = 0
        self.error: BaseException | None = None
        self.discard = False  # set after a failure: write nothing more

    def writable(self) -> bool:
        return True

    def _forward(self, data: bytes) -> None:
        # After an abort or a failure nothing more reaches the sink. Only the
        # first sink error is raised: FFmpeg may write again within the same
        # call, and PyAV keeps one exception; the worker checks ``error``.
        if self._aborted.is_set() or self.discard or self.error is not None:
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


class _SeekableOutFile(_OutFile):
    def __init__(self, write, aborted: threading.Event, *, seek, closer=None) -> None:
        super().__init__(write, aborted, closer=closer)
        self._seek = seek

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if self._hold is not None:
            return self._hold.seek(offset, whence)
        if self._aborted.is_set() or self.discard or self.error is not None:
            return self.pos
        try:
            self.pos = self._seek(offset, whence)
        except BaseException as e:
            self.error = e
            raise
        return self.pos

    def tell(self) -> int:
        return self._hold.tell() if self._hold is not None else self.pos


class _NonSeekableOutFile(_OutFile):
    def seekable(self) -> bool:
        return False


class _PathFile:
    """A file created at the first byte written (so a refused mux leaves none)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._f: io.BufferedWriter | None = None

    def _file(self) -> io.BufferedWriter:
        if self._f is None:
            self._f = open(self.path, "wb")
        return self._f

    def write(self, data: bytes) -> None:
        self._file().write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file().seek(offset, whence)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


@dataclass
class _Sink:
    out: _OutFile
    channel: _Channel | None = None  # set for async sinks: the loop drains it
    awrite: Any = None  # async callable(bytes) for async sinks
    description: str = "sink"


def _is_async_callable(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def _make_sink(sink: Any, loop: asyncio.AbstractEventLoop, queue_bytes: int, aborted: threading.Event) -> _Sink:
    if isinstance(sink, (str, os.PathLike)) and os.fspath(sink) != "-":
        pf = _PathFile(os.fspath(sink))
        return _Sink(_SeekableOutFile(pf.write, aborted, seek=pf.seek, closer=pf.close), description=pf.path)
    if isinstance(sink, str) and sink == "-":
        stdout = sys.stdout.buffer
        return _Sink(_NonSeekableOutFile(stdout.write, aborted, closer=stdout.flush), description="stdout")
    write = getattr(sink, "write", None)
    if write is None:
        raise MuxError(f"cannot write to {type(sink).__name__}: need a path, '-', or an object with write()")
    drain = getattr(sink, "drain", None)
    if _is_async_callable(write) or (drain is not None and _is_async_callable(drain)):
        channel = _Channel(loop, queue_bytes, aborted)
        if _is_async_callable(write):
            awrite = write
        else:  # asyncio.StreamWriter-like: write() buffers, drain() waits

            async def awrite(data: bytes, _w=write, _d=drain) -> None:
                _w(data)
                await _d()

        return _Sink(_NonSeekableOutFile(channel.put, aborted, closer=channel.close), channel, awrite,
                     type(sink).__name__)
    # A binary file-like object: written from the worker thread.
    seekable = False
    with contextlib.suppress(Exception):
        seekable = bool(sink.seekable()) and hasattr(sink, "seek")
    flush = getattr(sink, "flush", None)
    if seekable:
        return _Sink(_SeekableOutFile(write, aborted, seek=sink.seek, closer=flush), description=type(sink).__name__)
    return _Sink(_NonSeekableOutFile(write, aborted, closer=flush), description=type(sink).__name__)


# --------------------------------------------------------------------------
# Refusing MP4 with the index at the end
# --------------------------------------------------------------------------

_BMFF_FIRST = {b"ftyp", b"styp", b"moov", b"moof", b"free", b"skip", b"wide", b"pdin", b"sidx", b"mdat"}


class _IndexSniffer:
    """Walks the top-level boxes at the start of an ISO BMFF (MP4) input.

    Stops at the first ``moov`` or ``moof`` (streamable); raises
    :class:`MuxError` at an ``mdat`` that comes before them. Inputs that are
    not MP4 (WebM, ...) are let through at the first bytes.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = False
        self._pos = 0  # bytes seen
        self._box = 0  # offset of the box whose header is being collected
        self._hdr = bytearray()

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        base = self._pos
        self._pos += len(data)
        while not self.done:
            at = self._box + len(self._hdr)
            if at >= self._pos:
                return
            need = 16 - len(self._hdr)
            self._hdr += data[at - base : at - base + need]
            if len(self._hdr) < 8:
                return
            size, kind = struct.unpack_from(">I4s", self._hdr)
            if self._box == 0 and kind not in _BMFF_FIRST:
                self.done = True  # not MP4
                return
            if size == 1:
                if len(self._hdr) < 16:
                    return
                (size,) = struct.unpack_from(">Q", self._hdr, 8)
            if kind in (b"moov", b"moof"):
                self.done = True
                return
            if kind == b"mdat":
                self.done = True
                raise MuxError(
                    f"this MP4 has its index (moov) after the media data (mdat at byte {self._box}): "
                    "it cannot be streamed, only read by seeking to its end. Use a fragmented/DASH "
                    "format, or an MP4 remuxed with '-movflags +faststart'",
                    input=self.name,
                )
            if size == 0 or size < 8:
                self.done = True  # runs to the end / not a box: leave it to the demuxer
                return
            self._box += size
            self._hdr.clear()


# --------------------------------------------------------------------------
# The worker thread
# --------------------------------------------------------------------------


class _InputFailed(Exception):
    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(name, error)
        self.name = name
        self.error = error


class _SinkFailed(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


@dataclass
class _Progress:
    bytes_in: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INPUTS, 0))
    packets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INPUTS, 0))
    reached: dict[str, float] = field(default_factory=lambda: dict.fromkeys(INPUTS, 0.0))
    codecs: dict[str, str] = field(default_factory=dict)
    header_written: bool = False


def _codec_name(stream: Any) -> str:
    """FFmpeg's name of the codec ("av1", not the decoder's "libdav1d")."""
    ctx = stream.codec_context
    if ctx is None:
        return stream.type
    try:
        return ctx.codec.canonical_name
    except Exception:  # pragma: no cover - very old PyAV
        return ctx.name


class _Worker:
    def __init__(self, fmt: _Format, readers: dict[str, _Reader], sink: _Sink, progress: _Progress,
                 aborted: threading.Event, read_size: int) -> None:
        self.fmt = fmt
        self.readers = readers
        self.sink = sink
        self.progress = progress
        self.aborted = aborted
        self.read_size = read_size

    def _check(self) -> None:
        """Raise if the mux was aborted or the sink failed (FFmpeg may have hidden either)."""
        if self.aborted.is_set():
            raise _Aborted()
        if self.sink.out.error is not None:
            raise _SinkFailed(self.sink.out.error)

    def _open_input(self, name: str):
        import av

        try:
            container = av.open(self.readers[name], mode="r", buffer_size=self.read_size)
        except Exception as e:
            self._check()
            raise _InputFailed(name, e) from e
        self._check()
        streams = container.streams.video if name == "video" else container.streams.audio
        if not streams:
            found = ", ".join(f"{s.type} {_codec_name(s)}" for s in container.streams)
            container.close()
            if found:
                why = f"the {name} input has no {name} stream (it has: {found})"
            else:
                why = (f"no stream found in the {name} input ({self.progress.bytes_in[name]} bytes): "
                       "truncated, or not a media file")
            raise _InputFailed(name, MuxError(why, input=name))
        stream = streams[0]
        self.progress.codecs[name] = _codec_name(stream)
        return container, stream

    def _check_codecs(self, streams: dict[str, Any]) -> None:
        for name, allowed in (("video", self.fmt.video), ("audio", self.fmt.audio)):
            codec = _codec_name(streams[name])
            if allowed is not None and codec not in allowed:
                raise MuxError(
                    f"{self.fmt.name} cannot hold {codec} {name} (it takes "
                    f"{'/'.join(sorted(allowed))} {name}); use format='mkv', which holds anything"
                    + (", or 'mp4'" if codec in {"h264", "hevc", "aac", "mp3", "ac3", "eac3", "opus"} else ""),
                    input=name,
                )

    def run(self) -> MuxResult:
        import av

        containers: list[Any] = []
        out = None
        try:
            vin, vs = self._open_input("video")
            containers.append(vin)
            ain, as_ = self._open_input("audio")
            containers.append(ain)
            streams = {"video": vs, "audio": as_}
            self._check_codecs(streams)
            out = av.open(self.sink.out, mode="w", format=self.fmt.name, options=dict(self.fmt.options),
                          buffer_size=self.read_size)
            ostreams = {}
            for name, s in streams.items():
                try:
                    # opaque: keep the input's codec (a decoder, e.g. libdav1d); no encoder is needed.
                    ostreams[name] = out.add_stream_from_template(s, opaque=True)
                except ValueError as e:
                    raise MuxError(f"{self.fmt.name} cannot hold {_codec_name(s)} {name}: {e}; "
                                   "use format='mkv'", input=name) from e
            try:
                out.start_encoding()
            except Exception as e:
                self._check()
                raise MuxError(f"cannot write a {self.fmt.name} header for "
                               f"{_codec_name(vs)} video + {_codec_name(as_)} audio: {e}") from e
            self.sink.out.release()  # the header is good: from here on bytes go to the sink
            self._check()
            self.progress.header_written = True
            self._merge({"video": (vin, vs), "audio": (ain, as_)}, ostreams, out)
            try:
                out.close()  # the trailer
            finally:
                out = None
            self._check()
            self.sink.out.finish()
            self._check()
        except (_Aborted, _SinkFailed, _InputFailed, MuxError):
            raise
        except Exception as e:
            self._check()
            raise
        finally:
            if out is not None:
                # The trailer would write to the sink; after a failure it must not.
                self.sink.out.discard = True
                with contextlib.suppress(Exception):
                    out.close()
            for c in containers:
                with contextlib.suppress(Exception):
                    c.close()
            with contextlib.suppress(Exception):
                self.sink.out.finish()
        return MuxResult(
            format=self.fmt.name,
            bytes_written=self.sink.out.size,
            packets=dict(self.progress.packets),
            seconds=0.0,
            codecs=dict(self.progress.codecs),
            duration=max(self.progress.reached.values()),
        )

    def _merge(self, inputs: dict[str, tuple[Any, Any]], ostreams: dict[str, Any], out: Any) -> None:
        """Write the packets of both inputs in order of decoding time."""
        iters = {name: c.demux(s) for name, (c, s) in inputs.items()}
        tbs = {name: float(s.time_base) for name, (c, s) in inputs.items()}
        last = dict.fromkeys(INPUTS, float("-inf"))
        aborted = self.aborted
        progress = self.progress
        sink_out = self.sink.out
        reached = progress.reached

        def pull(name: str):
            it = iters[name]
            while True:
                try:
                    p = next(it)
                except StopIteration:
                    self._check()  # an abort reads as end of data
                    return None, 0.0
                except Exception as e:
                    self._check()
                    raise _InputFailed(name, e) from e
                if p.size == 0:  # the demuxer's flush packet
                    continue
                ts = p.dts if p.dts is not None else p.pts
                key = ts * tbs[name] if ts is not None else last[name]
                return p, key

        heads = {name: pull(name) for name in INPUTS}
        while True:
            if aborted.is_set():
                raise _Aborted()
            v, vkey = heads["video"]
            a, akey = heads["audio"]
            if v is None and a is None:
                return
            name = "video" if a is None or (v is not None and vkey <= akey) else "audio"
            packet, key = heads[name]
            last[name] = key
            pts = packet.pts
            if pts is not None:
                end = (pts + packet.duration) * tbs[name]  # floats: Fractions cost more than the rest
                if end > reached[name]:
                    reached[name] = end
            packet.stream = ostreams[name]
            try:
                out.mux_one(packet)
            except Exception as e:
                self._check()
                raise _InputFailed(name, MuxError(f"the muxer rejected a {name} packet: {e}", input=name)) from e
            if sink_out.error is not None:
                raise _SinkFailed(sink_out.error)
            progress.packets[name] += 1
            heads[name] = pull(name)


# --------------------------------------------------------------------------
# The event-loop side
# --------------------------------------------------------------------------


async def _aclose(it: Any) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


async def _pump(name: str, source: AsyncIterable[bytes], channel: _Channel, progress: _Progress,
                block: int) -> None:
    """Feed one input into its channel, coalescing small pieces into blocks."""
    it: AsyncIterator[bytes] | None = None
    try:
        it = aiter(source)
        sniffer = _IndexSniffer(name)
        buf = bytearray()
        async for data in it:
            if not data:
                continue
            progress.bytes_in[name] += len(data)
            if not sniffer.done:
                sniffer.feed(data)
            if not buf and len(data) >= block:
                await channel.aput(bytes(data))
                continue
            buf += data
            if len(buf) >= block or channel.reader_waiting:
                await channel.aput(bytes(buf))
                buf.clear()
        if buf:
            await channel.aput(bytes(buf))
        channel.close()
    finally:
        if it is not None:
            await _aclose(it)


async def _drain(sink: _Sink) -> None:
    """Hand the worker's output to an async sink."""
    assert sink.channel is not None
    while True:
        data = await sink.channel.aget()
        if data is None:
            return
        await sink.awrite(data)


def _input_error(name: str, error: BaseException, progress: _Progress) -> MuxError:
    if isinstance(error, MuxError) and error.input == name:
        return error
    got = progress.bytes_in[name]
    if isinstance(error, StreamError) and error.offset is not None:
        got = error.offset
    done = progress.packets[name]
    reached = progress.reached[name]
    reason = str(error) or type(error).__name__
    if isinstance(error, MuxError) and error.input:
        reason = reason[len(error.input) + 2 :]
    return MuxError(
        f"input failed after {got} bytes ({done} packets, {reached:.2f} s muxed): {reason}",
        input=name,
    )


async def mux(
    video: AsyncIterable[bytes],
    audio: AsyncIterable[bytes],
    sink: Any,
    format: str | None = None,
    *,
    queue_bytes: int = DEFAULT_QUEUE_BYTES,
    read_size: int = DEFAULT_READ_SIZE,
) -> MuxResult:
    """Mux two in-order byte streams (video, audio) into one container written to ``sink``.

    ``video`` and ``audio`` are async iterables of ``bytes`` (an engine
    stream, or any async generator) holding one container each: fragmented
    MP4, WebM/Matroska, or MP4 with ``moov`` first. A plain MP4 with its
    ``moov`` index at the end is refused early with :class:`MuxError` (a stream
    cannot seek to read it).

    ``sink``: a file path (created at the first byte), ``"-"`` for stdout, a
    binary file-like object (written from the worker thread), or an async
    writer (anything with ``async def write(bytes)``, e.g. an aiohttp
    ``StreamResponse``, or an ``asyncio.StreamWriter``).

    ``format``: ``"mp4"`` (fragmented), ``"mkv"`` or ``"webm"``; by default
    from the sink's file extension. A codec pair the container cannot hold
    raises :class:`MuxError` before any byte is written.

    ``queue_bytes`` bounds each of the queues (per input, and to an async
    sink); ``read_size`` is the block size the demuxers read. Memory is
    about three ``queue_bytes`` plus one incoming piece per input plus
    FFmpeg's own read-ahead (its probe reads at most a few MB per input).

    Packets are copied (never re-encoded) in order of decoding time. On an
    input failure, a sink failure or cancellation, both inputs are cancelled
    and closed and the worker thread ends before this returns; see the module
    doc for the errors. (A blocking file-like sink whose ``write`` never
    returns, e.g. a pipe nobody reads, holds the worker thread and so this
    cleanup until it does; async sinks have no such problem.)
    """
    fmt = _resolve_format(format, sink)
    if queue_bytes <= 0 or read_size <= 0:
        raise ValueError("queue_bytes and read_size must be positive")
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    aborted = threading.Event()
    out_sink = _make_sink(sink, loop, queue_bytes, aborted)
    channels = {name: _Channel(loop, queue_bytes, aborted) for name in INPUTS}
    progress = _Progress()
    worker = _Worker(fmt, {n: _Reader(c) for n, c in channels.items()}, out_sink, progress, aborted, read_size)

    done: asyncio.Future[MuxResult] = loop.create_future()

    def _settle(result: MuxResult | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def _run() -> None:
        try:
            result = worker.run()
        except BaseException as e:  # noqa: BLE001 - handed to the loop
            loop.call_soon_threadsafe(_settle, None, e)
        else:
            loop.call_soon_threadsafe(_settle, result, None)

    tasks: dict[asyncio.Task[Any], str] = {}
    for name in INPUTS:
        source = video if name == "video" else audio
        tasks[asyncio.ensure_future(_pump(name, source, channels[name], progress, read_size))] = name
    if out_sink.channel is not None:
        tasks[asyncio.ensure_future(_drain(out_sink))] = "sink"
    thread = threading.Thread(target=_run, name="rangestream-mux", daemon=True)
    thread.start()

    def _abort() -> None:
        aborted.set()
        for ch in channels.values():
            ch.abort()
        if out_sink.channel is not None:
            out_sink.channel.abort()

    def _sink_error(error: BaseException) -> MuxError:
        return MuxError(
            f"the sink ({out_sink.description}) failed after {out_sink.out.size} bytes "
            f"({progress.packets['video']} video, {progress.packets['audio']} audio packets muxed): "
            f"{type(error).__name__}: {error}"
        )

    try:
        pending: set[asyncio.Future[Any]] = set(tasks) | {done}
        while pending:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for fut in finished:
                if fut is done:
                    err = done.exception()
                    if err is None:
                        # Inputs read to their end (or the demuxers stopped):
                        # let the sink drain; a pump still running has only
                        # trailing bytes the demuxer did not want.
                        for t, role in tasks.items():
                            if role != "sink" and not t.done():
                                t.cancel()
                        continue
                    if isinstance(err, _InputFailed):
                        error = _input_error(err.name, err.error, progress)
                        if error is err.error:
                            raise error
                        raise error from err.error
                    if isinstance(err, _SinkFailed):
                        raise _sink_error(err.error) from err.error
                    if isinstance(err, MuxError):
                        raise err
                    if isinstance(err, _Aborted):
                        raise MuxError("mux aborted") from err
                    raise MuxError(f"muxing failed: {type(err).__name__}: {err}") from err
                role = tasks[fut]  # type: ignore[index]
                if fut.cancelled():
                    continue
                err = fut.exception()
                if err is None or isinstance(err, _Aborted):
                    continue  # torn down: the cause is reported by whoever failed first
                if role == "sink":
                    raise _sink_error(err) from err
                if isinstance(err, MuxError) and err.input == role:
                    raise err  # the sniffer's refusal
                raise _input_error(role, err, progress) from err
        result = done.result()
        result.seconds = time.monotonic() - started
        result.input_bytes = dict(progress.bytes_in)
        return result
    finally:
        if not (done.done() and not done.cancelled() and done.exception() is None and
                all(t.done() for t in tasks)):
            _abort()
        for t in tasks:
            if not t.done():
                t.cancel()
        # Wait for the pumps (they aclose their iterators) and the thread.
        await _settle_all(list(tasks), done)
        thread.join(timeout=5)  # it has settled ``done``: it is returning, this is immediate


async def _settle_all(tasks: list[asyncio.Task[Any]], done: asyncio.Future[Any]) -> None:
    """Await tasks and the worker even if this task is cancelled meanwhile."""
    waiting = asyncio.ensure_future(asyncio.gather(*tasks, done, return_exceptions=True))
    cancelled = False
    while not waiting.done():
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError()


# --------------------------------------------------------------------------
# With the engine
# --------------------------------------------------------------------------


async def mux_urls(
    video_url: str,
    audio_url: str,
    sink: Any,
    format: str | None = None,
    *,
    client: Any = None,
    queue_bytes: int = DEFAULT_QUEUE_BYTES,
    **stream_options: Any,
) -> MuxResult:
    """Fetch two URLs with the engine and :func:`mux` them into ``sink``.

    ``client``: a :class:`rangestream.Client` to share (its connection pool,
    headers, proxy); by default a private one is made and closed.
    ``stream_options`` go to ``open_stream`` for both (``chunk_size``,
    ``window``, ``retry``, ...). A URL that fails (404, retries exhausted...)
    raises :class:`MuxError` naming its input, chained from the engine's
    :class:`~rangestream.errors.StreamError`.
    """
    from .client import Client

    fmt = _resolve_format(format, sink)  # fail before any request
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(Client())
        streams = {}
        for name, url in (("video", video_url), ("audio", audio_url)):
            try:
                streams[name] = await stack.enter_async_context(client.open_stream(url, **stream_options))
            except RangestreamError as e:
                if isinstance(e, MuxError):
                    raise
                raise MuxError(f"cannot open: {e}", input=name) from e
        return await mux(streams["video"], streams["audio"], sink, fmt.name if format is None else format,
                         queue_bytes=queue_bytes)
