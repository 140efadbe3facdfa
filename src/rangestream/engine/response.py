"""Pure checks of a response's status and headers, each turned into a value (a :data:`Verdict`).

No sockets, no clock (``now``, for a ``Retry-After`` date, is the caller's), no stream state:
what the stream knows comes in as :class:`Known`; what the response teaches it (a size, the
object's end, a total) goes back out in :class:`Body` for the window to apply.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..plan import ByteRange, parse_content_range
from ..retry import Retry

if TYPE_CHECKING:
    from datetime import datetime

Headers = Mapping[str, str]


@dataclass(frozen=True)
class Known:
    """What the stream knows when a response arrives."""

    size: int | None
    size_known: bool  # the size was learned, or is known to be unknowable (no total anywhere)
    to_end: bool  # this chunk may reach the end of an object of unknown size
    query: bool = False  # range_mode "query": the range is in the URL, answered by a 200
    if_range: str | None = None  # the validator the request carried as If-Range


class Learned(enum.Enum):
    NOTHING = "nothing"
    SIZE = "size"  # the first answer of a URL without clen: the size (None: no total)
    SIZE_UNRANGED = "size, Range ignored"  # ...from a 200: the server ignores Range
    END = "end"  # the object of unknown total ends at ``value``
    TOTAL = "total"  # an object of unknown total has one after all


@dataclass(frozen=True)
class Body:
    """Read on: the body spans ``[start, stop)`` of the object."""

    start: int
    stop: int | None
    learned: Learned = Learned.NOTHING
    value: int | None = None  # the size, end or total learned
    take_over: bool = False  # a 200 answered a ranged request: it carries the rest of the object


@dataclass(frozen=True)
class Retryable:
    message: str
    retry_after: float | None = None
    status: int | None = None


@dataclass(frozen=True)
class Expired:
    """401/403: the URL expired (or was never allowed): refresh it."""

    status: int


@dataclass(frozen=True)
class Refused:
    """A status retrying will not fix (404, 410, ...)."""

    status: int


@dataclass(frozen=True)
class Changed:
    """The server reports another version of the object: stop, never mix versions."""

    message: str
    status: int | None = None
    total: int | None = None


Verdict = Body | Retryable | Expired | Refused | Changed


def check_status(status: int, headers: Headers, want: ByteRange, known: Known, retry: Retry,
                 *, now: float) -> Verdict | None:
    """The verdict on a status other than 200/206; None for those (read on: :func:`check_body`)."""
    if status in (401, 403):
        return Expired(status)
    if status in (200, 206):
        return None
    if retry.is_retryable_status(status):
        return Retryable(f"HTTP {status}", retry_after(headers.get("Retry-After"), now), status)
    if status == 416:
        return _unsatisfiable(headers, want, known, now)
    return Refused(status)


def _unsatisfiable(headers: Headers, want: ByteRange, known: Known, now: float) -> Verdict:
    """A 416 for ``want``: the end of the object, its size, a range past the known end (nothing to
    read), a confused answer, or a change."""
    named = unsatisfied_total(headers.get("Content-Range"))
    if named is not None and known.size is not None and named != known.size:
        return _changed(f"HTTP 416 names a total of {named} bytes, not the size {known.size}", 416, named)
    if known.size is not None and want.start >= known.size and named in (None, known.size):
        # Asked before another response told the total: the server agrees the range lies past
        # the end (naming that total, or none: RFC 9110 only says it SHOULD), so the chunk is
        # simply not needed (the window already ends it there).
        return Body(want.start, want.start)
    if named is not None and named > want.start:
        # The server's own total says the byte exists: a confused answer, not the end of the object.
        return Retryable(f"HTTP 416 for byte {want.start} of an object the server says has {named} bytes",
                         retry_after(headers.get("Retry-After"), now), 416)
    if not known.size_known and (want.start == 0 or named is not None):
        # The first answer: the object has ``named`` bytes (an empty one: none), none of them
        # asked for (ranges= wholly past the end): nothing to read.
        return Body(want.start, want.start, Learned.SIZE, named or 0)
    if known.size is None and named is not None and named < want.start:
        return _changed(f"HTTP 416 for byte {want.start}: the server says the object has {named} bytes, "
                        "fewer than it sent", 416, named)
    if known.size is None and (known.to_end or named == want.start):
        return Body(want.start, want.start, Learned.END, want.start)  # unknown total: it ends here
    return Changed(f"HTTP 416: the server no longer has byte {want.start} "
                   f"({headers.get('Content-Range', '')})", 416)


def unsatisfied_total(value: str | None) -> int | None:
    """The total of a 416's ``Content-Range: bytes */N``, or None when it names none."""
    if not value:
        return None
    unit, _, rest = value.strip().partition(" ")
    if unit.lower() != "bytes" or not rest.startswith("*/"):
        return None
    digits = rest[2:].strip()
    return int(digits) if digits.isascii() and digits.isdigit() else None


