"""What a stream measured: :class:`Stats` for the whole object, :class:`ChunkTrace` per chunk."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ChunkTrace:
    """When things happened to one chunk (``time.monotonic()`` seconds)."""

    index: int
    start: int
    stop: int | None
    requested: float | None = None  # first request sent
    headers: float | None = None  # headers of the response that delivered bytes
    first_read: float | None = None  # first body byte read by the engine
    done: float | None = None
    requests: int = 0
    retries: int = 0
    prefetched: bool = False  # its response arrived before it became the head


@dataclass
class Stats:
    size: int | None = None
    bytes: int = 0  # delivered to the consumer
    requests: int = 0
    retries: int = 0  # failed attempts followed by another, counted or not
    refreshes: int = 0
    prefetch_hits: int = 0
    prefetch_misses: int = 0
    chunks: int = 0
    splits: int = 0  # remainders moved to another connection (tail or straggler)
    reissues: int = 0  # stalled attempts abandoned while other connections flowed
    connection_bytes: dict[str, int] = field(default_factory=dict)  # body bytes per TCP connection
    buffered_peak: int = 0  # most body bytes held for the consumer at once
    window_max: int = 0  # largest window the stream ran with (auto: what the controller chose)
    connections_max: int = 0  # most requests in flight at once (window + early next requests + splits)
    # Requests in flight and (seconds since start, MB/s over the last tick, window), sampled
    # every controller tick. A stream may run for hours (the service's do): when the series
    # hold more than ``series_cap`` points, every other one is dropped and sampling halves,
    # so they stay bounded and still span the whole life, evenly spaced.
    window_samples: list[int] = field(default_factory=list)
    timeline: list[tuple[float, float, int]] = field(default_factory=list)
    series_cap: int = 256
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    traces: list[ChunkTrace] = field(default_factory=list)
    _ticks: int = 0
    _active_sum: int = 0  # window_mean counts every tick, not only the points kept
    _stride: int = 1  # ticks per kept point

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def window_mean(self) -> float:
        return self._active_sum / self._ticks if self._ticks else 0.0

    def sample(self, t: float, rate_mb: float, window: int, active: int) -> None:
        """One controller tick: requests in flight, the aggregate rate, the window."""
        self._ticks += 1
        self._active_sum += active
        if self._ticks % self._stride:
            return
        self.window_samples.append(active)
        self.timeline.append((t, rate_mb, window))
        while len(self.timeline) > max(self.series_cap, 2):
            # Kept points sit at multiples of the stride: keep the even multiples, double it.
            del self.timeline[::2]
            del self.window_samples[::2]
            self._stride *= 2

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items()
             if k not in ("traces", "window_samples", "timeline", "started", "finished", "series_cap")
             and not k.startswith("_")}
        d["seconds"] = round(self.seconds, 3)
        d["window_mean"] = round(self.window_mean, 2)
        d["connections"] = len(self.connection_bytes)
        del d["connection_bytes"]
        return d
