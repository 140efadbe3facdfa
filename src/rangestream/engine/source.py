"""What is being fetched: the URL (re-resolved by the refresh hook when it expires) and the
validators that pin the object's version (ETag, Last-Modified, the URL's ``lmt``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from ..errors import ObjectChangedError, RangestreamError, URLExpiredError, redacted
from ..plan import size_from_url, url_param
from ..redact import redact_text, redact_url
from .response import check_validators
from .slot import Terminal
from .stats import Stats

log = logging.getLogger("rangestream")

RefreshHook = Callable[[str], Awaitable[str]]


class Source:
    def __init__(self, url: str, *, refresh: RefreshHook | None, refreshes: int, stats: Stats,
                 expect_validators: Mapping[str, str | None] | None) -> None:
        self.url = url
        self.gen = 0  # bumped by every refresh: a chunk whose URL expired knows if another refreshed it
        self._lmt = url_param(url, "lmt")
        self._hook = refresh
        self._refreshes = refreshes
        self._lock = asyncio.Lock()
        self._stats = stats
        self.etag: str | None = None
        self.last_modified: str | None = None
        if expect_validators:
            self.etag = expect_validators.get("etag") or None
            self.last_modified = expect_validators.get("last_modified") or None

    def if_range(self) -> str | None:
        """The ``If-Range`` value once a validator is known (a weak ETag cannot serve)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified or None

    def unverified(self, headers: Mapping[str, str], if_range_sent: str | None) -> bool:
        """A response to a request sent before any validator was known (no ``If-Range``) that
        shows none of the validators pinned since: nothing says it is the same version, and
        ``If-Range`` (which would have made the server say so) was not there to ask."""
        pinned = self.if_range()
        if pinned is None or if_range_sent:
            return False
        etag, lm = headers.get("ETag") or None, headers.get("Last-Modified") or None
        return not ((self.etag and etag) or (self.last_modified and lm))

    def changed(self, headers: Mapping[str, str]) -> str | None:
        """Why a response's validators are another version's (None if they are not). Each
        validator is pinned the first time a response shows it (an edge node may send none)
        and every later response is held to it; ``If-Range`` carries it from then on."""
        etag, lm = headers.get("ETag") or None, headers.get("Last-Modified") or None
        why = check_validators(self.etag, self.last_modified, etag, lm)
        if why is None:
            if not self.etag or (self.etag.startswith("W/") and etag and not etag.startswith("W/")):
                self.etag = etag or self.etag  # a strong tag of the same version can serve If-Range
            self.last_modified = self.last_modified or lm
        return why

    async def refresh(self, failed_gen: int, status: int, attempts: int, size: int | None) -> None:
        """The URL of generation ``failed_gen`` got 401/403: get a new one (once for all chunks)."""
        async with self._lock:
            if self.gen != failed_gen:
                return  # another chunk already refreshed the URL
            new_url = await self._new_url(status, attempts)
            new_lmt, new_clen = url_param(new_url, "lmt"), size_from_url(new_url)
            if (self._lmt and new_lmt and new_lmt != self._lmt) or (
                    size is not None and new_clen is not None and new_clen != size):
                raise Terminal(ObjectChangedError(
                    "the refreshed URL points at a different version of the object (lmt/clen changed)",
                    url=new_url, attempts=attempts, total=new_clen if new_clen != size else None))
            self._stats.refreshes += 1
            self.url = new_url
            self.gen += 1
            log.info("refreshed expired URL (HTTP %d): now %s", status, redact_url(new_url))

    async def _new_url(self, status: int, attempts: int) -> str:
        if self._hook is None:
            raise Terminal(URLExpiredError(
                status, f"HTTP {status}: the URL is expired or forbidden and no refresh hook was given",
                url=self.url, attempts=attempts))
        if self._stats.refreshes >= self._refreshes:
            raise Terminal(URLExpiredError(
                status, f"HTTP {status} again after {self._stats.refreshes} URL refreshes",
                url=self.url, attempts=attempts))
        try:
            new_url = await self._hook(self.url)
        except Exception as e:
            # The hook's text (a signed URL it tried, a command's output, a proxy URL) may hold
            # secrets, and so may its cause chain, which a traceback (--debug) prints: show
            # only redacted copies of both.
            what = redact_text(str(e) if isinstance(e, RangestreamError) else f"{type(e).__name__}: {e}")
            raise Terminal(URLExpiredError(status, f"URL refresh failed: {what}", url=self.url,
                                           attempts=attempts), cause=redacted(e)) from None
        if not isinstance(new_url, str) or not new_url.lower().startswith(("http://", "https://")):
            raise Terminal(URLExpiredError(status, "URL refresh hook returned no usable URL",
                                           url=self.url, attempts=attempts))
        return new_url