def check_body(status: int, headers: Headers, want: ByteRange, known: Known) -> Body | Retryable | Changed:
    """A 200 or 206 to a request for ``want``: where its body lies in the object, or why not to read it."""
    length = headers.get("Content-Length")
    clen = int(length) if length is not None and length.isdigit() else None
    if known.query:
        # googlevideo answers range= with a 200 carrying exactly the bytes asked for.
        if status != 200 or clen is None or clen == 0 or (want.stop is not None and clen > len(want)):
            return Retryable(f"HTTP {status} with {clen} bytes for range={want.header()[6:]}")
        return Body(want.start, want.start + clen)
    if status == 200 and known.if_range and not _shows(headers, known.if_range):
        # If-Range answered 200: the server judged the pinned version gone. A 200 that does not
        # show that validator (an edge stripping them) may be another version of the same size.
        return Changed(f"HTTP 200 to If-Range {known.if_range} without that validator: the object "
                       "may have changed on the server; refusing to mix versions", status)
    if clen == 0 and known.size is None and known.to_end and (
            status == 200 or _empty_range(headers.get("Content-Range"), want.start)):
        # Unknown total and an empty 200 at the byte reached: the object ends here. A 206 ends
        # it only if its own Content-Range is empty there ("bytes N-(N-1)/*"); one naming bytes
        # but sending none is a confused answer (Content-Range path: retried).
        learned = Learned.END if known.size_known else Learned.SIZE
        return Body(want.start, want.start, learned, want.start)
    if status == 206:
        return _partial(headers, want, known, clen)
    # 200: the server ignored Range and sends the whole object from byte 0.
    if known.size is not None and clen is not None and clen != known.size:
        return _changed(f"full response of {clen} bytes differs from the size {known.size}", status, clen)
    if not known.size_known:
        return Body(0, clen, Learned.SIZE_UNRANGED, clen)
    if known.size is None and clen is not None:
        return Body(0, clen, Learned.TOTAL, clen, take_over=True)
    return Body(0, clen, take_over=True)


def _empty_range(value: str | None, start: int) -> bool:
    """Whether a 206's Content-Range is the empty range ``bytes start-(start-1)/...``."""
    first, sep, rest = (value or "").strip().removeprefix("bytes").strip().partition("-")
    last = rest.partition("/")[0].strip()
    return bool(sep) and first.isdigit() and last.isdigit() and int(first) == start and int(last) == start - 1


def _partial(headers: Headers, want: ByteRange, known: Known, clen: int | None) -> Body | Retryable | Changed:
    try:
        cr = parse_content_range(headers.get("Content-Range", ""))
    except ValueError as e:
        return Retryable(str(e))
    if cr.start != want.start or (want.stop is not None and cr.stop > want.stop) or cr.stop <= cr.start:
        return Retryable(f"Content-Range {cr.start}-{cr.stop - 1} does not match the requested {want.header()}")
    if known.size is not None and cr.total is not None and cr.total != known.size:
        return _changed(f"Content-Range total {cr.total} differs from the size {known.size}", 206, cr.total)
    if clen is not None and clen != cr.stop - cr.start:
        return Retryable(f"Content-Length {clen} disagrees with Content-Range")
    if not known.size_known:
        return Body(cr.start, cr.stop, Learned.SIZE, cr.total)
    if known.size is None and cr.total is not None:
        return Body(cr.start, cr.stop, Learned.TOTAL, cr.total)
    return Body(cr.start, cr.stop)


def _changed(why: str, status: int, total: int | None) -> Changed:
    """The server reports another size: a new version of the object, not a network fault."""
    return Changed(f"{why}: the object changed on the server; refusing to mix versions", status, total)


def check_validators(known_etag: str | None, known_last_modified: str | None,
                     etag: str | None, last_modified: str | None) -> str | None:
    """Why the validators a response shows are another version's than those known; None if not.
    ETags compare weakly (``W/"a"`` is ``"a"``: a proxy that compresses weakens the tag, the
    version is the same), dates as instants (``GMT`` and ``-0000`` name the same one)."""
    changes = []
    if etag and known_etag and _opaque(known_etag) != _opaque(etag):
        changes.append(f"ETag {known_etag} -> {etag}")
    # Equal texts name one instant: parsed (and the date parser imported) only when they differ.
    if (last_modified and known_last_modified and last_modified != known_last_modified
            and _http_date(known_last_modified) != _http_date(last_modified)):
        changes.append(f"Last-Modified {known_last_modified} -> {last_modified}")
    if changes:
        return f"object changed mid-download ({', '.join(changes)}); refusing to mix versions"
    return None


def _shows(headers: Headers, validator: str) -> bool:
    """Whether the response shows ``validator`` (an ETag, compared weakly, or a date, as an instant)."""
    if validator.strip().startswith(('"', "W/", "w/")):
        etag = headers.get("ETag")
        return bool(etag) and _opaque(etag or "") == _opaque(validator)
    date = headers.get("Last-Modified")
    return bool(date) and _http_date(date or "") == _http_date(validator)


def _opaque(etag: str) -> str:
    etag = etag.strip()
    return etag[2:] if etag[:2] in ("W/", "w/") else etag


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` (delta seconds or an HTTP date) asks to wait; ``now`` is ``time.time()``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, _parsedate(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def _parsedate(value: str) -> datetime:
    # email.utils (and datetime) load at the first date that needs parsing (a Retry-After date,
    # two spellings of Last-Modified): the email package would add to every command's start-up.
    from email.utils import parsedate_to_datetime

    return parsedate_to_datetime(value)


def _http_date(value: str) -> object:
    """The instant an HTTP date names (``-0000`` parses as naive: it is UTC too); else the text."""
    from datetime import UTC

    try:
        when = _parsedate(value)
    except (TypeError, ValueError):
        return value.strip()
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
