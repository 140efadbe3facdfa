"""ProxyPool's rules without sockets: parsing, choice, caps, leases, cooldown, bot checks,
quarantine (and its file shared by processes), and credentials never shown."""

from __future__ import annotations

import asyncio
import multiprocessing
import re
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rangestream.errors import RangestreamError
from rangestream.proxypool import (
    NoProxyAvailableError,
    ProxyListError,
    ProxyPool,
    append_quarantine,
    is_bot_check,
    parse_proxy,
    proxy_address,
)

SECRET = "s3cr3t-PW"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def pool_of(n: int, **options: object) -> ProxyPool:
    return ProxyPool([f"http://u{i}:{SECRET}@10.0.0.{i}:8080" for i in range(1, n + 1)], **options)  # type: ignore[arg-type]


# --- parsing -----------------------------------------------------------------------------

@pytest.mark.parametrize("entry, url, address", [
    ("http://10.0.0.1:3128", "http://10.0.0.1:3128", "10.0.0.1:3128"),
    ("HTTP://Proxy.Example:3128/", "http://proxy.example:3128", "proxy.example:3128"),
    ("https://u:p@proxy.example", "https://u:p@proxy.example:443", "proxy.example:443"),
    ("socks5://u:p%40x@10.0.0.2:1080", "socks5://u:p%40x@10.0.0.2:1080", "10.0.0.2:1080"),
    ("socks5h://10.0.0.3", "socks5h://10.0.0.3:1080", "10.0.0.3:1080"),
    ("http://[::1]:8080", "http://[::1]:8080", "[::1]:8080"),
    ("10.0.0.4:8000", "http://10.0.0.4:8000", "10.0.0.4:8000"),
    ("gate.example:7000:user-1:pa:ss@#", "http://user-1:pa%3Ass%40%23@gate.example:7000", "gate.example:7000"),
    ("[2001:db8::1]:8000:u:p", "http://u:p@[2001:db8::1]:8000", "[2001:db8::1]:8000"),
    ("  10.0.0.5:80  ", "http://10.0.0.5:80", "10.0.0.5:80"),
])
def test_entries_parse_to_urls_with_ports(entry: str, url: str, address: str) -> None:
    assert parse_proxy(entry) == url
    assert proxy_address(parse_proxy(entry)) == address


@pytest.mark.parametrize("entry, why", [
    ("ftp://u:pwX7@host:21", "unsupported proxy scheme"),
    ("http://u:pwX7@:8080", "without a host"),
    ("http://u:pwX7@host:99999", "port"),
    ("http://u:pwX7@host:0", "port"),
    ("http://u:pwX7@host:8080/path", "no path"),
    ("host", "expected a proxy URL"),
    ("host:8080:user", "expected a proxy URL"),
    ("host:port", "port"),
    ("host:8080::pwX7", "empty user"),
    ("user:pwX7@host:8080", "write it as a URL"),
    ("[::1:8080", "expected a proxy URL"),
    ("", "empty"),
])
def test_bad_entries_are_refused_without_echoing_them(entry: str, why: str) -> None:
    with pytest.raises(ProxyListError, match=re.escape(why)) as caught:
        parse_proxy(entry)
    assert isinstance(caught.value, RangestreamError) and isinstance(caught.value, ValueError)
    assert "pwX7" not in str(caught.value) and "host:8080" not in str(caught.value)


def test_file_skips_comments_and_blanks_and_names_the_bad_line(tmp_path: Path) -> None:
    good = tmp_path / "proxies.txt"
    good.write_text("# provider A\n\nhttp://a:pw@10.0.0.1:8080\n  # indented comment\n10.0.0.2:8000:b:pw\n")
    pool = ProxyPool.from_file(good)
    assert [p.address for p in pool.proxies] == ["10.0.0.1:8080", "10.0.0.2:8000"]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"# comment\nhttp://a:{SECRET}@10.0.0.1:8080\n\n10.0.0.2:8000:b\n")
    with pytest.raises(ProxyListError) as caught:
        ProxyPool.from_file(bad)
    assert caught.value.line == 4 and str(caught.value).startswith(f"{bad}, line 4: ")
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("text, line, message", [
    (f"http://a:{SECRET}@h:1\nh:2\nhttp://a:{SECRET}@h:1\n", 3, "the same proxy as line 1"),
    ("# only comments\n\n", None, "no proxies listed"),
    (f"ftp://a:{SECRET}@h:1\n", 1, "unsupported proxy scheme"),
])
def test_file_errors(tmp_path: Path, text: str, line: int | None, message: str) -> None:
    path = tmp_path / "p.txt"
    path.write_text(text)
    with pytest.raises(ProxyListError, match=message) as caught:
        ProxyPool.from_file(path)
    assert caught.value.line == line and SECRET not in str(caught.value)


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProxyListError, match="cannot read the proxy file"):
        ProxyPool.from_file(tmp_path / "missing.txt")
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ProxyListError, match="not UTF-8"):
        ProxyPool.from_file(tmp_path / "bin")


