"""Several downloads in one command (issue 13): URLs and -i FILE, -j, one shared client and a
connection budget, output directories and templates, --download-archive, playlists, progress,
Ctrl-C, and failures that never stop the other downloads. Real subprocesses against the
emulated CDN on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from aiohttp import web
from cli_support import Feed, LoopbackApp, cli_env, run, start
from test_cli import last_json

from rangestream.testing.origin import Origin

MB = 1_000_000


def peak_connections(origin: Origin, since: int = 0) -> int:
    """The most connections the origin had at once: each client port is one connection, open
    at least from its first request's start to its last request's end."""
    spans: dict[str, list[float]] = {}
    for rec in origin.log[since:]:
        end = rec.end if rec.end is not None else time.monotonic()
        span = spans.setdefault(rec.peer, [rec.start, end])
        span[0], span[1] = min(span[0], rec.start), max(span[1], end)
    events = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


async def test_urls_and_input_file_share_one_client_and_the_connection_budget(origin, tmp_path):
    size = 2 * MB
    urls = [origin.url(size, f"b{i}", rate=2_000_000) for i in range(4)]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two more\n\n{urls[2]}\n   \n{urls[3]}\n# {urls[0]} again\n{urls[0]}\n")
    rc, _, err = await run("get", urls[0], urls[1], "-i", str(listing), "-o", "dl/", "-j", "4",
                           "--max-connections", "6", "--window", "auto", "--chunk-size", "128K", "--json",
                           cwd=tmp_path)
    assert rc == 0, err
    files = sorted(p.name for p in (tmp_path / "dl").iterdir())
    assert files == ["2000000.1.bin", "2000000.2.bin", "2000000.3.bin", "2000000.bin"]
    lines = [json.loads(line) for line in err.strip().splitlines() if line.startswith("{")]
    jobs, summary = lines[:-1], lines[-1]
    assert len(jobs) == 4 and all(j["ok"] and j["exit_code"] == 0 for j in jobs)
    for j in jobs:  # each job's file holds its own URL's bytes, in the order the URLs were given
        name = next(f"b{i}" for i in range(4) if f"/b{i}/" in j["url"])
        assert Path(tmp_path / j["output"]).read_bytes() == origin.content(name, size)
    assert {j["job"] for j in jobs} == {"1/4", "2/4", "3/4", "4/4"}
    assert summary["jobs"] == 4 and summary["done"] == 4 and summary["failed"] == 0 and summary["ok"]
    assert summary["bytes"] == 4 * size
    peak = peak_connections(origin)
    assert 3 <= peak <= 6, peak  # downloads ran at once, never beyond the budget


async def test_one_failing_url_never_stops_the_others_and_the_worst_code_wins(origin, tmp_path):
    size = 600_000
    good = [origin.url(size, f"g{i}") for i in range(2)]
    missing = origin.base_url + "/gone/file.bin?sig=topsecret123"
    refused = "http://127.0.0.1:1/nothing.bin"
    rc, _, err = await run("get", good[0], missing, refused, good[1], "-o", "out/", "--retries", "0",
                           "--chunk-size", "128K", cwd=tmp_path)
    assert rc == 4, err  # 404 (4) is worse than a refused connection (3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["600000.1.bin", "600000.bin"]
    assert (tmp_path / "out" / "600000.bin").read_bytes() == origin.content("g0", size)
    assert (tmp_path / "out" / "600000.1.bin").read_bytes() == origin.content("g1", size)
    failed = [line for line in err.splitlines() if line.startswith("rangestream: error: failed: ")]
    assert len(failed) == 2 and any("/gone/file.bin" in f and "not found" in f for f in failed)
    assert any("127.0.0.1:1/nothing.bin" in f for f in failed)
    assert "topsecret123" not in err
    assert "2 saved, 0 skipped, 2 failed of 4" in err


async def test_output_template_and_a_single_file_for_several_urls(origin, tmp_path):
    urls = [origin.url(1000, "same"), origin.url(1000, "other"), origin.url(2000, "same")]
    rc, _, err = await run("get", *urls, "-o", "t/%(title)s-%(id)s.%(ext)s", "--quiet", cwd=tmp_path)
    assert rc == 0, err
    names = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert names == ["1000-1000.1.bin", "1000-1000.bin", "2000-2000.bin"]
    assert (tmp_path / "t" / "1000-1000.bin").read_bytes() == origin.content("same", 1000)
    assert (tmp_path / "t" / "1000-1000.1.bin").read_bytes() == origin.content("other", 1000)
    # -o FILE (or -o -) cannot hold several downloads: refused before any request.
    before = len(origin.log)
    for out in ("one.bin", "-"):
        rc, _, err = await run("get", *urls, "-o", out, cwd=tmp_path)
        assert rc == 2 and "several URLs" in err, err
    assert len(origin.log) == before


async def test_download_archive_skips_without_a_request_and_appends_safely(origin, tmp_path):
    urls = [origin.url(300_000, f"a{i}") for i in range(3)]
    archive = tmp_path / "seen.txt"
    rc, _, err = await run("get", *urls[:2], "-o", "d/", "--download-archive", str(archive), cwd=tmp_path)
    assert rc == 0, err
    assert sorted(archive.read_text().splitlines()) == sorted(urls[:2])
    for p in (tmp_path / "d").iterdir():
        p.unlink()  # not skipped because the files exist: skipped by the archive
    before = len(origin.log)
    rc, _, err = await run("get", *urls[:2], "-o", "d/", "--download-archive", str(archive), "--json",
                           cwd=tmp_path)
    assert rc == 0, err
    assert len(origin.log) == before  # no request reached the origin
    assert last_json(err)["skipped"] == 2 and list((tmp_path / "d").iterdir()) == []
    # Several runs appending at once: every line whole, none lost.
    more = [origin.url(1000 + i, f"c{i}") for i in range(6)]
    results = await asyncio.gather(*(run("get", u, "-o", f"p{i}.bin", "--download-archive", str(archive),
                                         "--quiet", cwd=tmp_path) for i, u in enumerate(more)))
    assert all(rc == 0 for rc, _, _ in results), results
    assert sorted(archive.read_text().splitlines()) == sorted(urls[:2] + more)


async def test_playlist_entries_become_jobs_selected_by_playlist_items(origin, tmp_path):
    pytest.importorskip("yt_dlp")
    data = {f"e{i}": bytes([i]) * (50_000 + i) for i in range(1, 5)}
    urls = [origin.add_object(name, body, "video/mp4") for name, body in data.items()]
    async with Feed([(f"Episode {i}", u) for i, u in enumerate(urls, 1)]) as feed:
        args = ("get", "--resolve", feed.url, "--playlist-items", "1,3-", "-o", "%(playlist_index)s %(title)s.%(ext)s",
                "--download-archive", "seen.txt", "--json")
        rc, _, err = await run(*args, cwd=tmp_path, timeout=60)
        assert rc == 0, err
        assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".mp4") == [
            "1 Episode 1.mp4", "3 Episode 3.mp4", "4 Episode 4.mp4"]
        assert (tmp_path / "3 Episode 3.mp4").read_bytes() == data["e3"]
        assert last_json(err)["jobs"] == 3
        assert not any(r.path == "/media/e2" for r in origin.log)  # entry 2 not selected, never fetched
        before = len(origin.log)
        rc, _, err = await run(*args, cwd=tmp_path, timeout=60)
    assert rc == 0, err
    assert len(origin.log) == before and last_json(err)["skipped"] == 3  # the archive: no origin request


async def test_progress_total_line_on_a_terminal_and_plain_off_it(origin, tmp_path):
    urls = [origin.url(1_500_000, f"p{i}", rate=3_000_000) for i in range(3)]
    rc, _, err = await run("get", *urls, "-o", "r/", "--chunk-size", "256K", cwd=tmp_path,
                           env=cli_env(TTY_COMPATIBLE="1", COLUMNS="150"))
    assert rc == 0, err
    assert "total" in err and "0/3 done, 0 failed" in err and "[1/3]" in err  # rich: a line per job + total
    rc, _, err = await run("get", *urls, "-o", "plain/", "--chunk-size", "256K", cwd=tmp_path)
    assert rc == 0, err
    assert "\x1b[" not in err and "Done: 3 saved, 0 skipped, 0 failed of 3" in err


async def test_ctrl_c_stops_every_job_and_saves_every_sidecar(origin, tmp_path):
    size = 2 * MB
    names = [f"s{i}" for i in range(3)]
    slow = [origin.url(size, n, rate=300_000) for n in names]
    proc = await start("get", *slow, "-o", "c/", "-j", "3", "--chunk-size", "64K", "--window", "2", cwd=tmp_path)
    sidecars = [tmp_path / "c" / f"{size}{'' if i == 0 else f'.{i}'}.bin.part.json" for i in range(3)]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(
            s.exists() and json.loads(s.read_text() or "{}").get("bytes_done", 0) > 0 for s in sidecars):
        assert proc.returncode is None
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    err = err.decode()
    assert proc.returncode == 130, err
    assert "3 partial downloads saved" in err
    for s in sidecars:
        assert json.loads(s.read_text())["bytes_done"] > 0
    assert not any(p.suffix == ".bin" for p in (tmp_path / "c").iterdir())
    # The same command at full speed resumes all three.
    fast = [origin.url(size, n) for n in names]
    rc, _, err = await run("get", *fast, "-o", "c/", cwd=tmp_path)
    assert rc == 0, err
    assert err.count("Resuming") == 3
    assert (tmp_path / "c" / f"{size}.bin").read_bytes() == origin.content("s0", size)
    assert sorted(os.listdir(tmp_path / "c")) == [f"{size}.1.bin", f"{size}.2.bin", f"{size}.bin"]


async def test_an_input_file_saved_with_a_bom_and_crlf_lines_is_read(origin, tmp_path):
    urls = [origin.url(20_000 + i, f"bom{i}") for i in range(2)]
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + "".join(f"{u}\r\n" for u in urls).encode())  # as Notepad saves it
    rc, _, err = await run("get", "-i", str(listing), "-o", "d/", "--quiet", cwd=tmp_path)
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["20000.bin", "20001.bin"]


async def test_a_url_with_control_characters_is_refused_and_never_reaches_the_terminal(origin, tmp_path):
    listing = tmp_path / "list.txt"
    good = origin.url(1000, "fine")
    listing.write_text(f"{good}\n{origin.base_url}/x\x1b]0;pwned\x07.bin\n{origin.base_url}/nul\x00.bin\n")
    rc, _, err = await run("get", "-i", str(listing), "-o", "d/", cwd=tmp_path)
    assert rc == 2, err
    assert "list.txt:2: bad URL" in err and "control characters" in err
    assert "\x1b" not in err and "\x07" not in err and "\\x1b]0;pwned\\x07" in err  # shown escaped
    assert origin.log == []  # refused before any request


async def test_a_symlinked_download_archive_is_refused_before_any_download(origin, tmp_path):
    real = tmp_path / "real-archive.txt"
    real.write_text("# done\r\n")
    (tmp_path / "seen.txt").symlink_to(real)
    urls = [origin.url(1000 + i, f"ln{i}") for i in range(2)]
    rc, _, err = await run("get", *urls, "-o", "d/", "--download-archive", "seen.txt", cwd=tmp_path)
    assert rc == 6, err
    assert "symbolic link" in err
    assert origin.log == []  # was: both downloaded, then each "failed" (exit 6) appending to the archive
    assert real.read_bytes() == b"# done\r\n"


async def test_names_differing_only_in_case_get_distinct_files(origin, tmp_path):
    urls = [origin.add_object(name, name.encode() * 100, "video/mp4") for name in ("Clip.mp4", "clip.mp4")]
    rc, _, err = await run("get", *urls, "-o", "d/", "--quiet", cwd=tmp_path)
    assert rc == 0, err
    # On a case-insensitive filesystem (macOS, FAT/exFAT, a Windows share) the two must not be one file.
    names = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert names == ["Clip.mp4", "clip.1.mp4"], names
    assert (tmp_path / "d" / "clip.1.mp4").read_bytes() == b"clip.mp4" * 100


def manifest(media_url: str) -> str:
    """A DASH manifest of one combined format (``media_url``) that yt-dlp's generic extractor reads."""
    rep = (f'<AdaptationSet mimeType="video/mp4"><Representation id="18" codecs="avc1.64000d,mp4a.40.2" '
           f'bandwidth="100000" width="320" height="240"><BaseURL>{media_url}</BaseURL>'
           f"</Representation></AdaptationSet>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            'mediaPresentationDuration="PT2S" minBufferTime="PT1S" '
            f'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period>{rep}</Period></MPD>\n')


