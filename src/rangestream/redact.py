"""Masking of secrets in URLs before they reach a log line, an error or a summary.

Signed CDN URLs carry their authority in query values (googlevideo's ``sig``,
``lsig``, ``n``; S3's ``X-Amz-Signature``; Akamai's ``hdnts=exp=...~hmac=...``;
generic ``token``/``key``), separated by ``&`` or ``;``, and proxy URLs carry
credentials in their userinfo. Anything that may be shown to a person goes
through :func:`redact_url` (one URL) or :func:`redact_text` (free text, e.g. an
exception's message or a command's output) first.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

MASK = "REDACTED"

# Exact names that googlevideo and common signers use for secrets or client identity.
_SECRET_NAMES = frozenset({"sig", "lsig", "n", "ip", "signature", "pot", "cpn"})
# Any name that looks like a credential.
_SECRET_PATTERN = re.compile(r"(key|token|sign|secret|auth|password|credential|session|hmac|hdnt)", re.I)
# Query pairs: servers split on ";" as well as "&" (the W3C's old recommendation, Java and
# many CDNs), so a "...;sig=VALUE" pair is as secret as "...&sig=VALUE".
_QUERY_PAIR = re.compile(r"(^|[&;])([^=&;]*)=([^&;]*)")
# Path parameters ("/file.mp4;sig=VALUE/...").
_PATH_PARAM = re.compile(r";([^=/;?#]*)=([^/;?#]*)")
# Akamai token bodies ("exp=...~acl=...~hmac=VALUE") wherever they appear (a cookie, a path).
_HMAC = re.compile(r"(?<![\w-])(hmac=)[^\s&;\"'<>,~/?#]+", re.I)


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
        return _mask_pairs_in_text(re.sub(r"//[^/@\s]*@", f"//{MASK}@", url))
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
    path = _PATH_PARAM.sub(lambda m: f";{m[1]}={MASK}" if _secret_name(m[1]) else m[0], path)
    # The query's own text is kept (not re-encoded); only secret values are replaced.
    query = _QUERY_PAIR.sub(lambda m: f"{m[1]}{m[2]}={MASK}" if _secret_name(m[2]) else m[0], parts.query)
    return _HMAC.sub(rf"\1{MASK}", urlunsplit((parts.scheme, netloc, path, query, parts.fragment)))


def _secret_name(raw: str) -> bool:
    return is_secret_param(unquote_plus(raw))


# name=value pairs anywhere in free text (yt-dlp names a generic video after its URL's
# last path part *with* its query, so secrets appear outside any http:// URL).
_PAIR_IN_TEXT = re.compile(r"(?<![\w-])([A-Za-z_][\w.-]*)=([^&\s\"'<>;,]+)")
_URL_IN_TEXT = re.compile(r"[a-z][a-z0-9+.-]*://[^\s\"'<>]+", re.I)


def redact_text(text: str) -> str:
    """``text`` with every URL redacted and every secret-named ``name=value`` masked."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    return _mask_pairs_in_text(text)


def _mask_pairs_in_text(text: str) -> str:
    text = _HMAC.sub(rf"\1{MASK}", text)
    return _PAIR_IN_TEXT.sub(lambda m: f"{m.group(1)}={MASK}" if is_secret_param(m.group(1)) else m.group(0), text)