def test_one_address_with_several_credentials_gets_unique_labels() -> None:
    pool = ProxyPool(["gate:7000:user-1:pw", "gate:7000:user-2:pw", "other:1"])
    assert [p.label for p in pool.proxies] == ["gate:7000", "gate:7000#2", "other:1"]
    assert [p.address for p in pool.proxies] == ["gate:7000", "gate:7000", "other:1"]


@pytest.mark.parametrize("options", [
    {"max_per_proxy": 0}, {"cooldown": -1}, {"quarantine_after": 0}, {"failures_to_cool": 0},
    {"wait_timeout": -1},
])
def test_bad_limits_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        pool_of(1, **options)


# --- choice ------------------------------------------------------------------------------

@pytest.mark.parametrize("loads, cap, chosen", [
    ([0, 0, 0], 2, 0),     # ties go to the first listed
    ([1, 0, 0], 2, 1),
    ([1, 1, 0], 2, 2),
    ([1, 1, 1], 2, 0),
    ([2, 1, 1], 2, 1),
    ([2, 2, 2], 2, None),  # all full
    ([0, 3, 0], 5, 0),
    ([4, 3, 4], 5, 1),
])
def test_least_loaded_choice_ties_to_first(loads: list[int], cap: int, chosen: int | None) -> None:
    pool = pool_of(len(loads), max_per_proxy=cap)
    for p, load in zip(pool.proxies, loads, strict=True):
        p.in_flight = load
    got = pool.choose()
    assert (got.index if got else None) == chosen


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["healthy", "cooling", "quarantined"])),
                min_size=1, max_size=8), st.integers(1, 3))
def test_choice_matches_a_reference_model(entries: list[tuple[int, str]], cap: int) -> None:
    clock = FakeClock()
    pool = pool_of(len(entries), max_per_proxy=cap, now=clock)
    for p, (load, state) in zip(pool.proxies, entries, strict=True):
        p.in_flight = load
        p.quarantined = state == "quarantined"
        p.cooling_until = clock.t + 10 if state == "cooling" else None
    free = [i for i, (load, state) in enumerate(entries) if state == "healthy" and load < cap]
    expected = min(free, key=lambda i: (entries[i][0], i)) if free else None
    got = pool.choose()
    assert (got.index if got else None) == expected
    assert pool.usable == any(state == "healthy" for _, state in entries)


# --- leases ------------------------------------------------------------------------------

async def test_leases_spread_then_cap_then_wait_for_a_slot() -> None:
    pool = pool_of(2, max_per_proxy=2)
    leases = [pool.lease() for _ in range(4)]
    held = [await lease.__aenter__() for lease in leases]
    assert [lease.proxy.index for lease in held] == [0, 1, 0, 1]
    waiter = asyncio.create_task(pool.lease(timeout=10).__aenter__())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not waiter.done()  # all four slots taken
    await leases[3].__aexit__(None, None, None)  # frees a slot on proxy 1
    got = await asyncio.wait_for(waiter, 5)
    assert got.proxy.index == 1 and [p.in_flight for p in pool.proxies] == [2, 2]
    for lease in [*leases[:3], got]:
        await lease.__aexit__(None, None, None)
    assert [p.in_flight for p in pool.proxies] == [0, 0]


async def test_waiting_for_a_slot_is_bounded() -> None:
    pool = pool_of(1, max_per_proxy=1, wait_timeout=0.05)
    async with pool.lease():
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(NoProxyAvailableError, match="no proxy slot free within 0.05s") as caught:
            async with pool.lease():
                pass
        assert 0.04 <= loop.time() - start < 3
        assert SECRET not in str(caught.value)
    assert pool.proxies[0].in_flight == 0


