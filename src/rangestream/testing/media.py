"""Small generated media clips, in the layouts streaming sites serve.

YouTube (and DASH sites in general) serve video and audio as separate,
single-stream files: fragmented MP4 (H.264 / AV1 video, AAC audio) or WebM
(VP9 / AV1 video, Opus audio). :func:`generate_clip` makes such files from
FFmpeg's test sources (a ``testsrc2`` pattern and a ``sine`` tone) through
PyAV, so tests, benchmarks and demos need no media on disk.

Only ``av`` is needed; nothing here imports test dependencies.

Kinds (``kind`` argument):

==========================  =====  ==========================================
kind                        track  layout
==========================  =====  ==========================================
``h264-fmp4``               video  fragmented MP4 (ftyp, moov, moof/mdat...)
``av1-fmp4``                video  fragmented MP4, AV1 (libsvtav1)
``vp9-fmp4``                video  fragmented MP4, VP9
``aac-fmp4``                audio  fragmented MP4, AAC-LC
``opus-fmp4``               audio  fragmented MP4, Opus
``vp9-webm``                video  WebM, VP9
``av1-webm``                video  WebM, AV1 (libsvtav1)
``opus-webm``               audio  WebM, Opus
``aac-mkv``                 audio  Matroska, AAC
``h264-mp4-faststart``      video  plain MP4, ``moov`` before ``mdat``
``h264-mp4-moov-at-end``    video  plain MP4, ``moov`` after ``mdat``
``aac-mp4-moov-at-end``     audio  plain MP4, ``moov`` after ``mdat``
==========================  =====  ==========================================

Encodes run single-threaded with fixed settings, so the output is the same
from one call to the next on one machine (FFmpeg versions may differ in the
bytes they write). Results are cached per argument set: clips are immutable
``bytes``.
"""

from __future__ import annotations

import functools
import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.video.frame import PictureType
from av.video.stream import VideoStream

__all__ = ["KINDS", "generate_clip", "clip_kind"]


@dataclass(frozen=True)
class _Kind:
    track: str  # "video" | "audio"
    codec: str  # encoder name
    format: str  # muxer name
    options: tuple[tuple[str, str], ...] = ()  # container (muxer) options


_FRAG = (("movflags", "frag_keyframe+empty_moov+default_base_moof"),)
# Audio has no key frames to cut fragments at (every packet is one): cut by time.
_FRAG_AUDIO = (("movflags", "empty_moov+default_base_moof+frag_keyframe"), ("frag_duration", "1000000"))
# YouTube's WebM puts Cues before the first Cluster; reserving space does that.
_WEBM = (("reserve_index_space", "4096"),)

KINDS: dict[str, _Kind] = {
    "h264-fmp4": _Kind("video", "libx264", "mp4", _FRAG),
    "av1-fmp4": _Kind("video", "libsvtav1", "mp4", _FRAG),
    "vp9-fmp4": _Kind("video", "libvpx-vp9", "mp4", _FRAG),
    "aac-fmp4": _Kind("audio", "aac", "mp4", _FRAG_AUDIO),
    "opus-fmp4": _Kind("audio", "libopus", "mp4", _FRAG_AUDIO),
    "vp9-webm": _Kind("video", "libvpx-vp9", "webm", _WEBM),
    "av1-webm": _Kind("video", "libsvtav1", "webm", _WEBM),
    "opus-webm": _Kind("audio", "libopus", "webm", _WEBM),
    "aac-mkv": _Kind("audio", "aac", "matroska"),
    "h264-mp4-faststart": _Kind("video", "libx264", "mp4"),  # moov moved up by _faststart()
    "h264-mp4-moov-at-end": _Kind("video", "libx264", "mp4"),
    "aac-mp4-moov-at-end": _Kind("audio", "aac", "mp4"),
}


def clip_kind(kind: str) -> _Kind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown clip kind {kind!r}; known: {', '.join(sorted(KINDS))}") from None


