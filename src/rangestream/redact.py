"""Masking of secrets in URLs before they reach a log line, an error or a summary.

Signed CDN URLs carry their authority in query values (googlevideo's ``sig``,
``lsig``, ``n``; S3's ``X-Amz-Signature``; generic ``token``/``key``), and proxy
URLs carry credentials in their userinfo. Anything that may be shown to a person
goes through :func:`redact_url` first.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "REDACTED"

# Exact names that googlevideo and common signers use for secrets or client identity.
_SECRET_NAMES = frozenset({"sig", "lsig", "n", "ip", "signature", "pot", "cpn"})
# Any name that looks like a credential.
_SECRET_PATTERN = re.compile(r"(key|token|sign|secret|auth|password|credential|session)", re.I)


def is_secret_param(name: str) -> bool:
    return name.lower() in _SECRET_NAMES or bool(_SECRET_PATTERN.search(name))


def redact_url(url: str | None) -> str:
    """Return ``url`` with userinfo and secret-looking query values masked.

    Never raises: a string that does not parse as a URL is returned with any
    ``user:pass@`` part masked, so a bad input still cannot leak a secret.
    """
    if url is None:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@\s]*@", f"//{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@" + netloc.rsplit("@", 1)[1]
    path = parts.path
    if "/videoplayback/" in path:
        # googlevideo's path form carries the same pairs as /name/value/ segments.
        segs = path.split("/")
        for i in range(len(segs) - 1):
            if segs[i] and is_secret_param(segs[i]):
                segs[i + 1] = MASK
        path = "/".join(segs)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, MASK if is_secret_param(k) else v) for k, v in pairs], safe="/,:"
        )
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


# name=value pairs anywhere in free text (yt-dlp names a generic video after its URL's
# last path part *with* its query, so secrets appear outside any http:// URL).
_PAIR_IN_TEXT = re.compile(r"(?<![\w-])([A-Za-z][\w.-]*)=([^&\s\"'<>;,]+)")
_URL_IN_TEXT = re.compile(r"[a-z][a-z0-9+.-]*://[^\s\"'<>]+", re.I)


def redact_text(text: str) -> str:
    """``text`` with every URL redacted and every secret-named ``name=value`` masked."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    return _PAIR_IN_TEXT.sub(lambda m: f"{m.group(1)}={MASK}" if is_secret_param(m.group(1)) else m.group(0), text)
