"""``FILE.part``: opened without following symlinks, locked against a second run, written at
offsets, checkpointed into its sidecar, renamed to ``FILE`` when complete."""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from typing import Any

from ..errors import RangestreamError
from ..plan import url_param
from ..redact import redact_url
from .errors import LocalIOError, human_bytes, local_io_error
from .sidecar import SIDECAR_SUFFIX, SIDECAR_VERSION, write_file_atomically
from .spans import Spans

CHECKPOINT_EVERY = 0.5  # seconds between sidecar saves (and fdatasync of FILE.part)


def _symlink_refused(path: str) -> LocalIOError:
    return LocalIOError(f"{path} is a symbolic link: refusing to write through it "
                        f"(remove it, or choose another -o)", errno.ELOOP)


def _not_regular_refused(path: str) -> LocalIOError:
    return LocalIOError(f"{path} is not a regular file: refusing to write into it "
                        f"(remove it, or choose another -o)")


def open_part_fd(path: str) -> int:
    """FILE.part opened read-write (created if missing) without following a symlink, and only if it
    is a regular file: a planted ``FILE.part -> victim`` must never get the victim overwritten."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _symlink_refused(path) from None
        raise local_io_error(e, path, "open") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _not_regular_refused(path)
    os.set_blocking(fd, True)
    return fd


def refuse_unsafe_part(path: str) -> None:
    """Fail early, before any resume logic, on a FILE.part that is a symlink or not a regular file
    (``open_part_fd`` enforces the same at the moment of opening)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if stat.S_ISLNK(mode):
        raise _symlink_refused(path)
    if not stat.S_ISREG(mode):
        raise _not_regular_refused(path)


