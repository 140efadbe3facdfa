"""Operating the service: /healthz, /metrics, graceful drain on SIGTERM, --workers with
metrics summed over workers, and the gunicorn app factory."""

from __future__ import annotations

import asyncio
import os
import re
import signal

import aiohttp
import pytest
from service_support import q, serve, serve_process

pytestmark = pytest.mark.timeout(40)


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert m, f"{name}{labels} not in /metrics"
    return float(m.group(1))


async def test_healthz_ok_then_503_while_draining(origin):
    from rangestream.service import begin_drain

    async with serve() as client:
        resp = await client.get("/healthz")
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
        begin_drain(client.server.app)
        resp = await client.get("/healthz")
        assert resp.status == 503 and (await resp.json())["status"] == "draining"
        resp = await client.get(f"/stream?url={q(origin.url(1000, 'late', youtube=True))}")
        assert resp.status == 503 and "Retry-After" in resp.headers
    assert origin.request_count == 0


async def test_metrics_count_streams_bytes_requests_errors_refusals(origin):
    size = 3_000_000
    async with serve(max_streams=1) as client:
        resp = await client.get(f"/stream?url={q(origin.url(size, 'm', youtube=True))}")
        assert resp.status == 200 and len(await resp.read()) == size
        resp = await client.get(f"/stream?url={q(origin.base_url + '/media/nothere')}")
        assert resp.status == 404
        slow = await client.get(f"/stream?url={q(origin.url(40_000_000, 'slow', youtube=True, rate=2e6))}")
        assert slow.status == 200
        busy = await client.get(f"/stream?url={q(origin.url(10, 'b'))}")
        assert busy.status == 503
        text = await (await client.get("/metrics")).text()
        assert metric(text, "rangestream_active_streams") == 1
        slow.close()
    assert metric(text, "rangestream_bytes_out_total") >= size
    # The slow one counts when it ends; the 404 counts 4: the first request and the 3 chunks its
    # auto window asked with it before the size was known.
    assert metric(text, "rangestream_upstream_requests_total") == 5
    assert metric(text, "rangestream_ttfb_seconds_count") >= 2
    assert metric(text, "rangestream_errors_total", '{kind="HTTPStatusError"}') == 1
    assert metric(text, "rangestream_refusals_total", '{reason="max_streams"}') == 1
    assert "rangestream_retries_total" in text and "rangestream_refreshes_total" in text


def test_sigterm_drains_running_streams_then_exits(origin_process):
    """SIGTERM: the listener closes, a running stream finishes byte-exact within the grace."""
    base_origin, content = origin_process
    size = 6_000_000
    url = f"{base_origin}/data/drain/{size}.bin?rate=3e6"  # about 2 s
    with serve_process("--allow-private", "--grace", "20") as (proc, base):
        async def run() -> bytes:
            async with aiohttp.ClientSession() as s, s.get(f"{base}/stream?url={q(url)}") as resp:
                assert resp.status == 200
                first = await resp.content.readexactly(100_000)
                proc.send_signal(signal.SIGTERM)
                # new connections are refused while the stream drains
                await asyncio.sleep(0.3)
                with pytest.raises(aiohttp.ClientConnectionError):
                    async with aiohttp.ClientSession() as s2:
                        await s2.get(f"{base}/healthz")
                return first + await resp.read()
        body = asyncio.run(run())
        assert body == content("drain", size)
        assert proc.wait(timeout=15) == 0


def test_grace_cuts_streams_that_outlast_it(origin_process):
    base_origin, _ = origin_process
    url = f"{base_origin}/data/long/40000000.bin?rate=1e6"  # 40 s
    with serve_process("--allow-private", "--grace", "1") as (proc, base):
        async def run() -> None:
            async with aiohttp.ClientSession() as s, s.get(f"{base}/stream?url={q(url)}") as resp:
                assert resp.status == 200
                await resp.content.readexactly(10_000)
                proc.send_signal(signal.SIGTERM)
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
        asyncio.run(run())
        assert proc.wait(timeout=10) == 0


