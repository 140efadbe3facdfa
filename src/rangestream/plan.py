"""Pure planning: byte ranges, chunking, header values. No I/O here.

Everything in this module is deterministic and exhaustively tested
(``tests/test_plan.py``); the engine asks it what to request next and how to
read what came back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

DEFAULT_CHUNK_SIZE = 9_500_000


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Half-open ``[start, stop)``; ``stop is None`` means "to the end, size unknown"."""

    start: int
    stop: int | None

    def __post_init__(self) -> None:
        if self.start < 0 or (self.stop is not None and self.stop < self.start):
            raise ValueError(f"bad range [{self.start}, {self.stop})")

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("open-ended range has no length")
        return self.stop - self.start

    def header(self) -> str:
        """The ``Range`` header value asking for exactly this range."""
        if self.stop is None:
            return f"bytes={self.start}-"
        return f"bytes={self.start}-{self.stop - 1}"


@dataclass(frozen=True, slots=True)
class ContentRange:
    """A parsed ``Content-Range: bytes first-last/total`` (``total`` None for ``*``)."""

    start: int
    stop: int  # exclusive
    total: int | None


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)\s*/\s*(\d+|\*)\s*$", re.I)


def parse_content_range(value: str) -> ContentRange:
    """Parse a satisfied-range ``Content-Range``; raise ValueError for anything else."""
    m = _CONTENT_RANGE.match(value or "")
    if not m:
        raise ValueError(f"unparsable Content-Range {value!r}")
    first, last = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if last < first or (total is not None and last >= total):
        raise ValueError(f"inconsistent Content-Range {value!r}")
    return ContentRange(first, last + 1, total)


