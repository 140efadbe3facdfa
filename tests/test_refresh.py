"""Page URLs resolved with yt-dlp, and expired stream URLs re-resolved mid-download.

Everything is offline: yt-dlp's *generic* extractor is pointed at a tiny aiohttp
site in the test whose ``/watch.mpd`` is a DASH manifest (one AdaptationSet per
stream, a single BaseURL per Representation: yt-dlp turns each into one plain
http format) whose BaseURLs are the emulated CDN's googlevideo-form URLs, signed
afresh on every request with an ``expire`` a few seconds ahead. The origin
answers 403 once ``expire`` has passed, as googlevideo does, so a slow download
outlives its URLs and has to be re-resolved from the page.

The origin's ``expire`` has one-second resolution (an integer), so "expires in
``n``" below means "valid for between ``n - 1`` and ``n`` seconds".
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import pytest
from aiohttp import web

from rangestream import Client, Retry
from rangestream.refresh import (
    ResolveError,
    Resolver,
    ResolverUnavailable,
    StreamFormat,
    build_selector,
    is_page_url,
    match_format,
    output_name,
    refresh_hook,
)
from rangestream.testing.media import generate_clip

pytest.importorskip("yt_dlp")

H264, AAC = "avc1.64000d", "mp4a.40.2"


# -- a page serving a DASH manifest of expiring origin URLs --------------------------------------


@dataclass
class Rep:
    id: str  # the Representation id: yt-dlp's format_id
    name: str  # the origin object
    kind: str  # "video", "audio" or "both"
    height: int = 240
    knobs: dict[str, Any] = field(default_factory=dict)  # origin knobs on the URL (rate=...)


class Page:
    """``url``: a DASH manifest listing ``reps``; every request signs fresh origin URLs that
    expire ``expire_in`` seconds later (or in 6 h). ``hits`` counts the manifest requests."""

    def __init__(self, origin, reps: list[Rep], *, expire_in: int | None = None) -> None:
        self.origin, self.reps, self.expire_in = origin, reps, expire_in
        self.hits = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _manifest(self, request: web.Request) -> web.Response:
        self.hits += 1
        expire = int(time.time()) + self.expire_in if self.expire_in else None
        sets = []
        for rep in self.reps:
            url = self.origin.media_url(rep.name, youtube=True, expire=expire, **rep.knobs)
            if rep.kind == "audio":
                mime, codecs, extra = "audio/mp4", AAC, 'audioSamplingRate="48000"'
            else:
                mime = "video/mp4"
                codecs = H264 if rep.kind == "video" else f"{H264},{AAC}"
                extra = f'width="{rep.height * 4 // 3}" height="{rep.height}"'
            sets.append(f'<AdaptationSet mimeType="{mime}"><Representation id="{rep.id}" codecs="{codecs}" '
                        f'bandwidth="100000" {extra}><BaseURL>{html.escape(url)}</BaseURL>'
                        f'</Representation></AdaptationSet>')
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT2S" '
                'minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period>'
                + "".join(sets) + "</Period></MPD>\n")
        return web.Response(text=body, content_type="application/dash+xml")

    async def __aenter__(self) -> Page:
        app = web.Application()
        app.router.add_get("/watch.mpd", self._manifest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/watch.mpd"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def clips() -> tuple[bytes, bytes]:
    return await asyncio.gather(asyncio.to_thread(generate_clip, "h264-fmp4", 2.0),
                                asyncio.to_thread(generate_clip, "aac-fmp4", 2.0))


async def register(origin) -> tuple[bytes, bytes]:
    video, audio = await clips()
    origin.add_object("vid", video, "video/mp4")
    origin.add_object("aud", audio, "audio/mp4")
    return video, audio


def expired_requests(origin, name: str) -> int:
    return sum(1 for r in origin.log if r.name is None and r.status == 403 and r.query.get("id") == name)


def signatures(origin) -> set[str]:
    return {r.query["sig"] for r in origin.log if "sig" in r.query}


class Recorder(logging.Handler):
    """Everything rangestream logs (the CLI may have turned propagation off in this process)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> Recorder:
        self.logger = logging.getLogger("rangestream")
        self.saved_level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.saved_level)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


# -- pure parts ------------------------------------------------------------------------------------


def test_selector_gets_height_on_video_atoms_and_http_only_everywhere():
    http = "[protocol^=http][protocol!*=dash]"
    assert build_selector() == f"bv*{http}+ba{http}/b{http}"
    assert build_selector("bv*+ba/b", 720) == f"bv*[height<=?720]{http}+ba{http}/b[height<=?720]{http}"
    assert build_selector("bestvideo[ext=mp4]+bestaudio", 480) == (
        f"bestvideo[height<=?480]{http}[ext=mp4]+bestaudio{http}")
    assert build_selector("137+140", 480) == "137+140"  # explicit ids are the user's call
    assert build_selector("b[format_id=best]", http_only=False) == "b[format_id=best]"  # not inside filters
    with pytest.raises(ValueError):
        build_selector("b", 0)


