"""``--download-archive FILE``: what was already downloaded, one key a line (a URL with its secrets
masked, or ``extractor id`` for a page's video, as yt-dlp writes them). Read once when a run
starts; appended under an exclusive lock and fsynced, so several runs sharing one file never
interleave half lines or lose one."""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from .errors import LocalIOError, local_io_error

MAX_ARCHIVE_BYTES = 64 << 20  # a million lines of ~60 bytes: anything larger is not an archive


class DownloadArchive:
    def __init__(self, path: str) -> None:
        self.path = path
        self._keys: set[str] = set()

    def load(self) -> DownloadArchive:
        """Read the keys (a missing file is an empty archive); blank lines and ``#`` comments skipped."""
        try:
            # Not through a symlink, as add() refuses to append through one: refused now, before
            # any download, not after each one has completed.
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
        except FileNotFoundError:
            return self
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise _symlink_refused(self.path, e.errno) from None
            raise local_io_error(e, self.path, "read") from e
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise LocalIOError(f"--download-archive {self.path} is not a regular file")
            raw = f.read(MAX_ARCHIVE_BYTES + 1)
        if len(raw) > MAX_ARCHIVE_BYTES:
            raise LocalIOError(f"--download-archive {self.path} is larger than {MAX_ARCHIVE_BYTES >> 20} MiB")
        for line in raw.decode("utf-8", errors="replace").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                self._keys.add(line)
        return self

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add(self, key: str) -> None:
        """Append ``key`` as one line: O_APPEND under flock (another run appending at the same
        moment waits its turn), then fsync, so a crash right after never loses the line."""
        key = key.replace("\r", " ").replace("\n", " ").strip()
        if not key or key in self._keys:
            return
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise _symlink_refused(self.path, e.errno) from None
            raise local_io_error(e, self.path, "append to") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = (key + "\n").encode()
            if os.lseek(fd, 0, os.SEEK_END) > 0 and not _ends_with_newline(fd):
                data = b"\n" + data  # a line someone left unterminated stays its own line
            os.write(fd, data)
            os.fsync(fd)
        except OSError as e:
            raise local_io_error(e, self.path, "append to") from e
        finally:
            os.close(fd)  # also releases the lock
        self._keys.add(key)


def _symlink_refused(path: str, errno_: int) -> LocalIOError:
    return LocalIOError(f"--download-archive {path} is a symbolic link: refusing to use it (give the file "
                        f"it points to)", errno_)


def _ends_with_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"
