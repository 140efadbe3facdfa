"""The errors of the output layer: a local file that cannot be written (exit 6 in the CLI)."""

from __future__ import annotations

import errno


class LocalIOError(Exception):
    """A local file could not be written/renamed (disk full, permission...): exit 6."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


def local_io_error(e: BaseException, path: str, action: str) -> LocalIOError:
    code = getattr(e, "errno", None)
    reason = getattr(e, "strerror", None) or str(e)
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return LocalIOError(f"disk full: cannot {action} {path} ({reason})", code)
    if code == errno.EFBIG:
        return LocalIOError(f"file too large: cannot {action} {path} ({reason}; a file size limit "
                            f"or the filesystem's maximum)", code)
    return LocalIOError(f"cannot {action} {path}: {reason}", code)


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "?"
    n = float(n)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
