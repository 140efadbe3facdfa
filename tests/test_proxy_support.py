"""The loopback proxy harness itself: each proxy's requests reach the origin from its own
source address (HTTP forwarding, CONNECT, SOCKS5, through rangestream's transport too), and
its failure modes (refuse, 407, reset on connect) look as they do on a real network."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest
from aiohttp_socks import ProxyConnector
from aiohttp_socks import ProxyError as SocksProxyError
from proxy_support import LoopbackProxy, SourceOrigin, loopback_proxies

import rangestream
from rangestream.proxypool import is_bot_check

BODY = os.urandom(300_000)


async def test_each_proxy_egresses_from_its_own_source_address() -> None:
    async with SourceOrigin(BODY) as origin, loopback_proxies(3) as proxies:
        for proxy in proxies:
            origin.remotes.clear()
            got = bytearray()
            async with rangestream.open_stream(origin.url, proxy=proxy.url, chunk_size=100_000, window=2) as s:
                async for data in s:
                    got += data
            assert bytes(got) == BODY
            assert len(origin.remotes) >= 3 and set(origin.remotes) == {proxy.source}
        assert [p.source for p in proxies] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


async def test_socks5_with_credentials_egresses_from_its_source() -> None:
    async with SourceOrigin(BODY) as origin, loopback_proxies(2, credentials=("alice", "pw:1")) as proxies:
        proxy = proxies[1]
        async with rangestream.open_stream(origin.url, proxy=proxy.socks_url, chunk_size=150_000) as s:
            got = b"".join([data async for data in s])
        assert got == BODY and set(origin.remotes) == {"127.0.0.3"}
        assert {kind for kind, _, _ in proxy.carried} == {"socks"}


async def test_connect_tunnel_egresses_from_its_source() -> None:
    async with SourceOrigin(BODY) as origin, loopback_proxies(1) as (proxy,):
        port = int(origin.url.split(":")[2].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.write(b"GET /file HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 206") and answer.endswith(BODY[:10])
        assert origin.remotes == ["127.0.0.2"] and proxy.carried[0][0] == "connect"


async def test_origin_answers_a_bot_check_to_chosen_sources() -> None:
    async with SourceOrigin(BODY) as origin, loopback_proxies(2) as proxies, aiohttp.ClientSession() as session:
        origin.bot_check_from = {"127.0.0.2"}
        statuses = []
        for proxy in proxies:
            async with session.get(origin.url, proxy=proxy.url) as resp:
                statuses.append((resp.status, is_bot_check(resp.status, await resp.text(errors="replace"))))
        assert statuses == [(403, True), (200, False)]
        assert origin.remotes == ["127.0.0.2", "127.0.0.3"]


async def _get_status(session: aiohttp.ClientSession, url: str, proxy: LoopbackProxy) -> int:
    async with session.get(url, proxy=proxy.url) as resp:
        return resp.status


async def test_failure_modes_on_demand() -> None:
    async with SourceOrigin(BODY) as origin, loopback_proxies(1) as (proxy,), aiohttp.ClientSession() as session:
        await proxy.set_mode("407")
        assert await _get_status(session, origin.url, proxy) == 407
        await proxy.set_mode("reset")
        with pytest.raises(aiohttp.ClientError):  # reset by peer / disconnected, before any response
            await _get_status(session, origin.url, proxy)
        await proxy.set_mode("refuse")
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await _get_status(session, origin.url, proxy)
        assert isinstance(caught.value.os_error, ConnectionRefusedError)
        await proxy.set_mode("ok")  # listens again on the same port
        assert await _get_status(session, origin.url, proxy) == 200
        assert origin.remotes == ["127.0.0.2"]  # no failed attempt reached the origin


async def test_credentials_are_required_when_set() -> None:
    async with SourceOrigin(BODY) as origin, loopback_proxies(1, credentials=("bob", "pw")) as (proxy,):
        async with aiohttp.ClientSession() as session:
            bare = proxy.url.replace("bob:pw@", "")
            async with session.get(origin.url, proxy=bare) as resp:
                assert resp.status == 407
            assert await _get_status(session, origin.url, proxy) == 200
        socks_without = proxy.socks_url.replace("bob:pw@", "")
        async with aiohttp.ClientSession(connector=ProxyConnector.from_url(socks_without)) as session:
            with pytest.raises(SocksProxyError):
                await session.get(origin.url)
        assert origin.remotes == ["127.0.0.2"]
