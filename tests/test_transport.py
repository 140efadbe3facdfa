"""The transport as CDNs see it: headers, cookies, proxies, rate cap. Real sockets only."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator
from itertools import pairwise

import pytest
from aiohttp import web

import rangestream
from rangestream import Retry
from rangestream.errors import RangestreamError, StreamError
from rangestream.headers import CHROME_USER_AGENT, IOS_USER_AGENT, headers_for
from rangestream.testing import FAST_RETRY

KB = 1024
SECRET = "s3cr3t-pw"


async def fetch(url: str, client: rangestream.Client | None = None, **opts) -> bytes:
    opts.setdefault("retry", FAST_RETRY)
    if client is None:
        cm = rangestream.open_stream(url, **opts)
    else:
        cm = client.open_stream(url, **opts)
    async with cm as stream:
        return b"".join([p async for p in stream])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_pproxy(listen: str, port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pproxy", "-l", listen,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.returncode is not None:
                proc.kill()
                raise RuntimeError(f"pproxy did not listen on {port}") from None
            await asyncio.sleep(0.05)


@pytest.fixture
async def proxies() -> AsyncIterator[dict[str, str]]:
    """A real HTTP proxy and a real SOCKS5 proxy (pproxy), both requiring credentials."""
    http_port, socks_port = free_port(), free_port()
    procs = [await start_pproxy(f"http://127.0.0.1:{http_port}#user:{SECRET}", http_port),
             await start_pproxy(f"socks5://127.0.0.1:{socks_port}#user:{SECRET}", socks_port)]
    try:
        yield {"http": f"http://user:{SECRET}@127.0.0.1:{http_port}",
               "socks5": f"socks5://user:{SECRET}@127.0.0.1:{socks_port}",
               "socks5h": f"socks5h://user:{SECRET}@localhost:{socks_port}"}
    finally:
        for p in procs:
            p.kill()
            await p.wait()


class Recorder:
    """A tiny origin that serves ``payload`` with Range and records each request's headers."""

    def __init__(self, payload: bytes = bytes(range(256)) * 64) -> None:
        self.payload = payload
        self.requests: list[tuple[float, str, dict[str, str]]] = []
        self.base = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((time.monotonic(), request.path_qs, dict(request.headers)))
        if request.path.startswith("/redirect"):
            raise web.HTTPFound(request.query["to"])
        size = len(self.payload)
        rng = request.headers.get("Range", f"bytes=0-{size - 1}")
        a, _, b = rng.removeprefix("bytes=").partition("-")
        start, stop = int(a), min(int(b) + 1 if b else size, size)
        return web.Response(status=206, body=self.payload[start:stop],
                            headers={"Content-Range": f"bytes {start}-{stop - 1}/{size}",
                                     "Accept-Ranges": "bytes"})


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield rec
    finally:
        await runner.cleanup()


# -- headers -------------------------------------------------------------------

def test_headers_profile_per_url():
    web_h = headers_for("https://rr3---sn-abc.googlevideo.com/videoplayback?c=WEB&itag=137")
    assert web_h["User-Agent"] == CHROME_USER_AGENT
    assert web_h["Origin"] == "https://www.youtube.com" and web_h["Referer"] == "https://www.youtube.com/"
    ios = headers_for("https://rr3---sn-abc.googlevideo.com/videoplayback?c=IOS&itag=137")
    assert ios["User-Agent"] == IOS_USER_AGENT and "Origin" not in ios
    other = headers_for("https://cdn.example.com/a.bin")
    assert other["User-Agent"] == CHROME_USER_AGENT and "Origin" not in other
    # user headers on top, case-insensitively; None removes; identity always
    mine = headers_for("https://x.googlevideo.com/v", {"user-agent": "me/1", "Origin": None,
                                                        "ACCEPT-ENCODING": "gzip"})
    assert mine["user-agent"] == "me/1" and "User-Agent" not in mine and "Origin" not in mine
    assert [k for k in mine if k.lower() == "accept-encoding"] == ["Accept-Encoding"]
    assert mine["Accept-Encoding"] == "identity"


async def test_origin_sees_browser_headers_and_user_overrides(recorder):
    async with rangestream.Client(headers={"X-Mine": "1", "accept-language": "fr"}) as client:
        assert await fetch(recorder.base + "/a.bin", client, chunk_size=4 * KB) == recorder.payload
        await fetch(recorder.base + "/videoplayback?c=IOS&id=x", client, chunk_size=8 * KB,
                    headers={"user-agent": "stream-ua"})
        await fetch(recorder.base + "/videoplayback?c=IOS&id=y", client, chunk_size=8 * KB)
    a, stream_ua, ios = [[h for _, p, h in recorder.requests if p.startswith(prefix)]
                         for prefix in ("/a.bin", "/videoplayback?c=IOS&id=x", "/videoplayback?c=IOS&id=y")]
    assert len(a) == 4
    for h in a:
        assert h["User-Agent"] == CHROME_USER_AGENT and h["Accept-Encoding"] == "identity"
        assert h["X-Mine"] == "1" and h["Accept-Language"] == "fr" and h["Range"].startswith("bytes=")
    assert {h["User-Agent"] for h in stream_ua} == {"stream-ua"}
    assert {h["User-Agent"] for h in ios} == {IOS_USER_AGENT}


# -- cookies -------------------------------------------------------------------

