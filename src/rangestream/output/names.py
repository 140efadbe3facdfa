"""File names derived from URLs and titles, made safe to create."""

from __future__ import annotations

import os
import unicodedata
from urllib.parse import unquote, urlsplit

from ..plan import url_param
from .sidecar import SIDECAR_SUFFIX


def default_output_name(url: str) -> str:
    """Like wget: the last path segment; googlevideo's /videoplayback gets ``ID.EXT``."""
    parts = urlsplit(url)
    name = unquote(parts.path.rsplit("/", 1)[-1])
    if name == "videoplayback":
        ident = url_param(url, "id") or "videoplayback"
        mime = (url_param(url, "mime") or "").lower()
        ext = {"video/mp4": "mp4", "audio/mp4": "m4a", "video/webm": "webm", "audio/webm": "webm"}.get(mime, "bin")
        itag = url_param(url, "itag")
        name = f"{ident}{'.' + itag if itag else ''}.{ext}"
    return safe_file_name(name, "download")


def name_max(directory: str) -> int:
    """The longest file name (bytes) the filesystem takes, less room for ``.part.json``."""
    try:
        limit = os.pathconf(directory or ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    return max(16, min(limit, 255) - len(SIDECAR_SUFFIX))


def safe_file_name(name: str, fallback: str = "download", directory: str = ".") -> str:
    """A derived file name (from a URL or a title) made safe to create: no path separators or
    control characters, no bidi or other format controls (U+202E makes ``gpj.exe`` read as
    ``exe.jpg``), no leading dot, and shortened to the filesystem's limit keeping the extension."""
    name = "".join("_" if c in "/\\" or unicodedata.category(c) == "Cc" else c
                   for c in name if unicodedata.category(c) != "Cf")
    name = name.strip().lstrip(".").strip()
    return fit_name(name or fallback, directory, fallback)


def fit_name(name: str, directory: str = ".", fallback: str = "download", reserve: int = 0) -> str:
    """``name`` shortened to the filesystem's limit (:func:`name_max`) less ``reserve`` bytes,
    keeping its extension."""
    limit = name_max(directory) - reserve
    if len(name.encode()) <= limit:
        return name
    stem, ext = os.path.splitext(name)
    if len(ext.encode()) > 16:
        stem, ext = name, ""
    stem = stem.encode()[: limit - len(ext.encode())].decode("utf-8", errors="ignore").rstrip()
    return (stem or fallback[:16]) + ext


def fit_path(path: str, reserve: int = 0) -> str:
    """``path`` with its file name shortened as :func:`fit_name` does, for the filesystem of its
    directory (or of its nearest existing parent: a template's directories are made later)."""
    parent, name = os.path.split(path)
    directory = os.path.abspath(parent or ".")
    while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)
    return os.path.join(parent, fit_name(name, directory, reserve=reserve))


def is_template(output: str | None) -> bool:
    """``-o '%(title)s.%(ext)s'``: yt-dlp's output template syntax."""
    return output is not None and "%(" in output


class _Fields(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "NA"  # as yt-dlp fills a field it does not have


def render_template(template: str, fields: dict[str, object]) -> str:
    """``template`` filled from ``fields`` (yt-dlp's field names: title, id, ext, playlist_index...).
    Every value is made a safe file name first, so a title cannot add a directory or a control
    character; the template's own ``/`` are the user's directories; the file name is shortened to
    the filesystem's limit keeping its extension. ValueError if the template is malformed."""
    safe = _Fields({k: v if isinstance(v, int) and not isinstance(v, bool) else safe_file_name(str(v), "NA")
                    for k, v in fields.items() if v is not None and v != ""})
    try:
        path = template % safe
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"bad output template {template!r}: {e}") from None
    if not path or path.endswith("/") or os.path.basename(path) in (".", ".."):
        raise ValueError(f"the output template {template!r} gives no file name ({path!r})")
    # Each value fits on its own, but the template may repeat or join them (``%(title)s -
    # %(title)s``): the whole name over the filesystem's limit would fail every download.
    return fit_path(path)
