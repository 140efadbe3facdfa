"""``rangestream serve`` with a proxy pool: /stream through real loopback proxies, /metrics per
proxy (``host:port`` labels, never credentials), /healthz 503 when no proxy is usable, the flags."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from rangestream import ProxyPool
from tests.proxy_support import SourceOrigin, loopback_proxies
from tests.service_support import SRC, q, serve

BODY = os.urandom(512 * 1024)
SECRET = "svc-s3cr3t-PW"
STREAM = {"chunk_size": 65536, "window": 2}


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of ``name{labels}`` in a Prometheus exposition, or None."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if m and sorted(m.group(1).split(",")) == sorted(want.split(",")):
            return float(m.group(2))
    return None


async def test_stream_moves_off_a_dead_proxy_and_metrics_show_each_proxy() -> None:
    async with loopback_proxies(2, credentials=("user", SECRET)) as (a, b), SourceOrigin(BODY) as origin:
        await a.set_mode("refuse")
        pool = ProxyPool([a.url, b.url])
        async with serve(proxies=pool, stream_options=STREAM) as client:
            resp = await client.get(f"/stream?url={q(origin.url)}")
            assert resp.status == 200
            assert await resp.read() == BODY
            text = await (await client.get("/metrics")).text()
            assert (await client.get("/healthz")).status == 200
        assert origin.sources() == {b.source}
        dead, good = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
        assert metric(text, "rangestream_proxy_failures", proxy=dead) == 1.0
        assert metric(text, "rangestream_proxy_failures", proxy=good) == 0.0
        assert metric(text, "rangestream_proxy_in_flight", proxy=good) == 0.0
        assert metric(text, "rangestream_proxy_state", proxy=dead, state="healthy") == 1.0
        assert metric(text, "rangestream_proxy_bot_checks", proxy=good) == 0.0
        assert SECRET not in text and "user" not in text


async def test_a_request_holds_one_proxy_while_it_streams() -> None:
    gate = asyncio.Event()
    async with loopback_proxies(2) as (a, b), SourceOrigin(BODY) as origin:
        origin.gate = gate
        pool = ProxyPool([a.url, b.url])
        async with serve(proxies=pool, stream_options=STREAM) as client:
            pending = asyncio.create_task(client.get(f"/stream?url={q(origin.url)}"))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while not origin.remotes:
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
            text = await (await client.get("/metrics")).text()
            assert metric(text, "rangestream_proxy_in_flight", proxy=f"127.0.0.1:{a.port}") == 1.0
            gate.set()
            resp = await pending
            assert await resp.read() == BODY
        assert origin.sources() == {a.source}


async def test_healthz_is_503_when_no_proxy_is_usable(tmp_path: Path) -> None:
    quarantine = tmp_path / "q.txt"
    async with loopback_proxies(1) as (a,), SourceOrigin(BODY) as origin:
        origin.bot_check_from = {a.source}
        pool = ProxyPool([a.url], quarantine_after=1, quarantine_file=quarantine)
        async with serve(proxies=pool, stream_options=STREAM) as client:
            assert (await client.get("/healthz")).status == 200
            resp = await client.get(f"/stream?url={q(origin.url)}")
            assert resp.status >= 500
            health = await client.get("/healthz")
            assert health.status == 503
            assert (await health.json())["status"] == "no usable proxy"
            text = await (await client.get("/metrics")).text()
            assert metric(text, "rangestream_proxy_state", proxy=f"127.0.0.1:{a.port}", state="quarantined") == 1.0
            assert metric(text, "rangestream_proxy_bot_checks", proxy=f"127.0.0.1:{a.port}") == 1.0
            again = await client.get(f"/stream?url={q(origin.url)}")
            assert again.status == 503
            assert metric(await (await client.get("/metrics")).text(), "rangestream_refusals_total",
                          reason="no_proxy") == 1.0
        assert quarantine.read_text() == f"127.0.0.1:{a.port}\n"


async def test_serve_refuses_a_bad_proxy_file_with_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "proxies.txt"
    bad.write_text(f"127.0.0.1:3128\nhttp://user:{SECRET}@127.0.0.1:notaport\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rangestream.service", "--port", "0", "--proxy-file", str(bad),
        env={**os.environ, "PYTHONPATH": SRC}, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 2, (out, err)
    assert b"line 2" in err and SECRET.encode() not in err + out


async def test_a_page_is_resolved_through_the_requests_proxy() -> None:
    pytest.importorskip("yt_dlp", reason="page resolution needs yt-dlp (rangestream[youtube])")
    async with loopback_proxies(1) as (a,), SourceOrigin(BODY[:65536]) as page_server:
        async with serve(proxies=ProxyPool([a.url]), stream_options=STREAM) as client:
            resp = await client.get(f"/watch/info?url={q(page_server.url)}")
            assert resp.status == 200, await resp.text()
        # yt-dlp's requests for the page left from the proxy's address (127.0.0.2), none directly.
        assert page_server.remotes and page_server.sources() == {a.source}, page_server.remotes