async def test_no_usable_proxy_fails_at_once_without_waiting() -> None:
    pool = pool_of(2, quarantine_after=1)
    for p in pool.proxies:
        pool.record_bot_check(p)
    with pytest.raises(NoProxyAvailableError, match="no usable proxy left"):
        async with pool.lease(timeout=None):  # would wait forever if it waited at all
            pass


async def test_a_lease_is_sticky_and_moves_to_the_next_healthy_proxy() -> None:
    pool = pool_of(3)
    async with pool.lease() as other:  # proxy 0 now carries one download
        async with pool.lease() as lease:
            assert lease.proxy.index == 1
            assert lease.proxy is lease.proxy  # the same proxy from start to end
            pool.record_failure(lease.proxy)
            moved = await lease.move(f"connect refused via http://u:{SECRET}@10.0.0.2:8080")
            assert moved is lease.proxy and moved.index == 2  # least loaded, the one left excluded
            assert [p.in_flight for p in pool.proxies] == [1, 0, 1]
            assert lease.moves == [("10.0.0.2:8080", "connect refused via http://REDACTED@10.0.0.2:8080")]
            # Next move prefers a proxy not tried yet (0, though loaded) over going back to 1.
            assert (await lease.move("bot check")).index == 0
            assert (await lease.move("bot check")).index == 1  # all tried: any other healthy one
        assert other.proxy.index == 0
    assert [p.in_flight for p in pool.proxies] == [0, 0, 0]


async def test_move_with_nowhere_to_go_fails_and_releases() -> None:
    pool = pool_of(1)
    lease = pool.lease()
    async with lease:
        with pytest.raises(NoProxyAvailableError):
            await lease.move("dead")
        with pytest.raises(RuntimeError):
            lease.proxy  # noqa: B018 - the property raises
    assert pool.proxies[0].in_flight == 0


async def test_a_waiter_wakes_when_a_cooldown_ends() -> None:
    pool = pool_of(1, failures_to_cool=1, cooldown=0.05)
    pool.record_failure(pool.proxies[0])
    assert not pool.usable
    async with asyncio.timeout(3):
        async with pool.lease(timeout=3) as lease:  # no slot is ever released: only the clock frees it
            assert lease.proxy.index == 0


async def test_a_pool_serves_successive_event_loops() -> None:
    pool = pool_of(1, max_per_proxy=1)

    async def hold_and_wait() -> int:
        async with pool.lease():
            waiter = asyncio.create_task(pool.lease(timeout=5).__aenter__())
            await asyncio.sleep(0)
            assert not waiter.done()
        got = await waiter
        index = got.proxy.index
        await got.__aexit__(None, None, None)
        return index

    assert await hold_and_wait() == 0
    assert await asyncio.to_thread(asyncio.run, hold_and_wait()) == 0  # another loop, same pool
    assert pool.proxies[0].in_flight == 0


# --- health ------------------------------------------------------------------------------

@pytest.mark.parametrize("events, state", [
    ("F", "healthy"),
    ("FF", "healthy"),
    ("FFF", "cooling"),
    ("FFSF", "healthy"),    # a success ends the run
    ("FFSFFF", "cooling"),
    ("BBBB", "healthy"),
    ("BBBBB", "quarantined"),
    ("BBBBSBBBB", "healthy"),
    ("BBBFBB", "quarantined"),  # connection failures do not break a run of bot checks
    ("FFFBBBBB", "quarantined"),
])
def test_health_rules(events: str, state: str) -> None:
    clock = FakeClock()
    pool = pool_of(1, now=clock)
    p = pool.proxies[0]
    actions = {"F": pool.record_failure, "S": pool.record_success, "B": pool.record_bot_check}
    for event in events:
        actions[event](p)
    assert pool.state(p) == state
    assert pool.snapshot()[0].state == state


