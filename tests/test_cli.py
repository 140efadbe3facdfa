"""The command line as a user meets it: real subprocesses against the emulated CDN.

The ``origin`` fixture runs in this test's event loop, so the CLI is started
with ``asyncio.create_subprocess_exec`` (never a blocking ``subprocess.run``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import resource
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from cli_support import cli_env, run, start

from rangestream.testing.origin import Origin

KB = 1024
MB = 1_000_000


def ranges_of(origin: Origin, name: str, size: int, since: int = 0) -> list[tuple[int, int]]:
    spans = []
    for rec in origin.log[since:]:
        if f"/{name}/" not in rec.path or not rec.range:
            continue
        a, _, b = rec.range.split("=", 1)[1].partition("-")
        spans.append((int(a), int(b) + 1 if b else size))
    return spans


def overlap(xs: list[tuple[int, int]], ys: list[tuple[int, int]]) -> int:
    return sum(max(0, min(b, d) - max(a, c)) for a, b in xs for c, d in ys)


async def wait_for_sidecar(proc: asyncio.subprocess.Process, path: Path, at_least: int,
                           timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            err = (await proc.stderr.read()).decode()
            raise AssertionError(f"the download ended (exit {proc.returncode}) before {at_least} bytes: {err}")
        try:
            state = json.loads(path.read_text())
            if state["bytes_done"] >= at_least:
                return state
        except (OSError, ValueError):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never recorded {at_least} bytes")


def last_json(stderr: str) -> dict:
    return json.loads(stderr.strip().splitlines()[-1])


# -- downloads ----------------------------------------------------------------------------


async def test_get_to_file_is_byte_identical_with_json_summary(origin, tmp_path):
    size = 3 * MB + 17
    url = origin.url(size, "whole")
    rc, out, err = await run("get", url, "-o", "whole.bin", "--chunk-size", "256K", "--sha256", "--json",
                             cwd=tmp_path)
    assert rc == 0, err
    assert out == b""
    assert (tmp_path / "whole.bin").read_bytes() == origin.content("whole", size)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whole.bin"]  # no .part, no sidecar left
    summary = last_json(err)
    assert summary["ok"] and summary["exit_code"] == 0
    assert summary["bytes"] == size and summary["size"] == size
    assert summary["sha256"] == origin.sha256("whole", size)
    assert summary["window"] == "auto" and summary["requests"] >= 12
    assert {"seconds", "mb_per_s", "retries", "refreshes", "window_max"} <= summary.keys()


async def test_stdout_is_byte_identical_and_carries_nothing_else(origin, tmp_path):
    size = 2 * MB + 5
    url = origin.url(size, "pipe", youtube=True)
    (rc, out, err), (rc_q, out_q, err_q) = await asyncio.gather(
        run("get", url, "-o", "-", "--chunk-size", "300K", "--window", "3", "--sha256", cwd=tmp_path),
        run("get", url, "-o", "-", "--chunk-size", "1M", "--quiet", cwd=tmp_path))
    want = origin.content("pipe", size)
    assert rc == 0 and out == want, err
    assert rc_q == 0 and out_q == want and err_q == ""
    assert "Streamed 2.0 MB to stdout" in err
    assert f"sha256 {hashlib.sha256(want).hexdigest()}  -" in err
    assert list(tmp_path.iterdir()) == []


async def test_range_mode_query_to_stdout(origin, tmp_path):
    size = 700 * 1000 + 3
    url = origin.url(size, "qmode", youtube=True)
    rc, out, err = await run("get", url, "-o", "-", "--chunk-size", "128K", "--range-mode", "query",
                             "--quiet", cwd=tmp_path)
    assert rc == 0 and out == origin.content("qmode", size), err
    assert {r.method for r in origin.log} == {"POST"} and all(r.range.startswith("query:") for r in origin.log)
    rc, _, err = await run("get", origin.url(1000, "plain"), "-o", "-", "--range-mode", "query", cwd=tmp_path)
    assert rc == 2 and "clen" in err and "Traceback" not in err


async def test_impersonate_downloads_through_curl_cffi(origin, tmp_path):
    size = 500 * 1000
    url = origin.url(size, "imp", youtube=True)
    rc, out, err = await run("get", url, "-o", "-", "--impersonate", "chrome", "--chunk-size", "128K",
                             "--quiet", cwd=tmp_path)
    assert rc == 0 and out == origin.content("imp", size), err
    rc, _, err = await run("get", url, "-o", "-", "--impersonate", "netscape4", cwd=tmp_path)
    assert rc == 2 and "Traceback" not in err, err


async def test_resume_after_sigkill_fetches_only_what_is_missing(origin, tmp_path):
    size, name = 6 * MB, "killed"
    slow = origin.url(size, name, rate=300_000)
    proc = await start("get", slow, "-o", "f.bin", "--chunk-size", "512K", "--window", "4", cwd=tmp_path)
    sidecar = tmp_path / "f.bin.part.json"
    await wait_for_sidecar(proc, sidecar, 1 * MB)
    proc.kill()
    await proc.wait()
    state = json.loads(sidecar.read_text())
    done = [tuple(s) for s in state["done"]]
    assert state["size"] == size and state["etag"] and state["last_modified"]
    assert 0 < state["bytes_done"] < size and (tmp_path / "f.bin.part").exists()
    part = (tmp_path / "f.bin.part").read_bytes()
    want = origin.content(name, size)
    assert all(part[a:b] == want[a:b] for a, b in done)  # what the sidecar lists is really on disk

    before = len(origin.log)
    fast = origin.url(size, name)  # a fresh URL for the same object, as after a network loss
    rc, _, err = await run("get", fast, "-o", "f.bin", "--chunk-size", "512K", "--json", cwd=tmp_path)
    assert rc == 0, err
    assert (tmp_path / "f.bin").read_bytes() == want
    assert not sidecar.exists() and not (tmp_path / "f.bin.part").exists()
    refetched = ranges_of(origin, name, size, since=before)
    assert refetched and overlap(refetched, done) == 0  # nothing the first run completed
    assert "Resuming f.bin.part" in err
    summary = last_json(err)
    assert summary["resumed_from"] == state["bytes_done"] and summary["bytes"] == size - state["bytes_done"]


async def test_ctrl_c_saves_the_sidecar_exits_130_and_resumes(origin, tmp_path):
    size, name = 4 * MB, "sigint"
    url = origin.url(size, name, rate=250_000)
    proc = await start("get", url, "-o", "g.bin", "--chunk-size", "256K", "--window", "2", cwd=tmp_path)
    # Non-terminal stderr: a plain progress line every ~2 s. Press Ctrl-C after the first one.
    # (Its first figure may be in B, kB or MB: a busy machine may have done less than 1 MB by then.)
    line = await asyncio.wait_for(proc.stderr.readline(), 30)
    assert re.search(rb"g\.bin: [\d.]+ (B|kB|MB) / 4\.0 MB .*conn", line), line
    proc.send_signal(signal.SIGINT)
    rest = await asyncio.wait_for(proc.stderr.read(), 10)
    assert await proc.wait() == 130
    err = rest.decode()
    assert "interrupted" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
    state = json.loads((tmp_path / "g.bin.part.json").read_text())
    assert state["bytes_done"] > 0
    done = [tuple(s) for s in state["done"]]
    before = len(origin.log)
    rc, _, err = await run("get", origin.url(size, name), "-o", "g.bin", cwd=tmp_path)
    assert rc == 0, err
    assert (tmp_path / "g.bin").read_bytes() == origin.content(name, size)
    assert overlap(ranges_of(origin, name, size, since=before), done) == 0


async def test_resume_starts_over_when_the_object_changed(origin, tmp_path):
    size, name = 3 * MB, "changing"
    proc = await start("get", origin.url(size, name, rate=250_000), "-o", "c.bin", "--chunk-size", "256K",
                       "--window", "2", cwd=tmp_path)
    await wait_for_sidecar(proc, tmp_path / "c.bin.part.json", 200 * KB)
    proc.kill()
    await proc.wait()
    origin.change(name)
    rc, _, err = await run("get", origin.url(size, name), "-o", "c.bin", cwd=tmp_path)
    assert rc == 0, err
    assert "cannot resume c.bin.part: the object changed" in err and "starting over" in err
    assert (tmp_path / "c.bin").read_bytes() == origin.content(name, size, version=1)


async def test_existing_file_is_left_alone_unless_forced(origin, tmp_path):
    (tmp_path / "e.bin").write_bytes(b"old")
    url = origin.url(100 * KB, "e")
    rc, _, err = await run("get", url, "-o", "e.bin", cwd=tmp_path)
    assert rc == 0 and "already exists" in err and (tmp_path / "e.bin").read_bytes() == b"old"
    rc, _, err = await run("get", url, "-o", "e.bin", "--force", "-q", cwd=tmp_path)
    assert rc == 0 and err == "" and (tmp_path / "e.bin").read_bytes() == origin.content("e", 100 * KB)


async def test_default_name_env_defaults_and_json_file(origin, tmp_path):
    url = origin.url(500_000, "named")
    rc, _, err = await run("get", url, "--json-file", "s.json", "-q",
                           env=cli_env(RANGESTREAM_WINDOW="1", RANGESTREAM_CHUNK_SIZE="100KiB"), cwd=tmp_path)
    assert rc == 0 and err == ""
    assert (tmp_path / "500000.bin").read_bytes() == origin.content("named", 500_000)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["window"] == 1 and summary["window_max"] == 1 and summary["requests"] == 5


# -- errors and exit codes -------------------------------------------------------------------


USAGE_CASES = [
    (["get", "http://x/", "--window", "0"], "window must be 1..64 or 'auto'"),
    (["get", "http://x/", "--chunk-size", "lots"], "not a size: 'lots'"),
    (["get", "http://x/", "--retries", "-1"], "must be >= 0"),
    (["get", "http://x/", "--backoff", "soon"], "not a number of seconds"),
    (["get", "http://x/", "--header", "no colon"], "not a header"),
    (["get", "http://x/", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["get", "ftp://example.com/f"], "bad URL ftp://example.com/f: only http:// and https://"),
    (["get", "http://"], "bad URL http://: no host"),
    (["get", "example.com/video.mp4"], "bad URL example.com/video.mp4"),
    (["get", "http://h:99999/"], "bad URL"),
    (["get", "http://u:secret@/x"], "bad URL http://REDACTED@/x: no host"),
    (["get", "http://x/", "--proxy", "ftp://p:21"], "bad proxy URL"),
    ([], "usage: rangestream"),
]


@pytest.mark.parametrize("argv,message", USAGE_CASES, ids=[" ".join(a[2:]) or "none" for a, _ in USAGE_CASES])
def test_usage_errors_in_process(argv, message, capsys, tmp_path, monkeypatch):
    from rangestream.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err and out == "" and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


async def test_bad_flags_and_urls_exit_2_as_a_user_sees_them(tmp_path):
    cases = [USAGE_CASES[0], USAGE_CASES[6], (["get", "http://x/"], "RANGESTREAM_RETRIES='many'")]
    results = await asyncio.gather(*(run(*args, cwd=tmp_path, env=cli_env(RANGESTREAM_RETRIES="many"))
                                     for args, _ in cases[2:]),
                                   *(run(*args, cwd=tmp_path) for args, _ in cases[:2]))
    results = results[1:] + results[:1]
    for (args, message), (rc, out, err) in zip(cases, results, strict=True):
        assert rc == 2, (args, err)
        assert message in err, (args, err)
        assert out == b"" and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


async def test_help_documents_exit_codes_and_environment():
    rc, out, _ = await run("get", "--help")
    text = out.decode()
    assert rc == 0
    for needle in ("exit codes:", "130", "141", "local I/O", "RANGESTREAM_PROXY", "RANGESTREAM_WINDOW",
                   "--chunk-size", "--window", "--retries", "--backoff", "--timeout", "--header", "--proxy",
                   "--quiet", "--json", "--sha256"):
        assert needle in text, needle


async def test_network_and_http_failures_have_their_exit_codes(origin, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    fast = ["--retries", "1", "--backoff", "0.01"]
    cases = [
        (f"http://127.0.0.1:{closed_port}/x", 3, "cannot connect to 127.0.0.1"),
        (f"{origin.base_url}/media/missing", 4, "not found: HTTP 404"),
        (origin.url(10 * KB, "old", youtube=True, expire=time.time() - 60), 4, "expired"),
        (origin.url(3 * MB, "flip", changed_after=2), 5, "object changed"),
    ]
    results = await asyncio.gather(*(run("get", url, *fast, "-o", f"out{i}.bin", "--chunk-size", "256K",
                                         "--window", "1", cwd=tmp_path) for i, (url, _, _) in enumerate(cases)))
    for (url, code, message), (rc, out, err) in zip(cases, results, strict=True):
        assert rc == code, (url, err)
        assert message in err, (url, err)
        assert "Traceback" not in err and out == b""
    assert "sig=REDACTED" in results[2][2]  # the signed URL's secret is never shown
    assert list(tmp_path.iterdir()) == []  # nothing to resume: nothing left behind
    rc, _, err = await run("get", f"{origin.base_url}/media/missing", "--debug", "-o", "x", cwd=tmp_path)
    assert rc == 4 and "Traceback" in err and "HTTPStatusError" in err


async def test_local_io_failures_exit_6(origin, tmp_path):
    url = origin.url(2 * MB, "io")
    (tmp_path / "plainfile").write_bytes(b"")
    with open("/dev/full", "wb") as full:
        (rc1, _, err1), (rc2, _, err2), (rc3, _, err3) = await asyncio.gather(
            run("get", url, "-o", str(tmp_path / "plainfile" / "x.bin")),
            run("get", url, "-o", "-", stdout=full),
            run("get", url, "-o", str(tmp_path / "big.bin"),  # a 1 MB file size limit, like a full disk
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))))
    assert rc1 == 6 and "cannot open" in err1 and "Not a directory" in err1, err1
    assert rc2 == 6 and "disk full: cannot write to stdout" in err2, err2
    assert rc3 == 6 and "file too large" in err3, err3
    for err in (err1, err2, err3):
        assert "Traceback" not in err


async def test_broken_pipe_on_stdout_is_quiet(origin):
    size = 30 * MB
    r, w = os.pipe()
    try:
        proc = await start("get", origin.url(size, "head"), "-o", "-", "--quiet", stdout=w)
        os.close(w)
        w = -1
        got = await asyncio.to_thread(os.read, r, 100)  # like `| head -c 100`
        assert got == origin.content("head", size)[: len(got)] and got
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 141
    assert err == b""


async def test_origin_subcommand_serves(tmp_path):
    proc = await start("origin", "--profile", "fast", "--port", "0")
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert line.startswith("listening on http://127.0.0.1:")
        url = f"{line.split()[-1]}/data/o/100000.bin"
        rc, out, err = await run("get", url, "-o", "-", "-q")
        assert rc == 0 and len(out) == 100_000, err
    finally:
        proc.terminate()
        await proc.wait()


# -- transfer flags ------------------------------------------------------------------------------


async def test_flags_reach_the_wire_headers_cookies_proxy_env(tmp_path):
    from aiohttp import web

    payload = os.urandom(300 * KB)
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        a, _, b = request.headers["Range"].removeprefix("bytes=").partition("-")
        start, stop = int(a), min(int(b) + 1, len(payload))
        return web.Response(status=206, body=payload[start:stop],
                            headers={"Content-Range": f"bytes {start}-{stop - 1}/{len(payload)}"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/f.bin"
    (tmp_path / "cookies.txt").write_text(
        "# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tSID\tcookie-value\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_proxy = f"http://user:pw-secret@127.0.0.1:{s.getsockname()[1]}"
    try:
        (rc, out, err), (rc_p, out_p, err_p) = await asyncio.gather(
            run("get", url, "-o", "-", "-q", "--chunk-size", "100K", "--window", "2",
                "--header", "X-Token: abc", "-H", "User-Agent: rs-test/1", "--cookies", "cookies.txt", cwd=tmp_path),
            run("get", url, "-o", "-", "--retries", "0", cwd=tmp_path, env=cli_env(RANGESTREAM_PROXY=dead_proxy)))
    finally:
        await runner.cleanup()
    assert rc == 0 and out == payload, err
    assert len(seen) >= 3
    for h in seen:
        assert h["X-Token"] == "abc" and h["User-Agent"] == "rs-test/1" and h["Cookie"] == "SID=cookie-value"
        assert h["Accept-Encoding"] == "identity"
    assert rc_p == 3 and out_p == b"", err_p  # the proxy from the environment was used...
    assert "proxy" in err_p and "pw-secret" not in err_p  # ...and its password never shown


async def test_retries_are_reported_and_expired_urls_refreshed_by_command(origin, tmp_path):
    size = 600 * KB
    origin.inject("503", name="flaky", count=2)
    expired = origin.url(size, "exp", youtube=True, expire=time.time() - 60)
    fresh = origin.url(size, "exp", youtube=True, expire=time.time() + 3600)
    (rc, out, err), (rc_r, out_r, err_r) = await asyncio.gather(
        run("get", origin.url(size, "flaky"), "-o", "-", "--backoff", "0.01", "--window", "1", "--json",
            cwd=tmp_path),
        run("get", expired, "-o", "-", "--json", "--refresh-command", f"echo '{fresh}'", cwd=tmp_path))
    assert rc == 0 and out == origin.content("flaky", size), err
    assert "warning: chunk 0 at byte 0: HTTP 503; retry 1/3" in err
    assert last_json(err)["retries"] == 2
    assert rc_r == 0 and out_r == origin.content("exp", size), err_r
    assert "the URL expired; running --refresh-command" in err_r
    assert last_json(err_r)["refreshes"] == 1
    assert "sig=REDACTED" in last_json(err_r)["url"]


async def test_mux_subcommand_to_file_and_stdout(origin, tmp_path):
    import av

    from rangestream.testing.media import generate_clip

    video = await asyncio.to_thread(generate_clip, "h264-fmp4", 2.0)
    audio = await asyncio.to_thread(generate_clip, "aac-fmp4", 2.0)
    vurl = origin.add_object("v", video, "video/mp4")
    aurl = origin.add_object("a", audio, "audio/mp4")
    (rc, _, err), (rc_s, out_s, err_s), (rc_404, _, err_404) = await asyncio.gather(
        run("mux", vurl, aurl, "-o", "out.mp4", "--json", cwd=tmp_path),
        run("mux", vurl, aurl, "-o", "-", "--format", "mkv", "-q", cwd=tmp_path),
        run("mux", f"{origin.base_url}/media/none", aurl, "-o", "bad.mp4", cwd=tmp_path))
    assert rc == 0, err
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert sorted(s.type for s in c.streams) == ["audio", "video"]
    summary = last_json(err)
    assert summary["bytes"] == len(video) + len(audio) and summary["codecs"] == {"video": "h264", "audio": "aac"}
    assert rc_s == 0 and out_s[:4] == b"\x1a\x45\xdf\xa3" and err_s == "", err_s  # Matroska on stdout
    assert rc_404 == 4 and "video" in err_404 and "404" in err_404, err_404
    # No muxed output or part of the failed one; only what its audio input fetched before the video's
    # 404 stopped it may stay, as a resumable part with its sidecar (issue 13).
    left = {p.name for p in tmp_path.iterdir()} - {"out.mp4"}
    assert left <= {"bad.mp4.audio.part", "bad.mp4.audio.part.json"}, left
    assert not left or "bad.mp4.audio.part" in err_404

    # another run holding out2.mp4.part: refused, and its file is left alone
    import fcntl
    with open(tmp_path / "out2.mp4.part", "wb") as held:
        held.write(b"theirs")
        held.flush()
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        rc_busy, _, err_busy = await run("mux", vurl, aurl, "-o", "out2.mp4", cwd=tmp_path)
        assert rc_busy == 1 and "being written by another rangestream run" in err_busy, err_busy
        assert (tmp_path / "out2.mp4.part").read_bytes() == b"theirs"


async def test_serve_subcommand_proxies_with_range(origin, tmp_path):
    size = 300 * 1000
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rangestream", "serve", "--port", "0", "--allow-private",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        base = line.removeprefix("listening on ")
        import aiohttp
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/stream", params={"url": origin.url(size, "srv", youtube=True)},
                                   headers={"Range": "bytes=1000-1999"}) as resp:
                assert resp.status == 206 and await resp.read() == origin.content("srv", size)[1000:2000]
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_stdout_keeps_every_byte_before_a_failure(origin, tmp_path):
    size, chunk = 3 * MB, 1 * MB
    origin.inject("status", status=404, name="tail", start=2 * chunk, count=5)
    rc, out, err = await run("get", origin.url(size, "tail", youtube=True), "-o", "-", "--window", "1",
                             "--chunk-size", "1M", "--quiet", cwd=tmp_path)
    assert rc == 4, err
    assert out == origin.content("tail", size)[: 2 * chunk]  # all that arrived, nothing after


async def test_a_part_file_shorter_than_its_sidecar_is_not_trusted(origin, tmp_path):
    # What a concurrent run that just finished (renamed FILE.part away) leaves a second run:
    # a sidecar listing spans and an empty FILE.part. The second run must start over.
    size, name = 3 * MB, "short"
    slow = origin.url(size, name, rate=600_000)
    proc = await start("get", slow, "-o", "f.bin", "--chunk-size", "512K", "--window", "2", cwd=tmp_path)
    sidecar = tmp_path / "f.bin.part.json"
    await wait_for_sidecar(proc, sidecar, 512 * 1024)
    proc.kill()
    await proc.wait()
    (tmp_path / "f.bin.part").write_bytes(b"")
    rc, _, err = await run("get", origin.url(size, name), "-o", "f.bin", "--chunk-size", "512K", cwd=tmp_path)
    assert rc == 0, err
    # the spans the sidecar listed were not trusted: either trimmed to the file before opening,
    # or refused under the lock ("shorter than its sidecar says") when the race is that tight
    assert "0 B of 3.0 MB already there" in err or "shorter than its sidecar says" in err
    assert (tmp_path / "f.bin").read_bytes() == origin.content(name, size)
