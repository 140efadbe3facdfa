"""Signed links: an HMAC-SHA256 over the endpoint, every query parameter and an expiry.

A link ``/stream?url=U&exp=1700000000&sig=S`` is valid until ``exp`` (Unix seconds)
when ``S`` is the signature of the path, ``exp`` and all other parameters (names and
values, in sorted order; ``sig`` and a bearer ``token`` excluded). Changing, adding
or removing any parameter, or the path, breaks the signature. A name given twice is
refused (signing and verifying): the endpoints read a name's first value, and sorting
would let the order of two values be swapped under one signature.

    rangestream sign URL --key KEY --base http://HOST:PORT [--expires SECONDS]
    rangestream sign --video URL --audio URL --key KEY --base http://HOST:PORT [--format mkv]
    rangestream sign PAGE_URL --endpoint watch --key KEY --base ...

prints the signed link as the last line of stdout.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import sys
import time
from collections.abc import Iterable
from urllib.parse import quote, urlencode, urlsplit

from ..redact import redact_url

SIG, EXP = "sig", "exp"
_UNSIGNED = ("sig", "token")  # never covered: the signature itself, and the operators' bearer token

MAX_EXP_DIGITS = 12  # verify() refuses a longer exp: a link must not be valid for ever

# What verify() returns.
VALID, UNSIGNED, FORGED, EXPIRED = "valid", "unsigned", "forged", "expired"


def _canonical(path: str, pairs: Iterable[tuple[str, str]]) -> bytes:
    body = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}"
                    for k, v in sorted((k, v) for k, v in pairs if k not in _UNSIGNED))
    return f"{path}\n{body}".encode("utf-8", "surrogateescape")


def _repeated(pairs: list[tuple[str, str]]) -> set[str]:
    """Names given more than once (a bearer ``token`` aside: it is not signed)."""
    seen: set[str] = set()
    repeated = set()
    for k, _ in pairs:
        if k in seen and k != "token":
            repeated.add(k)
        seen.add(k)
    return repeated


def signature(key: str, path: str, pairs: Iterable[tuple[str, str]]) -> str:
    mac = hmac.new(key.encode("utf-8", "surrogateescape"), _canonical(path, pairs), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def sign(key: str, path: str, params: Iterable[tuple[str, str]], *, expires: float = 3600,
         now: float | None = None) -> str:
    """The query string (without ``?``) of a link to ``path`` valid for ``expires`` seconds."""
    pairs = [(k, v) for k, v in params if k not in (SIG, EXP)]
    if _repeated(pairs):
        raise ValueError(f"a signed link gives each parameter once ({', '.join(sorted(_repeated(pairs)))} repeated)")
    pairs.append((EXP, str(int((time.time() if now is None else now) + expires))))
    pairs.append((SIG, signature(key, path, pairs)))
    return urlencode(pairs, quote_via=quote, safe="")


def verify(key: str, path: str, pairs: Iterable[tuple[str, str]], *, now: float | None = None) -> str:
    """``VALID``, ``UNSIGNED`` (no ``sig``/``exp`` at all), ``FORGED`` (wrong, altered,
    malformed) or ``EXPIRED``. ``pairs``: the query's (name, value) pairs, repeats kept
    (``request.query.items()``)."""
    pairs = list(pairs)
    sigs = [v for k, v in pairs if k == SIG]
    exps = [v for k, v in pairs if k == EXP]
    if not sigs and not exps:
        return UNSIGNED
    if (len(sigs) != 1 or len(exps) != 1 or not exps[0].isascii() or not exps[0].isdigit()
            or len(exps[0]) > MAX_EXP_DIGITS):
        return FORGED
    if _repeated(pairs):
        return FORGED
    if not hmac.compare_digest(sigs[0].encode("utf-8", "surrogateescape"),
                               signature(key, path, pairs).encode("ascii")):
        return FORGED
    if int(exps[0]) < (time.time() if now is None else now):
        return EXPIRED
    return VALID


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rangestream sign",
                                description="Print a signed link to a `rangestream serve --signing-key` service.")
    p.add_argument("url", nargs="?", metavar="URL",
                   help="the upstream URL (for /stream) or page URL (--endpoint watch)")
    p.add_argument("--video", metavar="URL", help="with --audio: a /mux link")
    p.add_argument("--audio", metavar="URL")
    p.add_argument("--format", choices=["mp4", "webm", "mkv"], help="/mux container")
    p.add_argument("--endpoint", choices=["stream", "watch"], default="stream",
                   help="for URL: /stream (default) or /watch (a page URL)")
    p.add_argument("--key", default=os.environ.get("RANGESTREAM_SIGNING_KEY") or None,
                   help="the service's signing key (default $RANGESTREAM_SIGNING_KEY)")
    p.add_argument("--base", required=True, metavar="http://HOST:PORT", help="the service's address")
    p.add_argument("--expires", type=int, default=3600, metavar="SECONDS", help="valid for (default 3600)")
    return p


def link(key: str, base: str, path: str, params: list[tuple[str, str]], expires: int) -> str:
    return f"{base.rstrip('/')}{path}?{sign(key, path, params, expires=expires)}"


def sign_main(argv: list[str] | None = None) -> int:
    """``rangestream sign``: exit 0 with the link on stdout, 2 on bad usage."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("--key KEY (or $RANGESTREAM_SIGNING_KEY) is required")
    if args.expires < 1:
        parser.error("--expires must be >= 1")
    if len(str(int(time.time()) + args.expires)) > MAX_EXP_DIGITS:  # int: no float overflow
        parser.error("--expires is too far in the future: the service would refuse the link")
    base = urlsplit(args.base)
    if base.scheme not in ("http", "https") or not base.netloc or base.query or base.fragment:
        parser.error("--base must be http(s)://HOST:PORT[/PREFIX] (no ?query or #fragment), "
                     f"not {redact_url(args.base)!r}")
    for given in (args.url, args.video, args.audio):
        if given is not None and urlsplit(given).scheme.lower() not in ("http", "https"):
            parser.error(f"only http(s) URLs can be signed: {redact_url(given)!r}")
    if (args.video is None) != (args.audio is None):
        parser.error("--video and --audio go together")
    if args.video is not None:
        if args.url is not None:
            parser.error("give either URL or --video/--audio, not both")
        params = [("video", args.video), ("audio", args.audio)]
        if args.format:
            params.append(("format", args.format))
        print(link(args.key, args.base, "/mux", params, args.expires))
        return 0
    if args.url is None:
        parser.error("give URL, or --video URL --audio URL")
    print(link(args.key, args.base, f"/{args.endpoint}", [("url", args.url)], args.expires))
    return 0


if __name__ == "__main__":
    sys.exit(sign_main())
