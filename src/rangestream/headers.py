"""Request headers and cookies that CDNs accept: pure, no network.

:func:`headers_for` builds the headers of one request from a per-URL default
profile with the user's headers on top:

* a desktop Chrome profile (User-Agent, Accept, Accept-Language), plus
  ``Origin``/``Referer: https://www.youtube.com`` for ``*.googlevideo.com``,
  which is what the YouTube web player sends;
* the iOS YouTube app's User-Agent when the URL was issued to that client
  (``c=IOS``): googlevideo checks that the client asking matches the client the
  URL was signed for. The app sends no ``Origin``/``Referer``, so neither do we;
* ``Accept-Encoding: identity`` always, whatever the user asked: ranges are byte
  offsets into the stored representation, never into a compressed one.

Header names are matched case-insensitively; a user header set to ``None``
removes the default of that name.

:func:`is_page_url` tells a YouTube page URL (resolved with yt-dlp) from a stream URL.

:func:`load_cookies` reads a Netscape-format cookies file (as yt-dlp and curl
write them) and :func:`cookie_header` picks the cookies a URL may receive
(domain, path, secure flag and expiry, by :mod:`http.cookiejar`'s rules).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from .errors import RangestreamError

if TYPE_CHECKING:
    import http.cookiejar

# http.cookiejar (with the urllib.request, http.client and email packages it pulls in) is
# imported only when cookies are used (--cookies, cookies_file=): a plain download's start-up
# would otherwise spend more on it than on any module of rangestream.

__all__ = ["CHROME_USER_AGENT", "IOS_USER_AGENT", "headers_for", "is_page_url", "load_cookies", "cookie_header",
           "store_cookies", "add_cookies"]

CHROME_USER_AGENT = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                     "(KHTML, like Gecko) Chrome/141.0.0.0 Safari/537.36")
IOS_USER_AGENT = "com.google.ios.youtube/19.45.4 (iPhone16,2; U; CPU iOS 18_1_0 like Mac OS X;)"
YOUTUBE_ORIGIN = "https://www.youtube.com"

_BROWSER = {
    "User-Agent": CHROME_USER_AGENT,
    "Accept": "*/*",
    "Accept-Language": "en-US,en;q=0.9",
}


_PAGE_HOSTS = ("youtube.com", "youtu.be", "youtube-nocookie.com")


def is_page_url(url: str) -> bool:
    """A YouTube page (watch, shorts, youtu.be...), not a googlevideo stream URL: resolved with
    yt-dlp (``rangestream.refresh``), which a direct URL's download never has to import."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    return any(host == h or host.endswith("." + h) for h in _PAGE_HOSTS)


def _is_googlevideo(host: str) -> bool:
    return host == "googlevideo.com" or host.endswith(".googlevideo.com")


def _client_name(query: str) -> str | None:
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "c":
            return value.upper()
    return None


def default_headers(url: str) -> dict[str, str]:
    """The profile for ``url`` before the user's headers (see the module docstring)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        query = parts.query
    except ValueError:
        host, query = "", ""
    out = dict(_BROWSER)
    if _client_name(query) == "IOS":
        out["User-Agent"] = IOS_USER_AGENT
    elif _is_googlevideo(host):
        out["Origin"] = YOUTUBE_ORIGIN
        out["Referer"] = YOUTUBE_ORIGIN + "/"
    return out


def merge_headers(*layers: Mapping[str, str | None] | None) -> dict[str, str]:
    """Merge header dicts case-insensitively, later layers winning; ``None`` values remove."""
    out: dict[str, str] = {}
    names: dict[str, str] = {}  # lower-case name -> the spelling kept in ``out``
    for layer in layers:
        for name, value in (layer or {}).items():
            old = names.pop(name.lower(), None)
            if old is not None:
                del out[old]
            if value is not None:
                out[name] = value
                names[name.lower()] = name
    return out


def headers_for(url: str, user_headers: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The headers of a request for ``url``: per-URL defaults, ``user_headers`` on top,
    ``Accept-Encoding: identity`` always."""
    return merge_headers(default_headers(url), user_headers, {"Accept-Encoding": "identity"})


# -- cookies ------------------------------------------------------------------

def load_cookies(path: str | os.PathLike[str]) -> http.cookiejar.MozillaCookieJar:
    """Load a Netscape-format cookies file; :class:`RangestreamError` if it cannot be read.

    Session cookies (no expiry, or yt-dlp's expiry ``0``) are kept; expired ones are dropped.
    """
    import http.cookiejar

    jar = http.cookiejar.MozillaCookieJar()
    try:
        # ignore_expires: yt-dlp writes session cookies with expiry 0, which the jar would
        # otherwise drop as expired at load; they are turned into session cookies below.
        jar.load(os.fspath(path), ignore_discard=True, ignore_expires=True)
    except (OSError, http.cookiejar.LoadError, UnicodeDecodeError, ValueError) as e:
        detail = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        if isinstance(e, http.cookiejar.LoadError):
            detail = "not a Netscape-format cookies file"
        raise RangestreamError(f"cannot read cookies file {os.fspath(path)!s}: {detail}") from None
    for cookie in jar:
        if cookie.expires == 0:
            cookie.expires = None
            cookie.discard = True
    jar.clear_expired_cookies()
    return jar


def cookie_header(jar: http.cookiejar.CookieJar, url: str) -> str | None:
    """The ``Cookie`` header value ``jar`` sends to ``url``, or None."""
    import urllib.request

    request = urllib.request.Request(url)
    jar.add_cookie_header(request)
    return request.get_header("Cookie")


def store_cookies(jar: http.cookiejar.CookieJar, url: str, set_cookie: list[str]) -> None:
    """Keep the cookies of a response's ``Set-Cookie`` values by ``jar``'s rules (domain, path,
    expiry) for the next requests to ``url``'s site."""
    import email.message
    import urllib.request

    message = email.message.Message()
    for value in set_cookie:
        message["Set-Cookie"] = value

    class _Response:  # what CookieJar.extract_cookies reads of a response
        def info(self) -> email.message.Message:
            return message

    jar.extract_cookies(_Response(), urllib.request.Request(url))  # type: ignore[arg-type]


def add_cookies(headers: dict[str, str], jar: http.cookiejar.CookieJar | None, url: str) -> dict[str, str]:
    """``headers`` with the cookies ``jar`` sends to ``url``; the caller's own Cookie header goes first."""
    cookies = cookie_header(jar, url) if jar is not None else None
    if cookies:
        mine = next((k for k in headers if k.lower() == "cookie"), None)
        if mine is None:
            headers["Cookie"] = cookies
        else:
            headers[mine] = f"{headers[mine]}; {cookies}"
    return headers