def _video_options(codec: str, gop: int, crf: int | None) -> dict[str, str]:
    if codec == "libx264":
        # B-frames on (veryfast keeps 3), so DTS != PTS as in real streams.
        opts = {"preset": "veryfast", "threads": "1", "sc_threshold": "0"}
        opts["crf"] = str(crf if crf is not None else 28)
        return opts
    if codec == "libvpx-vp9":
        return {
            "deadline": "realtime",
            "cpu-used": "8",
            "threads": "1",
            "row-mt": "0",
            "lag-in-frames": "0",
            "crf": str(crf if crf is not None else 40),
            "b": "0",
        }
    if codec == "libsvtav1":
        return {"preset": "12", "crf": str(crf if crf is not None else 45), "svtav1-params": f"lp=1:keyint={gop}"}
    return {}


@functools.lru_cache(maxsize=64)
def generate_clip(
    kind: str,
    seconds: float = 3.0,
    *,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    gop_seconds: float = 1.0,
    sample_rate: int = 48000,
    frequency: float = 440.0,
    crf: int | None = None,
    noise: int = 0,
    sidx: bool = True,
) -> bytes:
    """Encode ``seconds`` of a test pattern (video kinds) or tone (audio kinds).

    Video: FFmpeg's ``testsrc2`` at ``width``x``height``, ``fps`` frames a
    second, a key frame every ``gop_seconds``; ``noise`` (0-100) adds
    temporal noise to make the clip bigger (for benchmarks). Audio: a
    ``frequency`` Hz stereo sine at ``sample_rate``. See the module doc for
    the kinds. Fragmented MP4 kinds get a ``sidx`` box after ``moov``, as
    YouTube's files have (``sidx=False`` leaves it out). Returns the whole file.
    """
    spec = clip_kind(kind)
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    buf = io.BytesIO()
    # bitexact: no random Matroska UIDs, no version strings: the same bytes every call.
    options = {"fflags": "+bitexact", **dict(spec.options)}
    with av.open(buf, mode="w", format=spec.format, options=options) as out:
        if spec.track == "video":
            _encode_video(out, spec.codec, seconds, width, height, fps, gop_seconds, crf, noise)
        else:
            _encode_audio(out, spec.codec, seconds, sample_rate, frequency)
    data = buf.getvalue()
    if kind.endswith("-faststart"):
        data = _faststart(data)
    elif sidx and spec.options in (_FRAG, _FRAG_AUDIO):
        data = _add_sidx(data)
    return data


def _encode_video(out: OutputContainer, codec: str, seconds: float, width: int, height: int, fps: int,
                  gop_seconds: float, crf: int | None, noise: int) -> None:
    gop = max(1, round(fps * gop_seconds))
    if codec == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # errors only; its banner goes to stderr
    stream = out.add_stream(codec, rate=fps, options=_video_options(codec, gop, crf))
    assert isinstance(stream, VideoStream), codec  # KINDS gives video tracks video codecs
    stream.width = width
    stream.height = height
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = gop
    src = f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}"
    if noise:
        src += f",noise=alls={int(noise)}:allf=t"
    with av.open(src, format="lavfi") as inp:
        for i, frame in enumerate(inp.decode(video=0)):
            # Generated frames come flagged as key frames; left so, the encoder
            # would make every frame one.
            frame.pict_type = PictureType.NONE
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _encode_audio(out: OutputContainer, codec: str, seconds: float, sample_rate: int, frequency: float) -> None:
    stream = out.add_stream(codec, rate=sample_rate, layout="stereo")
    assert isinstance(stream, AudioStream), codec  # KINDS gives audio tracks audio codecs
    if codec == "aac":
        stream.bit_rate = 128_000
    elif codec == "libopus":
        stream.bit_rate = 96_000
    src = (
        f"sine=frequency={frequency}:sample_rate={sample_rate}:duration={seconds},"
        "aformat=sample_fmts=fltp:channel_layouts=stereo"
    )
    with av.open(src, format="lavfi") as inp:
        for frame in inp.decode(audio=0):
            out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