def test_match_format_same_id_then_itag_then_codecs_and_size():
    def f(fid, url="http://x/v?itag=1", vc=H264, ac=None, ext="mp4", size=100, h=240):
        return StreamFormat(fid, url, itag=url.partition("itag=")[2] or None, vcodec=vc, acodec=ac, ext=ext,
                            filesize=size, height=h)

    like = f("137", "http://x/old?itag=137")
    assert match_format(like, [f("136", "http://x/a?itag=136"), f("137", "http://x/b?itag=137")]).url == \
        "http://x/b?itag=137"
    assert match_format(like, [f("137-dash", "http://x/c?itag=137"), f("136", "http://x/a?itag=136")]).url == \
        "http://x/c?itag=137"
    fallback = match_format(like, [f("a", "http://x/1", size=180), f("b", "http://x/2", size=100),
                                   f("c", "http://x/3", vc="vp9", size=100), f("d", "http://x/4", ext="webm")])
    assert fallback.format_id == "b"  # same codec and container, equal size
    assert match_format(like, [f("c", "http://x/3", vc="vp9")]) is None
    assert match_format(like, [f("137", "")]) is None  # no URL: not a candidate


def test_page_urls_and_output_names():
    assert is_page_url("https://www.youtube.com/watch?v=abc")
    assert is_page_url("https://youtu.be/abc") and is_page_url("https://m.youtube.com/shorts/abc")
    assert not is_page_url("https://rr1---sn-abc.googlevideo.com/videoplayback?itag=137")
    assert not is_page_url("https://notyoutube.com/watch?v=abc")
    assert output_name('A/B: "C"? <d>|e', "mp4") == "A_B_ _C_ _d_e.mp4"
    assert output_name("..", "webm", "ID") == "ID.webm"
    assert len(output_name("é" * 300, "mkv").encode()) <= 204


# -- the resolver with a stand-in extractor ----------------------------------------------------------


class FakeExtractor:
    """yt-dlp's info dict for a video+audio page whose URLs carry a generation number."""

    def __init__(self, delay: float = 0.05) -> None:
        self.calls = 0
        self.delay = delay
        self.offer = ["137", "140"]

    def __call__(self, page_url: str, options: dict) -> dict:
        self.calls += 1
        time.sleep(self.delay)  # blocking, like yt-dlp: must run in a thread
        gen = self.calls
        formats = {
            "137": {"format_id": "137", "url": f"https://cdn.test/v?itag=137&clen=1000&gen={gen}&sig=s{gen}",
                    "vcodec": H264, "acodec": "none", "ext": "mp4", "height": 1080, "protocol": "https"},
            "299": {"format_id": "299", "url": f"https://cdn.test/v?itag=299&clen=1000&gen={gen}&sig=s{gen}",
                    "vcodec": H264, "acodec": "none", "ext": "mp4", "height": 1080, "protocol": "https"},
            "140": {"format_id": "140", "url": f"https://cdn.test/a?itag=140&clen=500&gen={gen}&sig=s{gen}",
                    "vcodec": "none", "acodec": AAC, "ext": "m4a", "protocol": "https"},
        }
        offered = [formats[i] for i in self.offer]
        return {"id": "ID", "title": "T", "ext": "mp4", "formats": offered, "requested_formats": offered[:2]}


async def test_expiring_pair_re_extracts_once_and_keeps_the_format():
    fake = FakeExtractor()
    resolver = Resolver(extract=fake, cache_seconds=10)
    res = await resolver.resolve("https://www.youtube.com/watch?v=ID")
    assert res.needs_mux and (res.video.format_id, res.audio.format_id) == ("137", "140")
    assert res.video.filesize == 1000 and "sig=s1" not in repr(res.video)  # clen; no URL in repr
    hv, ha = resolver.hook(res.page_url, res.video), resolver.hook(res.page_url, res.audio)
    new_v, new_a = await asyncio.gather(hv(res.video.url), ha(res.audio.url))
    assert fake.calls == 2  # the two expiries shared one extraction
    assert "itag=137" in new_v and "gen=2" in new_v and "itag=140" in new_a and "gen=2" in new_a
    # The same URL failing again is not answered from the cache.
    v3 = await hv(new_v)
    assert "gen=3" in v3 and fake.calls == 3
    # The itag gone: the same codecs and size instead; no such format at all: an error.
    fake.offer = ["299", "140"]
    v4 = await hv(v3)
    assert "itag=299" in v4 and "gen=4" in v4
    fake.offer = ["140"]
    with pytest.raises(ResolveError, match="no longer offers format 137"):
        await hv(v4)


