"""The proxy pool wired into Client: real proxies on loopback (HTTP and SOCKS5), each leaving
from its own address (127.0.0.2, 127.0.0.3, ...), and an origin that records who asked."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import rangestream
from rangestream import Client, NoProxyAvailableError, ObjectChangedError, ProxyError, ProxyPool
from rangestream.refresh import ResolveError, Resolver
from rangestream.testing import FAST_RETRY
from tests.proxy_support import LoopbackProxy, SourceOrigin, loopback_proxies

BODY = os.urandom(1 << 20)
CHUNK = 64 * 1024
SECRET = "pw-s3cr3t"
OPTS: dict[str, Any] = {"chunk_size": CHUNK, "window": 2, "retry": FAST_RETRY}


async def fetch(client: Client, url: str, **options: Any) -> bytes:
    async with client.open_stream(url, **{**OPTS, **options}) as stream:
        return b"".join([piece async for piece in stream])


async def until(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    """Bounded polling of a real condition."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def after_first(remotes: list[str], source: str) -> list[str]:
    """The requests from the first one ``source`` made onwards."""
    return remotes[remotes.index(source):]


def test_the_pool_is_exported() -> None:
    assert {"ProxyPool", "NoProxyAvailableError", "ProxyListError"} <= set(rangestream.__all__)
    assert issubclass(NoProxyAvailableError, ProxyError)


async def test_a_dead_proxy_in_the_list_is_left_for_the_next() -> None:
    async with loopback_proxies(2) as (a, b), SourceOrigin(BODY) as origin:
        await a.set_mode("refuse")
        pool = ProxyPool([a.url, b.socks_url])
        async with Client(proxies=pool) as client:
            assert await fetch(client, origin.url) == BODY
        assert origin.sources() == {b.source}
        dead, good = pool.proxies
        assert (dead.failures_total, good.failures_total) == (1, 0)
        assert [p.in_flight for p in pool.proxies] == [0, 0]


async def test_a_blocked_egress_moves_the_download_to_another_proxy() -> None:
    async with loopback_proxies(2) as (a, b), SourceOrigin(BODY) as origin:
        origin.bot_check_from = {a.source}
        pool = ProxyPool([a.url, b.url])
        async with Client(proxies=pool) as client:
            assert await fetch(client, origin.url) == BODY
        assert origin.sources() == {a.source, b.source}
        assert set(after_first(origin.remotes, b.source)) == {b.source}  # never back to the blocked one
        assert [p.bot_checks_total for p in pool.proxies] == [1, 0]
        assert pool.state(pool.proxies[0]) == "healthy"  # one bot check is not a quarantine


