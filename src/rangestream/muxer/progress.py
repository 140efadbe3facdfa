"""What a mux did (:class:`MuxResult`) and how far it got while running (:class:`Progress`)."""

from __future__ import annotations

from dataclasses import dataclass, field

INPUTS = ("video", "audio")


@dataclass
class MuxResult:
    """What :func:`~rangestream.mux` did."""

    format: str  #: FFmpeg muxer used: "mp4", "matroska" or "webm"
    bytes_written: int  #: size of the output (bytes handed to the sink)
    packets: dict[str, int]  #: packets muxed per input: {"video": n, "audio": m}
    seconds: float  #: wall-clock time of the whole mux
    input_bytes: dict[str, int] = field(default_factory=dict)  #: bytes consumed per input
    codecs: dict[str, str] = field(default_factory=dict)  #: codec per input
    duration: float | None = None  #: media seconds muxed (latest packet end)


@dataclass
class Progress:
    """Counters per input, written by the pumps (bytes) and the worker thread (the rest).

    Each counter has one writer; readers only report them (results, error messages),
    so no lock is needed.
    """

    bytes_in: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INPUTS, 0))
    packets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INPUTS, 0))
    reached: dict[str, float] = field(default_factory=lambda: dict.fromkeys(INPUTS, 0.0))
    codecs: dict[str, str] = field(default_factory=dict)
    header_written: bool = False
