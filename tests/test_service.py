"""Tests of rangestream.service (the HTTP service), all on loopback against the emulated CDN."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import subprocess
import sys
import time
from urllib.parse import quote

import aiohttp
import av
import pytest
import service_support
from aiohttp import web

from rangestream import Client, StreamError
from rangestream.service import (
    Guard,
    GuardedTransport,
    UpstreamRefused,
    main,
    parse_range,
)
from rangestream.service.guard import find_refusal
from rangestream.testing import FAST_RETRY
from rangestream.testing.media import generate_clip
from rangestream.testing.servers import serve as serve_handler

pytestmark = pytest.mark.timeout(20)

# Fail fast: the default policy backs off 1 s, 2 s, 4 s.
FAST = {"retry": FAST_RETRY}
SECRET_SIG = "sig=0123456789abcdef"


serve = service_support.serve


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """caplog, with the "rangestream" loggers reaching it whatever other tests (the CLI's) set."""
    def capture(level: int) -> None:
        caplog.set_level(level)
        for name in ("rangestream", "rangestream.service"):
            caplog.set_level(level, logger=name)
            monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    capture.caplog = caplog
    return capture


def q(url: str) -> str:
    return quote(url, safe="")


SIZE = 3_000_001


@pytest.mark.parametrize("youtube", [True, False], ids=["clen", "no-clen"])
async def test_whole_body_byte_exact(origin, youtube):
    url = origin.url(SIZE, "whole", youtube=youtube)
    async with serve() as client:
        resp = await client.get(f"/stream?url={q(url)}")
        body = await resp.read()
    assert resp.status == 200
    assert body == origin.content("whole", SIZE)
    assert resp.headers["Content-Length"] == str(SIZE)
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Content-Type"] == ("video/mp4" if youtube else "application/octet-stream")
    assert "Content-Range" not in resp.headers


@pytest.mark.parametrize("youtube", [True, False], ids=["clen", "no-clen"])
@pytest.mark.parametrize("header, start, stop", [
    ("bytes=1000-199999", 1000, 200_000),
    ("bytes=2500000-", 2_500_000, SIZE),
    ("bytes=0-0", 0, 1),
    ("bytes=2999990-9999999", 2_999_990, SIZE),  # past the end: clipped
    ("bytes=-4096", SIZE - 4096, SIZE),
])
async def test_range_exact(origin, youtube, header, start, stop):
    url = origin.url(SIZE, "ranged", youtube=youtube)
    async with serve() as client:
        resp = await client.get(f"/stream?url={q(url)}", headers={"Range": header})
        body = await resp.read()
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{SIZE}"
    assert resp.headers["Content-Length"] == str(stop - start)
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert body == origin.content("ranged", SIZE)[start:stop]


async def test_unparsable_or_multiple_ranges_get_the_whole_body(origin):
    url = origin.url(100_000, "multi", youtube=True)
    async with serve() as client:
        for header in ("bytes=0-1,5-9", "items=0-5", "bytes=9-3"):
            resp = await client.get(f"/stream?url={q(url)}", headers={"Range": header})
            assert resp.status == 200, header
            assert await resp.read() == origin.content("multi", 100_000)


async def test_head(origin):
    url = origin.url(SIZE, "head", youtube=True)
    async with serve() as client:
        resp = await client.head(f"/stream?url={q(url)}")
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(SIZE)
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert await resp.read() == b""
        resp = await client.head(f"/stream?url={q(origin.url(SIZE, 'head'))}", headers={"Range": "bytes=10-"})
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes 10-{SIZE - 1}/{SIZE}"
        assert resp.headers["Content-Length"] == str(SIZE - 10)
    # HEAD never pulls the body: one byte per HEAD upstream
    assert sum(r.bytes_sent for r in origin.log) <= 2


@pytest.mark.parametrize("youtube", [True, False], ids=["clen", "no-clen"])
@pytest.mark.parametrize("header", ["bytes={size}-", "bytes={size}-{big}", "bytes=-0"])
async def test_416(origin, youtube, header):
    size = 50_000
    url = origin.url(size, "short", youtube=youtube)
    async with serve() as client:
        resp = await client.get(f"/stream?url={q(url)}",
                                headers={"Range": header.format(size=size, big=size * 2)})
        assert resp.status == 416
        assert resp.headers["Content-Range"] == f"bytes */{size}"
        assert "error" in await resp.json()


async def test_player_disconnect_cancels_the_upstream(origin):
    size = 40_000_000
    url = origin.url(size, "slow", youtube=True, rate=2e6)  # 20 s at full length
    async with serve(max_streams=1) as client:
        resp = await client.get(f"/stream?url={q(url)}")
        assert resp.status == 200
        got = await resp.content.readexactly(100_000)
        assert got == origin.content("slow", size)[:100_000]
        assert origin.open_connections >= 1
        resp.close()  # the player goes away mid-body
        assert await origin.wait_idle(timeout=5.0)
        # and the stream's slot is free again
        resp = await client.get(f"/stream?url={q(origin.url(1000, 'after', youtube=True))}")
        assert resp.status == 200 and len(await resp.read()) == 1000


@pytest.mark.parametrize("fmt, ctype", [("mp4", "video/mp4"), ("mkv", "video/x-matroska")])
async def test_mux_pair_is_playable(origin, fmt, ctype):
    vurl = origin.add_object("v.mp4", generate_clip("h264-fmp4"), "video/mp4")
    aurl = origin.add_object("a.m4a", generate_clip("aac-fmp4"), "audio/mp4")
    async with serve() as client:
        resp = await client.get(f"/mux?video={q(vurl)}&audio={q(aurl)}&format={fmt}")
        body = await resp.read()
    assert resp.status == 200
    assert resp.headers["Content-Type"] == ctype
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    with av.open(io.BytesIO(body)) as container:
        kinds = sorted(s.type for s in container.streams)
        assert kinds == ["audio", "video"]
        packets = sum(1 for p in container.demux() if p.size)
    assert packets > 100  # 3 s of 25 fps video plus audio
    assert await origin.wait_idle()


async def test_mux_input_error_before_first_byte_is_502(origin):
    vurl = origin.add_object("junk.mp4", bytes(range(256)) * 400, "video/mp4")
    aurl = origin.add_object("a.m4a", generate_clip("aac-fmp4"), "audio/mp4")
    async with serve() as client:
        resp = await client.get(f"/mux?video={q(vurl)}&audio={q(aurl)}")
        assert resp.status == 502
        assert "video" in (await resp.json())["error"]
        resp = await client.get(f"/mux?video={q(origin.base_url + '/media/nothere')}&audio={q(aurl)}")
        assert resp.status == 404
        assert (await resp.json())["error"].startswith("video:")
        resp = await client.get(f"/mux?video={q(vurl)}&audio={q(aurl)}&format=avi")
        assert resp.status == 400
        resp = await client.head(f"/mux?video={q(vurl)}&audio={q(aurl)}")
        assert resp.status == 405
    assert await origin.wait_idle()


async def test_token_required_when_configured(origin):
    url = origin.url(1000, "tok", youtube=True)
    async with serve(token="s3cret") as client:
        resp = await client.get(f"/stream?url={q(url)}")
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "token" in (await resp.json())["error"]
        resp = await client.get(f"/stream?url={q(url)}", headers={"Authorization": "Bearer wrong"})
        assert resp.status == 401
        resp = await client.get(f"/stream?url={q(url)}&token=wrong")
        assert resp.status == 401
        resp = await client.get(f"/stream?url={q(url)}", headers={"Authorization": "Bearer s3cret"})
        assert resp.status == 200 and len(await resp.read()) == 1000
        resp = await client.get(f"/stream?url={q(url)}&token=s3cret")
        assert resp.status == 200 and len(await resp.read()) == 1000
        resp = await client.get("/nowhere")  # unknown paths too
        assert resp.status == 401


async def test_ssrf_guard_refuses_non_public_upstreams(origin):
    async with serve(allow_private=False) as client:
        for url in (origin.url(1000, "ssrf", youtube=True),
                    f"http://localhost:{origin.port}/data/x/10.bin",
                    "http://10.1.2.3/x", "http://169.254.169.254/latest/meta-data/",
                    "http://[::1]:9/x", "http://[::ffff:127.0.0.1]:9/x", "http://0.0.0.0:9/x"):
            resp = await client.get(f"/stream?url={q(url)}")
            assert resp.status == 403, url
            assert "public" in (await resp.json())["error"]
        resp = await client.get(f"/mux?video={q(origin.url(10, 'v'))}&audio={q(origin.url(10, 'a'))}")
        assert resp.status == 403
    assert origin.request_count == 0


async def test_allow_host_allowlist(origin):
    async with serve(allow_hosts=("googlevideo.com",)) as client:
        resp = await client.get(f"/stream?url={q(origin.url(1000, 'al', youtube=True))}")
        assert resp.status == 403
        assert "allowed hosts" in (await resp.json())["error"]
    assert origin.request_count == 0
    guard = Guard(allow_private=False, allow_hosts=("googlevideo.com",))
    assert guard.check_name("rr1---sn-abc.googlevideo.com.") == "rr1---sn-abc.googlevideo.com"
    assert guard.check_name("GoogleVideo.com") == "googlevideo.com"
    with pytest.raises(UpstreamRefused) as info:
        guard.check_name("evilgooglevideo.com")
    assert info.value.kind == "not-allowed" and info.value.host == "evilgooglevideo.com"


async def test_guarded_transport_refuses_every_hop(origin):
    """Defence in depth: a redirect (or DNS answer) to a private address is refused in the
    transport too, not only by the handler's check of the URL it was given."""
    guard = Guard(allow_private=False)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(origin.url(1000, "hop"))

    async with Client(transport=GuardedTransport(guard), **FAST) as c:
        # An IP literal: refused by the per-request hook, at once, not retried.
        with pytest.raises(StreamError) as info:
            async with c.open_stream(origin.url(1000, "lit")) as s:
                async for _ in s:
                    pass
        assert find_refusal(info.value) is not None
        # A name resolving to loopback: the resolver drops the address.
        with pytest.raises(StreamError):
            async with c.open_stream(f"http://localhost:{origin.port}/data/n/1000.bin") as s:
                async for _ in s:
                    pass
    assert origin.request_count == 0
    # With private upstreams allowed, a redirect hop still goes through the allowlist.
    async with serve_handler(redirect) as redirector:
        guard = Guard(allow_private=True, allow_hosts=("localhost",))
        async with Client(transport=GuardedTransport(guard), **FAST) as c:
            with pytest.raises(StreamError) as info:
                async with c.open_stream(redirector.replace("127.0.0.1", "localhost")):
                    pass
        assert find_refusal(info.value) is not None
    assert origin.request_count == 0


@pytest.mark.parametrize("param", ["", "url=", "url=ftp%3A%2F%2Fexample.com%2Fx", "url=file%3A%2F%2F%2Fetc%2Fpasswd",
                                   "url=not%20a%20url", "url=http%3A%2F%2F", "url=http%3A%2F%2Fexample.com%3A99999%2F"])
async def test_bad_or_missing_url_is_400(param):
    async with serve() as client:
        resp = await client.get(f"/stream?{param}")
        assert resp.status == 400
        assert set(await resp.json()) == {"error"}


async def test_concurrency_cap_503(origin):
    url = origin.url(40_000_000, "busy", youtube=True, rate=2e6)
    async with serve(max_streams=1) as client:
        first = await client.get(f"/stream?url={q(url)}")
        assert first.status == 200
        second = await client.get(f"/stream?url={q(url)}")
        assert second.status == 503
        assert second.headers["Retry-After"] == "2"
        assert "busy" in (await second.json())["error"]
        mux = await client.get(f"/mux?video={q(url)}&audio={q(url)}")
        assert mux.status == 503
        first.close()
    assert await origin.wait_idle(timeout=5.0)


async def test_upstream_errors_map_to_statuses_with_redacted_messages(origin, logs):
    logs(logging.INFO)
    caplog = logs.caplog
    missing = f"{origin.base_url}/media/nothere?clen=100&{SECRET_SIG}"
    expired = origin.url(1000, "old", youtube=True, expire=time.time() - 60)
    sig = expired.split("sig=")[1].split("&")[0]
    async with serve() as client:
        resp = await client.get(f"/stream?url={q(missing)}")
        assert resp.status == 404
        text = (await resp.json())["error"]
        assert "404" in text and "0123456789abcdef" not in text and "REDACTED" in text
        resp = await client.get(f"/stream?url={q(missing.replace('clen=100&', ''))}")  # size unknown
        assert resp.status == 404
        resp = await client.get(f"/stream?url={q(expired)}")
        assert resp.status == 410
        assert sig not in await resp.text()
        # nothing listens there: a network error
        resp = await client.get(f"/stream?url={q('http://127.0.0.1:9/x?' + SECRET_SIG)}")
        assert resp.status == 502
        assert "0123456789abcdef" not in await resp.text()
    assert "0123456789abcdef" not in caplog.text and sig not in caplog.text
    assert "/stream?url=" in caplog.text  # requests are logged, redacted


def test_parse_range():
    assert parse_range(None) is None
    assert parse_range("bytes=0-") == (0, None)
    assert parse_range("bytes=5-9") == (5, 9)
    assert parse_range("bytes=-7") == (None, 7)
    assert parse_range(" Bytes = 5 - 9 ") == (5, 9)
    for bad in ("bytes=9-5", "bytes=-", "bytes=1-2,4-5", "lines=1-2", "bytes=a-b"):
        assert parse_range(bad) is None, bad


def test_main_refuses_a_public_host_without_token(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--host", "0.0.0.0"])
    assert info.value.code == 2
    assert "--token" in capsys.readouterr().err


def test_main_runs_prints_address_and_exits_0_on_ctrl_c():
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "src")}
    proc = subprocess.Popen([sys.executable, "-m", "rangestream.service", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        assert port > 0
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert err == ""


async def test_failure_after_headers_closes_the_connection(origin, logs):
    """A body cut short must never look complete: the player's connection is closed."""
    logs(logging.WARNING)
    caplog = logs.caplog
    size = 2_000_000
    url = origin.url(size, "cut", youtube=True, fault="reset", fault_at=300_000)  # every attempt
    async with serve() as client:
        resp = await client.get(f"/stream?url={q(url)}")
        assert resp.status == 200 and resp.headers["Content-Length"] == str(size)
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert await origin.wait_idle()
    assert "failed after the headers" in caplog.text
    assert "Error handling request" not in caplog.text


async def test_mux_failure_or_disconnect_after_headers(origin, logs):
    logs(logging.WARNING)
    caplog = logs.caplog
    # Longer than FFmpeg's probe (5 s of media), so output starts before the inputs end.
    video = generate_clip("h264-fmp4", 12.0, width=128, height=96, fps=10)
    origin.add_object("v.mp4", video, "video/mp4")
    aurl = origin.add_object("a.m4a", generate_clip("aac-fmp4", 12.0, sample_rate=8000), "audio/mp4")
    # The video stops cleanly at 90 % (a truncation: the client reads every byte sent, unlike
    # a reset whose RST can discard what is still unread), and every retry gets a 404: a
    # terminal failure well after the output started.
    # (Aimed by first byte: the chunks asked with the first one before the size is known are
    # requests for v.mp4 too.)
    cut = len(video) * 90 // 100
    origin.inject("truncate", name="v.mp4", at=cut, start=0)
    origin.inject("status", status=404, name="v.mp4", start=cut)  # a 404 is not retried: one is enough
    vurl = origin.media_url("v.mp4", rate=100_000)  # the audio is all there long before the video ends
    async with serve() as client:
        resp = await client.get(f"/mux?video={q(vurl)}&audio={q(aurl)}")
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
        # every upstream request ended (complete responses may keep their connection in the pool)
        deadline = time.monotonic() + 3.0
        while any(r.end is None for r in origin.log) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert all(r.end is not None for r in origin.log)
        def within(r) -> bool:
            return r.name == "v.mp4" and bool(r.range) and int(r.range[6:].split("-")[0]) < len(video)

        assert [r.status for r in origin.log if within(r)][:2] == [206, 404]
        # a player that leaves mid-output: both inputs stop
        slow_v = origin.media_url("v.mp4", rate=20_000)
        resp = await client.get(f"/mux?video={q(slow_v)}&audio={q(aurl)}")
        assert resp.status == 200
        await resp.content.readexactly(1000)
        resp.close()
        # (the audio, complete, may stay in the shared pool: wait for requests, not connections)
        deadline = time.monotonic() + 3.0  # the video alone would take another 2 s or more
        while any(r.end is None for r in origin.log) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        slow = [r for r in origin.log if r.query.get("rate") == "20000" and within(r)]
        assert slow and all(r.end is not None and r.outcome == "client-closed" for r in slow)
        assert sum(r.bytes_sent for r in slow) < len(video)
    assert await origin.wait_idle()
    assert "Error handling request" not in caplog.text
