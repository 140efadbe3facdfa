"""Per-app state shared by the middleware and the handlers: the guard, the shared
client, the token and the stream slots."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ..client import Client
from .guard import Guard, UpstreamRefused
from .options import ServerOptions
from .replies import Reply


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


class State:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.guard = Guard(allow_private=options.allow_private, allow_hosts=options.allow_hosts)
        self.client: Client | None = None
        self.active = 0
        self._token_digest = _digest(options.token) if options.token else None

    def authorized(self, request: web.Request) -> bool:
        if self._token_digest is None:
            return True
        given = None
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            given = value.strip()
        elif "token" in request.query:
            given = request.query["token"]
        return given is not None and hmac.compare_digest(_digest(given), self._token_digest)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.active >= self.options.max_streams:
            raise Reply(503, f"busy: {self.options.max_streams} streams already running; retry later",
                        {"Retry-After": str(self.options.retry_after)})
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    async def upstream(self, request: web.Request, name: str) -> str:
        raw = request.query.get(name, "").strip()
        if not raw:
            raise Reply(400, f"missing ?{name}= (an http(s) upstream URL)")
        try:
            parts = urlsplit(raw)
            scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
        except ValueError:
            raise Reply(400, f"?{name}= is not a valid URL") from None
        if scheme not in ("http", "https"):
            raise Reply(400, f"?{name}= must be an http(s) URL")
        if not host:
            raise Reply(400, f"?{name}= has no host")
        try:
            await self.guard.check(host, port or (443 if scheme == "https" else 80))
        except UpstreamRefused as e:
            raise Reply(403, f"{e.reason} (the server refuses non-public upstreams)") from None
        except OSError:
            raise Reply(502, f"cannot resolve the upstream host {host}") from None
        return raw

    def open_stream(self, url: str, **options: Any) -> Any:
        assert self.client is not None
        return self.client.open_stream(url, **options)


STATE: web.AppKey[State] = web.AppKey("rangestream_state", State)
