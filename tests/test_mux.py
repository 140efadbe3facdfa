"""Tests of rangestream.mux and rangestream.testing.media.

Media is generated at test time (rangestream.testing.media, cached per process): 3 s
of a 320x240 25 fps test pattern and a stereo tone, in DASH-like layouts.
Outputs are checked by reading them back with PyAV.
"""

from __future__ import annotations

import asyncio
import io
import random
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction

import av
import pytest

from rangestream.errors import MuxError, RangestreamError, StreamError
from rangestream.muxer import MuxResult, mux
from rangestream.muxer.sniff import IndexSniffer as _IndexSniffer
from rangestream.testing.media import KINDS, generate_clip

FRAME = 1 / 25  # one video frame at the clips' rate


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


class Source:
    """An async byte source that records how far it was read and whether it was closed."""

    def __init__(self, data: bytes, piece: int = 16384, *, pieces: list[int] | None = None,
                 fail_at: int | None = None, error: BaseException | None = None,
                 hang_at: int | None = None, delay: float = 0.0) -> None:
        self.data = data
        self.piece = piece
        self.pieces = pieces
        self.fail_at = fail_at
        self.error = error
        self.hang_at = hang_at
        self.delay = delay
        self.sent = 0
        self.started = False
        self.closed = False
        self.hanging = asyncio.Event()

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        self.started = True
        sizes = iter(self.pieces or ())
        try:
            while self.sent < len(self.data):
                if self.fail_at is not None and self.sent >= self.fail_at:
                    raise self.error or StreamError("boom", offset=self.sent)
                if self.hang_at is not None and self.sent >= self.hang_at:
                    self.hanging.set()
                    await asyncio.Event().wait()
                n = next(sizes, self.piece)
                chunk = self.data[self.sent : self.sent + n]
                self.sent += len(chunk)
                if self.delay:
                    await asyncio.sleep(self.delay)
                else:
                    await asyncio.sleep(0)
                yield chunk
        finally:
            self.closed = True


@dataclass
class AsyncSink:
    chunks: list[bytes] = field(default_factory=list)
    fail_after: int | None = None  # writes before raising
    error: BaseException = field(default_factory=lambda: ConnectionResetError("client went away"))
    block: bool = False
    writes: int = 0
    blocked: asyncio.Event = field(default_factory=asyncio.Event)

    async def write(self, data: bytes) -> None:
        self.writes += 1
        if self.fail_after is not None and self.writes > self.fail_after:
            raise self.error
        if self.block:
            self.blocked.set()
            await asyncio.Event().wait()
        self.chunks.append(bytes(data))

    def getvalue(self) -> bytes:
        return b"".join(self.chunks)


