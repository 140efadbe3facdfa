"""Refusing an MP4 whose index comes after its media data, at its first bytes.

A plain (non-fragmented) MP4 with its ``moov`` box after ``mdat`` can only be
read by seeking to its end, which a stream cannot do; without this check the
demuxer would read the whole input before failing.
"""

from __future__ import annotations

import struct

from ..errors import MuxError

# Top-level boxes an ISO BMFF file may start with: anything else is not MP4.
_BMFF_FIRST = {b"ftyp", b"styp", b"moov", b"moof", b"free", b"skip", b"wide", b"pdin", b"sidx", b"mdat"}


class IndexSniffer:
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
