"""The engine: one object fetched as a window of Range requests (see :class:`Stream`)."""

from .stream import ChunkTrace, Stats, Stream

__all__ = ["ChunkTrace", "Stats", "Stream"]
