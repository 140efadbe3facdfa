"""Muxed downloads resume (issue 13): for a file output, video and audio are fetched into their own
resumable parts, muxed from the local files when both are complete, and the parts removed. Killed
with SIGKILL mid-download, a re-run fetches only what each part is missing."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import av
import pytest
from test_cli import run, start

from rangestream.testing.media import generate_clip

CHUNK = 32 * 1024


def durations(source: str | io.BytesIO) -> dict[str, float]:
    """Each stream's duration in seconds, from its packets (fragmented MP4 gives no header duration)."""
    ends: dict[str, float] = {}
    with av.open(source) as c:
        for p in c.demux():
            if p.pts is not None and p.duration is not None and p.stream.time_base is not None:
                end = float((p.pts + p.duration) * p.stream.time_base)
                ends[p.stream.type] = max(ends.get(p.stream.type, 0.0), end)
    return ends


def sent_spans(origin, path: str, since: int, until: int) -> list[tuple[int, int]]:
    """The bytes the origin really sent for ``path`` (a killed run's requests were cut short)."""
    out = []
    for rec in origin.log[since:until]:
        if rec.path == path and rec.range and rec.bytes_sent:
            start = int(rec.range.split("=", 1)[1].split("-")[0])
            out.append((start, start + rec.bytes_sent))
    return out


def asked_spans(origin, path: str, since: int, size: int) -> list[tuple[int, int]]:
    out = []
    for rec in origin.log[since:]:
        if rec.path == path and rec.range:
            a, _, b = rec.range.split("=", 1)[1].partition("-")
            out.append((int(a), int(b) + 1 if b else size))
    return out


def overlap(xs: list[tuple[int, int]], ys: list[tuple[int, int]]) -> int:
    return sum(max(0, min(b, d) - max(a, c)) for a, b in xs for c, d in ys)


async def wait_for_parts(proc, sidecars: list[Path], at_least: list[int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.returncode is None, (await proc.stderr.read()).decode()
        try:
            if all(json.loads(s.read_text())["bytes_done"] >= n for s, n in zip(sidecars, at_least, strict=True)):
                return
        except (OSError, ValueError, KeyError):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"the parts never reached {at_least} bytes")


async def clips() -> tuple[bytes, bytes]:
    return await asyncio.gather(asyncio.to_thread(generate_clip, "h264-fmp4", 4.0, noise=30),
                                asyncio.to_thread(generate_clip, "aac-fmp4", 4.0))


async def test_mux_killed_mid_download_resumes_each_input_and_muxes_from_the_parts(origin, tmp_path):
    video, audio = await clips()
    origin.add_object("vid", video, "video/mp4")
    origin.add_object("aud", audio, "audio/mp4")
    slow = [origin.media_url("vid", rate=20_000), origin.media_url("aud", rate=8_000)]
    proc = await start("mux", *slow, "-o", "out.mp4", "--chunk-size", "32K", "--window", "2", cwd=tmp_path)
    sidecars = [tmp_path / "out.mp4.video.part.json", tmp_path / "out.mp4.audio.part.json"]
    await wait_for_parts(proc, sidecars, [2 * CHUNK, CHUNK // 2])
    proc.kill()  # SIGKILL: no handler runs, only what the sidecars already say survives
    await proc.wait()
    first = len(origin.log)
    assert not (tmp_path / "out.mp4").exists()

    rc, _, err = await run("mux", origin.media_url("vid"), origin.media_url("aud"), "-o", "out.mp4",
                           "--chunk-size", "32K", "--json", cwd=tmp_path)
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # the parts are gone
    assert err.count("Resuming") == 2
    for path, size in (("/media/vid", len(video)), ("/media/aud", len(audio))):
        again = overlap(sent_spans(origin, path, 0, first), asked_spans(origin, path, first, size))
        assert again <= CHUNK, (path, again)  # at most one chunk per input fetched twice
        assert sum(b - a for a, b in asked_spans(origin, path, first, size)) < size  # it resumed
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["resumed_from"] >= 2 * CHUNK + CHUNK // 2
    got, want = durations(str(tmp_path / "out.mp4")), durations(io.BytesIO(video))
    want.update(durations(io.BytesIO(audio)))
    assert sorted(got) == ["audio", "video"]
    for kind in ("video", "audio"):
        assert abs(got[kind] - want[kind]) < 0.05, (kind, got, want)


async def test_page_mux_to_a_file_resumes_after_a_kill(origin, tmp_path):
    pytest.importorskip("yt_dlp")
    from test_refresh import Page, Rep

    video, audio = await clips()
    origin.add_object("pv", video, "video/mp4")
    origin.add_object("pa", audio, "audio/mp4")
    reps = [Rep("137", "pv", "video", knobs={"rate": 20_000}), Rep("140", "pa", "audio", knobs={"rate": 8_000})]
    async with Page(origin, reps) as page:
        proc = await start("get", "--resolve", page.url, "-o", "page.mp4", "--chunk-size", "32K", "--window", "2",
                           cwd=tmp_path)
        sidecars = [tmp_path / "page.mp4.video.part.json", tmp_path / "page.mp4.audio.part.json"]
        await wait_for_parts(proc, sidecars, [CHUNK, CHUNK // 2])
        proc.kill()
        await proc.wait()
        first = len(origin.log)
        page.reps = [Rep("137", "pv", "video"), Rep("140", "pa", "audio")]  # full speed now
        rc, _, err = await run("get", "--resolve", page.url, "-o", "page.mp4", "--chunk-size", "32K", "--json",
                               cwd=tmp_path, timeout=60)
    assert rc == 0, err
    assert err.count("Resuming") == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["page.mp4"]
    assert json.loads(err.strip().splitlines()[-1])["bytes"] < len(video) + len(audio)
    fetched_again = sum(rec.bytes_sent for rec in origin.log[first:] if rec.path == "/videoplayback")
    assert fetched_again < len(video) + len(audio)
    assert sorted(durations(str(tmp_path / "page.mp4"))) == ["audio", "video"]


async def test_mux_with_force_killed_mid_download_still_resumes_its_parts(origin, tmp_path):
    """--force replaces an existing FILE; it must not throw away the parts of an interrupted run:
    the same command run again (with --force) continues them."""
    video, audio = await clips()
    origin.add_object("fv", video, "video/mp4")
    origin.add_object("fa", audio, "audio/mp4")
    (tmp_path / "out.mp4").write_bytes(b"an older file")
    slow = [origin.media_url("fv", rate=20_000), origin.media_url("fa", rate=8_000)]
    proc = await start("mux", *slow, "-o", "out.mp4", "--force", "--chunk-size", "32K", "--window", "2",
                       cwd=tmp_path)
    sidecars = [tmp_path / "out.mp4.video.part.json", tmp_path / "out.mp4.audio.part.json"]
    await wait_for_parts(proc, sidecars, [2 * CHUNK, CHUNK // 2])
    proc.kill()
    await proc.wait()
    assert (tmp_path / "out.mp4").read_bytes() == b"an older file"
    rc, _, err = await run("mux", origin.media_url("fv"), origin.media_url("fa"), "-o", "out.mp4", "--force",
                           "--chunk-size", "32K", "--json", cwd=tmp_path)
    assert rc == 0, err
    assert err.count("Resuming") == 2, err
    assert json.loads(err.strip().splitlines()[-1])["resumed_from"] >= 2 * CHUNK + CHUNK // 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    assert sorted(durations(str(tmp_path / "out.mp4"))) == ["audio", "video"]
