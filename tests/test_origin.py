"""Tests of the emulated CDN, over real loopback sockets with aiohttp as the client."""
from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from rangestream.testing.origin import FAULT_KINDS, PROFILES, Origin, Profile, RequestRecord, object_bytes

SIZE = 1_000_000
TIMEOUT = aiohttp.ClientTimeout(total=10)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        yield s


async def fetch(session: aiohttp.ClientSession, url: str, method: str = "GET",
                **kwargs: object) -> tuple[int, CIMultiDict[str], bytes]:
    async with session.request(method, url, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, resp.headers.copy(), await resp.read()


# --- content -------------------------------------------------------------------------------

def test_object_bytes_is_deterministic_sliceable_and_versioned() -> None:
    full = object_bytes("a", 300_000, 0, 0, 300_000)
    assert len(full) == 300_000 and full == object_bytes("a", 300_000, 0, 0, 10**9)
    for start, stop in [(0, 1), (7, 9), (65_530, 65_600), (131_071, 262_150), (299_999, 300_000)]:
        assert object_bytes("a", 300_000, 0, start, stop) == full[start:stop]
    assert object_bytes("a", 300_000, 0, 300_000, 300_100) == b""
    blocks = [full[i:i + 65536] for i in range(0, len(full), 65536)]
    assert len(set(blocks)) == len(blocks)
    other = object_bytes("a", 300_000, 1, 0, 300_000)
    # a new version differs everywhere, not just somewhere
    assert all(full[i:i + 8] != other[i:i + 8] for i in range(0, len(full), 8))
    assert object_bytes("b", 300_000, 0, 0, 300_000) != full
    # shifting by a power of two (a typical off-by-a-chunk bug) changes the content
    for shift in (8, 4096, 65536, 131072):
        assert full[shift:] != full[:-shift]


def test_object_bytes_is_fast() -> None:
    begin, total = time.perf_counter(), 0
    for pos in range(0, 256 << 20, 256 << 10):
        total += len(object_bytes("speed", 1 << 30, 0, pos, pos + (256 << 10)))
    assert total / (time.perf_counter() - begin) > 1e9   # 2+ GB/s on a quiet machine; leave headroom


async def test_content_and_sha256_helpers(origin: Origin) -> None:
    data = origin.content("h", 5_000_000)
    assert origin.sha256("h", 5_000_000) == hashlib.sha256(data).hexdigest()
    assert origin.content("h", 5_000_000, version=1) != data


# --- ranges and headers --------------------------------------------------------------------

async def test_full_get_headers_and_bytes(origin: Origin, session: aiohttp.ClientSession) -> None:
    status, headers, body = await fetch(session, origin.url(SIZE, "full"))
    assert status == 200 and body == origin.content("full", SIZE)
    assert headers["Accept-Ranges"] == "bytes" and headers["Content-Length"] == str(SIZE)
    assert headers["ETag"].startswith('"') and "Last-Modified" in headers
    assert headers["Content-Type"] == "application/octet-stream" and "Content-Range" not in headers


@pytest.mark.parametrize(("spec", "start", "stop"), [
    ("bytes=0-99", 0, 100), ("bytes=999000-", 999_000, SIZE), ("bytes=-500", SIZE - 500, SIZE),
    ("bytes=999990-2000000", 999_990, SIZE), ("bytes=-5000000", 0, SIZE), ("BYTES=5-5", 5, 6),
])
async def test_single_ranges(origin: Origin, session: aiohttp.ClientSession, spec: str, start: int,
                             stop: int) -> None:
    status, headers, body = await fetch(session, origin.url(SIZE, "r"), headers={"Range": spec})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {start}-{stop - 1}/{SIZE}"
    assert headers["Content-Length"] == str(stop - start)
    assert body == origin.content("r", SIZE)[start:stop]
    assert origin.log[-1].range == spec and origin.log[-1].outcome == "complete"


@pytest.mark.parametrize("spec", ["bytes=1000000-", "bytes=2000000-2000010", "bytes=-0"])
async def test_unsatisfiable_range(origin: Origin, session: aiohttp.ClientSession, spec: str) -> None:
    status, headers, _ = await fetch(session, origin.url(SIZE, "r"), headers={"Range": spec})
    assert status == 416 and headers["Content-Range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize("spec", ["bytes=0-1,5-6", "bytes=9-3", "items=0-1", "bytes=x-", "bytes=-"])
async def test_malformed_range_is_ignored(origin: Origin, session: aiohttp.ClientSession, spec: str) -> None:
    status, headers, body = await fetch(session, origin.url(1000, "m"), headers={"Range": spec})
    assert status == 200 and "Content-Range" not in headers and body == origin.content("m", 1000)


async def test_head(origin: Origin, session: aiohttp.ClientSession) -> None:
    status, headers, body = await fetch(session, origin.url(SIZE, "hd"), "HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(SIZE))
    status, headers, _ = await fetch(session, origin.url(SIZE, "hd"), "HEAD", headers={"Range": "bytes=10-19"})
    assert status == 206 and headers["Content-Range"] == f"bytes 10-19/{SIZE}"
    assert headers["Content-Length"] == "10"
    assert [r.outcome for r in origin.log] == ["head", "head"]


async def test_if_range(origin: Origin, session: aiohttp.ClientSession) -> None:
    url = origin.url(SIZE, "ir")
    _, headers, _ = await fetch(session, url, "HEAD")
    etag, modified = headers["ETag"], headers["Last-Modified"]
    for validator in (etag, modified):
        status, _, body = await fetch(session, url, headers={"Range": "bytes=5-9", "If-Range": validator})
        assert status == 206 and body == origin.content("ir", SIZE)[5:10]
    status, _, _ = await fetch(session, url, headers={"Range": "bytes=5-9", "If-Range": "W/" + etag})
    assert status == 200     # weak validators never match If-Range
    origin.change("ir")
    for validator in (etag, modified):
        status, headers, body = await fetch(session, url, headers={"Range": "bytes=5-9", "If-Range": validator})
        assert status == 200 and headers["ETag"] != etag
        assert body == origin.content("ir", SIZE, version=1)


async def test_keep_alive_reuses_one_connection(origin: Origin, session: aiohttp.ClientSession) -> None:
    for i in range(4):
        await fetch(session, origin.url(1000, "ka"), headers={"Range": f"bytes={i}-{i}"})
    assert len({r.peer for r in origin.log}) == 1 and origin.open_connections == 1


# --- youtube form --------------------------------------------------------------------------

async def test_youtube_url(origin: Origin, session: aiohttp.ClientSession) -> None:
    url = origin.url(SIZE, "vid", youtube=True)
    assert f"id=vid&clen={SIZE}&expire=" in url and "itag=137" in url and "sig=" in url and "lsig=" in url
    status, headers, body = await fetch(session, url, headers={"Range": "bytes=100-199"})
    assert status == 206 and headers["Content-Range"] == f"bytes 100-199/{SIZE}"
    assert body == origin.content("vid", SIZE)[100:200]
    lmt = url.split("lmt=")[1].split("&")[0]
    assert lmt.isdigit()
    origin.change("vid")
    assert origin.url(SIZE, "vid", youtube=True).split("lmt=")[1].split("&")[0] != lmt


async def test_youtube_expired_and_bad_parameters(origin: Origin, session: aiohttp.ClientSession) -> None:
    status, _, _ = await fetch(session, origin.url(SIZE, "vid", youtube=True, expire=time.time() - 1))
    assert status == 403 and origin.log[-1].outcome == "status"
    status, _, _ = await fetch(session, f"{origin.base_url}/videoplayback?id=x&expire=9999999999")
    assert status == 400
    status, _, _ = await fetch(session, f"{origin.base_url}/videoplayback?clen=10")
    assert status == 400


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_query_range(origin: Origin, session: aiohttp.ClientSession, method: str) -> None:
    url = origin.url(SIZE, "q", youtube=True) + "&range=1000-1999&rn=1"
    status, headers, body = await fetch(session, url, method, data=b"x\x00" if method == "POST" else None)
    assert status == 200 and "Content-Range" not in headers
    assert body == origin.content("q", SIZE)[1000:2000]
    assert origin.log[-1].range == "query:1000-1999"


async def test_registered_objects(origin: Origin, session: aiohttp.ClientSession) -> None:
    data = bytes(range(256)) * 40
    url = origin.add_object("clip.mp4", data, "video/mp4")
    assert url == f"{origin.base_url}/media/clip.mp4"
    status, headers, body = await fetch(session, url, headers={"Range": "bytes=256-511"})
    assert status == 206 and body == data[256:512] and headers["Content-Type"] == "video/mp4"
    status, _, body = await fetch(session, origin.media_url("clip.mp4", youtube=True))
    assert status == 200 and body == data
    status, _, _ = await fetch(session, origin.url(10, "clip.mp4", youtube=True))
    assert status == 400     # clen must equal the registered length
    origin.change("clip.mp4")
    _, _, body = await fetch(session, url)
    assert body == origin.content("clip.mp4", len(data), version=1)
    assert all(a != b for a, b in zip(body, data, strict=True))


# --- faults, seen from the client ----------------------------------------------------------

async def test_reset(origin: Origin, session: aiohttp.ClientSession) -> None:
    origin.inject("reset", at=100_000)
    got = bytearray()
    with pytest.raises(aiohttp.ClientError):
        async with session.get(origin.url(SIZE, "f")) as resp:
            async for chunk in resp.content.iter_any():
                got += chunk
    # the server waits for its send queue to drain before the RST, so exactly `at` bytes arrive
    assert bytes(got) == origin.content("f", SIZE)[:100_000]
    rec = origin.log[-1]
    assert (rec.outcome, rec.fault, rec.bytes_sent) == ("reset", "reset", 100_000)
    assert await origin.wait_idle()


async def test_truncate(origin: Origin, session: aiohttp.ClientSession) -> None:
    async with session.get(origin.url(SIZE, "f", fault="truncate", fault_at=300_000)) as resp:
        assert resp.status == 200
        got = bytearray()
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in resp.content.iter_any():
                got += chunk
    assert bytes(got) == origin.content("f", SIZE)[:300_000]
    assert (origin.log[-1].outcome, origin.log[-1].bytes_sent) == ("truncated", 300_000)


async def test_expire_cuts_the_body_then_refuses_that_url(origin: Origin, session: aiohttp.ClientSession) -> None:
    old = origin.url(SIZE, "e", youtube=True, expire=time.time() + 3600)
    fresh = origin.url(SIZE, "e", youtube=True, expire=time.time() + 7200)
    origin.inject("expire", name="e", at=123_456, start=1000)
    async with session.get(old, headers={"Range": "bytes=1000-"}) as resp:
        assert resp.status == 206
        got = bytearray()
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in resp.content.iter_any():
                got += chunk
    assert bytes(got) == origin.content("e", SIZE)[1000:1000 + 123_456]  # a clean close: every byte sent arrives
    assert (origin.log[-1].outcome, origin.log[-1].bytes_sent) == ("expired", 123_456)
    # the old URL is refused from now on, whatever range or form it asks for; a new one works
    for url, range_ in ((old, "bytes=124456-"), (old + "&range=0-99", None), (fresh, "bytes=124456-")):
        status, _, body = await fetch(session, url, headers={"Range": range_} if range_ else {})
        assert status == (206 if url == fresh else 403), url
    assert body == origin.content("e", SIZE)[124_456:]


async def test_stall_is_caught_by_client_read_timeout(origin: Origin) -> None:
    origin.profile = Profile(stall_seconds=20.0)
    origin.inject("stall")
    begin = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_read=0.5)) as s:
        with pytest.raises(asyncio.TimeoutError):
            await fetch(s, origin.url(SIZE, "st"))
    # the handler noticed the client leaving and stopped stalling long before 20 s (in about
    # 0.5 s: 10 s leaves a busy machine room)
    assert await origin.wait_idle(10.0)
    rec = origin.log[-1]
    assert rec.outcome == "stalled" and 0 < rec.bytes_sent < SIZE
    assert rec.end is not None and rec.end - begin < 10


async def test_stall_ends_with_a_short_body(origin: Origin, session: aiohttp.ClientSession) -> None:
    begin = time.monotonic()
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(session, origin.url(SIZE, "st", fault="stall", stall_seconds=0.3, fault_at=10))
    assert time.monotonic() - begin >= 0.3


@pytest.mark.parametrize(("kind", "status", "retry_after"), [
    ("503", 503, None), ("503-retry-after", 503, "1"), ("429", 429, "1"), ("403", 403, None),
])
async def test_status_faults(origin: Origin, session: aiohttp.ClientSession, kind: str, status: int,
                             retry_after: str | None) -> None:
    origin.inject(kind)
    got, headers, _ = await fetch(session, origin.url(1000, "s"))
    assert got == status and headers.get("Retry-After") == retry_after
    assert (origin.log[-1].outcome, origin.log[-1].fault, origin.log[-1].status) == ("status", kind, status)
    got, _, _ = await fetch(session, origin.url(1000, "s"))
    assert got == 200     # count=1: only the next request


async def test_retry_after_override_and_custom_status(origin: Origin, session: aiohttp.ClientSession) -> None:
    origin.inject("429", retry_after=7)
    origin.inject("status", status=404, count=2)
    got = [await fetch(session, origin.url(1000, "s")) for _ in range(4)]
    assert [g[0] for g in got] == [429, 404, 404, 200] and got[0][1]["Retry-After"] == "7"
    _, headers, _ = await fetch(session, origin.url(1000, "s", fault="429", retry_after=None))
    assert "Retry-After" not in headers


async def test_inject_targets_one_object(origin: Origin, session: aiohttp.ClientSession) -> None:
    origin.inject("503", name="b", count=2)
    codes = [(await fetch(session, origin.url(1000, n)))[0] for n in ("a", "b", "a", "b", "b")]
    assert codes == [200, 503, 200, 503, 200]


async def test_ignore_range(origin: Origin, session: aiohttp.ClientSession) -> None:
    origin.inject("ignore-range")
    status, headers, body = await fetch(session, origin.url(SIZE, "i"), headers={"Range": "bytes=10-19"})
    assert status == 200 and "Content-Range" not in headers and len(body) == SIZE


async def test_bad_content_range(origin: Origin, session: aiohttp.ClientSession) -> None:
    origin.inject("bad-content-range", count=2)
    for spec, claimed in [("bytes=0-99", (1000, 1099)), (f"bytes={SIZE - 100}-", (SIZE - 1100, SIZE - 1001))]:
        status, headers, body = await fetch(session, origin.url(SIZE, "b"), headers={"Range": spec})
        assert status == 206 and headers["Content-Range"] == f"bytes {claimed[0]}-{claimed[1]}/{SIZE}"
        assert body == origin.content("b", SIZE)[claimed[0]:claimed[1] + 1]


async def test_changed(origin: Origin, session: aiohttp.ClientSession) -> None:
    _, first, body0 = await fetch(session, origin.url(SIZE, "c"), headers={"Range": "bytes=0-999"})
    origin.inject("changed")
    _, second, body1 = await fetch(session, origin.url(SIZE, "c"), headers={"Range": "bytes=0-999"})
    assert second["ETag"] != first["ETag"] and second["Last-Modified"] != first["Last-Modified"]
    assert body1 != body0 and body1 == origin.content("c", SIZE, version=1)[:1000]
    assert origin.log[-1].fault == "changed" and origin.log[-1].version == 1


async def test_changed_after(origin: Origin, session: aiohttp.ClientSession) -> None:
    url = origin.url(SIZE, "ca", changed_after=3)
    etags = [(await fetch(session, url, "HEAD"))[1]["ETag"] for _ in range(6)]
    assert etags[0] == etags[1] == etags[2] != etags[3] == etags[4] == etags[5]   # changes once


# --- reproducible random faults ------------------------------------------------------------

async def _fault_schedule(profile: Profile, order: list[int], concurrent: bool) -> dict[tuple[int, int], tuple]:
    async with Origin(profile) as org, aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async def one(start: int) -> None:
            try:
                await fetch(s, org.url(SIZE, "rep"), headers={"Range": f"bytes={start}-{start + 99_999}"})
            except aiohttp.ClientError:
                pass
        if concurrent:
            await asyncio.gather(*(one(start) for start in order))
        else:
            for start in order:
                await one(start)
        seen: dict[int, int] = {}
        schedule = {}
        for rec in sorted(org.log, key=lambda r: r.id):
            start = int(rec.range.split("=")[1].split("-")[0]) if rec.range else 0
            seen[start] = seen.get(start, 0) + 1
            schedule[(start, seen[start])] = (rec.fault, rec.status, rec.outcome, rec.bytes_sent)
        return schedule


async def test_random_faults_are_reproducible() -> None:
    profile = Profile(fault_rate=0.5, fault_kinds=("reset", "truncate", "503", "429"), seed=11)
    starts = [i * 100_000 for i in range(10)] * 2
    first = await _fault_schedule(profile, starts, concurrent=False)
    again = await _fault_schedule(profile, starts, concurrent=False)
    shuffled = await _fault_schedule(profile, starts[::-1], concurrent=True)
    assert first == again
    # keyed by (range start, attempt), not arrival order: the same schedule under concurrency
    assert {k: v[:2] for k, v in first.items()} == {k: v[:2] for k, v in shuffled.items()}
    faults = [v[0] for v in first.values()]
    assert 3 <= sum(f is not None for f in faults) <= 17
    other = await _fault_schedule(Profile(**{**profile.__dict__, "seed": 12}), starts, concurrent=False)
    assert other != first


# --- rates ---------------------------------------------------------------------------------

async def test_rate_limit(origin: Origin, session: aiohttp.ClientSession) -> None:
    begin = time.monotonic()
    _, _, body = await fetch(session, origin.url(2_000_000, "rl", rate=4e6))
    assert len(body) == 2_000_000 and time.monotonic() - begin >= 0.4


async def test_link_rate_is_shared(origin: Origin, session: aiohttp.ClientSession) -> None:
    origin.profile = Profile(link_rate=4e6)
    begin = time.monotonic()
    await asyncio.gather(*(fetch(session, origin.url(800_000, f"lk{i}")) for i in range(3)))
    assert time.monotonic() - begin >= 0.5     # 2.4 MB through one 4 MB/s link


async def test_throttle_over(origin: Origin, session: aiohttp.ClientSession) -> None:
    # A response of 20 000 bytes at the 10 kB/s throttle would take 2 s: the one at the limit
    # (full speed, ms) gets a 1 s bound, which a busy machine does not reach; one byte more
    # crawls (a lower bound: delays only add to it).
    url = origin.url(SIZE, "th", throttle_over=20_000, throttle_rate=10e3)
    begin = time.monotonic()
    await fetch(session, url, headers={"Range": "bytes=0-19999"})       # not over: full speed
    fast = time.monotonic() - begin
    begin = time.monotonic()
    await fetch(session, url, headers={"Range": "bytes=0-20000"})       # over: crawls at 10 kB/s
    assert time.monotonic() - begin >= 1.9 and fast < 1.0


def test_profiles() -> None:
    assert set(PROFILES) >= {"fast", "youtube", "lossy"} and PROFILES["fast"] == Profile()
    yt, lossy = PROFILES["youtube"], PROFILES["lossy"]
    assert (yt.ttfb, yt.rate, yt.link_rate, yt.throttle_over) == (0.15, 16e6, 64e6, 10_000_000)
    assert lossy.fault_rate == 0.05 and set(lossy.fault_kinds) == {"reset", "503", "stall"}
    assert lossy.stall_seconds < 30 and "changed" not in FAULT_KINDS and len(FAULT_KINDS) == 9
    with pytest.raises(ValueError):
        Profile(fault_kinds=("nope",))


# --- records, connections, lifecycle -------------------------------------------------------

async def test_records(origin: Origin, session: aiohttp.ClientSession) -> None:
    await fetch(session, origin.url(SIZE, "rec", ttfb=0.2), headers={"Range": "bytes=0-9"})
    rec: RequestRecord = origin.log[-1]
    assert (rec.method, rec.status, rec.outcome, rec.bytes_sent, rec.fault) == ("GET", 206, "complete", 10, None)
    assert rec.path == "/data/rec/1000000.bin" and rec.query == {"ttfb": "0.2"} and rec.range == "bytes=0-9"
    assert rec.first_byte is not None and rec.end is not None
    assert rec.first_byte - rec.start >= 0.2 and rec.end >= rec.first_byte
    assert rec.peer.startswith("127.0.0.1:") and origin.request_count == 1


async def test_client_closing_mid_body_is_recorded(origin: Origin) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.get(origin.url(50_000_000, "cc", rate=20e6)) as resp:
            await resp.content.readexactly(100_000)
            resp.close()
    assert await origin.wait_idle()
    rec = origin.log[-1]
    assert rec.outcome == "client-closed" and 0 < rec.bytes_sent < 50_000_000 and rec.end is not None


async def test_open_connections_drop_after_session_close(origin: Origin) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        await asyncio.gather(*(fetch(s, origin.url(300_000, "oc", ttfb=0.05)) for _ in range(4)))
        assert origin.open_connections == 4
        assert len({r.peer for r in origin.log}) == 4
    assert await origin.wait_idle(3.0) and origin.open_connections == 0


async def test_bad_knobs(origin: Origin, session: aiohttp.ClientSession) -> None:
    with pytest.raises(TypeError):
        origin.url(10, bogus=1)
    for query in ("rate=fast", "fault=explode", "fault_rate=2"):
        status, _, _ = await fetch(session, f"{origin.url(10)}?{query}")
        assert status == 400
    status, _, _ = await fetch(session, f"{origin.base_url}/nowhere")
    assert status == 404 and origin.log[-1].outcome == "status"


async def test_close_is_bounded_with_a_stalled_handler() -> None:
    org = Origin(Profile(stall_seconds=60.0))
    await org.start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        async with s.get(org.url(SIZE, "z", fault="stall", fault_at=1000)) as resp:
            await resp.content.readexactly(1000)
            begin = time.monotonic()
            await org.close()
            assert time.monotonic() - begin < 10  # about 1 s; waiting for the handler takes 60 s


def test_non_loopback_host_is_refused() -> None:
    with pytest.raises(ValueError):
        Origin(host="0.0.0.0")


def test_command_line() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "rangestream.testing.origin", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on http://127.0.0.1:")
        port = int(first.rsplit(":", 1)[1])
        assert f"127.0.0.1:{port}/data/" in proc.stdout.readline()
        assert "/videoplayback?" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
    refused = subprocess.run([sys.executable, "-m", "rangestream.testing.origin", "--host", "10.1.2.3"],
                             capture_output=True, text=True, timeout=20)
    assert refused.returncode != 0 and "allow-remote" in refused.stderr



def test_command_line_tls_serves_https_that_the_cli_trusts_with_cacert(tmp_path) -> None:
    # --tls: a certificate from a CA made at start-up; its PEM path is printed for --cacert.
    proc = subprocess.Popen([sys.executable, "-m", "rangestream.testing.origin", "--port", "0", "--tls"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on https://127.0.0.1:")
        ca_line = proc.stdout.readline().strip()
        assert ca_line.startswith("ca-cert ")
        ca = ca_line.removeprefix("ca-cert ")
        assert "BEGIN CERTIFICATE" in open(ca).read()
        url = f"{first.removeprefix('listening on ')}/data/tls/{SIZE}.bin"
        out = tmp_path / "obj.bin"
        cli = [sys.executable, "-m", "rangestream", "get", url, "--quiet", "--chunk-size", "300K",
               "--window", "auto"]
        ok = subprocess.run([*cli, "--cacert", ca, "-o", str(out)], capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert out.read_bytes() == object_bytes("tls", SIZE, 0, 0, SIZE)
        # The certificate is really checked: without the CA the same download is refused (exit 3).
        refused = subprocess.run([*cli, "-o", str(tmp_path / "no.bin")], capture_output=True, text=True, timeout=30)
        assert refused.returncode == 3 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
        assert not (tmp_path / "no.bin").exists()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "Traceback" not in err
        assert not Path(ca).exists()  # the CA file goes with the origin
    finally:
        if proc.poll() is None:
            proc.kill()
