"""A resumed ``get -o FILE`` against servers that would splice two versions into one file:
validators dropped on the resume, a sidecar left by another URL. Real subprocesses, a loopback
server whose object, validators and failures are set per run."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
from aiohttp import web
from cli_support import LoopbackApp, cli_env, run

from rangestream.errors import RangestreamError
from rangestream.output import PartFile, partfile

SIZE = 1_000_000
HALF = 4 * 128_000  # the first run fails here, at a chunk boundary (128K is 128,000 bytes)
FIRST = ("--chunk-size", "128K", "--window", "1", "--retries", "0")


def body(seed: int) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(256)) * (SIZE // 256) + bytes(SIZE % 256)


class Server(LoopbackApp):
    """``payload`` (or ``by_query[query string]``) with the ETag ``etag`` ("" : none); 503 for
    ranges starting at or past ``fail_from``; ``honour_if_range`` False: If-Range is ignored."""

    path = "/object.bin"

    def __init__(self) -> None:
        self.payload, self.etag = body(1), '"v1"'
        self.by_query: dict[str, bytes] = {}
        self.fail_from: int | None = None
        self.honour_if_range = True
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        payload = self.by_query.get(request.query_string, self.payload)
        headers = {"Accept-Ranges": "bytes"}
        if self.etag:
            headers["ETag"] = self.etag
        rng, if_range = request.headers.get("Range"), request.headers.get("If-Range")
        if rng and self.honour_if_range and if_range and if_range != self.etag:
            rng = None
        if not rng:
            return web.Response(status=200, body=payload, headers=headers)
        a, _, b = rng.removeprefix("bytes=").partition("-")
        start, stop = int(a), min(int(b) + 1 if b else SIZE, SIZE)
        if self.fail_from is not None and start >= self.fail_from:
            return web.Response(status=503, headers={"Retry-After": "0"})
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{SIZE}"
        return web.Response(status=206, body=payload[start:stop], headers=headers)



async def first_half(server: Server, out: Path, url: str | None = None) -> dict[str, object]:
    """A first run that stops at HALF (the server fails from there), leaving FILE.part and its sidecar."""
    server.fail_from = HALF
    rc, _, err = await run("get", url or server.url, "-o", str(out), *FIRST, cwd=out.parent)
    assert rc != 0 and "run the same command again to resume" in err, err
    sidecar = json.loads(Path(f"{out}.part.json").read_text())
    assert sidecar["bytes_done"] == HALF, sidecar
    server.fail_from = None
    return sidecar


async def test_a_resume_answered_without_the_recorded_etag_starts_over(tmp_path: Path):
    # The sidecar has ETag "v1"; the server now serves another version of the same size with no
    # validators at all and ignores If-Range. Was: "Resuming", exit 0, v1's first half + v2's rest.
    out = tmp_path / "o.bin"
    async with Server() as server:
        assert (await first_half(server, out))["etag"] == '"v1"'
        server.payload, server.etag, server.honour_if_range = body(2), "", False
        rc, _, err = await run("get", server.url, "-o", str(out), cwd=tmp_path)
    assert rc == 0, err
    assert "starting over" in err and "no longer shows" in err, err
    assert out.read_bytes() == body(2)


async def test_a_resume_showing_the_recorded_etag_keeps_the_saved_bytes(tmp_path: Path):
    # The same version still resumes (the check above must not restart every resume).
    out = tmp_path / "o.bin"
    async with Server() as server:
        await first_half(server, out)
        rc, _, err = await run("get", server.url, "-o", str(out), cwd=tmp_path)
    assert rc == 0 and "Resuming" in err and "starting over" not in err, err
    assert out.read_bytes() == body(1)


async def test_a_sidecar_from_another_query_is_not_resumed_without_validators(tmp_path: Path):
    # No validators, the same size: only the URL ties FILE.part to the object. ?v=1's half must
    # not be completed with ?v=2's bytes. Was: "Resuming", exit 0, a file spliced from both.
    out = tmp_path / "o.bin"
    async with Server() as server:
        server.etag, server.by_query = "", {"v=1": body(1), "v=2": body(2)}
        await first_half(server, out, server.url + "?v=1")
        rc, _, err = await run("get", server.url + "?v=2", "-o", str(out), cwd=tmp_path)
    assert rc == 0 and "its sidecar is for another URL" in err and "starting over" in err, err
    assert out.read_bytes() == body(2)


async def test_a_sidecar_from_another_port_is_not_resumed(tmp_path: Path):
    out = tmp_path / "o.bin"
    async with Server() as a, Server() as b:
        a.etag = b.etag = ""
        b.payload = body(2)
        await first_half(a, out)
        rc, _, err = await run("get", b.url, "-o", str(out), cwd=tmp_path)
    assert rc == 0 and "its sidecar is for another URL" in err, err
    assert out.read_bytes() == body(2)


async def test_a_re_signed_url_still_resumes_without_validators(tmp_path: Path):
    # Signature and expiry parameters change on every signing: they do not make another object.
    out = tmp_path / "o.bin"
    async with Server() as server:
        server.etag = ""
        await first_half(server, out, server.url + "?v=1&Expires=100&Signature=aaa&token=x")
        rc, _, err = await run("get", server.url + "?Signature=bbb&v=1&Expires=200&token=y",
                               "-o", str(out), cwd=tmp_path)
    assert rc == 0 and "Resuming" in err and "starting over" not in err, err
    assert out.read_bytes() == body(1)


def locked_elsewhere(path: Path) -> bool:
    """Whether another open file description holds the lock on ``path`` (as a second run would find)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        assert e.errno in (errno.EAGAIN, errno.EWOULDBLOCK), e
        return True
    finally:
        os.close(fd)
    return False


