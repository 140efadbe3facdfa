"""A pool of proxies shared by many downloads.

The decisions are pure and run on an injectable clock (no sockets here); the
caller reports what happened on the wire:

- **choice**: the least-loaded healthy proxy, ties going to the one listed first,
  at most ``max_per_proxy`` downloads in flight on each; :meth:`ProxyPool.lease`
  waits (bounded) for a slot when all are full.
- **sticky egress**: a :class:`Lease` keeps one proxy for a whole download;
  :meth:`Lease.move` leaves it for the next healthy one (a dead proxy, a bot check).
- **health**: :meth:`ProxyPool.record_failure` for connection-level failures
  (refused, 407, reset on connect); ``failures_to_cool`` in a row cool the proxy
  down for ``cooldown`` seconds. After the cooldown it is tried again, and one more
  failure in a row cools it again; :meth:`ProxyPool.record_success` resets the counts.
- **bot checks**: :func:`is_bot_check` recognises the CDN's or yt-dlp's "confirm
  you're not a bot"; ``quarantine_after`` of them in a row quarantine the proxy for
  good: it is appended to ``quarantine_file`` as ``host:port`` (never credentials),
  and any proxy listed there is skipped when a pool starts.

Credentials live only in :attr:`Proxy.url` (for the transport); every ``str``,
``repr``, log line, error and snapshot shows ``host:port`` or a redacted URL.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

from .errors import ProxyError, RangestreamError
from .redact import redact_text, redact_url

if TYPE_CHECKING:
    from pathlib import Path  # imported only with a quarantine file: not for every command's start-up

__all__ = [
    "ProxyPool",
    "Proxy",
    "Lease",
    "ProxyStatus",
    "ProxyListError",
    "NoProxyAvailableError",
    "is_bot_check",
    "parse_proxy",
    "proxy_address",
    "append_quarantine",
    "read_quarantine",
]

log = logging.getLogger("rangestream.proxypool")

State = Literal["healthy", "cooling", "quarantined"]
SCHEMES = ("http", "https", "socks5", "socks5h", "socks4", "socks4a")
_DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080, "socks4": 1080, "socks4a": 1080}
_RECORD_HELP = "expected a proxy URL (http://user:pass@host:port) or a record host:port or host:port:user:pass"


class ProxyListError(RangestreamError, ValueError):
    """A proxy entry or proxy file cannot be used. ``line`` is the 1-based line (or entry)
    number when one entry is at fault; the message never repeats the entry's text, which
    may hold credentials."""

    def __init__(self, message: str, *, line: int | None = None, source: str | None = None) -> None:
        self.line = line
        self.source = source
        self.reason = message
        where = source or "proxy list"
        prefix = f"{where}, line {line}: " if line is not None else f"{where}: "
        super().__init__(prefix + message)


class NoProxyAvailableError(ProxyError):
    """No proxy could be leased: every proxy is quarantined, cooling down or already left by
    this download, or none had a free slot within the wait timeout. A :class:`ProxyError`
    (the command line's proxy exit code, 7)."""


# --- entries -----------------------------------------------------------------------------

def parse_proxy(entry: str) -> str:
    """A proxy URL (``scheme://[user:pass@]host[:port]``) or a raw record (``host:port`` or
    ``host:port:user:pass``, which becomes ``http://user:pass@host:port``), normalised to a
    URL with an explicit port. Raises :class:`ProxyListError` (without the entry's text)."""
    text = entry.strip()
    if not text:
        raise ProxyListError("empty entry")
    return _from_url(text) if "://" in text else _from_record(text)


def proxy_address(url: str) -> str:
    """``host:port`` of a normalised proxy URL (``[v6]:port`` for IPv6): the only name a
    proxy is shown or quarantined by."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)}"


def _from_url(text: str) -> str:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ProxyListError("the port is not a number in 1..65535 (or the URL does not parse)") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ProxyListError(f"unsupported proxy scheme (use {', '.join(SCHEMES)})")
    if not parts.hostname:
        raise ProxyListError("proxy URL without a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyListError("a proxy URL has no path, query or fragment")
    if port == 0:
        raise ProxyListError("the port is not a number in 1..65535")
    userinfo = parts.netloc.rpartition("@")[0]
    host = _bracket(parts.hostname)
    return f"{scheme}://{userinfo + '@' if userinfo else ''}{host}:{port or _DEFAULT_PORTS[scheme]}"


def _from_record(text: str) -> str:
    host, rest = _split_host(text)
    fields = rest.split(":", 2)  # a password may itself contain ':'
    if len(fields) not in (1, 3) or not host:
        hint = " (with credentials, write it as a URL: http://user:pass@host:port)" if "@" in text else ""
        raise ProxyListError(_RECORD_HELP + hint)
    port = _port(fields[0])
    if len(fields) == 1:
        return f"http://{host}:{port}"
    user, password = fields[1], fields[2]
    if not user:
        raise ProxyListError("empty user name in host:port:user:pass")
    return f"http://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}"


def _split_host(text: str) -> tuple[str, str]:
    if text.startswith("["):  # [v6]:port[:user:pass]
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            raise ProxyListError(_RECORD_HELP)
        return text[:end + 1].lower(), text[end + 2:]
    host, sep, rest = text.partition(":")
    if not sep or "@" in host or "/" in host:
        hint = " (with credentials, write it as a URL: http://user:pass@host:port)" if "@" in text else ""
        raise ProxyListError(_RECORD_HELP + hint)
    return host.lower(), rest


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ProxyListError("the port is not a number in 1..65535")
    return int(text)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# --- bot checks --------------------------------------------------------------------------

# YouTube's page and player ("Sign in to confirm you're not a bot", with a straight or curly
# apostrophe), yt-dlp's errors built from them (plus its captcha variant), and Google's
# "unusual traffic" sorry page. Lower-cased, apostrophes folded to "'".
_BOT_PHRASES = (
    "confirm you're not a bot",
    "confirm that you're not a bot",
    "youtube is requiring a captcha",
    "unusual traffic from your computer network",
)


def is_bot_check(status: int | None, body_text: str) -> bool:
    """True when a response (``status`` 403 or 429) or, with ``status=None``, an error
    message (yt-dlp's) says the client was taken for a bot."""
    if status is not None and status not in (403, 429):
        return False
    text = body_text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"\s+", " ", text)
    return any(phrase in text for phrase in _BOT_PHRASES)


# --- the quarantine file -----------------------------------------------------------------

def read_quarantine(path: str | os.PathLike[str]) -> set[str]:
    """The ``host:port`` entries listed in a quarantine file (none if it does not exist)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return set()
    except OSError as e:
        raise ProxyListError(f"cannot read the quarantine file: {e.strerror}", source=str(path)) from None
    return _quarantine_entries(data)


def _quarantine_entries(data: bytes) -> set[str]:
    lines = (line.strip() for line in data.decode("utf-8", "replace").splitlines())
    return {line.lower() for line in lines if line and not line.startswith("#")}


def append_quarantine(path: str | os.PathLike[str], address: str) -> bool:
    """Append ``address`` as one line unless already listed; True if it was written.

    Safe when several processes share the file: the check and the append happen under an
    exclusive ``flock``, as one ``write`` to an ``O_APPEND`` descriptor, synced before the
    lock is dropped, so no line is torn or listed twice.
    """
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        listed = _read_fd(fd)
        if address.lower() in _quarantine_entries(listed):
            return False
        # An operator's file without a final newline must not glue our entry to its last line.
        line = (b"\n" if listed and not listed.endswith(b"\n") else b"") + address.encode() + b"\n"
        while line:
            line = line[os.write(fd, line):]
        os.fsync(fd)
        return True
    finally:
        os.close(fd)  # also drops the lock


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


# --- the pool ----------------------------------------------------------------------------

class Proxy:
    """One pool entry. :attr:`url` carries the credentials and is meant for the transport
    only; :attr:`address` (``host:port``) and :attr:`label` (unique in the pool: ``#2``...
    added when one host:port is listed with several credentials) are safe to show."""

    def __init__(self, url: str, index: int, label: str) -> None:
        self.url = url
        self.index = index
        self.address = proxy_address(url)
        self.label = label
        self.in_flight = 0
        self.failures = 0  # connection-level failures in a row
        self.bot_checks = 0  # bot checks in a row
        self.failures_total = 0
        self.bot_checks_total = 0
        self.cooling_until: float | None = None
        self.quarantined = False

    def __str__(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        return (f"Proxy({redact_url(self.url)!r}, in_flight={self.in_flight}, failures={self.failures}, "
                f"bot_checks={self.bot_checks}, quarantined={self.quarantined})")


@dataclass(frozen=True)
class ProxyStatus:
    """One proxy's state for metrics and health checks; counts are totals except the
    ``*_in_a_row`` ones."""

    label: str
    address: str
    state: State
    in_flight: int
    failures: int
    bot_checks: int
    failures_in_a_row: int
    bot_checks_in_a_row: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class ProxyPool:
    """Proxies shared by many downloads; see the module's docstring for the rules.

    ``now`` is the clock cooldowns are measured on (monotonic seconds). ``wait_timeout``
    bounds how long :meth:`lease` and :meth:`Lease.move` wait for a slot (None: no bound).
    """

    def __init__(self, proxies: Iterable[str], *, max_per_proxy: int = 2, cooldown: float = 1800.0,
                 failures_to_cool: int = 3, quarantine_after: int = 5,
                 quarantine_file: str | os.PathLike[str] | None = None, wait_timeout: float | None = None,
                 now: Callable[[], float] = time.monotonic) -> None:
        _check_limits(max_per_proxy, cooldown, failures_to_cool, quarantine_after, wait_timeout)
        self.max_per_proxy = max_per_proxy
        self.cooldown = cooldown
        self.failures_to_cool = failures_to_cool
        self.quarantine_after = quarantine_after
        self.quarantine_file: Path | None = None
        if quarantine_file is not None:
            from pathlib import Path

            self.quarantine_file = Path(quarantine_file)
        self.wait_timeout = wait_timeout
        self._now = now
        self._proxies = _build_entries(enumerate(proxies, 1), None)
        listed = read_quarantine(self.quarantine_file) if self.quarantine_file is not None else set()
        for proxy in self._proxies:
            proxy.quarantined = proxy.address.lower() in listed
        self._cond: asyncio.Condition | None = None
        self._cond_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **options: Any) -> ProxyPool:
        """A pool from a file: one entry a line; blank lines and lines starting with ``#``
        are skipped (a ``#`` later in a line is part of the entry: passwords may hold one)."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise ProxyListError(f"cannot read the proxy file: {why}", source=str(path)) from None
        entries = [(n, line) for n, line in enumerate(text.splitlines(), 1)
                   if line.strip() and not line.strip().startswith("#")]
        _build_entries(entries, str(path))  # errors name the file's line numbers
        return cls([line for _, line in entries], **options)

    # -- pure decisions -------------------------------------------------------------------

    @property
    def proxies(self) -> tuple[Proxy, ...]:
        return tuple(self._proxies)

    def state(self, proxy: Proxy | str) -> State:
        p = self._entry(proxy)
        if p.quarantined:
            return "quarantined"
        if p.cooling_until is not None and self._now() < p.cooling_until:
            return "cooling"
        return "healthy"

    @property
    def usable(self) -> bool:
        """False when no proxy is healthy (all cooling or quarantined): nothing can be fetched now."""
        return any(self.state(p) == "healthy" for p in self._proxies)

    def choose(self, exclude: Collection[Proxy] = ()) -> Proxy | None:
        """The least-loaded healthy proxy with a free slot (ties: the first listed), or None."""
        free = [p for p in self._proxies
                if p not in exclude and p.in_flight < self.max_per_proxy and self.state(p) == "healthy"]
        return min(free, key=lambda p: (p.in_flight, p.index), default=None)

    def snapshot(self) -> list[ProxyStatus]:
        return [ProxyStatus(p.label, p.address, self.state(p), p.in_flight, p.failures_total,
                            p.bot_checks_total, p.failures, p.bot_checks) for p in self._proxies]

    # -- what happened on the wire --------------------------------------------------------

    def record_failure(self, proxy: Proxy | str) -> State:
        """A connection-level failure through ``proxy`` (refused, 407, reset on connect)."""
        p = self._entry(proxy)
        p.failures += 1
        p.failures_total += 1
        if p.failures >= self.failures_to_cool and not p.quarantined:
            p.cooling_until = self._now() + self.cooldown
            log.warning("proxy %s: %d failures in a row, cooling down for %gs", p.label, p.failures, self.cooldown)
        return self.state(p)

    def record_success(self, proxy: Proxy | str) -> None:
        """A request through ``proxy`` worked: its failure and bot-check runs end."""
        p = self._entry(proxy)
        p.failures = 0
        p.bot_checks = 0
        p.cooling_until = None

    def record_bot_check(self, proxy: Proxy | str) -> State:
        """A bot check met through ``proxy`` (see :func:`is_bot_check`)."""
        p = self._entry(proxy)
        p.bot_checks += 1
        p.bot_checks_total += 1
        if p.bot_checks >= self.quarantine_after and not p.quarantined:
            self._quarantine(p)
        return self.state(p)

    def _quarantine(self, p: Proxy) -> None:
        p.quarantined = True
        log.warning("proxy %s: %d bot checks in a row, quarantined", p.label, p.bot_checks)
        if self.quarantine_file is None:
            return
        try:
            append_quarantine(self.quarantine_file, p.address)
        except OSError as e:  # the proxy stays out of this process either way
            log.warning("could not list proxy %s in %s: %s", p.label, self.quarantine_file, e.strerror)

    def _entry(self, proxy: Proxy | str) -> Proxy:
        if isinstance(proxy, Proxy) and proxy in self._proxies:
            return proxy
        for p in self._proxies:
            if proxy in (p.url, p.label):
                return p
        raise ValueError("not a proxy of this pool")  # the text may be a raw record with a password

    # -- leases ---------------------------------------------------------------------------

    def lease(self, timeout: float | None = None) -> Lease:
        """``async with pool.lease() as lease:`` holds ``lease.proxy`` for one download.
        ``timeout`` (default: the pool's ``wait_timeout``) bounds the wait for a slot."""
        return Lease(self, self.wait_timeout if timeout is None else timeout)

    async def _acquire(self, avoid: Collection[Proxy], tried: Collection[Proxy], timeout: float | None) -> Proxy:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        cond = self._condition()
        async with cond:
            while True:
                # Prefer proxies this download has not tried yet, but take a tried one that is free now.
                proxy = self.choose(exclude={*avoid, *tried}) or self.choose(exclude=avoid)
                if proxy is not None:
                    proxy.in_flight += 1
                    return proxy
                if not any(p not in avoid and not p.quarantined for p in self._proxies):
                    raise NoProxyAvailableError(f"no usable proxy left ({self._summary()})")
                await self._wait(cond, deadline, loop, timeout)

    async def _wait(self, cond: asyncio.Condition, deadline: float | None, loop: asyncio.AbstractEventLoop,
                    timeout: float | None) -> None:
        # Woken by a released slot; a cooldown ending is a moment on the clock, so wake then too.
        steps = [until - self._now() for p in self._proxies
                 if not p.quarantined and (until := p.cooling_until) is not None and until > self._now()]
        if deadline is not None:
            if loop.time() >= deadline:
                raise NoProxyAvailableError(f"no proxy slot free within {timeout:g}s ({self._summary()})")
            steps.append(deadline - loop.time())
        try:
            async with asyncio.timeout(min(steps) if steps else None):
                await cond.wait()
        except TimeoutError:
            pass

    async def _release(self, proxy: Proxy) -> None:
        # The count drops before any await: a cancellation while waking waiters must not leak a slot.
        proxy.in_flight -= 1
        cond = self._condition()
        async with cond:
            cond.notify_all()

    def _condition(self) -> asyncio.Condition:
        # One condition per event loop: a pool may outlive an asyncio.run() (tests, a CLI batch).
        loop = asyncio.get_running_loop()
        if self._cond is None or self._cond_loop is not loop:
            self._cond, self._cond_loop = asyncio.Condition(), loop
        return self._cond

    def _summary(self) -> str:
        states = [self.state(p) for p in self._proxies]
        return ", ".join(f"{states.count(s)} {s}" for s in ("healthy", "cooling", "quarantined"))

    def __repr__(self) -> str:
        return f"ProxyPool({len(self._proxies)} proxies: {self._summary()}, max_per_proxy={self.max_per_proxy})"


class Lease:
    """One download's hold on one proxy, from start to end (sticky egress)."""

    def __init__(self, pool: ProxyPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._proxy: Proxy | None = None
        self.tried: list[Proxy] = []
        self.moves: list[tuple[str, str]] = []  # (label left, reason)
        self._moving = asyncio.Lock()
        self._left: set[Proxy] = set()  # proxies this download left (since it last progressed)

    @property
    def pool(self) -> ProxyPool:
        return self._pool

    @property
    def proxy(self) -> Proxy:
        if self._proxy is None:
            raise RuntimeError("the lease holds no proxy (not entered, or a move found none)")
        return self._proxy

    async def __aenter__(self) -> Lease:
        self._proxy = await self._pool._acquire((), (), self._timeout)
        self.tried.append(self._proxy)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._proxy is not None:
            proxy, self._proxy = self._proxy, None
            await self._pool._release(proxy)

    async def move(self, reason: str) -> Proxy:
        """Leave the current proxy (dead, or it met a bot check) for the next healthy one,
        preferring proxies this download has not tried; waits for a slot like
        :meth:`ProxyPool.lease`. Report the failure first (``record_failure`` /
        ``record_bot_check``): moving does not count it."""
        old = self.proxy
        self._proxy = None
        await self._pool._release(old)
        self.moves.append((old.label, redact_text(reason)))
        log.info("moving a download off proxy %s: %s", old.label, redact_text(reason))
        self._proxy = await self._pool._acquire({old}, self.tried, self._timeout)
        if self._proxy not in self.tried:
            self.tried.append(self._proxy)
        return self._proxy

    async def leave(self, proxy: Proxy, reason: str, *, bot_check: bool = False,
                    progressed: bool = False) -> Proxy:
        """``proxy`` failed (or met a bot check) for this download: count it once and move to
        a healthy proxy this download has not left yet (``progressed``: bytes arrived since the
        last move, so the proxies left before get another chance).

        Several streams of one download (a video and an audio) may meet the same failure at
        once; only the first reports and moves, the others find the lease already on another
        proxy and continue there. Raises :class:`NoProxyAvailableError` when no such proxy is
        healthy (waiting for a cooldown would stall the download for its length)."""
        async with self._moving:
            if self._proxy is not proxy:
                return self.proxy  # another stream of this download moved already
            if bot_check:
                self._pool.record_bot_check(proxy)
            else:
                self._pool.record_failure(proxy)
            if progressed:
                self._left.clear()
            self._left.add(proxy)
            self._proxy = None
            await self._pool._release(proxy)
            self.moves.append((proxy.label, redact_text(reason)))
            if not any(self._pool.state(p) == "healthy" for p in self._pool.proxies if p not in self._left):
                raise NoProxyAvailableError(f"no usable proxy left for this download after {proxy.label} "
                                            f"failed: {redact_text(reason)} ({self._pool._summary()})")
            log.info("moving a download off proxy %s: %s", proxy.label, redact_text(reason))
            self._proxy = await self._pool._acquire(self._left, self.tried, self._timeout)
            if self._proxy not in self.tried:
                self.tried.append(self._proxy)
            return self._proxy

    def __repr__(self) -> str:
        held = self._proxy.label if self._proxy is not None else None
        return f"Lease(proxy={held!r}, moves={len(self.moves)})"


# --- helpers -----------------------------------------------------------------------------

def _build_entries(numbered: Iterable[tuple[int, str]], source: str | None) -> list[Proxy]:
    """Entries from (line number, text) pairs; errors name the line, never the text."""
    entries: list[Proxy] = []
    seen: dict[str, int] = {}
    per_address: dict[str, int] = {}
    for line, text in numbered:
        try:
            url = parse_proxy(text)
        except ProxyListError as e:
            raise ProxyListError(e.reason, line=line, source=source) from None
        if url in seen:
            raise ProxyListError(f"the same proxy as line {seen[url]}", line=line, source=source)
        seen[url] = line
        address = proxy_address(url)
        per_address[address] = per_address.get(address, 0) + 1
        label = address if per_address[address] == 1 else f"{address}#{per_address[address]}"
        entries.append(Proxy(url, len(entries), label))
    if not entries:
        raise ProxyListError("no proxies listed", source=source)
    return entries


def _check_limits(max_per_proxy: int, cooldown: float, failures_to_cool: int, quarantine_after: int,
                  wait_timeout: float | None) -> None:
    if max_per_proxy < 1:
        raise ValueError("max_per_proxy must be at least 1")
    if cooldown < 0:
        raise ValueError("cooldown must be 0 or more seconds")
    if failures_to_cool < 1 or quarantine_after < 1:
        raise ValueError("failures_to_cool and quarantine_after must be at least 1")
    if wait_timeout is not None and wait_timeout < 0:
        raise ValueError("wait_timeout must be 0 or more seconds")


# The pool's command-line flags, shared by get/mux (rangestream.cli.proxies) and serve
# (rangestream.service.main): service sits below cli, so the one definition lives here.
PROXY_FILE_ENV = "RANGESTREAM_PROXY_FILE"


def _count_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def _seconds_arg(text: str) -> float:
    try:
        n = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= n < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return n


def add_pool_arguments(p: argparse.ArgumentParser, *, each: str) -> None:
    """--proxy-file and its companions, as the group "proxy pool"; ``each`` names what holds one
    lease ("download" for get and mux, "request" for serve)."""
    g = p.add_argument_group("proxy pool")
    g.add_argument("--proxy-file", metavar="FILE",
                   help="proxies to rotate over, one a line (URLs with credentials, or host:port[:user:pass] "
                        f"records; '#' comments; ${PROXY_FILE_ENV}): each {each} keeps one proxy from start to "
                        "end and moves to the next healthy one if it dies or meets a bot check")
    g.add_argument("--max-per-proxy", type=_count_arg, default=2, metavar="N",
                   help=f"{each}s in flight per proxy (default 2); more wait for a free one")
    g.add_argument("--proxy-cooldown", type=_seconds_arg, default=1800.0, metavar="SECONDS",
                   help="rest after 3 connection failures in a row (default 1800)")
    g.add_argument("--quarantine-after", type=_count_arg, default=5, metavar="N",
                   help="bot checks in a row that take a proxy out for good (default 5)")
    g.add_argument("--proxy-quarantine", metavar="FILE",
                   help="quarantined proxies are appended here as host:port (never credentials); "
                        "those listed are skipped at start-up")


def pool_file(args: argparse.Namespace) -> str | None:
    """The proxy file the flags name: --proxy-file, else $RANGESTREAM_PROXY_FILE, else None."""
    return getattr(args, "proxy_file", None) or os.environ.get(PROXY_FILE_ENV) or None


def pool_from_args(args: argparse.Namespace) -> ProxyPool | None:
    """The pool :func:`add_pool_arguments`' flags describe (None without a proxy file); a file
    that cannot be used raises :class:`ProxyListError` (its line named, never its text)."""
    path = pool_file(args)
    if path is None:
        return None
    return ProxyPool.from_file(path, max_per_proxy=args.max_per_proxy, cooldown=args.proxy_cooldown,
                               quarantine_after=args.quarantine_after, quarantine_file=args.proxy_quarantine)