async def test_cookies_file_sent_where_it_matches(recorder, tmp_path):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(
        "# Netscape HTTP Cookie File\n"
        "127.0.0.1\tFALSE\t/\tFALSE\t0\tSID\tsession-value\n"          # yt-dlp's session cookie
        "127.0.0.1\tFALSE\t/media\tFALSE\t4102444800\tPATHY\tp\n"       # other path
        "127.0.0.1\tFALSE\t/\tTRUE\t4102444800\tSECURE\tx\n"            # https only
        "127.0.0.1\tFALSE\t/\tFALSE\t1000000000\tOLD\tgone\n"           # expired
        "#HttpOnly_.youtube.com\tTRUE\t/\tTRUE\t4102444800\tYT\ty\n")  # other domain
    async with rangestream.Client(cookies_file=cookies) as client:
        assert await fetch(recorder.base + "/a.bin", client, chunk_size=8 * KB) == recorder.payload
        await fetch(recorder.base + "/media/b", client, chunk_size=16 * KB)
    sent = {p: h.get("Cookie") for _, p, h in recorder.requests}
    assert sent["/a.bin"] == "SID=session-value"
    assert sent["/media/b"] == "PATHY=p; SID=session-value"

    for bad in (tmp_path / "missing.txt", tmp_path / "garbled.txt"):
        if bad.name == "garbled.txt":
            bad.write_text("this is not a cookies file\n")
        with pytest.raises(RangestreamError, match="cannot read cookies file"):
            rangestream.Client(cookies_file=bad)


async def test_redirect_hops_get_their_own_headers(recorder):
    target = recorder.base + "/videoplayback?c=IOS&id=r"
    from urllib.parse import quote
    data = await fetch(f"{recorder.base}/redirect?to={quote(target, safe='')}", chunk_size=64 * KB)
    assert data == recorder.payload
    (_, p1, h1), (_, p2, h2) = recorder.requests
    assert p1.startswith("/redirect") and h1["User-Agent"] == CHROME_USER_AGENT
    assert p2.startswith("/videoplayback") and h2["User-Agent"] == IOS_USER_AGENT and h2["Range"]


# -- proxies -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["http", "socks5", "socks5h"])
async def test_download_through_proxy_is_byte_exact(origin, proxies, kind):
    size = 700 * KB + 3
    url = origin.url(size, f"px-{kind}", youtube=True)
    async with rangestream.Client(proxy=proxies[kind]) as client:
        data = await fetch(url, client, chunk_size=128 * KB, window=3)
    assert data == origin.content(f"px-{kind}", size)
    assert all(r.peer.startswith("127.0.0.1") for r in origin.log) and len(origin.log) == 6


@pytest.mark.parametrize("kind", ["http", "socks5"])
async def test_proxy_credentials_never_shown(origin, proxies, kind, caplog):
    dead = free_port()
    proxy = proxies[kind].rsplit(":", 1)[0] + f":{dead}"  # nothing listens there
    wrong_pw = proxies[kind].replace(SECRET, "wrong-" + SECRET)  # the proxy refuses
    for p in (proxy, wrong_pw):
        caplog.clear()
        with caplog.at_level("DEBUG", logger="rangestream"):
            async with rangestream.Client(proxy=p) as client:
                with pytest.raises(StreamError) as info:
                    await fetch(origin.url(10 * KB, "cred"), client, retry=Retry(attempts=1, backoff=0.001))
        text = f"{info.value} {info.value.__cause__} {caplog.text}"
        assert SECRET not in text and "user:" not in text
        assert "via proxy" in str(info.value) and "REDACTED@127.0.0.1" in str(info.value)


def test_bad_proxy_scheme_is_clear():
    with pytest.raises(rangestream.InvalidURLError, match="unsupported proxy scheme") as info:
        rangestream.Client(proxy=f"ftp://user:{SECRET}@127.0.0.1:21")
    assert SECRET not in str(info.value)


# -- politeness ----------------------------------------------------------------

async def test_requests_per_second_spaces_requests_across_streams(recorder):
    rate = 20.0
    async with rangestream.Client(requests_per_second=rate) as client:
        async def one(name: str) -> bytes:
            return await fetch(f"{recorder.base}/{name}", client, chunk_size=2 * KB, window=4)
        began = time.monotonic()
        results = await asyncio.gather(one("s1"), one("s2"))
    assert results == [recorder.payload] * 2
    starts = sorted(t for t, _, _ in recorder.requests)
    assert len(starts) == 16
    # The pacer spaces the sends; an arrival can only be later than its send, so the
    # i-th arrival (in order) comes no sooner than i intervals after the first send could
    # go. Lower bounds only: a busy machine delays arrivals but cannot break them.
    early = [(i, t - began) for i, t in enumerate(starts) if t - began < i / rate - 1e-6]
    assert not early, (early, [b - a for a, b in pairwise(starts)])


async def test_a_stream_can_be_pinned_to_its_own_proxy(origin, proxies):
    size = 300 * KB
    dead = proxies["socks5"].rsplit(":", 1)[0] + f":{free_port()}"  # nothing listens there
    async with rangestream.Client() as client:  # no proxy of its own
        direct = await fetch(origin.url(size, "direct"), client, chunk_size=64 * KB)
        via = await fetch(origin.url(size, "via"), client, proxy=proxies["socks5"], chunk_size=64 * KB)
        with pytest.raises(rangestream.RetriesExhaustedError) as ei:
            await fetch(origin.url(size, "deadpx"), client, proxy=dead, retry=Retry(attempts=0, backoff=0.001))
    assert direct == origin.content("direct", size) and via == origin.content("via", size)
    assert "via proxy socks5://REDACTED@" in str(ei.value) and SECRET not in str(ei.value)
    assert not any("deadpx" in r.path for r in origin.log)  # that stream really went to its (dead) proxy