def test_cooldown_ends_on_the_clock_and_one_more_failure_cools_again() -> None:
    clock = FakeClock()
    pool = pool_of(2, now=clock)
    a, b = pool.proxies
    for _ in range(3):
        pool.record_failure(a)
    assert pool.state(a) == "cooling" and pool.choose() is b and pool.usable
    clock.t += 1799.9
    assert pool.state(a) == "cooling"
    clock.t += 0.2
    assert pool.state(a) == "healthy" and pool.choose() is a
    assert pool.record_failure(a) == "cooling"  # still 4 in a row
    pool.record_success(a)
    assert pool.state(a) == "healthy" and pool.snapshot()[0].failures_in_a_row == 0
    assert pool.snapshot()[0].failures == 4


def test_usable_is_false_when_every_proxy_cools_or_is_quarantined() -> None:
    clock = FakeClock()
    pool = pool_of(2, now=clock, failures_to_cool=1, quarantine_after=1, cooldown=60)
    pool.record_failure(pool.proxies[0])
    assert pool.usable
    pool.record_bot_check(pool.proxies[1])
    assert not pool.usable and pool.choose() is None
    clock.t += 60
    assert pool.usable and pool.choose() is pool.proxies[0]


def test_records_by_url_or_label_and_unknown_proxies() -> None:
    pool = pool_of(2, failures_to_cool=1)
    assert pool.record_failure(pool.proxies[1].label) == "cooling"
    assert pool.record_failure(pool.proxies[0].url) == "cooling"
    with pytest.raises(ValueError, match="not a proxy of this pool") as caught:
        pool.record_failure(f"9.9.9.9:1:u:{SECRET}")
    assert SECRET not in str(caught.value)


# --- bot checks --------------------------------------------------------------------------

@pytest.mark.parametrize("status, body, expected", [
    (403, "Sign in to confirm you're not a bot", True),
    (429, "<html>Sign in to confirm you\u2019re not a bot. This helps protect our community.</html>", True),
    (403, "SIGN IN TO CONFIRM YOU\u2019RE\n NOT A BOT", True),
    (429, "Our systems have detected unusual traffic from your computer network.", True),
    (None, "ERROR: [youtube] dQw4w9WgXcQ: Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser "
           "or --cookies for the authentication.", True),
    (None, "ERROR: [youtube] x: Video unavailable. YouTube is requiring a captcha challenge before playback", True),
    (200, "Sign in to confirm you're not a bot", False),   # only 403/429 responses count
    (404, "confirm you're not a bot", False),
    (403, "Forbidden", False),
    (429, "Too Many Requests", False),
    (403, "Sign in to confirm your age", False),
    (None, "ERROR: [youtube] x: Video unavailable", False),
])
def test_is_bot_check(status: int | None, body: str, expected: bool) -> None:
    assert is_bot_check(status, body) is expected


# --- quarantine file ---------------------------------------------------------------------

def test_quarantine_writes_host_port_only_and_next_start_skips_it(tmp_path: Path) -> None:
    qfile = tmp_path / "quarantine.txt"
    pool = pool_of(3, quarantine_after=2, quarantine_file=qfile)
    a = pool.proxies[1]
    assert pool.record_bot_check(a) == "healthy" and not qfile.exists()
    assert pool.record_bot_check(a) == "quarantined"
    assert qfile.read_text() == "10.0.0.2:8080\n"
    pool.record_bot_check(a)  # already quarantined: not listed twice
    assert qfile.read_text() == "10.0.0.2:8080\n"
    again = pool_of(3, quarantine_file=qfile)
    assert [again.state(p) for p in again.proxies] == ["healthy", "quarantined", "healthy"]
    assert again.choose(exclude=[again.proxies[0]]) is again.proxies[2]


def test_quarantine_file_keeps_operator_lines(tmp_path: Path) -> None:
    qfile = tmp_path / "q.txt"
    qfile.write_text("# replaced weekly\n10.0.0.1:8080")  # no final newline
    pool = pool_of(2, quarantine_after=1, quarantine_file=qfile)
    assert pool.state(pool.proxies[0]) == "quarantined"
    pool.record_bot_check(pool.proxies[1])
    assert qfile.read_text() == "# replaced weekly\n10.0.0.1:8080\n10.0.0.2:8080\n"


def test_unwritable_quarantine_file_still_quarantines(tmp_path: Path) -> None:
    pool = pool_of(1, quarantine_after=1, quarantine_file=tmp_path / "no-such-dir" / "q.txt")
    assert pool.record_bot_check(pool.proxies[0]) == "quarantined"