def finished_part(out: Path, data: bytes) -> PartFile:
    part = PartFile(str(out), url="http://127.0.0.1:1/o.bin", chunk_size=len(data))
    part.open(fresh=True)
    part.size = len(data)
    part.write(0, data)
    return part


def test_finish_renames_under_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # A second run opening FILE.part during the rename must find it locked, before and after
    # the rename (the file then being FILE). Was: closed (unlocked) first, then renamed.
    out = tmp_path / "o.bin"
    part = finished_part(out, b"x" * 1000)
    real_replace, seen = os.replace, []

    def replace(src: str, dst: str) -> None:
        if src == part.path:
            seen.append(("before", locked_elsewhere(Path(src))))
            real_replace(src, dst)
            seen.append(("after", locked_elsewhere(Path(dst))))
        else:
            real_replace(src, dst)

    monkeypatch.setattr(partfile.os, "replace", replace)
    try:
        part.finish()
    finally:
        part.shutdown()
    assert seen == [("before", True), ("after", True)]
    assert out.read_bytes() == b"x" * 1000 and not os.path.exists(part.path)
    assert not locked_elsewhere(out)  # released once renamed


def test_a_part_renamed_between_open_and_lock_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Run B (--force: fresh) opens FILE.part; run A then renames it to FILE and unlocks; B's lock
    # now succeeds on A's finished FILE. Was: B emptied FILE (A's whole download lost).
    out = tmp_path / "o.bin"
    a = finished_part(out, b"y" * 1000)
    real_open = partfile.open_part_fd

    def open_then_other_run_finishes(path: str) -> int:
        fd = real_open(path)
        a.finish()  # between B's open and B's lock
        return fd

    monkeypatch.setattr(partfile, "open_part_fd", open_then_other_run_finishes)
    b = PartFile(str(out), url="http://127.0.0.1:1/o.bin", chunk_size=1000)
    try:
        with pytest.raises(RangestreamError, match="renamed by another rangestream run"):
            b.open(fresh=True)
    finally:
        a.shutdown()
        b.shutdown()
    assert b.fd is None
    assert out.read_bytes() == b"y" * 1000


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to hold the final rename")
async def test_a_signal_once_file_is_renamed_into_place_still_ends_0(tmp_path: Path):
    # strace delays the final rename by 1 s; SIGTERM arrives then and is handled once it is done.
    # Was: exit 143 "stopped by SIGTERM" with FILE complete.
    out, log = tmp_path / "o.bin", tmp_path / "strace.log"
    async with Server() as server:
        proc = await asyncio.create_subprocess_exec(
            "strace", "-f", "-qq", "-o", str(log), "-e", "trace=rename,renameat,renameat2",
            "-e", "inject=rename,renameat,renameat2:delay_enter=1000000",
            sys.executable, "-m", "rangestream", "get", server.url, "-o", str(out), cwd=tmp_path, env=cli_env(),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            for _ in range(1500):  # the rename of o.bin.part is entered (bounded: 30 s)
                text = log.read_text(errors="replace") if log.exists() else ""
                if 'o.bin.part", ' in text:
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError(f"no rename of o.bin.part seen: {text}")
            renaming = next(line for line in text.splitlines() if 'o.bin.part", ' in line)
            os.kill(int(renaming.split()[0]), signal.SIGTERM)  # the traced python (strace passes it on)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert out.read_bytes() == body(1)
    assert proc.returncode == 0 and "was complete" in err.decode(), (proc.returncode, err.decode())


async def test_sha256_of_a_file_already_there(tmp_path: Path):
    # "nothing to do" with --sha256: the hash of the FILE that is there. Was: no hash printed.
    out = tmp_path / "o.bin"
    out.write_bytes(b"already here")
    async with Server() as server:
        rc, _, err = await run("get", server.url, "-o", str(out), "--sha256", cwd=tmp_path)
    assert rc == 0 and "nothing to do" in err, err
    assert f"sha256 {hashlib.sha256(b'already here').hexdigest()}  {out}" in err, err
    assert out.read_bytes() == b"already here"
