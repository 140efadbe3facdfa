"""Mux a video stream and an audio stream into one container, as they arrive.

Streaming sites serve video and audio separately (YouTube's DASH formats:
H.264, VP9 or AV1 video; AAC or Opus audio; fragmented MP4 or WebM).
:func:`mux` consumes both byte streams at once and writes one container
through FFmpeg's own demuxers and muxers (PyAV), copying packets, never
re-encoding, so output starts at once and nothing touches the disk first.

How it runs
-----------
PyAV is blocking, so one worker thread (:mod:`.worker`) does all of FFmpeg's
work: it reads each input through a file-like end of a bounded channel
(:mod:`.channels`), picks the packet with the smaller decoding timestamp (in
seconds) of the two inputs, and writes it to the output (:mod:`.sinks`). On
the event loop (:mod:`.core`), one task per input pulls the async iterator,
checks that an MP4 can be streamed (:mod:`.sniff`), coalesces small pieces
(FFmpeg reads far faster in large blocks) and sends them into the channel,
waiting whenever it holds ``queue_bytes``; so memory stays bounded and the
loop never blocks. An async sink is fed the same way in the other direction.

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
``input=None`` is raised, chained likewise (:mod:`.failures`). Cancelling the
task running :func:`mux` does the same cleanup and re-raises
``CancelledError``. In every case both input iterators are closed
(``aclose()``) and the worker thread has ended before :func:`mux` returns or
raises.
"""

from .core import DEFAULT_QUEUE_BYTES, mux, mux_urls
from .formats import FORMATS
from .progress import MuxResult

__all__ = ["MuxResult", "mux", "mux_urls", "FORMATS", "DEFAULT_QUEUE_BYTES"]
