"""Limits and hardening: per-client cap (429), the header-read deadline (slowloris), the
write timeout for clients that read nothing, bounded memory per stream, the request-line
limit and malformed requests, Range parsing, and the media-only Content-Type."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import pytest
from service_support import SRC, q, serve

pytestmark = pytest.mark.timeout(30)
MiB = 1 << 20


async def test_per_client_cap_429(origin):
    url = origin.url(40_000_000, "pc", youtube=True, rate=2e6)
    async with serve(max_streams=4, max_streams_per_client=1) as client:
        first = await client.get(f"/stream?url={q(url)}")
        assert first.status == 200
        second = await client.get(f"/stream?url={q(url)}")
        assert second.status == 429 and second.headers["Retry-After"] == "2"
        assert "too many streams" in (await second.json())["error"]
        first.close()
        assert await origin.wait_idle(timeout=5.0)
        # the slot is the client's again once its stream ended
        third = await client.get(f"/stream?url={q(origin.url(1000, 'pc2', youtube=True))}")
        assert third.status == 200 and len(await third.read()) == 1000


async def test_header_read_deadline_closes_slow_heads():
    async with serve(header_timeout=0.5) as client:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = False
        for _ in range(100):  # one header byte every 50 ms: the head never completes
            writer.write(b"X")
            try:
                data = await asyncio.wait_for(reader.read(100), 0.05)
            except TimeoutError:
                continue
            closed = data == b""
            break
        elapsed = loop.time() - started
        writer.close()
    assert closed, "the connection stayed open while its head trickled in"
    assert 0.4 <= elapsed < 4.0


async def test_write_timeout_drops_a_client_that_reads_nothing(origin):
    url = origin.url(400_000_000, "stuck", youtube=True)
    async with serve(write_timeout=1.0) as client:
        resp = await client.get(f"/stream?url={q(url)}")
        assert resp.status == 200
        await resp.content.readexactly(100_000)  # then reads nothing more
        loop = asyncio.get_running_loop()
        started = loop.time()
        text = ""
        for _ in range(300):  # bounded: 15 s
            text = await (await client.get("/metrics")).text()
            if 'rangestream_errors_total{kind="write_timeout"} 1.0' in text \
                    and "rangestream_active_streams 0.0" in text:
                break
            await asyncio.sleep(0.05)
        assert 'rangestream_errors_total{kind="write_timeout"} 1.0' in text, "the stalled client was never dropped"
        assert loop.time() - started >= 0.9
        assert "rangestream_active_streams 0.0" in text
        # The upstream stops with the stream: no request is left being served. (Connections are
        # not counted: chunks that finished before the drop leave theirs idle in the keep-alive pool.)
        assert await origin.wait_idle(timeout=15.0, connections=False), "the upstream kept going"
        resp.close()
    sent = sum(r.bytes_sent for r in origin.log)
    assert sent < 100 * MiB  # the read-ahead stopped at its budget, far from the 400 MB object


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
@pytest.mark.timeout(60)
async def test_memory_per_stream_is_bounded(origin):
    """6 clients stop reading on 300 MB objects: the service's RSS grows by at most
    6 x (--read-ahead 4 MiB + 2 MiB head + 2.25 MiB per reading connection (<= 8) + 2 MiB
    response buffer) plus 32 MiB allocator slack. The engine's auto budget ((window - 1) x
    9.5 MB per stream), which the service used before, grew by 400-520 MiB here: far over it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rangestream.service", "--port", "0", "--allow-private", "--write-timeout", "120",
        "--read-ahead", "4",
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": SRC})
    try:
        line = (await proc.stdout.readline()).decode()
        base = line.split()[2]
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/stream?url={q(origin.url(20 * MiB, 'warm', youtube=True))}") as r:
                assert len(await r.read()) == 20 * MiB
            baseline = _rss(proc.pid)
            responses = []
            for i in range(6):
                r = await s.get(f"{base}/stream?url={q(origin.url(300_000_000, f'big{i}', youtube=True))}")
                assert r.status == 200
                await r.content.readexactly(MiB)
                responses.append(r)
            # until the origin stops sending: every stream has filled its budget
            last, still = -1, 0
            for _ in range(200):  # bounded: 200 x 0.1 s
                sent = sum(rec.bytes_sent for rec in origin.log)
                still = still + 1 if sent == last else 0
                if still >= 10:
                    break
                last = sent
                await asyncio.sleep(0.1)
            grown = _rss(proc.pid) - baseline
            for r in responses:
                r.close()
        per_stream = 4 * MiB + 2 * MiB + 8 * (2 * MiB + 256 * 1024) + 2 * MiB
        assert grown < 6 * per_stream + 32 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"
    finally:
        proc.terminate()
        await proc.wait()


