"""Which bytes of FILE.part are known to be there: sorted, merged ``[start, stop)`` spans."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from ..plan import ByteRange, missing_ranges


class Spans:
    """Sorted, merged, half-open ``[start, stop)`` spans of bytes known to be in FILE.part."""

    def __init__(self, spans: Iterable[tuple[int, int]] | None = None) -> None:
        self._s: list[list[int]] = merged(spans or [])

    @classmethod
    def of(cls, pairs: Iterable[Sequence[int]]) -> Spans:
        """From ``[start, stop]`` pairs, as a sidecar lists them."""
        return cls((a, b) for a, b in pairs)

    def gaps(self, size: int) -> list[ByteRange]:
        """The ranges of ``[0, size)`` still missing."""
        return missing_ranges(size, [(a, b) for a, b in self._s])

    def add(self, a: int, b: int) -> None:
        """Record ``[a, b)``: a binary search and a local merge (pieces arrive in order per chunk,
        so this usually extends one span), never a sort of the whole list."""
        if b <= a:
            return
        s = self._s
        i = bisect.bisect_right(s, a, key=lambda span: span[0])
        if i and s[i - 1][1] >= a:
            i -= 1
            s[i][1] = max(s[i][1], b)
        else:
            s.insert(i, [a, b])
        j = i + 1
        while j < len(s) and s[j][0] <= s[i][1]:
            s[i][1] = max(s[i][1], s[j][1])
            j += 1
        del s[i + 1:j]

    def clip(self, limit: int) -> None:
        self._s = [[a, min(b, limit)] for a, b in self._s if a < limit]

    def total(self) -> int:
        return sum(b - a for a, b in self._s)

    def covers(self, size: int) -> bool:
        return size == 0 or (len(self._s) == 1 and self._s[0][0] == 0 and self._s[0][1] >= size)

    def as_list(self) -> list[list[int]]:
        return [list(x) for x in self._s]

    def __len__(self) -> int:
        return len(self._s)


def merged(spans: Iterable[Sequence[int]]) -> list[list[int]]:
    """One sort, one pass: overlapping and touching spans joined."""
    out: list[list[int]] = []
    for a, b in sorted((a, b) for a, b in spans if b > a):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out
