"""Exit codes, and the classification of an exception into (exit code, message, hint):
by type and attributes, never by parsing text."""

from __future__ import annotations

import errno
import signal
from collections.abc import Iterator

from ..errors import (
    HTTPStatusError,
    InvalidURLError,
    MuxError,
    ObjectChangedError,
    ProxyError,
    RangestreamError,
    RetriesExhaustedError,
    StreamError,
    TLSError,
    TooManyRedirectsError,
    URLExpiredError,
)
from ..output import LocalIOError, local_io_error

PROG = "rangestream"


EXIT_OK = 0


EXIT_FAILURE = 1


EXIT_USAGE = 2


EXIT_NETWORK = 3


EXIT_HTTP = 4


EXIT_CHANGED = 5


EXIT_LOCAL_IO = 6


EXIT_PROXY = 7


EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C); SIGTERM gives 143


EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (like a process killed by SIGPIPE)


EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILURE: "other failure (a bug, an undecodable input to mux, ...)",
    EXIT_USAGE: "usage: bad flag, bad value, bad URL",
    EXIT_NETWORK: "network: host unreachable, connection failures or timeouts outlasted --retries, "
                  "TLS certificate not trusted (see --cacert, --insecure)",
    EXIT_HTTP: "HTTP error status (404, 410, ...), an expired/forbidden URL that cannot be refreshed, "
               "too many redirects (a redirect loop)",
    EXIT_CHANGED: "the object changed on the server during the download",
    EXIT_LOCAL_IO: "local I/O: disk full, permission denied, no such directory, FILE.part is a symlink "
                   "or not a regular file",
    EXIT_PROXY: "proxy refused (authentication required) or no usable proxy in --proxy-file",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C (SIGINT) after saving the sidecar; 143 for SIGTERM",
    EXIT_BROKEN_PIPE: "stdout (or a FIFO given to -o) was closed by its reader (e.g. '| head -c 100'); "
                      "nothing is printed",
}


BATCH_EXIT_RULE = ("several downloads (several URLs, -i FILE, a playlist): the exit code is the highest "
                   "of the failed downloads' codes (7 > 6 > 5 > 4 > 3 > 2 > 1), 0 when every one was saved "
                   "or skipped; 130/143 when interrupted")


def worst_code(codes: list[int]) -> int:
    """The exit code of several downloads: the highest of the failed ones' (BATCH_EXIT_RULE)."""
    return max((c for c in codes if c != EXIT_OK), default=EXIT_OK)


class UsageError(Exception):
    """A bad flag value or URL found after argparse: exit 2."""


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _chain(first: BaseException) -> Iterator[BaseException]:
    """``first`` and its causes/contexts, each once."""
    seen: set[int] = set()
    e: BaseException | None = first
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or (e.__context__ if not e.__suppress_context__ else None)


TLS_HINT = ("the server's certificate is not trusted: give its CA with --cacert FILE (or SSL_CERT_FILE), "
            "or, knowing that anyone on the path can then read and change the bytes, --insecure (-k)")


def classify(e: BaseException) -> tuple[int, str, str | None]:
    """(exit code, message, hint) for an exception that ends a command."""
    if isinstance(e, UsageError):
        return EXIT_USAGE, str(e), None
    if isinstance(e, LocalIOError):
        hint = "free some space and run the same command again" if e.errno in (
            errno.ENOSPC, getattr(errno, "EDQUOT", -1)) else None
        return EXIT_LOCAL_IO, str(e), hint
    if isinstance(e, MuxError):
        inner = next((c for c in _chain(e) if c is not e and isinstance(c, (StreamError, InvalidURLError, OSError))),
                     None)
        if isinstance(inner, OSError) and not isinstance(inner, BrokenPipeError):
            return EXIT_LOCAL_IO, str(e), None
        if inner is not None:
            code, _, hint = classify(inner)
            return code, str(e), hint
        return EXIT_FAILURE, str(e), None
    if isinstance(e, ObjectChangedError):
        return EXIT_CHANGED, str(e), "run the same command again to download the new version from the start"
    if isinstance(e, TLSError):
        return EXIT_NETWORK, str(e), TLS_HINT
    if isinstance(e, ProxyError):
        from ..proxypool import NoProxyAvailableError

        if isinstance(e, NoProxyAvailableError):
            return EXIT_PROXY, str(e), ("every proxy in --proxy-file is cooling down, quarantined (see "
                                        "--proxy-quarantine) or was left by this download: add proxies, or "
                                        "try again after --proxy-cooldown")
        return EXIT_PROXY, str(e), ("the proxy wants credentials: give them in the proxy URL "
                                    "(--proxy http://USER:PASS@host:port), or check them")
    if isinstance(e, TooManyRedirectsError):
        return EXIT_HTTP, str(e), "the server redirects in a loop (or too many times): check the URL"
    if isinstance(e, URLExpiredError):
        return EXIT_HTTP, str(e), ("the signed URL has expired or is not valid for this client: get a fresh "
                                   "one (e.g. yt-dlp -g) and run again; a download to a file resumes where it "
                                   "stopped if the object is unchanged")
    if isinstance(e, HTTPStatusError):
        what = {404: "not found", 410: "gone", 400: "bad request", 405: "method not allowed"}.get(e.status)
        msg = f"{what}: {e}" if what else str(e)
        return EXIT_HTTP, msg, None
    if isinstance(e, RetriesExhaustedError):
        return EXIT_NETWORK, str(e), "check the host, your network or --proxy; more --retries or --timeout may help"
    if isinstance(e, InvalidURLError):
        return EXIT_USAGE, str(e), None
    if isinstance(e, StreamError):
        if any(isinstance(c, InvalidURLError) for c in _chain(e)):
            return EXIT_USAGE, str(e), None
        return EXIT_FAILURE, str(e), None
    from ..refresh import ResolveError, ResolverUnavailable

    if isinstance(e, ResolverUnavailable):
        return EXIT_FAILURE, str(e), None
    if isinstance(e, ResolveError):
        if e.status is not None:
            return EXIT_HTTP, str(e), None
        if e.network:
            return EXIT_NETWORK, str(e), "check the host, your network or --proxy"
        return EXIT_FAILURE, str(e), "yt-dlp could not resolve the page; -v shows its messages"
    if isinstance(e, RangestreamError):
        return EXIT_FAILURE, str(e), None
    if isinstance(e, OSError):
        return EXIT_LOCAL_IO, str(local_io_error(e, getattr(e, "filename", None) or "output", "write")), None
    return EXIT_FAILURE, f"internal error: {type(e).__name__}: {e}", "run with --debug for a traceback, and report it"


def is_broken_pipe(e: BaseException) -> bool:
    return any(isinstance(c, BrokenPipeError) or (isinstance(c, OSError) and c.errno == errno.EPIPE)
               for c in _chain(e))