async def test_refresh_hook_by_format_id_and_errors_of_the_extractor():
    fake = FakeExtractor()
    hook = refresh_hook("https://youtu.be/ID", "140", extract=fake)
    assert "itag=140" in await hook("https://cdn.test/a?itag=140&gen=0")

    def broken(page_url: str, options: dict) -> dict:
        raise RuntimeError("boom at https://cdn.test/x?sig=SECRET")

    with pytest.raises(ResolveError) as ei:
        await Resolver(extract=broken).resolve("https://youtu.be/ID")
    assert "boom" in str(ei.value) and "SECRET" not in str(ei.value)


async def test_missing_yt_dlp_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "yt_dlp", None)  # import yt_dlp -> ImportError
    with pytest.raises(ResolverUnavailable, match=r"pip install 'rangestream\[youtube\]'"):
        await Resolver().resolve("https://www.youtube.com/watch?v=ID")


# -- yt-dlp's generic extractor against the emulated CDN -----------------------------------------------


async def test_generic_extractor_formats_from_a_manifest_and_a_direct_link(origin):
    await register(origin)
    reps = [Rep("137", "vid", "video", 1080), Rep("134", "vid", "video", 360), Rep("140", "aud", "audio")]
    async with Page(origin, reps) as page:
        resolver = Resolver()
        res = await resolver.resolve(page.url)
        assert [f.format_id for f in res.formats] == ["137", "140"] and res.ext == "mp4"
        assert res.video.has_video and not res.video.has_audio and res.audio.acodec == AAC
        assert res.video.filesize == len(origin._registered["vid"].data)  # from clen
        assert res.video.http_headers.get("User-Agent")  # yt-dlp's, passed on to the engine by the CLI
        low = await Resolver(max_height=480).resolve(page.url)
        assert [f.format_id for f in low.formats] == ["134", "140"]
        assert page.hits == 2
    # A direct media link is one combined format (yt-dlp cannot tell its codecs).
    direct = await resolver.resolve(origin.media_url("vid"))
    assert not direct.needs_mux and direct.video.url == origin.media_url("vid")
    assert (direct.title, direct.video.ext) == ("vid", "mp4")
    with pytest.raises(ResolveError) as ei:
        await resolver.resolve(origin.base_url + "/media/nothing-here")
    assert ei.value.status == 404


async def test_urls_expiring_mid_download_are_re_resolved_byte_identical(origin):
    video, audio = await register(origin)
    # ~4.7 s and ~4.2 s at these rates (window 2 streams about twice the per-response rate),
    # URLs valid 2-3 s: both outlive their first URLs.
    reps = [Rep("137", "vid", "video", knobs={"rate": 5_000}), Rep("140", "aud", "audio", knobs={"rate": 4_000})]
    async with Page(origin, reps, expire_in=3) as page:
        resolver = Resolver(cache_seconds=10)
        res = await resolver.resolve(page.url)

        async def fetch(client: Client, f: StreamFormat):
            async with client.open_stream(f.url, chunk_size=8192, window=2, retry=Retry(refreshes=6),
                                          refresh=resolver.hook(page.url, f)) as s:
                data = b"".join([piece async for piece in s])
            return data, s.stats

        with Recorder() as logs:
            async with Client() as client:
                (vdata, vstats), (adata, astats) = await asyncio.gather(fetch(client, res.video),
                                                                        fetch(client, res.audio))
    assert vdata == video and adata == audio
    assert vstats.refreshes >= 1 and astats.refreshes >= 1
    assert expired_requests(origin, "vid") >= 1 and expired_requests(origin, "aud") >= 1
    assert resolver.extractions == page.hits >= 2  # every refresh really went back to the page
    # Video and audio expired together: they shared re-extractions.
    assert resolver.extractions < 1 + vstats.refreshes + astats.refreshes
    assert "re-resolving" in logs.text
    for sig in signatures(origin):
        assert sig not in logs.text  # stream URLs are never logged in full


# -- the command line ------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANGESTREAM_")}
    env.pop("COLUMNS", None)
    env.update(extra)
    return env


async def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rangestream", *args, cwd=cwd, env=env or _env(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, err.decode()


def last_json(stderr: str) -> dict:
    return json.loads(stderr.strip().splitlines()[-1])