def next_chunk(offset: int, size: int | None, chunk_size: int) -> ByteRange | None:
    """The chunk starting at ``offset``, or None once ``offset`` reached ``size``."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    if size is None:
        return ByteRange(offset, None)
    if offset >= size:
        return None
    return ByteRange(offset, min(offset + chunk_size, size))


# Never plan (or split off) a piece smaller than this near the end: a new request costs a round trip.
MIN_SPLIT = 256 << 10


def tail_chunk(offset: int, stop: int, chunk_size: int, *, left: int, rate: float, ttfb: float,
               connections: int) -> ByteRange:
    """The next chunk of the span ``[offset, stop)`` sized so that it ends when the connections
    already reading do: all of them together drain the ``left`` bytes not yet read at ``rate``
    bytes/s, and a new request reads nothing for ``ttfb`` seconds while the others read
    ``rate * ttfb`` of them; each of ``connections`` gets a share of the rest. Far from the end
    that share is more than a chunk (``chunk_size``); near it, it is never below ``MIN_SPLIT``, and
    a piece never leaves less than ``MIN_SPLIT`` of the span for a request of its own."""
    share = int((left - rate * ttfb) / max(1, connections))
    n = min(chunk_size, max(MIN_SPLIT, share))
    if stop - offset - n < MIN_SPLIT and stop - offset <= chunk_size:
        n = stop - offset
    return ByteRange(offset, min(stop, offset + n))


def plan_chunks(size: int, chunk_size: int, start: int = 0) -> list[ByteRange]:
    """All chunks covering ``[start, size)``: each ``chunk_size`` long but the last."""
    chunks = []
    r = next_chunk(start, size, chunk_size)
    while r is not None:
        chunks.append(r)
        r = next_chunk(r.stop, size, chunk_size)  # type: ignore[arg-type]
    return chunks


def missing_ranges(size: int, done: list[tuple[int, int]]) -> list[ByteRange]:
    """The gaps of ``[0, size)`` not covered by the (possibly overlapping) ``done`` spans."""
    gaps: list[ByteRange] = []
    pos = 0
    for a, b in sorted(done):
        a, b = max(a, 0), min(b, size)
        if b <= a or b <= pos:
            continue
        if a > pos:
            gaps.append(ByteRange(pos, a))
        pos = max(pos, b)
    if pos < size:
        gaps.append(ByteRange(pos, size))
    return gaps


def url_param(url: str, name: str) -> str | None:
    try:
        values = parse_qs(urlsplit(url).query).get(name)
    except ValueError:
        return None
    return values[0] if values else None


def size_from_url(url: str) -> int | None:
    """googlevideo URLs carry the object's length as ``clen``: trust it as the size to check against."""
    clen = url_param(url, "clen")
    if clen is not None and clen.isdigit():
        return int(clen)
    return None


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """``"9.5M"`` -> 9_500_000, ``"10MiB"`` -> 10_485_760, ``"65536"`` -> 65536."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text or "")
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (try 9.5M, 10MiB or 65536)")
    value = int(float(m.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return value


class AutoWindow:
    """Decides the window size from measured aggregate throughput. Pure: the engine
    feeds it samples (time, rate, connections reading) and applies its answer.

    Start: 2, or what the first response suggests (``first_response``: the size and the
    round trip). Slow start: the window doubles while doubling still raises the aggregate
    rate by ``gain`` (per-connection caps make that common); when it stops
    paying, it falls back to the best size seen and afterwards probes one more
    connection every ``probe_every`` seconds. Server push-back (429/503) takes one away;
    a consumer slower than the link shrinks it to what that consumer needs (``consumer_bound``).
    A sample only counts once the last change has settled (new connections
    need a round trip before their bytes flow) and while every slot of the
    window is actually reading; otherwise it says nothing about the network.
    """

    def __init__(self, start: int = 2, ceiling: int = 8, *, gain: float = 1.25,
                 settle: float = 0.05, probe_every: float = 2.0, headroom: float = 1.25) -> None:
        if not 1 <= start <= ceiling:
            raise ValueError("need 1 <= start <= ceiling")
        self.size = start
        self.headroom = headroom  # spare rate kept over a slow consumer's (consumer_bound)
        self.ceiling = ceiling
        self.gain = gain
        self.settle = settle
        self.probe_every = probe_every
        self._changed_at: float | None = None
        self._rate_at: dict[int, float] = {}
        self._prev: int | None = None  # size before the last growth step
        self._slow_start = True
        self._next_probe = 0.0
        self._opened = 0  # chunks asked at once before the first response (open_at_once)

    def _set(self, now: float, size: int) -> int:
        size = max(1, min(size, self.ceiling))
        if size != self.size:
            self._prev = self.size if size > self.size else None
            self.size = size
            self._changed_at = now
        return self.size

    def open_at_once(self, most: int) -> int:
        """How many chunks to ask before any response when the size is unknown: the start
        ``first_response`` chooses for a long round trip (half the ceiling), at most ``most``;
        a long round trip is what makes waiting for the first answer costly. An object smaller
        than those chunks costs their few extra requests (answered 416, or cancelled once the
        size is known)."""
        self._opened = max(self.size, min(self.ceiling // 2, most))
        return self._opened

    def first_response(self, now: float, size: int | None, chunk_size: int, ttfb: float) -> int:
        """The first response came: choose the start from what it told instead of ramping from 2.

        Every slow-start step costs a round trip (new connections have no bytes before it)
        plus ``settle`` before its sample counts, at a fraction of the link. When the round trip
        is long against that settle time and the object has the chunks to keep more connections
        busy, open half the ceiling at once: only the last doubling is still tested (and given
        back if it did not pay). A short round trip makes the ramp cheap, and an object of a
        few chunks cannot use more connections than it has chunks. Once the server pushed back
        (429/503), nothing grows here. Chunks already asked at once (``open_at_once``) are in
        flight anyway: the start is at least that many, so the samples measure what runs."""
        if not self._slow_start or size is None or chunk_size <= 0:
            return self.size
        chunks = -(-size // chunk_size)
        start = max(self.size, self._opened)
        if ttfb >= 2 * self.settle:
            start = max(start, self.ceiling // 2)
        return self._set(now, max(1, min(start, chunks, self.ceiling)))

    def observe(self, now: float, rate: float, reading: int, may_grow: bool = True) -> int:
        """One sample: ``rate`` bytes/s over the last interval with ``reading`` bodies in flight.
        ``may_grow`` False: the consumer did not wait for bytes in that interval, so more
        connections could not have made it faster; the sample counts, the window does not grow."""
        if self._changed_at is None:
            self._changed_at = now
        if now - self._changed_at < self.settle or reading < self.size:
            return self.size
        self._rate_at[self.size] = rate
        prev = self._prev
        if prev is not None and prev in self._rate_at:
            if rate < self._rate_at[prev] * self.gain:
                # The last step did not pay: go back, stop doubling, probe gently later.
                self._slow_start = False
                self._prev = None
                self._next_probe = now + self.probe_every
                return self._set(now, prev) if rate < self._rate_at[prev] * 1.05 else self.size
            self._prev = None
        if self.size >= self.ceiling or not may_grow:
            return self.size
        if self._slow_start:
            return self._set(now, self.size * 2)
        if now >= self._next_probe:
            self._next_probe = now + self.probe_every
            return self._set(now, self.size + 1)
        return self.size

    def consumer_bound(self, now: float, consumer_rate: float, per_connection: float | None) -> int:
        """The consumer, not the link, is the limit: it leaves bytes waiting while it takes
        ``consumer_rate`` bytes/s. More connections (and the read-ahead that follows the window)
        would only hold more memory, so shrink to the connections that rate needs with
        ``headroom`` (one fewer when no connection's rate is known yet), never grow here. The
        engine stops feeding ``observe`` while the consumer is the limit, so growth resumes,
        from the smaller size and one connection per ``probe_every``, only once samples show
        the network as the limit again."""
        self._prev = None
        self._slow_start = False  # afterwards probe one connection at a time, not double
        self._next_probe = now + self.probe_every
        if per_connection is None or per_connection <= 0:
            need = self.size - 1
        else:
            need = -(-int(consumer_rate * self.headroom) // max(1, int(per_connection)))
        return self._set(now, max(1, min(self.size, need)))

    def push_back(self, now: float) -> int:
        """The server said 429/503: one connection fewer, no doubling any more, and no
        probing for a while. Additive, not halving: a lossy CDN answers the odd 503
        whatever the load, and halving on each would starve a healthy link."""
        self._slow_start = False
        self._prev = None
        self._next_probe = now + self.probe_every
        return self._set(now, max(1, self.size - 1))


def with_query_param(url: str, name: str, value: str) -> str:
    """``url`` with query parameter ``name`` set to ``value`` (replacing any), the rest untouched."""
    parts = urlsplit(url)
    kept = [p for p in parts.query.split("&") if p and p.split("=", 1)[0] != name]
    query = "&".join([*kept, f"{name}={value}"])
    return parts._replace(query=query).geturl()
