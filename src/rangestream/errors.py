"""The one exception hierarchy of rangestream.

Everything the library raises on purpose derives from :class:`RangestreamError`.
Terminal transfer errors (:class:`StreamError` and below) say which URL failed
(secrets redacted), how many bytes of the object had been delivered, and how
many attempts were made, so a caller can tell a user exactly how far it got.

:class:`TransientError` is what a single attempt fails with when the failure is
worth retrying; the engine only lets it escape wrapped in
:class:`RetriesExhaustedError` (as its ``__cause__``).
"""

from __future__ import annotations

from typing import TypedDict, Unpack

from .redact import redact_text, redact_url

__all__ = [
    "RangestreamError",
    "InvalidURLError",
    "StreamError",
    "HTTPStatusError",
    "URLExpiredError",
    "RetriesExhaustedError",
    "ObjectChangedError",
    "TransientError",
    "TLSError",
    "ProxyError",
    "TooManyRedirectsError",
    "MuxError",
    "RedactedError",
    "redacted",
]


class RangestreamError(Exception):
    """Base class of every error rangestream raises."""


class InvalidURLError(RangestreamError, ValueError):
    """The URL cannot be fetched at all (bad scheme, no host, unparsable)."""


class _Where(TypedDict, total=False):
    """:class:`StreamError`'s keyword arguments, passed on by its subclasses."""

    url: str | None
    offset: int | None
    attempts: int | None
    size: int | None


class StreamError(RangestreamError):
    """A transfer stopped for good.

    ``offset`` is the number of bytes of the object delivered to the consumer
    before the failure (every one of them was delivered, in order); ``attempts``
    counts the requests made for the chunk that failed.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        offset: int | None = None,
        attempts: int | None = None,
        size: int | None = None,
    ) -> None:
        self.url = redact_url(url) if url else None
        self.offset = offset
        self.attempts = attempts
        self.size = size
        self.reason = message
        super().__init__(message)

    def __str__(self) -> str:
        # Rendered on demand: the engine fills in ``offset`` when the error reaches
        # the consumer, which is the moment "how far it got" is known for sure.
        parts = [self.reason]
        if self.offset is not None:
            total = f" of {self.size}" if self.size is not None else ""
            parts.append(f"after {self.offset}{total} bytes")
        if self.attempts:
            parts.append(f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}")
        if self.url:
            parts.append(f"url={self.url}")
        return "; ".join(parts)


class HTTPStatusError(StreamError):
    """The server answered with a status that retrying will not fix (404, 410, ...)."""

    def __init__(self, status: int, message: str | None = None, **kw: Unpack[_Where]) -> None:
        self.status = status
        super().__init__(message or f"HTTP {status}", **kw)


class URLExpiredError(HTTPStatusError):
    """401/403 and no way (left) to refresh the URL."""


class RetriesExhaustedError(StreamError):
    """Transient failures (resets, timeouts, 5xx, bad Content-Range...) outlasted the retry policy."""


class ObjectChangedError(StreamError):
    """The object's validators (ETag, Last-Modified, ``lmt``) changed mid-download.

    Continuing would splice two versions of the object together, so the stream
    stops instead. ``status`` is the HTTP status of the response that showed the
    change and ``total`` the object size it reported, when the engine knows them.
    """

    def __init__(self, message: str, *, status: int | None = None, total: int | None = None,
                 **kw: Unpack[_Where]) -> None:
        self.status = status
        self.total = total
        super().__init__(message, **kw)


class TLSError(StreamError):
    """The TLS handshake failed (an untrusted or invalid certificate, a protocol error).

    Retrying does not fix a certificate: trust the server's CA (``cacert=``,
    ``SSL_CERT_FILE``) or, knowingly, turn verification off (``insecure=True``).
    """


class ProxyError(StreamError):
    """The proxy refused to carry the request (HTTP 407: its credentials are missing or wrong)."""

    def __init__(self, message: str, *, status: int | None = None, **kw: Unpack[_Where]) -> None:
        self.status = status
        super().__init__(message, **kw)


class TooManyRedirectsError(StreamError):
    """The server redirected more times than allowed (a redirect loop)."""


class TransientError(RangestreamError):
    """One attempt failed in a way worth retrying. ``retry_after`` is the server's hint, in seconds.
    ``proxy_failed``: the proxy itself failed before the request reached the server (refused,
    reset on connect, a SOCKS or CONNECT failure); a proxy pool moves the download elsewhere."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None,
                 proxy_failed: bool = False) -> None:
        self.retry_after = retry_after
        self.status = status
        self.proxy_failed = proxy_failed
        super().__init__(message)


class MuxError(RangestreamError):
    """Muxing failed. ``input`` names the failing input (``"video"``, ``"audio"``) when one did."""

    def __init__(self, message: str, *, input: str | None = None) -> None:
        self.input = input
        super().__init__(f"{input}: {message}" if input else message)


class RedactedError(RangestreamError):
    """Stands in for an exception whose text may hold secrets (a refresh hook's error, a
    command's output): ``"Type: text"`` with the text through
    :func:`~rangestream.redact.redact_text`, the original's traceback (its frames show code,
    not values), and its causes and notes redacted the same way. ``original_type`` is the
    original's class."""

    original_type: type[BaseException]


def redacted(exc: BaseException) -> RedactedError:
    """A copy of ``exc`` and its whole ``__cause__``/``__context__`` chain safe to print
    (``traceback.print_exception`` shows every link of the chain, so each must be clean)."""
    copies: dict[int, RedactedError] = {}

    def copy(e: BaseException | None, depth: int) -> RedactedError | None:
        if e is None or depth > 32:
            return None
        if id(e) in copies:  # a cycle, or cause and context being the same exception
            return copies[id(e)]
        try:
            text = str(e)
        except Exception:  # noqa: BLE001 - a broken __str__ must not hide the failure
            text = "<unprintable>"
        r = RedactedError(redact_text(f"{type(e).__qualname__}: {text}" if text else type(e).__qualname__))
        copies[id(e)] = r
        r.original_type = type(e)
        r.__traceback__ = e.__traceback__
        notes = getattr(e, "__notes__", None)
        if isinstance(notes, list):
            r.__notes__ = [redact_text(str(n)) for n in notes]
        r.__cause__ = copy(e.__cause__, depth + 1)
        r.__context__ = copy(e.__context__, depth + 1)
        r.__suppress_context__ = e.__suppress_context__
        return r

    result = copy(exc, 0)
    assert result is not None
    return result