async def test_two_signed_googlevideo_urls_fit_and_longer_lines_get_json(origin, caplog):
    caplog.set_level(logging.INFO)
    filler = "x" * 5500
    video = origin.url(3000, "v", youtube=True) + f"&sig={filler}"
    audio = origin.url(3000, "a", youtube=True) + f"&lsig={filler}"
    async with serve() as client:
        resp = await client.get(f"/stream?url={q(video)}&other={q(audio)}")
        assert resp.status == 200 and len(await resp.read()) == 3000
        resp = await client.get(f"/stream?url={q(video)}&pad={'y' * 40_000}&token=SECRETTOKEN")
        assert resp.status == 400
        assert "too long" in (await resp.json())["error"]
        # a malformed request line: the documented JSON error, no traceback, no secret in the log
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(b"GET /stream?token=SECRETTOKEN HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400")) and b"application/json" in head
    assert body.startswith(b'{"error": "malformed request"}')
    assert "SECRETTOKEN" not in caplog.text and "Traceback" not in caplog.text
    assert filler not in caplog.text


@pytest.mark.parametrize("header, status, start, stop", [
    ("bytes=0-99999999999999999999", 200, 0, 3000),  # 20 digits: not a range, the whole object
    ("bytes=0-9999999999999999999", 206, 0, 3000),  # 19 digits: the end clamped to the size
    ("bytes=10-9999999999999999999", 206, 10, 3000),
])
@pytest.mark.parametrize("youtube", [True, False], ids=["clen", "no-clen"])
async def test_range_parsing_ascii_bounded_clamped(origin, header, status, start, stop, youtube):
    url = origin.url(3000, "rg", youtube=youtube)
    async with serve() as client:
        resp = await client.get(f"/stream?url={q(url)}", headers={"Range": header})
        body = await resp.read()
    assert resp.status == status, body[:200]
    assert body == origin.content("rg", 3000)[start:stop]
    if status == 206:
        assert resp.headers["Content-Range"] == f"bytes {start}-{stop - 1}/3000"


@pytest.mark.parametrize("header", ["bytes=\u0661-\u0663", "bytes=\uff11-\uff13", "bytes=\u0661-"])
async def test_range_with_non_ascii_digits_is_ignored(origin, header):
    """Arabic-Indic or fullwidth digits (sent as raw UTF-8) are not a range: the whole object."""
    async with serve() as client:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        path = f"/stream?url={q(origin.url(3000, 'uni'))}"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
                     + f"Range: {header}\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body == origin.content("uni", 3000)


@pytest.mark.parametrize("mime, expected", [
    ("text/html", "application/octet-stream"), ("image/svg+xml", "application/octet-stream"),
    ("application/javascript", "application/octet-stream"), ("video/webm", "video/webm"),
    ("audio/mp4", "audio/mp4"), ("VIDEO/MP4", "video/mp4"), ("video/mp4;x=<b>", "application/octet-stream"),
])
async def test_content_type_media_only_nosniff_sandbox(origin, mime, expected):
    url = origin.url(1000, "ct") + ("&" if "?" in origin.url(1000, "ct") else "?") + f"mime={q(mime)}"
    async with serve() as client:
        for method in ("get", "head"):
            resp = await getattr(client, method)(f"/stream?url={q(url)}")
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"] == expected
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Content-Security-Policy"] == "sandbox"
