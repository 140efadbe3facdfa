"""The service's page (GET /) and its page-URL endpoints (/watch, /watch/info, /watch/progress).

Offline like tests/test_refresh.py: yt-dlp's generic extractor reads a DASH manifest served
next to the emulated CDN (its BaseURLs are the CDN's signed, expiring URLs). The browser
test drives Debian's Chromium (/usr/bin/chromium) with Playwright; it skips, saying why,
where Chromium or Playwright is missing. With RANGESTREAM_SCREENSHOTS=DIR it also saves the
page's screenshots there (docs/ holds the README's).
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import av
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from test_refresh import Page, Rep, expired_requests, register, signatures

from rangestream.retry import Retry
from rangestream.service import ServerOptions, make_app

pytestmark = pytest.mark.timeout(40)

CHROMIUM = "/usr/bin/chromium"
FAST = {"retry": Retry(attempts=2, backoff=0.01, jitter=0.0, refreshes=8)}


class _Server(TestServer):
    async def _make_runner(self, **kwargs):
        return web.AppRunner(self.app, access_log=None, **kwargs)


@asynccontextmanager
async def serve(**options) -> AsyncIterator[TestClient]:
    options.setdefault("allow_private", True)  # the origin and the page are on loopback
    options.setdefault("stream_options", FAST)
    async with TestClient(_Server(make_app(ServerOptions(**options)))) as client:
        yield client


def q(url: str) -> str:
    return quote(url, safe="")


def streams_of(data: bytes) -> tuple[list[str], int]:
    """(codec names, packets with data) of a muxed file, read by PyAV."""
    with av.open(io.BytesIO(data)) as c:
        codecs = sorted(s.codec_context.name for s in c.streams)
        packets = sum(1 for p in c.demux() if p.size)
    return codecs, packets


async def wait_for_state(client: TestClient, job: str, states: tuple[str, ...], timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    data: dict = {}
    while time.monotonic() < deadline:
        resp = await client.get(f"/watch/progress?job={job}")
        if resp.status == 200:
            data = await resp.json()
            if data["state"] in states:
                return data
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job} never reached {states}: {data}")


# -- the page and its files ------------------------------------------------------------------------


async def test_page_and_its_files_come_from_the_service_only():
    async with serve() as client:
        resp = await client.get("/")
        html = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/html"
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert '<video id="player"' in html and 'id="download"' in html
        bodies = [html]
        for name, ctype in (("page.js", "text/javascript"), ("page.css", "text/css")):
            r = await client.get(f"/static/{name}")
            assert r.status == 200 and r.content_type == ctype
            bodies.append(await r.text())
        for body in bodies:  # nothing loaded from elsewhere (no CDN)
            assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", body), body[:200]
            assert "@import" not in body and "fetch(\"http" not in body
        r = await client.get("/static/..%2fpage.py")
        assert r.status == 404 and "error" in await r.json()
    # With a token, the page's own files carry it (they are fetched without the header).
    async with serve(token="s3cret") as client:
        assert (await client.get("/")).status == 401
        html = await (await client.get("/?token=s3cret")).text()
        assert 'src="static/page.js?token=s3cret"' in html
        assert (await client.get("/static/page.js?token=s3cret")).status == 200


def test_download_names_are_sanitised():
    from rangestream.service.watch import attachment, direct_resolution, file_name

    res = direct_resolution('http://h/x/a%2F..%2Fb%22%3B%20evil%0D%0AX-Bad%3A%201.mp4')
    name = file_name(res, "mp4")
    assert "/" not in name and '"' not in name and "\r" not in name and "\n" not in name
    assert name.endswith(".mp4")
    header = attachment('Été: "a/b"\\c.mp4')
    assert header.startswith('attachment; filename="') and "\r" not in header and "\n" not in header
    plain = re.match(r'attachment; filename="([^"]*)"; filename\*=UTF-8\'\'(\S+)$', header)
    assert plain is not None, header
    assert re.fullmatch(r"[A-Za-z0-9._ ()\[\]-]+", plain.group(1)) and plain.group(1).endswith(".mp4")
    assert "%C3%89t%C3%A9" in plain.group(2)  # the UTF-8 name keeps the title


# -- /watch with a page URL --------------------------------------------------------------------------


async def test_watch_page_picks_within_height_resolves_once_and_downloads(origin):
    await register(origin)
    reps = [Rep("137", "vid", "video", 1080), Rep("134", "vid", "video", 360), Rep("140", "aud", "audio")]
    async with Page(origin, reps) as page, serve() as client:
        resp = await client.get(f"/watch/info?url={q(page.url)}&height=480&format=mp4")
        info = await resp.json()
        assert resp.status == 200, info
        assert [f["format_id"] for f in info["formats"]] == ["134", "140"]
        assert info["formats"][0]["height"] == 360 and info["formats"][0]["vcodec"].startswith("avc1")
        assert info["formats"][1]["acodec"].startswith("mp4a") and info["formats"][1]["size"] > 0
        assert (info["title"], info["filename"], info["mux"], info["playable"]) == ("watch", "watch.mp4", True, True)
        job = info["job"]
        resp = await client.get(f"/watch?url={q(page.url)}&height=480&format=mp4&download=1&job={job}")
        body = await resp.read()
        assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp4"
        assert resp.headers["Content-Disposition"].startswith('attachment; filename="watch.mp4"')
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert page.hits == 1  # info, then the stream: one resolution
        progress = await wait_for_state(client, job, ("done", "failed", "cancelled"))
        # Without download=1 (the player's request) there is no attachment header.
        plain = await client.get(f"/watch?url={q(page.url)}&height=480")
        assert plain.status == 200 and "Content-Disposition" not in plain.headers
        await plain.read()
    codecs, packets = streams_of(body)
    assert codecs == ["aac", "h264"] and packets > 50 + 90
    assert progress["state"] == "done" and progress["error"] is None
    sizes = {i["name"]: (i["bytes"], i["size"]) for i in progress["inputs"]}
    assert sizes["video"][0] == sizes["video"][1] == len(origin._registered["vid"].data)
    assert sizes["audio"][0] == sizes["audio"][1] == len(origin._registered["aud"].data)
    assert progress["output_bytes"] == len(body)


async def test_watch_re_resolves_urls_that_expire_mid_stream_byte_exact(origin):
    await register(origin)
    # ~3.3 s and ~3.4 s at these rates (8 kB chunks, window 2 streams about twice the per-response
    # rate); URLs valid 1-2 s: both outlive their first URLs.
    reps = [Rep("137", "vid", "video", knobs={"rate": 7_000}), Rep("140", "aud", "audio", knobs={"rate": 5_000})]
    opts = {**FAST, "chunk_size": 8192, "window": 2}
    async with Page(origin, reps, expire_in=2) as page, serve(stream_options=opts) as client:
        job = "ab" * 16
        resp = await client.get(f"/watch?url={q(page.url)}&job={job}")
        body = await resp.read()
        assert resp.status == 200, body[:500]
        progress = await wait_for_state(client, job, ("done", "failed", "cancelled"))
        hits = page.hits
        # The same pair muxed from URLs that never expire: the reference output.
        ref = await client.get(f"/mux?video={q(origin.media_url('vid'))}&audio={q(origin.media_url('aud'))}")
        reference = await ref.read()
    assert progress["state"] == "done", progress
    assert body == reference  # byte-exact despite the renewed URLs
    assert hits >= 2 and progress["refreshes"] >= 2  # the resolver really ran again
    assert expired_requests(origin, "vid") >= 1 and expired_requests(origin, "aud") >= 1
    assert not any(sig in str(progress) for sig in signatures(origin))


async def test_watch_direct_links_pairs_and_errors_in_plain_words(origin, monkeypatch):
    video, _ = await register(origin)
    async with serve() as client:
        # A direct media link: one stream, as it is, with its length and a name from its path.
        resp = await client.get(f"/watch?url={q(origin.media_url('vid'))}&download=1")
        assert resp.status == 200 and await resp.read() == video
        assert resp.headers["Content-Length"] == str(len(video))
        assert 'filename="vid.mp4"' in resp.headers["Content-Disposition"]
        # A video URL and an audio URL: muxed, no resolving.
        pair = await client.get(f"/watch?video={q(origin.media_url('vid'))}&audio={q(origin.media_url('aud'))}"
                                f"&format=mkv")
        assert pair.headers["Content-Type"] == "video/x-matroska"
        assert streams_of(await pair.read())[0] == ["aac", "h264"]
        for query, status, words in [
            ("", 400, "paste a video page URL"),
            (f"url={q(origin.media_url('vid'))}&format=avi", 400, "format must be mp4, webm or mkv"),
            (f"url={q(origin.media_url('vid'))}&height=99999", 400, "height must be a number"),
            (f"url={q(origin.media_url('vid'))}&height=١٠٨٠", 400, "height must be a number"),
            (f"video={q(origin.media_url('vid'))}", 400, "needs an audio URL too"),
            ("url=ftp%3A%2F%2Fexample.com%2Fx", 400, "must start with http"),
            (f"url={q(origin.base_url + '/media/nothing-here')}", 404, "could not be read (HTTP 404)"),
        ]:
            resp = await client.get(f"/watch/info?{query}")
            assert resp.status == status, (query, await resp.text())
            assert words in (await resp.json())["error"], query
        resp = await client.get("/watch/progress?job=" + "0" * 32)
        assert resp.status == 404 and "no progress" in (await resp.json())["error"]
        monkeypatch.setitem(sys.modules, "yt_dlp", None)  # import yt_dlp -> ImportError
        resp = await client.get(f"/watch/info?url={q('https://www.youtube.com/watch?v=abc')}")
        assert resp.status == 501 and "pip install 'rangestream[youtube]'" in (await resp.json())["error"]


async def test_watch_page_on_a_private_host_is_refused_before_any_request(origin):
    await register(origin)
    async with Page(origin, [Rep("18", "vid", "both")]) as page, serve(allow_private=False) as client:
        for path in ("/watch/info", "/watch"):
            resp = await client.get(f"{path}?url={q(page.url)}")
            assert resp.status == 403, await resp.text()
            assert "may not fetch from" in (await resp.json())["error"]
        assert page.hits == 0 and origin.request_count == 0


# -- a real browser --------------------------------------------------------------------------------


def _browser_or_skip():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's 'chromium' package (./run test does as root)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[dev]')")
    return async_playwright


@asynccontextmanager
async def live_service(**options) -> AsyncIterator[str]:
    """The service on a real loopback port, as `rangestream serve` runs it."""
    runner = web.AppRunner(make_app(ServerOptions(allow_private=True, stream_options=FAST, **options)),
                           handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_browser_pastes_a_page_plays_it_downloads_one_file_and_shows_errors(origin, tmp_path):
    async_playwright = _browser_or_skip()
    from rangestream.testing.media import generate_clip

    video, audio = await asyncio.gather(asyncio.to_thread(generate_clip, "h264-fmp4", 3.0),
                                        asyncio.to_thread(generate_clip, "aac-fmp4", 3.0))
    origin.add_object("vid", video, "video/mp4")
    origin.add_object("aud", audio, "audio/mp4")
    shots = os.environ.get("RANGESTREAM_SCREENSHOTS")
    reps = [Rep("137", "vid", "video", 240), Rep("140", "aud", "audio")]
    async with Page(origin, reps) as page, live_service() as base, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            tab = await browser.new_page(accept_downloads=True, viewport={"width": 900, "height": 1000})
            await tab.goto(base + "/")
            await tab.wait_for_function("() => document.body.dataset.state === 'idle'", timeout=10_000)
            if shots:
                await tab.screenshot(path=os.path.join(shots, "page-empty.png"), full_page=True)
            await tab.fill("#url", page.url)
            await tab.click("#go")
            # Bounded waits on the page's own state: playing, then 2 s of media played.
            await tab.wait_for_function("() => document.getElementById('player').currentTime > 2", timeout=20_000)
            assert await tab.evaluate("document.getElementById('error').hidden")
            assert await tab.text_content("#title") == "watch"
            rows = await tab.eval_on_selector_all("#formats tbody tr", "rs => rs.map(r => r.innerText)")
            assert len(rows) == 2 and "137" in rows[0] and "240" in rows[0] and "140" in rows[1]
            await tab.wait_for_function("() => document.getElementById('totals').dataset.state === 'done'",
                                        timeout=10_000)
            if shots:
                await tab.screenshot(path=os.path.join(shots, "page-playing.png"), full_page=True)
            async with tab.expect_download(timeout=20_000) as pending:
                await tab.click("#download")
            download = await pending.value
            assert download.suggested_filename == "watch.mp4"
            saved = tmp_path / download.suggested_filename
            await download.save_as(saved)
            # A page that is not there: the reason in plain words, in the page.
            await tab.fill("#url", origin.base_url + "/media/nothing-here")
            await tab.click("#go")
            await tab.wait_for_function("() => document.body.dataset.state === 'error'", timeout=15_000)
            error = await tab.text_content("#error")
            assert await tab.is_hidden("#result")
        finally:
            await browser.close()
    codecs, packets = streams_of(saved.read_bytes())
    assert codecs == ["aac", "h264"] and packets >= 75 + 135  # 3 s of 25 fps video and 48 kHz AAC
    assert "could not be read (HTTP 404)" in error