def check_still_named(fd: int, path: str) -> None:
    """Raise if ``path`` no longer names the file open (and just locked) as ``fd``: another run
    renamed it (FILE.part -> FILE, under its lock) between our open and our lock, so what we
    hold is now its finished FILE, not a FILE.part to write into."""
    try:
        named = os.lstat(path)
    except OSError:
        named = None
    held = os.fstat(fd)
    if named is None or (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
        raise RangestreamError(f"{path} was renamed by another rangestream run while this one opened it "
                               f"(it finished); run again if still needed")


def open_locked(path: str) -> Any:
    """``path`` opened for writing under an exclusive lock, emptied; refused if another run holds it,
    if it is a symlink or not a regular file (as FILE.part for ``get``)."""
    fd = open_part_fd(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        check_still_named(fd, path)
    except BlockingIOError:
        os.close(fd)
        raise RangestreamError(f"{path} is being written by another rangestream run") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    return os.fdopen(fd, "wb")


class PartFile:
    """``FILE.part`` written at offsets, plus its sidecar ``FILE.part.json``.

    The sidecar lists only spans whose bytes were written *and* flushed with
    ``fdatasync`` before the sidecar was replaced, so after a crash, a kill or
    a power loss every span it lists is really in the file.
    """

    def __init__(self, final: str, *, url: str, chunk_size: int) -> None:
        self.final = final
        self.path = final + ".part"
        self.sidecar = final + SIDECAR_SUFFIX
        self.url = redact_url(url)
        self.lmt = url_param(url, "lmt")
        self.chunk_size = chunk_size
        self.size: int | None = None
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.spans = Spans()
        self.fd: int | None = None
        self.written = 0  # bytes written by this run
        self._lock = threading.Lock()
        self._saved_seq = 0
        self._seq = 0
        self._pending: concurrent.futures.Future[None] | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rangestream-save")
        self._last_save = 0.0

    # opening -----------------------------------------------------------------------------
    def open(self, *, fresh: bool) -> None:
        self.fd = open_part_fd(self.path)
        try:
            # Two runs writing one FILE.part would corrupt each other's sidecar: refuse the second.
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise RangestreamError(f"{self.path} is being written by another rangestream right now") from None
        except OSError:
            pass  # a filesystem without locks: go on
        try:
            check_still_named(self.fd, self.path)
        except RangestreamError:
            os.close(self.fd)
            self.fd = None
            raise
        if fresh:
            try:
                os.ftruncate(self.fd, 0)
            except OSError as e:
                raise local_io_error(e, self.path, "truncate") from e
            self.spans = Spans()
            self.written = 0
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.sidecar)

    def allocate(self, size: int) -> None:
        """Extend FILE.part to ``size`` (sparse) after checking the free space."""
        assert self.fd is not None
        st = os.fstat(self.fd)
        need = size - self.spans.total()
        try:
            vfs = os.fstatvfs(self.fd)
            free = vfs.f_bavail * vfs.f_frsize
        except OSError:
            free = None
        if free is not None and need > free and stat.S_ISREG(st.st_mode):
            raise LocalIOError(
                f"not enough space for {self.path}: {human_bytes(need)} still to download, "
                f"{human_bytes(free)} free", errno.ENOSPC)
        if st.st_size < size:
            try:
                os.ftruncate(self.fd, size)
            except OSError as e:
                raise local_io_error(e, self.path, "extend") from e

    # writing -----------------------------------------------------------------------------
    def write(self, offset: int, data: bytes) -> None:
        fd = self.fd
        assert fd is not None
        view = memoryview(data)
        pos = offset
        try:
            while view:
                n = os.pwrite(fd, view, pos)
                view = view[n:]
                pos += n
        except OSError as e:
            self.spans.add(offset, pos)  # what did land
            self.written += pos - offset
            raise local_io_error(e, self.path, "write") from e
        self.spans.add(offset, pos)
        self.written += len(data)

    # checkpoints ---------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        self._seq += 1
        return {
            "version": SIDECAR_VERSION,
            "url": self.url,
            "size": self.size,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "lmt": self.lmt,
            "chunk_size": self.chunk_size,
            "done": self.spans.as_list(),
            "bytes_done": self.spans.total(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "_seq": self._seq,
        }

    def _persist(self, snap: dict[str, Any], fd: int | None) -> None:
        import json  # here, in the saving thread: not part of the command's start-up

        # 1. the bytes the snapshot lists are on disk; 2. the sidecar replaced atomically.
        if fd is not None:
            os.fdatasync(fd)
        seq = snap.pop("_seq")
        with self._lock:
            if seq <= self._saved_seq:
                return  # a newer snapshot is already saved
            write_file_atomically(self.sidecar, json.dumps(snap) + "\n")
            self._saved_seq = seq

    def maybe_checkpoint(self) -> None:
        """Save in the background every CHECKPOINT_EVERY seconds (one save in flight at most)."""
        now = time.monotonic()
        if now - self._last_save < CHECKPOINT_EVERY:
            return
        if self._pending is not None and not self._pending.done():
            return
        if self._pending is not None:
            err = self._pending.exception()
            self._pending = None
            if err is not None:
                raise local_io_error(err, self.sidecar, "save") if isinstance(err, OSError) else err
        self._last_save = now
        self._pending = self._pool.submit(self._persist, self._snapshot(), self.fd)

    def checkpoint_now(self) -> None:
        """Synchronous save (at exit, on error or interrupt)."""
        self._wait_pending()
        try:
            self._persist(self._snapshot(), self.fd)
        except OSError as e:
            raise local_io_error(e, self.sidecar, "save") from e

    def _wait_pending(self) -> None:
        if self._pending is not None:
            with contextlib.suppress(Exception):
                self._pending.result(timeout=30)
            self._pending = None

    # the end ---------------------------------------------------------------------------------
    def finish(self) -> None:
        """fsync, rename FILE.part -> FILE, delete the sidecar. The rename happens under the lock:
        closed first, a second run could lock (and, with --force, empty) the file about to be FILE."""
        self._wait_pending()
        assert self.fd is not None
        try:
            if self.size is not None:
                os.ftruncate(self.fd, self.size)
            os.fsync(self.fd)
        except OSError as e:
            raise local_io_error(e, self.path, "flush") from e
        try:
            os.replace(self.path, self.final)
        except OSError as e:
            raise local_io_error(e, self.final, "rename to") from e
        finally:
            self.close()
        with contextlib.suppress(OSError):
            os.unlink(self.sidecar)
        with contextlib.suppress(OSError):
            dfd = os.open(os.path.dirname(os.path.abspath(self.final)) or ".", os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def discard(self) -> None:
        """Remove FILE.part and the sidecar (a fresh run that wrote nothing)."""
        self._wait_pending()
        for p in (self.path, self.sidecar):  # under the lock, as finish() renames
            with contextlib.suppress(OSError):
                os.unlink(p)
        self.close()

    def close(self) -> None:
        self._wait_pending()
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def shutdown(self) -> None:
        self.close()
        self._pool.shutdown(wait=True)


def sha256_file(path: str) -> str:
    import hashlib  # --sha256 only: not part of every download's start-up

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()