async def test_cli_page_with_video_and_audio_gives_one_muxed_file_despite_expiry(origin, tmp_path):
    video, audio = await register(origin)
    reps = [Rep("137", "vid", "video", knobs={"rate": 5_000}), Rep("140", "aud", "audio", knobs={"rate": 4_000})]
    async with Page(origin, reps, expire_in=3) as page:
        rc, err = await run("get", "--resolve", page.url, "-o", "out.mp4", "--window", "2", "--chunk-size", "8K",
                            "--json", "-v", cwd=tmp_path)
        hits = page.hits
    assert rc == 0, err
    summary = last_json(err)
    assert summary["ok"] and summary["formats"] == ["137", "140"] and summary["title"] == "watch"
    assert summary["bytes"] == len(video) + len(audio)
    assert summary["refreshes"] >= 1 and hits >= 2 and expired_requests(origin, "vid") >= 1
    assert "re-resolving" in err
    for sig in signatures(origin):
        assert sig not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert sorted(s.type for s in c.streams) == ["audio", "video"]
        assert {s.codec_context.name for s in c.streams} == {"h264", "aac"}
        packets = sum(1 for p in c.demux() if p.size)
    assert packets > 50 + 90  # 2 s of 25 fps video and 48 kHz AAC


async def test_cli_single_format_page_is_a_resumable_get_refreshed_from_the_page(origin, tmp_path):
    video, _ = await register(origin)
    # One Representation with both codecs: yt-dlp's 'b' (a combined format), fetched as a plain get.
    async with Page(origin, [Rep("18", "vid", "both", knobs={"rate": 5_000})], expire_in=3) as page:
        rc, err = await run("get", "--resolve", page.url, "--window", "2", "--chunk-size", "8K", "--json",
                            cwd=tmp_path)
    assert rc == 0, err
    summary = last_json(err)
    assert summary["formats"] == ["18"] and summary["output"] == "watch.mp4" and summary["refreshes"] >= 1
    assert (tmp_path / "watch.mp4").read_bytes() == video
    # A direct media link with --resolve: yt-dlp's generic extractor, the name from its title.
    rc, err = await run("get", "--resolve", origin.media_url("vid"), "--quiet", cwd=tmp_path)
    assert rc == 0, err
    assert (tmp_path / "vid.mp4").read_bytes() == video


async def test_cli_page_url_errors(origin, tmp_path):
    # yt-dlp missing: a clear message naming the extra.
    fake = tmp_path / "fake" / "yt_dlp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named yt_dlp')\n")
    rc, err = await run("get", "https://www.youtube.com/watch?v=abc", cwd=tmp_path,
                        env=_env(PYTHONPATH=str(fake.parent)))
    assert rc == 1 and "pip install 'rangestream[youtube]'" in err, err
    # --format on a direct URL is a usage error; a page that is not there is an HTTP error.
    rc, err = await run("get", origin.url(10, "x"), "--format", "b", cwd=tmp_path)
    assert rc == 2 and "--format" in err
    rc, err = await run("get", "--resolve", origin.base_url + "/media/none", cwd=tmp_path)
    assert rc == 4 and "cannot resolve" in err and "404" in err, err


# -- secrets in a failing hook's text (issue 9, item 11) ---------------------------------


async def test_refresh_hook_error_text_and_its_cause_chain_show_no_secret(origin):
    import traceback

    import rangestream

    url = origin.url(10 * 1024, "hooksecret", youtube=True, expire=time.time() - 10)
    signed = "https://rr9.googlevideo.com/videoplayback?id=x&itag=137&sig=HOOKSIG1;lsig=HOOKSIG2&clen=9"
    akamai = "https://a.akamaized.net/v.mp4?hdnts=exp=1~acl=/*~hmac=HOOKHMAC3"
    proxy = "http://alice:HOOKPASSWORD4@proxy.example:3128"

    async def refresh(old: str) -> str:
        try:
            raise ConnectionError(f"proxy {proxy} refused CONNECT for {akamai}")
        except ConnectionError as low:
            err = RuntimeError(f"resolver gave {signed} and failed")
            err.add_note(f"retried through {proxy}")
            raise err from low

    with pytest.raises(rangestream.URLExpiredError) as ei:
        async with rangestream.open_stream(url, refresh=refresh) as stream:
            async for _ in stream:
                pass
    shown = str(ei.value) + "\n" + "".join(traceback.format_exception(ei.value))
    for secret in ("HOOKSIG1", "HOOKSIG2", "HOOKHMAC3", "HOOKPASSWORD4", "alice:"):
        assert secret not in shown, shown
    # Still says what went wrong, and the chain keeps every link (type names, redacted text).
    assert "URL refresh failed: RuntimeError: resolver gave https://rr9.googlevideo.com/" in str(ei.value)
    assert "ConnectionError: proxy http://REDACTED@proxy.example:3128" in shown
    assert "retried through http://REDACTED@proxy.example:3128" in shown
