"""The sidecar ``FILE.part.json``: read without following symlinks, bounded, every field
validated before use (it may have been tampered with); replaced atomically."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..plan import url_param
from ..redact import is_secret_param
from .errors import human_bytes
from .spans import merged

SIDECAR_VERSION = 1


MAX_SIDECAR_BYTES = 1 << 20  # a real one lists a few spans per connection: ~30 bytes each


MAX_SIDECAR_SPANS = 4096


MAX_VALIDATOR_CHARS = 1024


SIDECAR_SUFFIX = ".part.json"


class SidecarInvalid(ValueError):
    """The sidecar cannot be trusted; the message says why (shown with "starting over")."""


def _no_floats(text: str) -> Any:
    raise SidecarInvalid(f"a number that is not an integer ({text[:40]})")


def read_sidecar(path: str) -> dict[str, Any]:
    """The sidecar's JSON object, read without following a symlink and bounded in size;
    only integers are accepted as numbers (``1e400``, ``NaN`` and ``1.5`` are refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise SidecarInvalid(f"it cannot be opened ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SidecarInvalid("it is not a regular file")
        raw = f.read(MAX_SIDECAR_BYTES + 1)
    if len(raw) > MAX_SIDECAR_BYTES:
        raise SidecarInvalid(f"it is larger than {human_bytes(MAX_SIDECAR_BYTES)}")
    import json  # imported by the first sidecar read or save, not by an ``-o -`` start-up

    try:
        data = json.loads(raw.decode("utf-8"), parse_float=_no_floats, parse_constant=_no_floats)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise SidecarInvalid(f"it is not valid JSON ({e})") from None
    except ValueError as e:  # an integer too long to convert, or _no_floats
        raise SidecarInvalid(str(e)[:200]) from None
    if not isinstance(data, dict):
        raise SidecarInvalid("it is not a JSON object")
    return data


def _int_field(d: dict[str, Any], key: str, *, least: int, most: int | None = None) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < least or (most is not None and v > most):
        bound = f"{least}..{most}" if most is not None else f">= {least}"
        raise SidecarInvalid(f"{key} must be an integer {bound}, not {str(v)[:40]}")
    return v


def _str_field(d: dict[str, Any], key: str) -> str | None:
    v = d.get(key)
    if v is not None and (not isinstance(v, str) or len(v) > MAX_VALIDATOR_CHARS):
        raise SidecarInvalid(f"{key} must be a short string")
    return v


def _done_field(d: dict[str, Any], size: int) -> list[list[int]]:
    done = d.get("done")
    if not isinstance(done, list):
        raise SidecarInvalid("done must be a list of [start, stop] spans")
    if len(done) > MAX_SIDECAR_SPANS:
        raise SidecarInvalid(f"it lists {len(done)} spans (at most {MAX_SIDECAR_SPANS})")
    for i, span in enumerate(done):
        if (not isinstance(span, list) or len(span) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in span)):
            raise SidecarInvalid(f"done[{i}] is not a pair of integers")
        a, b = span
        if not 0 <= a < b <= size:
            raise SidecarInvalid(f"done[{i}] = [{a}, {b}] is not within 0 <= start < stop <= size ({size})")
    return merged(done)


# Query parameters that change each time the same object's URL is signed (besides the ones
# rangestream.redact treats as secrets: sig, Signature, X-Amz-Signature, token, ...).
_EXPIRY_PARAMS = frozenset({
    "expire", "expires", "exp", "expiry", "expiration", "policy", "md5",
    "x-amz-date", "x-amz-expires", "x-amz-algorithm", "x-goog-date", "x-goog-expires", "x-goog-algorithm",
})


def url_identity(url: str, *, exact: bool = False) -> tuple[str, ...]:
    """What names the object in a URL, across re-signing and refreshes: googlevideo's id and itag
    (its host and signature change every time), else the scheme, host, port and path; with
    ``exact`` (a sidecar without validators: the URL is all that ties it to the object) also the
    query, apart from its signature and expiry parameters, in any order."""
    parts = urlsplit(url)
    segs = parts.path.split("/")
    if "videoplayback" in segs:
        after = segs[segs.index("videoplayback") + 1:]
        path_params = dict(zip(after[::2], after[1::2], strict=False))  # the /name/value/ path form
        return ("videoplayback", url_param(url, "id") or path_params.get("id", ""),
                url_param(url, "itag") or path_params.get("itag", ""))
    scheme = parts.scheme.lower()
    try:
        port = str(parts.port or {"http": 80, "https": 443}.get(scheme, 0))
    except ValueError:  # not a number: compared as written
        port = parts.netloc.rpartition(":")[2]
    key = (scheme, (parts.hostname or "").lower(), port, parts.path)
    if not exact:
        return key
    kept = sorted(f"{name}={value}" for name, value in parse_qsl(parts.query, keep_blank_values=True)
                  if not is_secret_param(name) and name.lower() not in _EXPIRY_PARAMS)
    return (*key, *kept)


@dataclass
class SidecarState:
    url: str
    size: int
    etag: str | None
    last_modified: str | None
    chunk_size: int
    done: list[list[int]]
    lmt: str | None = None

    @classmethod
    def parse(cls, d: dict[str, Any]) -> SidecarState:
        """Validated fields, or :class:`SidecarInvalid` saying which one is wrong."""
        if d.get("version") != SIDECAR_VERSION:
            raise SidecarInvalid(f"unknown version {str(d.get('version'))[:20]}")
        if d.get("size") is None:
            raise SidecarInvalid("the object's size was unknown when it was started")
        size = _int_field(d, "size", least=1)  # a 0-byte object has nothing to resume
        url = _str_field(d, "url")
        if not url:
            raise SidecarInvalid("it names no URL")
        return cls(url=url, size=size, etag=_str_field(d, "etag"), last_modified=_str_field(d, "last_modified"),
                   chunk_size=_int_field(d, "chunk_size", least=1), done=_done_field(d, size),
                   lmt=_str_field(d, "lmt"))

    @classmethod
    def load(cls, path: str) -> SidecarState:
        return cls.parse(read_sidecar(path))


def write_file_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text``: written to a fresh file in the same directory (never a
    predictable name someone could plant a symlink at), fsynced, then renamed over."""
    directory, base = os.path.split(os.path.abspath(path))
    fd, tmp = _fresh_file(directory, f".{base[:64]}.", ".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fresh_file(directory: str, prefix: str, suffix: str) -> tuple[int, str]:
    """A new file (fd, path) under a random name, made as ``tempfile.mkstemp`` makes it: created
    exclusively, no symlink followed, mode 0600. Not tempfile itself: it would import shutil, bz2,
    lzma and random into every ``get -o FILE``'s start-up for these few lines."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):  # 48 random bits: a name already taken is the rare exception
        path = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", directory)