def _quarantine_many(path: str, own: int, barrier: object) -> None:
    # The same 200 proxies in the same order (so both processes race on each entry), then 20 of its own.
    numbers = [*range(200), *range(1000 * own, 1000 * own + 20)]
    urls = [f"http://user{i}:{SECRET}@10.1.{i // 250}.{i % 250}:{3000 + i}" for i in numbers]
    pool = ProxyPool(urls, quarantine_after=1, quarantine_file=path)
    barrier.wait()  # type: ignore[attr-defined]
    for p in pool.proxies:
        pool.record_bot_check(p)


def test_two_processes_share_the_quarantine_file(tmp_path: Path) -> None:
    qfile = tmp_path / "q.txt"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_quarantine_many, args=(str(qfile), own, barrier)) for own in (1, 2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(10)
        assert proc.exitcode == 0
    lines = qfile.read_text().splitlines()
    numbers = [*range(200), *range(1000, 1020), *range(2000, 2020)]
    expected = {f"10.1.{i // 250}.{i % 250}:{3000 + i}" for i in numbers}
    assert all(re.fullmatch(r"10\.1\.\d+\.\d+:\d+", line) for line in lines)  # no torn or glued lines
    assert sorted(lines) == sorted(expected)  # each exactly once
    assert SECRET not in qfile.read_text() and "user" not in qfile.read_text()


def test_append_quarantine_is_idempotent(tmp_path: Path) -> None:
    qfile = tmp_path / "q.txt"
    assert append_quarantine(qfile, "h:1") is True
    assert append_quarantine(qfile, "H:1") is False
    assert qfile.read_text() == "h:1\n"


# --- credentials never shown -------------------------------------------------------------

async def test_no_str_repr_or_snapshot_shows_credentials(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="rangestream.proxypool")
    pool = ProxyPool([f"http://alice:{SECRET}@10.0.0.1:8080", f"socks5h://bob:{SECRET}@10.0.0.2:1080",
                      f"10.0.0.3:8000:carol:{SECRET}"], failures_to_cool=1, quarantine_after=1)
    async with pool.lease() as lease:
        pool.record_failure(lease.proxy)
        await lease.move("refused")
        pool.record_bot_check(lease.proxy)
        shown = [str(pool), repr(pool), repr(lease), str(lease.proxy), repr(lease.proxy)]
    shown += [str(p) for p in pool.proxies] + [repr(p) for p in pool.proxies]
    shown += [repr(s) for s in pool.snapshot()] + [str(s.as_dict()) for s in pool.snapshot()]
    shown += [r.getMessage() for r in caplog.records]
    for text in shown:
        assert SECRET not in text and "alice" not in text and "carol" not in text, text
    assert [s.label for s in pool.snapshot()] == ["10.0.0.1:8080", "10.0.0.2:1080", "10.0.0.3:8000"]
    assert [s.state for s in pool.snapshot()] == ["cooling", "quarantined", "healthy"]
    assert pool.proxies[2].url == f"http://carol:{SECRET}@10.0.0.3:8000"  # kept for the transport only


@given(st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5})?", fullmatch=True), st.integers(1, 65535),
       st.text(st.characters(codec="utf-8", exclude_characters="\n\r", exclude_categories=["Cs", "Cc"]),
               min_size=1, max_size=12).filter(lambda s: ":" not in s and s.strip() == s),
       st.text(st.characters(codec="utf-8", exclude_characters="\n\r", exclude_categories=["Cs", "Cc"]),
               min_size=4, max_size=16).filter(lambda s: s.strip() == s))
def test_raw_records_round_trip_and_never_show_the_password(host: str, port: int, user: str, password: str) -> None:
    pool = ProxyPool([f"{host}:{port}:{user}:{password}"])
    p = pool.proxies[0]
    assert p.address == f"{host}:{port}" and pool.snapshot()[0].label == f"{host}:{port}"
    parts = urlsplit(p.url)
    assert (unquote(parts.username or ""), unquote(parts.password or "")) == (user, password)
    assert (parts.hostname, parts.port) == (host, port)
    for text in (str(p), repr(p), repr(pool), repr(pool.snapshot())):
        assert f":{quote_all(password)}@" not in text and f":{password}@" not in text
        assert "REDACTED" in text or text.startswith(("ProxyPool", "[ProxyStatus"))


def quote_all(text: str) -> str:
    return quote(text, safe="")