# --- ISO BMFF touch-ups (what FFmpeg can only do by reopening a named file) ---


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[str, int, int, int]]:
    """Yield ``(type, box_start, payload_start, box_end)`` for the boxes in a range."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            raise ValueError(f"bad box size {size} at {pos}")
        yield kind.decode("latin-1"), pos, pos + header, pos + size
        pos += size


def _find(data: bytes, path: list[str], start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
    """Yield ``(payload_start, box_end)`` of every box at ``path`` (a list of types)."""
    for kind, _box, payload, box_end in _boxes(data, start, end):
        if kind == path[0]:
            if len(path) == 1:
                yield payload, box_end
            else:
                yield from _find(data, path[1:], payload, box_end)


def _faststart(data: bytes) -> bytes:
    """Move ``moov`` in front of ``mdat`` (what ``-movflags faststart`` does)."""
    top = list(_boxes(data))
    moov = next(b for b in top if b[0] == "moov")
    first_mdat = next(b for b in top if b[0] == "mdat")
    moov_bytes = bytearray(data[moov[1] : moov[3]])
    shift = len(moov_bytes)
    base = moov[1]
    for leaf in ("stco", "co64"):
        for payload, _end in _find(data, ["trak", "mdia", "minf", "stbl", leaf], moov[2], moov[3]):
            (count,) = struct.unpack_from(">I", data, payload + 4)
            off = payload + 8 - base
            fmt, width = (">I", 4) if leaf == "stco" else (">Q", 8)
            for i in range(count):
                (v,) = struct.unpack_from(fmt, moov_bytes, off + i * width)
                struct.pack_into(fmt, moov_bytes, off + i * width, v + shift)
    head = data[: first_mdat[1]]
    middle = data[first_mdat[1] : moov[1]]
    tail = data[moov[3] :]
    return head + bytes(moov_bytes) + middle + tail


def _add_sidx(data: bytes) -> bytes:
    """Insert a ``sidx`` (segment index) after ``moov``, as DASH/YouTube files have.

    One reference per ``moof``+``mdat`` pair; times from each fragment's
    ``tfdt``, the last one's end from the demuxed packets.
    """
    top = list(_boxes(data))
    moov = next(b for b in top if b[0] == "moov")
    mdhd_payload, _ = next(_find(data, ["trak", "mdia", "mdhd"], moov[2], moov[3]))
    version = data[mdhd_payload]
    (timescale,) = struct.unpack_from(">I", data, mdhd_payload + (20 if version == 1 else 12))
    frags: list[tuple[int, int, int]] = []  # (start, end, tfdt)
    i = 0
    while i < len(top):
        kind, start, payload, end = top[i]
        if kind == "moof":
            tfdt_payload, _ = next(_find(data, ["traf", "tfdt"], payload, end))
            if data[tfdt_payload] == 1:
                (t,) = struct.unpack_from(">Q", data, tfdt_payload + 4)
            else:
                (t,) = struct.unpack_from(">I", data, tfdt_payload + 4)
            if i + 1 < len(top) and top[i + 1][0] == "mdat":
                end = top[i + 1][3]
                i += 1
            frags.append((start, end, t))
        i += 1
    if not frags:
        return data
    with av.open(io.BytesIO(data), mode="r") as probe:
        stream = probe.streams[0]
        if stream.time_base != Fraction(1, timescale):
            return data
        ends = [p.dts + (p.duration or 0) for p in probe.demux(stream) if p.dts is not None and p.size]
    total_end = max(ends) if ends else frags[-1][2]
    refs = []
    for n, (start, end, t) in enumerate(frags):
        next_t = frags[n + 1][2] if n + 1 < len(frags) else total_end
        refs.append(struct.pack(">III", end - start, max(0, next_t - t), 0x90000000))
    body = struct.pack(">BBBBIIQQHH", 1, 0, 0, 0, 1, timescale, frags[0][2], 0, 0, len(refs)) + b"".join(refs)
    sidx = struct.pack(">I4s", 8 + len(body), b"sidx") + body
    return data[: moov[3]] + sidx + data[moov[3] :]