def test_workers_share_one_port_and_sum_metrics(origin_process):
    base_origin, content = origin_process
    # --max-streams 12: the kernel may send 9 or more of the 12 to one worker (about 1 run in 7),
    # which its default cap of 8 would answer 503.
    with serve_process("--allow-private", "--workers", "2", "--max-streams", "12") as (proc, base):
        async def run() -> str:
            async with aiohttp.ClientSession() as s:
                async def one(i: int) -> None:
                    # a fresh connection each: the kernel spreads them over the workers
                    async with aiohttp.ClientSession() as own, own.get(
                            f"{base}/stream?url={q(f'{base_origin}/data/w{i}/100000.bin')}") as resp:
                        assert await resp.read() == content(f"w{i}", 100_000)
                await asyncio.gather(*(one(i) for i in range(12)))
                pids = set()
                for _ in range(40):  # bounded: until two different workers answered
                    async with aiohttp.ClientSession() as own, own.get(f"{base}/healthz") as resp:
                        pids.add((await resp.json())["worker"])
                    if len(pids) >= 2:
                        break
                assert len(pids) == 2, "the connections did not reach two workers"
                async with s.get(f"{base}/metrics") as resp:
                    return await resp.text()
        text = asyncio.run(run())
        # every worker answers with the sum over both
        assert metric(text, "rangestream_bytes_out_total") == 12 * 100_000
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


async def test_create_app_factory_reads_serve_flags(monkeypatch):
    from rangestream.service import create_app
    from rangestream.service.state import STATE

    monkeypatch.setenv("RANGESTREAM_SERVE_ARGS", "--max-streams 3 --allow-host example.com --read-ahead 4")
    app = await create_app()
    options = app[STATE].options
    assert options.max_streams == 3 and options.allow_hosts == ("example.com",)
    assert options.read_ahead == 4 << 20


@pytest.fixture
def origin_process():
    """The emulated CDN as a subprocess (tests that run the service synchronously)."""
    import subprocess
    import sys

    from service_support import SRC

    from rangestream.testing.origin import PROFILES, Origin

    proc = subprocess.Popen([sys.executable, "-m", "rangestream.testing.origin", "--port", "0", "--profile", "fast"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": SRC})
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert m, line
        model = Origin(PROFILES["fast"])
        yield m.group(0), model.content
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def _seen_from(remote: str):
    """A middleware, outermost, making the app see every request as coming from ``remote``
    (as aiohttp's forwarded-header helpers do, with ``request.clone(remote=)``): the only way to
    have a non-loopback peer while the tests listen on 127.0.0.1 only."""
    from aiohttp import web

    @web.middleware
    async def seen_from(request, handler):
        return await handler(request.clone(remote=remote))

    return seen_from


@pytest.mark.parametrize("peer", ["192.0.2.7", "2001:db8::7"])
async def test_metrics_with_a_signing_key_and_no_token_answer_only_loopback_clients(peer):
    from aiohttp.test_utils import TestClient, TestServer

    from rangestream.service import ServerOptions, make_app

    # Bound elsewhere (not loopback), signed links for media, no --token.
    options = ServerOptions(signing_key="k" * 32, loopback_only=False)
    async with serve(signing_key="k" * 32, loopback_only=False) as client:
        assert (await client.get("/metrics")).status == 200  # from 127.0.0.1: the host's own scraper
    app = make_app(options)
    app.middlewares.insert(0, _seen_from(peer))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/metrics")
        assert resp.status == 403, await resp.text()
        assert "rangestream_" not in await resp.text()
        assert (await client.get("/healthz")).status == 200  # load balancers still see it
    # With an operator's token, /metrics needs it, from anywhere (signed links do not open it).
    app = make_app(ServerOptions(signing_key="k" * 32, token="op-token", loopback_only=False))
    app.middlewares.insert(0, _seen_from(peer))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/metrics")).status == 401
        resp = await client.get("/metrics", headers={"Authorization": "Bearer op-token"})
        assert resp.status == 200 and "rangestream_active_streams" in await resp.text()
    async with serve(signing_key="k" * 32, token="op-token", loopback_only=False) as client:
        assert (await client.get("/metrics")).status == 401  # loopback needs the token too