class PipeLike(io.RawIOBase):
    """A non-seekable binary sink (like stdout on a pipe)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.buf = io.BytesIO()
        self.fail_after = fail_after
        self.writes = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data) -> int:
        self.writes += 1
        if self.fail_after is not None and self.writes > self.fail_after:
            raise BrokenPipeError(32, "Broken pipe")
        return self.buf.write(data)


def mux_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rangestream-mux"]


@dataclass
class Track:
    codec: str
    packets: list[tuple[int | None, int | None, int, int]]  # (pts, dts, duration, size)
    time_base: Fraction
    frames: int = 0
    first_frame_pts: int | None = None
    last_frame_pts: int | None = None

    @property
    def duration(self) -> float:
        starts = [p[0] for p in self.packets if p[0] is not None]
        ends = [p[0] + p[2] for p in self.packets if p[0] is not None]
        return float((max(ends) - min(starts)) * self.time_base)

    @property
    def sizes(self) -> list[int]:
        return [p[3] for p in self.packets]


def probe(data: bytes, *, decode: bool = True) -> tuple[dict[str, Track], float]:
    """Tracks by type, and the worst A/V skew (s) between the two streams in file order."""
    tracks: dict[str, Track] = {}
    with av.open(io.BytesIO(data)) as c:
        for s in c.streams:
            assert s.type not in tracks, "one stream of each type"
            tracks[s.type] = Track(s.codec_context.codec.canonical_name, [], s.time_base)
        last: dict[str, float] = {}
        skew = 0.0
        for p in c.demux():
            if p.size == 0:
                continue
            t = p.stream.type
            tracks[t].packets.append((p.pts, p.dts, p.duration or 0, p.size))
            ts = p.dts if p.dts is not None else p.pts
            last[t] = float(ts * p.time_base)
            if len(last) == 2:
                skew = max(skew, abs(last["video"] - last["audio"]))
    if decode:
        for kind in tracks:
            with av.open(io.BytesIO(data)) as c:
                frames = [f for f in c.decode(**{kind: 0})]
            tr = tracks[kind]
            tr.frames = len(frames)
            if frames:
                tr.first_frame_pts, tr.last_frame_pts = frames[0].pts, frames[-1].pts
    return tracks, skew


def check_output(data: bytes, video_kind: str, audio_kind: str, *, max_skew: float,
                 slack: float = FRAME) -> dict[str, Track]:
    out, skew = probe(data)
    assert set(out) == {"video", "audio"}
    vin, _ = probe(generate_clip(video_kind))
    ain, _ = probe(generate_clip(audio_kind))
    for kind, src in (("video", vin["video"]), ("audio", ain["audio"])):
        got = out[kind]
        assert got.codec == src.codec
        assert len(got.packets) == len(src.packets), kind
        assert got.sizes == src.sizes, kind  # the very same packets, in order (stream copy)
        assert abs(got.duration - src.duration) <= slack + 1e-6, (kind, got.duration, src.duration)
        # First and last frames decode (every packet gives a frame).
        assert got.frames == src.frames and got.frames >= len(src.packets) - 1, kind
        assert got.first_frame_pts is not None and got.last_frame_pts is not None
    assert skew <= max_skew, skew
    return out


async def run_mux(video_kind: str, audio_kind: str, fmt: str, **kw) -> tuple[bytes, MuxResult]:
    sink = io.BytesIO()
    result = await mux(Source(generate_clip(video_kind)), Source(generate_clip(audio_kind)), sink, fmt, **kw)
    return sink.getvalue(), result


# --------------------------------------------------------------------------
# muxing what streaming sites serve
# --------------------------------------------------------------------------

PAIRS = [
    # (video kind, audio kind, format, max A/V skew in the file)
    ("h264-fmp4", "aac-fmp4", "mp4", 1.1),  # YouTube's H.264 + AAC (fragments of 1 s)
    ("h264-fmp4", "aac-fmp4", "mkv", 0.25),
    ("vp9-webm", "opus-webm", "webm", 0.25),  # YouTube's VP9 + Opus
    ("vp9-webm", "opus-webm", "mkv", 0.25),
    ("vp9-webm", "opus-webm", "mp4", 1.1),
    ("av1-fmp4", "aac-fmp4", "mp4", 1.1),  # YouTube's AV1 (in MP4) + AAC
    ("av1-webm", "opus-webm", "webm", 0.25),
    ("h264-fmp4", "opus-webm", "mkv", 0.25),  # containers mixed
    ("h264-fmp4", "opus-webm", "mp4", 1.1),
    ("h264-mp4-faststart", "aac-fmp4", "mkv", 0.25),  # plain MP4, moov first: streams fine
    # Its edit list makes video DTS start at -0.08 s; in fragmented MP4 FFmpeg shifts both
    # streams and stretches audio's first sample over the gap (the ffmpeg CLI does the same).
    ("h264-mp4-faststart", "aac-fmp4", "mp4", 1.1, 0.08 + FRAME),
]


@pytest.mark.parametrize("video_kind,audio_kind,fmt,max_skew,slack",
                         [p if len(p) == 5 else (*p, FRAME) for p in PAIRS],
                         ids=[f"{p[0]}+{p[1]}->{p[2]}" for p in PAIRS])
async def test_mux_pair(video_kind, audio_kind, fmt, max_skew, slack):
    data, result = await run_mux(video_kind, audio_kind, fmt)
    out = check_output(data, video_kind, audio_kind, max_skew=max_skew, slack=slack)
    assert result.bytes_written == len(data)
    assert result.packets == {"video": len(out["video"].packets), "audio": len(out["audio"].packets)}
    assert result.format == {"mp4": "mp4", "mkv": "matroska", "webm": "webm"}[fmt]
    assert result.input_bytes == {"video": len(generate_clip(video_kind)), "audio": len(generate_clip(audio_kind))}
    assert result.codecs["video"] == out["video"].codec and result.codecs["audio"] == out["audio"].codec
    assert result.duration == pytest.approx(3.0, abs=0.15)
    assert not mux_threads()


async def test_mp4_output_is_fragmented_and_streamable():
    data, _ = await run_mux("h264-fmp4", "aac-fmp4", "mp4")
    boxes = []
    pos = 0
    while pos < len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        boxes.append(kind)
        pos += size
    assert boxes[:2] == [b"ftyp", b"moov"] and b"moof" in boxes and b"mdat" in boxes
    assert boxes.index(b"moov") < boxes.index(b"mdat")
    # Playable while it grows: a prefix cut after a few fragments reads without seeking.
    cut = data[: len(data) // 2]

    class NoSeek(io.RawIOBase):
        def __init__(self, b):
            self.b = io.BytesIO(b)

        def readable(self):
            return True

        def read(self, n=-1):
            return self.b.read(n)

    with av.open(NoSeek(cut)) as c:
        n = sum(1 for p in c.demux() if p.size)
    assert n > 0


async def test_pieces_of_any_size_give_the_same_packets():
    v, a = generate_clip("h264-fmp4"), generate_clip("aac-fmp4")
    rng = random.Random(7)
    vp = [1] * 300 + [rng.randint(1, 70_000) for _ in range(2000)]
    ap = [rng.randint(1, 3000) for _ in range(2000)]
    sink = io.BytesIO()
    await mux(Source(v, pieces=vp), Source(a, pieces=ap), sink, "mkv", queue_bytes=10_000, read_size=4096)
    ref, _ = await run_mux("h264-fmp4", "aac-fmp4", "mkv")
    got, _ = probe(sink.getvalue(), decode=False)
    want, _ = probe(ref, decode=False)
    assert got["video"].packets == want["video"].packets
    assert got["audio"].packets == want["audio"].packets


async def test_one_huge_piece_each():
    v, a = generate_clip("vp9-webm"), generate_clip("opus-webm")
    sink = io.BytesIO()
    await mux(Source(v, piece=len(v)), Source(a, piece=len(a)), sink, "webm", queue_bytes=1024, read_size=1024)
    check_output(sink.getvalue(), "vp9-webm", "opus-webm", max_skew=0.25)


# --------------------------------------------------------------------------
# sinks and formats
# --------------------------------------------------------------------------


@pytest.mark.parametrize("ext,fmt", [(".mp4", "mp4"), (".mkv", "matroska"), (".webm", "webm"), (".MKV", "matroska")])
async def test_path_sink_format_from_extension(tmp_path, ext, fmt):
    vk, ak = ("vp9-webm", "opus-webm") if fmt == "webm" else ("h264-fmp4", "aac-fmp4")
    path = tmp_path / f"out{ext}"
    result = await mux(Source(generate_clip(vk)), Source(generate_clip(ak)), path)
    assert result.format == fmt
    data = path.read_bytes()
    assert result.bytes_written == len(data)
    check_output(data, vk, ak, max_skew=1.1)
    with av.open(str(path)) as c:
        assert c.format.name.split(",")[0] in ("mov", "matroska")
        if fmt != "mp4":  # a file is seekable: Matroska gets its duration
            assert c.duration is not None and abs(c.duration / 1e6 - 3.0) < 0.2


async def test_format_argument_overrides_extension(tmp_path):
    path = tmp_path / "out.bin"
    result = await mux(Source(generate_clip("h264-fmp4")), Source(generate_clip("aac-fmp4")), str(path), "mkv")
    assert result.format == "matroska"
    check_output(path.read_bytes(), "h264-fmp4", "aac-fmp4", max_skew=0.25)


async def test_stdout_sink(monkeypatch):
    pipe = PipeLike()

    class FakeStdout:
        buffer = pipe

    monkeypatch.setattr(sys, "stdout", FakeStdout())
    result = await mux(Source(generate_clip("h264-fmp4")), Source(generate_clip("aac-fmp4")), "-", "mkv")
    data = pipe.buf.getvalue()
    assert result.bytes_written == len(data) > 0
    check_output(data, "h264-fmp4", "aac-fmp4", max_skew=0.25)


async def test_non_seekable_file_like_sink():
    pipe = PipeLike()
    result = await mux(Source(generate_clip("vp9-webm")), Source(generate_clip("opus-webm")), pipe, "mkv")
    assert result.bytes_written == len(pipe.buf.getvalue())
    check_output(pipe.buf.getvalue(), "vp9-webm", "opus-webm", max_skew=0.25)


async def test_file_object_sink_with_name(tmp_path):
    path = tmp_path / "named.webm"
    with open(path, "wb") as f:
        result = await mux(Source(generate_clip("vp9-webm")), Source(generate_clip("opus-webm")), f)
    assert result.format == "webm"
    check_output(path.read_bytes(), "vp9-webm", "opus-webm", max_skew=0.25)


async def test_async_writer_sink():
    sink = AsyncSink()
    result = await mux(Source(generate_clip("h264-fmp4")), Source(generate_clip("aac-fmp4")), sink, "mp4",
                       queue_bytes=32 * 1024)
    assert result.bytes_written == len(sink.getvalue())
    check_output(sink.getvalue(), "h264-fmp4", "aac-fmp4", max_skew=1.1)


async def test_asyncio_stream_writer_sink():
    received = bytearray()
    got_all = asyncio.Event()

    async def handle(reader, writer):
        while data := await reader.read(65536):
            received.extend(data)
        got_all.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        result = await mux(Source(generate_clip("vp9-webm")), Source(generate_clip("opus-webm")), writer, "webm")
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(got_all.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()
    assert result.bytes_written == len(received)
    check_output(bytes(received), "vp9-webm", "opus-webm", max_skew=0.25)


@pytest.mark.parametrize("sink,fmt,words", [
    ("out.avi", None, ".avi"),
    ("out", None, "pass format="),
    ("-", None, "pass format="),
    (io.BytesIO(), None, "pass format="),
    (io.BytesIO(), "flv", "unknown format"),
])
async def test_format_errors_before_reading(sink, fmt, words, tmp_path):
    if isinstance(sink, str) and sink != "-":
        sink = tmp_path / sink
    v, a = Source(generate_clip("h264-fmp4")), Source(generate_clip("aac-fmp4"))
    with pytest.raises(MuxError, match=words.replace(".", r"\.")) as info:
        await mux(v, a, sink, fmt)
    assert info.value.input is None
    assert not v.started and not a.started
    assert not mux_threads()


@pytest.mark.parametrize("video_kind,audio_kind,fmt,bad", [
    ("h264-fmp4", "opus-webm", "webm", "video"),
    ("vp9-webm", "aac-fmp4", "webm", "audio"),
    ("av1-fmp4", "aac-fmp4", "webm", "audio"),
])
async def test_codec_the_container_cannot_hold(tmp_path, video_kind, audio_kind, fmt, bad):
    # Async sink: not one write. Path sink: no file at all.
    v, a = Source(generate_clip(video_kind)), Source(generate_clip(audio_kind))
    sink = AsyncSink()
    with pytest.raises(MuxError, match="cannot hold") as info:
        await mux(v, a, sink, fmt)
    assert info.value.input == bad
    assert "mkv" in str(info.value)
    assert sink.writes == 0
    assert v.closed and a.closed
    path = tmp_path / f"out.{fmt}"
    with pytest.raises(MuxError, match="cannot hold"):
        await mux(Source(generate_clip(video_kind)), Source(generate_clip(audio_kind)), path)
    assert not path.exists()
    assert not mux_threads()


# --------------------------------------------------------------------------
# inputs that cannot be streamed, or are not what they claim
# --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["video", "audio"])
async def test_moov_at_end_is_refused_early(bad):
    vk = "h264-mp4-moov-at-end" if bad == "video" else "h264-fmp4"
    ak = "aac-mp4-moov-at-end" if bad == "audio" else "aac-fmp4"
    v, a = Source(generate_clip(vk), piece=4096), Source(generate_clip(ak), piece=4096)
    sink = AsyncSink()
    with pytest.raises(MuxError, match=r"index \(moov\)") as info:
        await mux(v, a, sink, "mkv")
    assert info.value.input == bad
    assert "faststart" in str(info.value)
    src = v if bad == "video" else a
    assert src.sent <= 4096  # refused at the first piece, not after reading the whole file
    assert v.closed and a.closed
    assert sink.writes == 0
    assert not mux_threads()


def test_sniffer_byte_by_byte():
    def feed(data: bytes, step: int) -> _IndexSniffer:
        s = _IndexSniffer("video")
        for i in range(0, len(data), step):
            s.feed(data[i : i + step])
            if s.done:
                break
        return s

    for step in (1, 3, 7, 4096):
        with pytest.raises(MuxError, match="moov"):
            feed(generate_clip("h264-mp4-moov-at-end"), step)
        assert feed(generate_clip("h264-mp4-faststart"), step).done
        assert feed(generate_clip("h264-fmp4"), step).done
        assert feed(generate_clip("vp9-webm"), step).done  # not MP4: let through at once
    # A 64-bit box size before the mdat is followed.
    big_free = struct.pack(">I4sQ", 1, b"free", 16 + 5) + b"x" * 5
    data = struct.pack(">I4s", 16, b"ftyp") + b"isom\0\0\0\0" + big_free + struct.pack(">I4s", 8, b"mdat")
    with pytest.raises(MuxError, match="byte 37"):
        feed(data, 1)


async def test_audio_given_as_video():
    v, a = Source(generate_clip("aac-fmp4")), Source(generate_clip("h264-fmp4"))
    with pytest.raises(MuxError, match="no video stream") as info:
        await mux(v, a, io.BytesIO(), "mkv")
    assert info.value.input == "video"
    assert v.closed and a.closed


async def test_garbage_input_names_its_input():
    v, a = Source(generate_clip("h264-fmp4")), Source(bytes(range(256)) * 400)
    with pytest.raises(MuxError) as info:
        await mux(v, a, io.BytesIO(), "mkv")
    assert info.value.input == "audio"
    assert isinstance(info.value.__cause__, Exception)
    assert v.closed and a.closed
    assert not mux_threads()


async def test_truncated_input_names_its_input():
    v, a = Source(generate_clip("h264-fmp4")[:100]), Source(generate_clip("aac-fmp4"))
    with pytest.raises(MuxError, match="truncated") as info:
        await mux(v, a, io.BytesIO(), "mkv")
    assert info.value.input == "video"


# --------------------------------------------------------------------------
# failures, cancellation, bounded memory
# --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["video", "audio"])
async def test_input_failure_cancels_the_other(bad):
    error = StreamError("HTTP 503 three times", offset=20000, url="https://cdn.example/v?sig=secret", attempts=3)
    kw = {"fail_at": 20000, "error": error}
    v = Source(generate_clip("h264-fmp4"), piece=4096, **(kw if bad == "video" else {}))
    a = Source(generate_clip("aac-fmp4"), piece=4096, **(kw if bad == "audio" else {}))
    sink = AsyncSink()
    with pytest.raises(MuxError) as info:
        await mux(v, a, sink, "mkv", queue_bytes=8192, read_size=8192)
    err = info.value
    assert err.input == bad
    assert err.__cause__ is error
    assert isinstance(err, RangestreamError)
    assert "20000 bytes" in str(err) and "HTTP 503" in str(err) and str(err).startswith(f"{bad}:")
    assert "secret" not in str(err)
    assert v.closed and a.closed
    assert not mux_threads()


async def test_plain_exception_from_an_input():
    v = Source(generate_clip("vp9-webm"), piece=4096, fail_at=8192, error=OSError("disk on fire"))
    a = Source(generate_clip("opus-webm"), piece=4096)
    with pytest.raises(MuxError, match="disk on fire") as info:
        await mux(v, a, io.BytesIO(), "webm")
    assert info.value.input == "video"
    assert isinstance(info.value.__cause__, OSError)
    assert "8192 bytes" in str(info.value)


async def test_failure_while_the_other_input_hangs():
    # Audio hangs forever (a stalled connection); video fails: mux must not wait for audio.
    v = Source(generate_clip("h264-fmp4"), piece=4096, fail_at=30000)
    a = Source(generate_clip("aac-fmp4"), piece=4096, hang_at=8192)
    with pytest.raises(MuxError) as info:
        await asyncio.wait_for(mux(v, a, io.BytesIO(), "mkv"), 10)
    assert info.value.input == "video"
    assert a.closed and v.closed
    assert not mux_threads()


@pytest.mark.parametrize("kind", ["async", "file"])
async def test_sink_goes_away(kind):
    v, a = Source(generate_clip("h264-fmp4"), piece=4096), Source(generate_clip("aac-fmp4"), piece=4096)
    if kind == "async":
        sink = AsyncSink(fail_after=1)
        cause = ConnectionResetError
    else:
        sink = PipeLike(fail_after=1)
        cause = BrokenPipeError
    with pytest.raises(MuxError, match="sink") as info:
        await mux(v, a, sink, "mkv", queue_bytes=8192, read_size=8192)
    assert info.value.input is None
    assert isinstance(info.value.__cause__, cause)
    assert v.closed and a.closed
    assert v.sent < len(v.data)  # the inputs were cancelled, not read to the end
    assert not mux_threads()


@pytest.mark.parametrize("where", ["inputs hang", "sink blocks"])
async def test_cancellation_is_clean(where):
    tasks_before = asyncio.all_tasks()
    if where == "inputs hang":
        v = Source(generate_clip("h264-fmp4"), piece=4096, hang_at=40000)
        a = Source(generate_clip("aac-fmp4"), piece=4096, hang_at=30000)
        sink = AsyncSink()
        task = asyncio.create_task(mux(v, a, sink, "mkv"))
        await asyncio.wait_for(asyncio.gather(v.hanging.wait(), a.hanging.wait()), 10)
    else:
        v = Source(generate_clip("h264-fmp4", crf=0), piece=4096)
        a = Source(generate_clip("aac-fmp4"), piece=4096)
        sink = AsyncSink(block=True)
        task = asyncio.create_task(mux(v, a, sink, "mkv", queue_bytes=16384, read_size=16384))
        await asyncio.wait_for(sink.blocked.wait(), 10)
    await asyncio.sleep(0.05)
    assert mux_threads()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert v.closed and a.closed
    assert not mux_threads()
    assert asyncio.all_tasks() <= tasks_before | {asyncio.current_task()}


async def test_memory_stays_bounded_when_the_sink_is_slow():
    # The sink never completes a write: the inputs must stop being read soon.
    video = generate_clip("h264-fmp4", crf=0)  # ~0.5 MB
    v, a = Source(video, piece=4096), Source(generate_clip("aac-fmp4"), piece=4096)
    sink = AsyncSink(block=True)
    task = asyncio.create_task(mux(v, a, sink, "mkv", queue_bytes=8192, read_size=8192))
    await asyncio.wait_for(sink.blocked.wait(), 10)
    stalled = -1
    for _ in range(50):  # wait (up to 5 s) until reading has stopped for a tick
        if v.sent == stalled:
            break
        stalled = v.sent
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the inputs were read on although the sink never took a byte")
    assert stalled < len(video) // 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not mux_threads()


async def test_event_loop_keeps_running():
    # FFmpeg's side blocks (here: a file-like sink whose every write waits until the event loop
    # has ticked twice). It runs in the worker thread, so the loop keeps ticking meanwhile; a
    # write run on the loop's thread would wait in vain (given up after 10 s, then no more
    # waiting). Ticks are counted, not timed: a busy machine makes them later, never fewer.
    # (Was: the loop's longest lag < 0.25 s, over a mux that takes about 15 ms in all.)
    loop_thread = threading.get_ident()
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.005)
            ticks += 1

    class WaitsForTheLoop(io.BytesIO):
        def __init__(self) -> None:
            super().__init__()
            self.threads: set[int] = set()
            self.ticked: list[int] = []  # per write: the loop's ticks while it waited

        def write(self, data) -> int:
            self.threads.add(threading.get_ident())
            if min(self.ticked, default=2) >= 2:  # stuck once: the rest do not wait
                seen, deadline = ticks, time.monotonic() + 10
                while ticks < seen + 2 and time.monotonic() < deadline:
                    time.sleep(0.001)
                self.ticked.append(ticks - seen)
            return super().write(data)

    sink = WaitsForTheLoop()
    tick = asyncio.create_task(ticker())
    video = generate_clip("h264-fmp4", crf=0)
    result = await mux(Source(video, piece=65536), Source(generate_clip("aac-fmp4")), sink, "mp4")
    stop.set()
    await tick
    assert sink.ticked and min(sink.ticked) >= 2, sink.ticked
    assert loop_thread not in sink.threads
    assert result.bytes_written == len(sink.getvalue()) > 0


# --------------------------------------------------------------------------
# generated media
# --------------------------------------------------------------------------


def _top_boxes(data: bytes) -> list[str]:
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        boxes.append(kind.decode())
        pos += size
    return boxes


def test_generated_layouts():
    assert _top_boxes(generate_clip("h264-fmp4"))[:4] == ["ftyp", "moov", "sidx", "moof"]  # YouTube's layout
    assert _top_boxes(generate_clip("aac-fmp4"))[:4] == ["ftyp", "moov", "sidx", "moof"]
    assert "sidx" not in _top_boxes(generate_clip("h264-fmp4", sidx=False))
    assert _top_boxes(generate_clip("h264-mp4-moov-at-end")) == ["ftyp", "free", "mdat", "moov"]
    assert _top_boxes(generate_clip("h264-mp4-faststart")) == ["ftyp", "free", "moov", "mdat"]
    for kind in ("vp9-webm", "opus-webm", "av1-webm"):
        assert generate_clip(kind)[:4] == b"\x1a\x45\xdf\xa3"
    tracks, _ = probe(generate_clip("h264-fmp4"))
    v = tracks["video"]
    assert len(v.packets) == 75 and v.frames == 75
    assert sum(1 for p in v.packets if p[0] != p[1]) > 0  # B-frames: DTS != PTS, as in real streams
    with av.open(io.BytesIO(generate_clip("h264-fmp4"))) as c:
        keys = sum(1 for p in c.demux(video=0) if p.size and p.is_keyframe)
    assert keys == 3  # a key frame a second, not every frame
    with pytest.raises(ValueError, match="unknown clip kind"):
        generate_clip("mpeg2-ts")


def test_generated_clips_are_deterministic():
    raw = generate_clip.__wrapped__
    for kind in ("h264-fmp4", "aac-fmp4", "vp9-webm", "opus-webm"):
        assert raw(kind, 1.0) == raw(kind, 1.0), kind


def test_every_kind_generates():
    for kind, spec in KINDS.items():
        tracks, _ = probe(generate_clip(kind), decode=False)
        assert set(tracks) == {spec.track}, kind


# --------------------------------------------------------------------------
# end to end: the emulated CDN, the engine, the muxer
# --------------------------------------------------------------------------

E2E = dict(chunk_size=64 * 1024, window=2)


def _retry():
    import rangestream

    return rangestream.Retry(attempts=5, backoff=0.001)


@pytest.mark.parametrize("youtube", [False, True], ids=["media-url", "youtube-url"])
async def test_mux_urls_survives_resets(origin, tmp_path, youtube):
    from rangestream.muxer import mux_urls

    v, a = generate_clip("h264-fmp4"), generate_clip("aac-fmp4")
    origin.add_object("v.mp4", v, "video/mp4")
    origin.add_object("a.m4a", a, "audio/mp4")
    origin.inject("reset", name="v.mp4", count=1)
    origin.inject("reset", name="a.m4a", count=1)
    out = tmp_path / "out.mp4"
    result = await mux_urls(origin.media_url("v.mp4", youtube=youtube), origin.media_url("a.m4a", youtube=youtube),
                            out, retry=_retry(), **E2E)
    faults = [r for r in origin.log if r.fault == "reset"]
    assert {r.name for r in faults} == {"v.mp4", "a.m4a"}  # both inputs were cut once, and recovered
    assert result.input_bytes == {"video": len(v), "audio": len(a)}
    check_output(out.read_bytes(), "h264-fmp4", "aac-fmp4", max_skew=1.1)
    assert not mux_threads()


async def test_mux_urls_webm_pair_to_async_sink_with_shared_client(origin):
    import rangestream
    from rangestream.muxer import mux_urls

    v, a = generate_clip("vp9-webm"), generate_clip("opus-webm")
    vurl = origin.add_object("v.webm", v, "video/webm")
    aurl = origin.add_object("a.webm", a, "audio/webm")
    origin.inject("reset", name="a.webm", count=2)
    sink = AsyncSink()
    async with rangestream.Client() as client:
        result = await mux_urls(vurl, aurl, sink, "webm", client=client, retry=_retry(), **E2E)
    assert result.format == "webm"
    check_output(sink.getvalue(), "vp9-webm", "opus-webm", max_skew=0.25)


@pytest.mark.parametrize("bad", ["video", "audio"])
@pytest.mark.parametrize("youtube", [False, True], ids=["media-url", "youtube-url"])
async def test_mux_urls_404_names_the_input(origin, tmp_path, bad, youtube):
    import rangestream
    from rangestream.muxer import mux_urls

    origin.add_object("v.mp4", generate_clip("h264-fmp4"), "video/mp4")
    origin.add_object("a.m4a", generate_clip("aac-fmp4"), "audio/mp4")
    name = "v.mp4" if bad == "video" else "a.m4a"
    origin.inject("status", status=404, name=name, count=100)
    out = tmp_path / "out.mkv"
    with pytest.raises(MuxError) as info:
        await mux_urls(origin.media_url("v.mp4", youtube=youtube), origin.media_url("a.m4a", youtube=youtube),
                       out, retry=_retry(), **E2E)
    err = info.value
    assert err.input == bad
    assert isinstance(err.__cause__, rangestream.HTTPStatusError) and err.__cause__.status == 404
    assert "404" in str(err)
    assert not out.exists()  # nothing was written: the sink is created at the first byte
    assert not mux_threads()


async def test_mux_urls_bad_format_makes_no_request(origin, tmp_path):
    from rangestream.muxer import mux_urls

    url = origin.add_object("v.mp4", generate_clip("h264-fmp4"), "video/mp4")
    with pytest.raises(MuxError, match="avi"):
        await mux_urls(url, url, tmp_path / "x.avi")
    assert origin.request_count == 0


# --------------------------------------------------------------------------
# an aiohttp StreamResponse as the sink
# --------------------------------------------------------------------------


async def _serve(handler):
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/out", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/out"


async def test_aiohttp_response_sink():
    import aiohttp
    from aiohttp import web

    async def handler(request):
        resp = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        await resp.prepare(request)
        await mux(Source(generate_clip("h264-fmp4")), Source(generate_clip("aac-fmp4")), resp, "mp4")
        await resp.write_eof()
        return resp

    runner, url = await _serve(handler)
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as r:
            body = await r.read()
    finally:
        await runner.cleanup()
    check_output(body, "h264-fmp4", "aac-fmp4", max_skew=1.1)


async def test_http_client_going_away_cancels_both_inputs():
    import aiohttp
    from aiohttp import web

    v = Source(generate_clip("h264-fmp4", crf=0), piece=4096, delay=0.002)
    a = Source(generate_clip("aac-fmp4"), piece=4096, delay=0.002)
    outcome: asyncio.Future = asyncio.get_running_loop().create_future()

    async def handler(request):
        resp = web.StreamResponse(headers={"Content-Type": "video/x-matroska"})
        await resp.prepare(request)
        try:
            await mux(v, a, resp, "mkv", queue_bytes=8192, read_size=8192)
        except BaseException as e:  # noqa: BLE001
            outcome.set_result(e)
            raise
        outcome.set_result(None)
        return resp

    runner, url = await _serve(handler)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as r:
                await r.content.readexactly(20_000)  # watch a little, then leave
                r.close()
            err = await asyncio.wait_for(outcome, 10)
    finally:
        await runner.cleanup()
    assert isinstance(err, MuxError), err
    assert err.input is None and "sink" in str(err)
    assert isinstance(err.__cause__, (ConnectionError, aiohttp.ClientConnectionResetError))
    assert v.closed and a.closed and v.sent < len(v.data)
    assert not mux_threads()
