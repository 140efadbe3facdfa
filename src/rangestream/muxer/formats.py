"""Output containers: which FFmpeg muxer a ``format=`` or a sink's name means, and what it can hold."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import MuxError

# Codecs for which fragmented MP4 is worth suggesting when WebM refuses them.
_MP4_CODECS = frozenset({"h264", "hevc", "aac", "mp3", "ac3", "eac3", "opus"})


@dataclass(frozen=True)
class Format:
    name: str  # FFmpeg muxer name
    options: tuple[tuple[str, str], ...] = ()
    video: frozenset[str] | None = None  # codecs allowed, None: ask FFmpeg
    audio: frozenset[str] | None = None

    def check_codecs(self, codecs: dict[str, str]) -> None:
        """Raise :class:`MuxError` naming the input whose codec this container cannot hold."""
        for name, allowed in (("video", self.video), ("audio", self.audio)):
            codec = codecs[name]
            if allowed is not None and codec not in allowed:
                raise MuxError(
                    f"{self.name} cannot hold {codec} {name} (it takes "
                    f"{'/'.join(sorted(allowed))} {name}); use format='mkv', which holds anything"
                    + (", or 'mp4'" if codec in _MP4_CODECS else ""),
                    input=name,
                )


_MP4 = Format("mp4", (("movflags", "frag_keyframe+empty_moov+default_base_moof"),))
_MKV = Format("matroska")
_WEBM = Format("webm", (), frozenset({"vp8", "vp9", "av1"}), frozenset({"vorbis", "opus"}))

#: Names accepted by ``format=`` (and sink extensions), mapped to the FFmpeg muxer used.
FORMATS: dict[str, Format] = {
    "mp4": _MP4,
    "fmp4": _MP4,
    "m4v": _MP4,
    "mkv": _MKV,
    "matroska": _MKV,
    "webm": _WEBM,
}
_EXTENSIONS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "mkv", ".webm": "webm"}


def resolve_format(format: str | None, sink: Any) -> Format:
    """``format`` if given, else the sink's file extension; :class:`MuxError` if neither says."""
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
