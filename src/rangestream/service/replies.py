"""Error answers: ``{"error": "..."}`` with a status, upstream URLs and secrets redacted."""

from __future__ import annotations

import re
from collections.abc import Mapping

from aiohttp import web

from ..errors import HTTPStatusError, InvalidURLError, URLExpiredError
from ..redact import redact_text
from .guard import find_refusal


class Reply(Exception):
    """An error answer: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None, *,
                 kind: str | None = None, refusal: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind  # counted in errors_total{kind}
        self.refusal = refusal  # counted in refusals_total{reason} instead
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return json_error(self.status, self.message, self.headers)


# C0/C1 controls and Unicode line/paragraph separators: in a log line they would start a forged line.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def log_safe(text: str) -> str:
    """``text`` (a client's path, query or URL) with control characters escaped (``\\x0a``), so
    what a client sends can never add or rewrite lines in the service's log."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def json_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    text = redact_text(message)
    if len(text) > 400:
        text = text[:397] + "..."
    return web.json_response({"error": text}, status=status,
                             headers={"Cache-Control": "no-store", **(headers or {})})


REFUSED = "upstream refused: a request (or redirect) went to a non-public or disallowed host"


def reply_for(error: BaseException) -> Reply:
    """An engine error as a status and a short, redacted message."""
    text = str(error) or type(error).__name__
    kind = type(error).__name__
    refused = find_refusal(error)
    if refused is not None:
        return Reply(403, REFUSED, refusal=f"upstream_{refused.kind.replace('-', '_')}")
    if isinstance(error, URLExpiredError):
        return Reply(410, f"upstream URL expired or forbidden: {text}", kind=kind)
    if isinstance(error, HTTPStatusError):
        if error.status in (404, 410):
            return Reply(error.status, f"upstream: {text}", kind=kind)
        return Reply(502, f"upstream answered HTTP {error.status}: {text}", kind=kind)
    if isinstance(error, InvalidURLError):
        return Reply(400, f"bad upstream URL: {text}", kind=kind)
    return Reply(502, f"upstream failed: {text}", kind=kind)


def unsatisfiable(size: int | None) -> Reply:
    return Reply(416, "range not satisfiable",
                 {"Content-Range": f"bytes */{size}"} if size is not None else None)
