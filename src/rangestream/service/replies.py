"""Error answers: ``{"error": "..."}`` with a status, upstream URLs and secrets redacted."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from ..errors import HTTPStatusError, InvalidURLError, StreamError, URLExpiredError
from ..redact import redact_text
from .guard import find_refusal


class Reply(Exception):
    """An error answer: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return json_error(self.status, self.message, self.headers)


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
    if find_refusal(error) is not None:
        return Reply(403, REFUSED)
    if isinstance(error, URLExpiredError):
        return Reply(410, f"upstream URL expired or forbidden: {text}")
    if isinstance(error, HTTPStatusError):
        if error.status in (404, 410):
            return Reply(error.status, f"upstream: {text}")
        return Reply(502, f"upstream answered HTTP {error.status}: {text}")
    if isinstance(error, InvalidURLError):
        return Reply(400, f"bad upstream URL: {text}")
    if isinstance(error, StreamError):
        return Reply(502, f"upstream failed: {text}")
    return Reply(502, f"upstream failed: {text}")


def unsatisfiable(size: int | None) -> Reply:
    return Reply(416, "range not satisfiable",
                 {"Content-Range": f"bytes */{size}"} if size is not None else None)
