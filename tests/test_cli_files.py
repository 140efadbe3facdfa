"""The files ``rangestream get`` touches, as a hostile directory or a tampered sidecar meets them.

Real subprocesses against the emulated CDN (``origin`` fixture) or small aiohttp servers on
loopback. Every run is bounded: a process that outlives its timeout is killed and the test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web
from cli_support import cli_env, run

KB = 1024


_env = cli_env  # test_cli_errors imports it from here


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/x.bin"


def ranged_handler(payload: bytes):
    """A plain Range-capable server for one object (206 with Content-Range, or 200 without Range)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        rng = request.headers.get("Range")
        if not rng:
            return web.Response(body=payload)
        a, _, b = rng.removeprefix("bytes=").partition("-")
        start, stop = int(a), min(int(b) + 1 if b else len(payload), len(payload))
        return web.Response(status=206, body=payload[start:stop],
                            headers={"Content-Range": f"bytes {start}-{stop - 1}/{len(payload)}"})

    return handle


async def serve_any_path(payload: bytes):
    app = web.Application()
    app.router.add_get("/{tail:.*}", ranged_handler(payload))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


# -- FILE.part is never opened through a symlink ------------------------------------------------


async def test_planted_part_symlink_never_overwrites_its_target(origin, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious data")
    (tmp_path / "f.bin.part").symlink_to(victim)
    url = origin.url(200 * KB, "sym")
    rc, _, err = await run("get", url, "-o", "f.bin", cwd=tmp_path)
    assert victim.read_bytes() == b"precious data"
    assert rc == 6, err
    assert "f.bin.part is a symbolic link: refusing to write through it" in err and "Traceback" not in err
    assert not (tmp_path / "f.bin").exists() and (tmp_path / "f.bin.part").is_symlink()
    # --force does not follow it either
    rc, _, err = await run("get", url, "-o", "f.bin", "--force", cwd=tmp_path)
    assert rc == 6 and victim.read_bytes() == b"precious data", err


async def test_mux_part_symlink_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious data")
    (tmp_path / "out.mp4.part").symlink_to(victim)
    # The refusal comes before any request: the URLs need not answer.
    rc, _, err = await run("mux", closed_port_url(), closed_port_url(), "-o", "out.mp4", "--retries", "0",
                           cwd=tmp_path)
    assert victim.read_bytes() == b"precious data"
    assert rc == 6 and "out.mp4.part is a symbolic link" in err and "Traceback" not in err, err
    assert not (tmp_path / "out.mp4").exists() and (tmp_path / "out.mp4.part").is_symlink()


async def test_part_that_is_not_a_regular_file_is_refused(origin, tmp_path):
    os.mkfifo(tmp_path / "g.bin.part")
    rc, _, err = await run("get", origin.url(100 * KB, "fifo-part"), "-o", "g.bin", cwd=tmp_path, timeout=20)
    assert rc == 6 and "g.bin.part is not a regular file" in err, err
    assert stat.S_ISFIFO(os.lstat(tmp_path / "g.bin.part").st_mode)


# -- devices and FIFOs are written in order, never replaced -------------------------------------


async def test_dev_null_output_downloads_into_it(origin, tmp_path):
    size = 700 * KB
    url = origin.url(size, "devnull")
    for extra in ((), ("--force",)):
        rc, _, err = await run("get", url, "-o", "/dev/null", "--json", "--chunk-size", "256K", *extra,
                               cwd=tmp_path)
        assert rc == 0, err
        summary = json.loads(err.strip().splitlines()[-1])
        assert summary["bytes"] == size and summary["output"] == "/dev/null", summary
        assert "already exists" not in err
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert list(tmp_path.iterdir()) == []


def _drain_fifo(path: Path, writer_done: threading.Event, deadline: float) -> bytes:
    """Read ``path`` until its writer is done and the FIFO is empty (opened first, non-blocking,
    so the writer never waits and this never blocks past ``deadline``)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    got = bytearray()
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], 0.1)
            data = os.read(fd, 1 << 20) if readable else b""
            if data:
                got += data
            elif writer_done.is_set():
                break
            elif readable:  # EOF before the writer opened it: wait for it
                time.sleep(0.02)
    finally:
        os.close(fd)
    return bytes(got)


async def test_fifo_output_is_written_in_order_while_read(origin, tmp_path):
    size = 2_000_000  # far more than a pipe buffer: the download and the reader overlap
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    done = threading.Event()
    reader = asyncio.ensure_future(asyncio.to_thread(_drain_fifo, fifo, done, time.monotonic() + 30))
    await asyncio.sleep(0)  # let the reader open its end first
    for _ in range(100):
        if reader.done():
            break
        await asyncio.sleep(0.01)
    try:
        rc, _, err = await run("get", origin.url(size, "fifo"), "-o", str(fifo), "--chunk-size", "256K",
                               "--window", "3", cwd=tmp_path)
    finally:
        done.set()
    got = await reader
    assert rc == 0, err
    assert got == origin.content("fifo", size)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no .part, no sidecar
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# -- a tampered sidecar is refused and the download starts over ---------------------------------


def _tampered(size: int, url: str) -> dict[str, tuple[bytes, str]]:
    """name -> (sidecar text, what the refusal says)."""
    def sidecar(**fields) -> str:
        d = {"version": 1, "url": url, "size": size, "etag": None, "last_modified": None,
             "chunk_size": 65536, "done": [[0, size // 2]]}
        d.update(fields)
        return json.dumps(d)

    many = [[2 * i, 2 * i + 1] for i in range(200_000)]
    return {
        "huge-float": (sidecar().replace(f'"size": {size}', '"size": 1e400').encode(), "not an integer"),
        "many-spans": (sidecar(done=many).encode(), "larger than 1.0 MB"),  # refused unread
        "5000-spans": (sidecar(done=many[:5000]).encode(), "lists 5000 spans"),
        "size-zero": (sidecar(size=0, done=[]).encode(), "size must be an integer >= 1"),
        "negative": (sidecar(done=[[-1000, size // 2]]).encode(), "is not within 0 <= start < stop"),
        "beyond-size": (sidecar(done=[[0, size + 10]]).encode(), "is not within 0 <= start < stop"),
        "string-size": (sidecar(size=str(size)).encode(), "size must be an integer"),
        "other-url": (sidecar(url=url.replace("/tamper", "/other"), done=[[0, size]]).encode(),
                      "its sidecar is for another URL"),
        "not-json": (b'{"version": 1, "done": [[0,', "not valid JSON"),
    }


async def test_tampered_sidecars_are_refused_and_the_download_starts_over(origin, tmp_path):
    size = 300_000
    url = origin.url(size, "tamper")
    want = origin.content("tamper", size)
    cases = _tampered(size, url)
    for name, (text, _) in cases.items():
        d = tmp_path / name
        d.mkdir()
        (d / "f.bin.part").write_bytes(bytes(size))  # zero-filled: trusting any span gives wrong bytes
        (d / "f.bin.part.json").write_bytes(text)
    started = time.monotonic()
    results = await asyncio.gather(*(run("get", url, "-o", "f.bin", "--chunk-size", "64K", cwd=tmp_path / name,
                                         timeout=40) for name in cases))
    for (name, (_, why)), (rc, _, err) in zip(cases.items(), results, strict=True):
        assert rc == 0, (name, err)
        assert (tmp_path / name / "f.bin").read_bytes() == want, name
        assert "cannot resume f.bin.part" in err and why in err and "starting over" in err, (name, err)
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["f.bin"], name
    assert time.monotonic() - started < 35  # 200,000 spans are refused, not merged for minutes


async def test_complete_looking_sidecar_is_checked_against_the_server(origin, tmp_path):
    # Every span listed, but the validators are not the server's: nothing may be trusted
    # before the server confirmed the size and validators.
    size = 300_000
    url = origin.url(size, "verify")
    (tmp_path / "f.bin.part").write_bytes(bytes(size))
    (tmp_path / "f.bin.part.json").write_text(json.dumps(
        {"version": 1, "url": url, "size": size, "etag": '"not-the-servers"', "last_modified": None,
         "chunk_size": 65536, "done": [[0, size]]}))
    rc, _, err = await run("get", url, "-o", "f.bin", cwd=tmp_path)
    assert rc == 0, err
    assert (tmp_path / "f.bin").read_bytes() == origin.content("verify", size)
    assert "the object changed on the server since it was started" in err and "starting over" in err


# -- derived names ---------------------------------------------------------------------------------


async def test_derived_names_lose_bidi_controls_and_fit_the_filesystem(tmp_path):
    payload = os.urandom(50 * KB)
    runner, base = await serve_any_path(payload)
    long_stem = "é" * 200  # 400 bytes of UTF-8
    (tmp_path / "bidi").mkdir()
    (tmp_path / "long").mkdir()
    try:
        (rc1, _, err1), (rc2, _, err2) = await asyncio.gather(
            run("get", f"{base}/invoice%E2%80%AEfdp.exe", "-q", cwd=tmp_path / "bidi"),
            run("get", f"{base}/{long_stem}.mp4", "-q", cwd=tmp_path / "long"))
    finally:
        await runner.cleanup()
    assert rc1 == 0, err1
    assert [p.name for p in (tmp_path / "bidi").iterdir()] == ["invoicefdp.exe"]
    assert (tmp_path / "bidi" / "invoicefdp.exe").read_bytes() == payload
    assert rc2 == 0, err2
    (name,) = [p.name for p in (tmp_path / "long").iterdir()]
    assert name.endswith(".mp4") and name.startswith("é" * 100) and len(name.encode()) <= 255 - len(".part.json")
    assert (tmp_path / "long" / name).read_bytes() == payload


def test_safe_file_name_rules():
    from rangestream.output import safe_file_name

    assert safe_file_name("a\u202egpj.exe") == "agpj.exe"
    assert safe_file_name("\u2066x\u2069\u200f.mp4") == "x.mp4"
    assert safe_file_name("../..\\x\x00y") == "_.._x_y"
    assert safe_file_name("...") == "download"
    long = safe_file_name("名" * 200 + ".webm")
    assert long.endswith(".webm") and len(long.encode()) <= 245 and long.startswith("名")


# -- flag bounds -------------------------------------------------------------------------------------


BOUND_CASES = [
    (["--window", "65"], "window must be 1..64 or 'auto', not 65"),
    (["--window", "100000"], "window must be 1..64"),
    (["--max-window", "0"], "must be 1..64, not 0"),
    (["--max-window", "500"], "must be 1..64, not 500"),
    (["--requests-per-second", "0"], "must be 0.01..10000 requests per second"),
    (["--requests-per-second", "1e-9"], "must be 0.01..10000 requests per second"),
    (["--requests-per-second", "nan"], "must be 0.01..10000 requests per second"),
    (["--requests-per-second", "inf"], "must be 0.01..10000 requests per second"),
    (["--requests-per-second", "1e9"], "must be 0.01..10000 requests per second"),
]


@pytest.mark.parametrize("flags,message", BOUND_CASES, ids=[" ".join(f) for f, _ in BOUND_CASES])
def test_flag_values_out_of_bounds_are_usage_errors(flags, message, capsys, tmp_path, monkeypatch):
    from rangestream.cli import main

    monkeypatch.chdir(tmp_path)
    # A URL nobody answers: a flag accepted by mistake fails fast with another exit code.
    assert main(["get", closed_port_url(), "--retries", "0", "-o", "-", *flags]) == 2
    _, err = capsys.readouterr()
    assert message in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


async def test_window_from_the_environment_is_bounded_too(tmp_path):
    rc, _, err = await run("get", closed_port_url(), "--retries", "0", "-o", "-", cwd=tmp_path,
                           env=cli_env(RANGESTREAM_WINDOW="1000"), timeout=20)
    assert rc == 2 and "RANGESTREAM_WINDOW='1000'" in err and "window must be 1..64" in err, err


async def test_fifo_reader_going_away_is_a_quiet_broken_pipe(origin, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    size = 30_000_000
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rangestream", "get", origin.url(size, "fifo-head"), "-o", str(fifo), "--quiet",
        cwd=tmp_path, env=cli_env(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)

    def read_head(deadline: float) -> bytes:  # like `head -c 100 < pipe`, bounded in time
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            while time.monotonic() < deadline:
                if select.select([fd], [], [], 0.1)[0] and (data := os.read(fd, 100)):
                    return data
                time.sleep(0.01)
            return b""
        finally:
            os.close(fd)

    try:
        got = await asyncio.to_thread(read_head, time.monotonic() + 20)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert got and got == origin.content("fifo-head", size)[:len(got)]
    assert proc.returncode == 141 and err == b"", err