class PageServer(LoopbackApp):
    """DASH manifests for the origin's media at ``/{name}/watch.mpd`` (``self.url`` is a format
    string for the name); subclasses decide when each answer goes out."""

    route = "/{name}/watch.mpd"
    path = "/{}/watch.mpd"

    async def _handle(self, request: web.Request) -> web.Response:
        return await self._manifest(request)

    async def _manifest(self, request: web.Request) -> web.Response:
        raise NotImplementedError


class TwoPages(PageServer):
    """Two DASH-manifest pages titled alike (yt-dlp's generic extractor names both "watch"),
    ``/a/watch.mpd`` and ``/b/watch.mpd``, each one combined format: the origin object of its
    name. Each page is asked for twice: listed (``--resolve`` asks yt-dlp whether it is a
    playlist, one page after the other), then resolved by its job. The ``slow`` page's
    resolution is answered only once the other page's video has been asked for (at most 1 s
    later), so the later page in the list may resolve first."""

    def __init__(self, origin: Origin) -> None:
        self.origin, self.url = origin, ""
        self.slow, self.hits = "", {"a": 0, "b": 0}

    def slow_down(self, name: str) -> None:
        self.slow, self.hits = name, {"a": 0, "b": 0}

    async def _manifest(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits[name] += 1
        if name == self.slow and self.hits[name] == 2:
            other = f"/media/{'b' if name == 'a' else 'a'}"
            deadline = time.monotonic() + 1.0  # names given in list order: the other waits for this one
            while time.monotonic() < deadline and not any(r.path == other for r in self.origin.log):
                await asyncio.sleep(0.02)
        return web.Response(text=manifest(self.origin.media_url(name)), content_type="application/dash+xml")



async def test_same_titled_pages_are_named_in_list_order_whichever_resolves_first(origin, tmp_path):
    pytest.importorskip("yt_dlp")
    data = {"a": b"A" * 40_000, "b": b"B" * 50_000}
    for name, body in data.items():
        origin.add_object(name, body, "video/mp4")
    async with TwoPages(origin) as pages:
        args = ("get", "--resolve", pages.url.format("a"), pages.url.format("b"), "-o", "d/", "-j", "2")
        pages.slow_down("a")  # b resolves first: was given watch.mp4
        rc, _, err = await run(*args, cwd=tmp_path, timeout=60)
        assert rc == 0, err
        assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["watch.1.mp4", "watch.mp4"]
        assert (tmp_path / "d" / "watch.mp4").read_bytes() == data["a"]
        assert (tmp_path / "d" / "watch.1.mp4").read_bytes() == data["b"]
        # b's download lost; a re-run where a resolves first gives the same names: a's file is
        # kept, b is downloaded again (was: a skipped as "already exists" under b's name).
        (tmp_path / "d" / "watch.1.mp4").unlink()
        pages.slow_down("b")
        before = len(origin.log)
        rc, _, err = await run(*args, cwd=tmp_path, timeout=60)
    assert rc == 0, err
    assert "1 saved, 1 skipped, 0 failed of 2" in err
    assert (tmp_path / "d" / "watch.mp4").read_bytes() == data["a"]
    assert (tmp_path / "d" / "watch.1.mp4").read_bytes() == data["b"]
    assert not any(r.path == "/media/a" for r in origin.log[before:])


async def test_a_template_repeating_a_long_title_is_shortened_to_the_name_limit(origin, tmp_path):
    # Two titles alike but for their last character, each within the limit alone (not twice).
    prefix = "t" * 242
    urls = [origin.add_object(f"{prefix}{n}.mp4", n.encode() * 1000, "video/mp4") for n in "12"]
    rc, _, err = await run("get", *urls, "-o", "t/%(title)s - %(title)s.%(ext)s", "--quiet", cwd=tmp_path)
    assert rc == 0, err  # was: exit 6 for each, "File name too long"
    # Cut to the limit (room left for .part.json) keeping .mp4: the two names meet, the second
    # is numbered within the limit too.
    limit = min(255, os.pathconf(tmp_path, "PC_NAME_MAX")) - len(".part.json")
    first, second = prefix[: limit - 4] + ".mp4", prefix[: limit - 6] + ".1.mp4"
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == sorted([first, second])
    assert (tmp_path / "t" / first).read_bytes() == b"1" * 1000
    assert (tmp_path / "t" / second).read_bytes() == b"2" * 1000


class HeldPages(PageServer):
    """Pages ``/{name}/watch.mpd`` (as :class:`TwoPages`) whose resolution (each page's second
    request: the first is the playlist listing) is answered only once every page's resolution has
    arrived, or ``hold`` seconds after the first arrived: ``seen`` is how many had arrived when the
    first answer was sent."""

    def __init__(self, origin: Origin, names: list[str], hold: float) -> None:
        self.origin, self.names, self.hold, self.url = origin, names, hold, ""
        self.hits = dict.fromkeys(names, 0)
        self.arrived: list[str] = []
        self.seen: int | None = None
        self.all_in = asyncio.Event()

    async def _manifest(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits[name] += 1
        if self.hits[name] == 2:
            self.arrived.append(name)
            if len(self.arrived) == len(self.names):
                self.all_in.set()
            if self.seen is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.all_in.wait(), self.hold)
                if self.seen is None:
                    self.seen = len(self.arrived)
        return web.Response(text=manifest(self.origin.media_url(name)), content_type="application/dash+xml")



async def test_batch_pages_resolve_side_by_side_and_are_still_named_in_list_order(origin, tmp_path):
    pytest.importorskip("yt_dlp")
    data = {n: n.encode() * (20_000 + i) for i, n in enumerate("xyz")}
    for name, body in data.items():
        origin.add_object(name, body, "video/mp4")
    # hold: every resolution arrives within a second or two, later on a busy machine; one job
    # resolving after another would leave the first waiting the whole 15 s (seen == 1).
    async with HeldPages(origin, list(data), hold=15.0) as pages:
        rc, _, err = await run("get", "--resolve", *(pages.url.format(n) for n in data), "-o", "d/", "-j", "3",
                               cwd=tmp_path, timeout=60)
    assert rc == 0, err
    # Was 1: each job resolved its page only once the previous one had its name.
    assert pages.seen == 3, (pages.seen, pages.arrived)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["watch.1.mp4", "watch.2.mp4", "watch.mp4"]
    for name, file in zip(data, ("watch.mp4", "watch.1.mp4", "watch.2.mp4"), strict=True):
        assert (tmp_path / "d" / file).read_bytes() == data[name]