async def test_every_request_of_one_download_leaves_from_one_address() -> None:
    async with loopback_proxies(2) as (a, b):
        origins = [SourceOrigin(BODY) for _ in range(4)]
        for o in origins:
            await o.__aenter__()
        try:
            pool = ProxyPool([a.url, b.socks_url], max_per_proxy=2)
            async with Client(proxies=pool) as client:
                got = await asyncio.gather(*(fetch(client, o.url, chunk_size=32 * 1024) for o in origins))
            assert got == [BODY] * 4
            per_download = [o.sources() for o in origins]
            assert all(len(s) == 1 for s in per_download), per_download
            assert set().union(*per_download) == {a.source, b.source}  # both proxies carried downloads
            assert all(len(o.remotes) >= len(BODY) // (32 * 1024) for o in origins)
        finally:
            for o in origins:
                await o.__aexit__()


async def test_at_most_max_per_proxy_downloads_in_flight_on_each() -> None:
    gate = asyncio.Event()
    async with loopback_proxies(2) as (a, b):
        origins = [SourceOrigin(BODY) for _ in range(3)]
        for o in origins:
            o.gate = gate
            await o.__aenter__()
        try:
            pool = ProxyPool([a.url, b.url], max_per_proxy=1)
            async with Client(proxies=pool) as client:
                tasks = [asyncio.create_task(fetch(client, o.url)) for o in origins]
                await until(lambda: sum(bool(o.remotes) for o in origins) == 2, "two downloads to start")
                await asyncio.sleep(0.2)  # room for a third to (wrongly) start
                assert [p.in_flight for p in pool.proxies] == [1, 1]
                assert sum(bool(o.remotes) for o in origins) == 2  # the third waits for a slot
                gate.set()
                assert await asyncio.gather(*tasks) == [BODY] * 3
            assert all(len(o.sources()) == 1 for o in origins)
            assert [p.in_flight for p in pool.proxies] == [0, 0]
        finally:
            for o in origins:
                await o.__aexit__()


async def test_a_proxy_failing_three_downloads_in_a_row_cools_down_then_returns() -> None:
    async with loopback_proxies(2) as (a, b), SourceOrigin(BODY) as origin:
        await a.set_mode("refuse")
        pool = ProxyPool([a.url, b.url], cooldown=0.5)
        async with Client(proxies=pool) as client:
            for _ in range(3):
                assert await fetch(client, origin.url) == BODY
            assert pool.state(pool.proxies[0]) == "cooling"
            await a.set_mode("ok")
            origin.remotes.clear()
            assert await fetch(client, origin.url) == BODY
            assert origin.sources() == {b.source}  # a cooling proxy is not tried, even if it is back
            assert a.accepted == 0
            await until(lambda: pool.state(pool.proxies[0]) == "healthy", "the cooldown to end")
            origin.remotes.clear()
            assert await fetch(client, origin.url) == BODY
            assert origin.sources() == {a.source}  # back in use, first listed
        assert pool.proxies[0].failures == 0  # its success ended the run


async def test_bot_checks_in_a_row_quarantine_a_proxy_in_the_file_without_credentials(tmp_path: Path) -> None:
    qfile = tmp_path / "quarantine.txt"
    async with loopback_proxies(2, credentials=("user", SECRET)) as (a, b), SourceOrigin(BODY) as origin:
        origin.bot_check_from = {a.source}
        pool = ProxyPool([a.url, b.url], quarantine_after=2, quarantine_file=qfile)
        async with Client(proxies=pool) as client:
            for _ in range(2):
                assert await fetch(client, origin.url) == BODY
            assert pool.state(pool.proxies[0]) == "quarantined"
            assert qfile.read_text() == f"127.0.0.1:{a.port}\n"
            accepted = a.accepted
            assert await fetch(client, origin.url) == BODY
            assert a.accepted == accepted  # never used again
        again = ProxyPool([a.url, b.url], quarantine_file=qfile)
        assert [again.state(p) for p in again.proxies] == ["quarantined", "healthy"]
        assert SECRET not in qfile.read_text() and "user" not in qfile.read_text()


async def consume_killing(stream: Any, kill: Callable[[], Awaitable[None]], at: int) -> bytes:
    out = bytearray()
    killed = False
    async for piece in stream:
        out += piece
        if not killed and len(out) >= at:
            killed = True
            await kill()
    return bytes(out)


async def test_a_proxy_dying_mid_download_is_left_and_the_bytes_stay_exact() -> None:
    body = os.urandom(2 << 20)
    async with loopback_proxies(2) as (a, b), SourceOrigin(body) as origin:
        pool = ProxyPool([a.socks_url, b.url])
        async with Client(proxies=pool) as client, client.open_stream(origin.url, **OPTS) as stream:
            got = await consume_killing(stream, a.kill, 256 * 1024)
            assert stream.delivered == len(body)
            assert stream.moves == 1
        assert stream.stats.requests >= len(body) // CHUNK  # both proxies' requests, summed on leaving
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
        assert origin.remotes[0] == a.source
        assert set(after_first(origin.remotes, b.source)) == {b.source}
        assert pool.proxies[0].failures_total == 1


async def test_a_bot_check_mid_download_moves_and_unordered_pieces_cover_each_byte_once() -> None:
    body = os.urandom(2 << 20)
    async with loopback_proxies(2) as (a, b), SourceOrigin(body) as origin:
        origin.bot_check_after = {a.source: 5}
        pool = ProxyPool([a.url, b.url])
        written = bytearray(len(body))
        times = [0] * len(body)
        async with Client(proxies=pool) as client, client.open_stream(origin.url, **{**OPTS, "window": 4}) as stream:
            async for offset, piece in stream.unordered():
                written[offset:offset + len(piece)] = piece
                for i in range(offset, offset + len(piece), 4096):
                    times[i] += 1
        assert bytes(written) == body
        assert set(times[::4096]) == {1}
        assert origin.remotes.count(a.source) > 5 and b.source in origin.remotes
        assert pool.proxies[0].bot_checks_total == 1


class ChangingOrigin(SourceOrigin):
    """Sends an ETag; the object is replaced (new bytes, new ETag, ``grow`` more bytes) the moment
    it first answers a bot check, i.e. while the download moves to another proxy."""

    def __init__(self, body: bytes, *, grow: int = 0) -> None:
        super().__init__(body)
        self.etag = '"v1"'
        self.grow = grow

    async def _file(self, request: web.Request) -> web.StreamResponse:
        resp = await super()._file(request)
        if resp.status == 403 and self.etag == '"v1"':
            self.body, self.etag = os.urandom(len(self.body) + self.grow), '"v2"'
        elif resp.status != 403:
            resp.headers["ETag"] = self.etag
        return resp


@pytest.mark.parametrize("grow", [0, 5000], ids=["same size, new ETag", "larger"])
@pytest.mark.parametrize("unordered", [False, True], ids=["in order", "unordered"])
async def test_an_object_changed_during_a_move_is_object_changed_counting_every_delivered_byte(
        grow: int, unordered: bool) -> None:
    """The new proxy's stream must not splice the new version onto the old one, and the error's
    offset is what the consumer got (the bytes before the move included), all of them the old
    version's."""
    body = os.urandom(1 << 20)
    async with loopback_proxies(2) as (a, b), ChangingOrigin(body, grow=grow) as origin:
        origin.bot_check_after = {a.source: 4}
        spans: list[tuple[int, bytes]] = []
        async with Client(proxies=ProxyPool([a.url, b.url])) as client:
            with pytest.raises(ObjectChangedError) as caught:
                async with client.open_stream(origin.url, **OPTS) as stream:
                    if unordered:
                        async for offset, piece in stream.unordered():
                            spans.append((offset, piece))
                    else:
                        async for piece in stream:
                            spans.append((sum(len(p) for _, p in spans), piece))
        delivered = sum(len(p) for _, p in spans)
        assert stream.moves == 1 and delivered >= CHUNK  # it delivered before moving
        assert caught.value.offset == delivered
        for offset, piece in spans:  # every byte delivered is the old version's
            assert piece == body[offset:offset + len(piece)], offset


async def test_an_ip_bound_url_is_re_resolved_through_the_refresh_hook_before_the_move() -> None:
    async with loopback_proxies(2) as (a, b), SourceOrigin(BODY) as origin:
        origin.bot_check_from = {a.source}
        pool = ProxyPool([a.url, b.url])
        asked: list[tuple[str, str | None]] = []
        bound = origin.url + "?ip=127.0.0.2&clen=" + str(len(BODY))

        async def refresh(old: str) -> str:
            asked.append((old, pool.proxies[1].label if pool.proxies[1].in_flight else None))
            return origin.url + "?ip=127.0.0.3&clen=" + str(len(BODY))

        async with Client(proxies=pool) as client:
            async with client.open_stream(bound, refresh=refresh, **OPTS) as stream:
                got = b"".join([p async for p in stream])
        assert got == BODY
        assert asked == [(bound, f"127.0.0.1:{b.port}")]  # once, with the lease already on the new proxy


async def test_no_usable_proxy_is_a_proxy_error_without_credentials() -> None:
    async with loopback_proxies(2, credentials=("user", SECRET)) as (a, b), SourceOrigin(BODY) as origin:
        await a.set_mode("refuse")
        await b.set_mode("407")
        pool = ProxyPool([a.url, b.url])
        async with Client(proxies=pool) as client:
            with pytest.raises(NoProxyAvailableError) as info:
                await fetch(client, origin.url)
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)
        assert [p.failures_total for p in pool.proxies] == [1, 1]
        assert origin.remotes == []


async def test_a_bot_check_during_page_resolution_moves_the_lease() -> None:
    async with loopback_proxies(2) as (a, b):
        pool = ProxyPool([a.url, b.url])
        via: list[str] = []

        def extract(page_url: str, options: dict[str, Any]) -> dict[str, Any]:
            via.append(options["proxy"])
            if options["proxy"] == pool.proxies[0].url:
                raise RuntimeError("ERROR: [youtube] x: Sign in to confirm you\u2019re not a bot")
            return {"id": "x", "title": "t", "ext": "mp4", "url": "http://127.0.0.1:1/v", "format_id": "18"}

        async with Client(proxies=pool) as client, client.lease() as lease:
            res = await Resolver(proxy=lease, extract=extract).resolve("https://www.youtube.com/watch?v=x")
            assert res.formats[0].format_id == "18"
            assert lease.proxy is pool.proxies[1]
        assert via == [pool.proxies[0].url, pool.proxies[1].url]
        assert [p.bot_checks_total for p in pool.proxies] == [1, 0]


def test_a_resolve_error_says_bot_check_as_data() -> None:
    assert ResolveError("x", bot_check=True).bot_check
    assert not ResolveError("x").bot_check


__all__ = ["LoopbackProxy"]
