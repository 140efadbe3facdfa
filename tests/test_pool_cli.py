"""``rangestream get``/``mux`` with ``--proxy-file``: real subprocesses through real loopback proxies
(each leaving from its own 127.0.0.N), against an origin that records who asked."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
from cli_support import Feed, cli_env, run

from tests.proxy_support import SourceOrigin, loopback_proxies

BODY = os.urandom(1 << 20)
SECRET = "cli-s3cr3t-PW"
FAST = ("--chunk-size", "65536", "--window", "2", "--retries", "1", "--backoff", "0.001", "--json")


async def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str]:
    """``rangestream ARGS`` with ``env`` on top of :func:`cli_env`; returns (exit code, stderr)."""
    code, _, err = await run(*args, env=cli_env(**(env or {})), timeout=timeout, stdout=asyncio.subprocess.DEVNULL)
    return code, err


def summary(stderr: str) -> dict[str, object]:
    line = [x for x in stderr.splitlines() if x.startswith("{")][-1]
    parsed: dict[str, object] = json.loads(line)
    return parsed


async def test_get_moves_off_a_proxy_blocked_mid_download_and_the_file_is_exact(tmp_path: Path) -> None:
    proxies_file = tmp_path / "proxies.txt"
    out = tmp_path / "out.bin"
    async with loopback_proxies(2, credentials=("user", SECRET)) as (a, b), SourceOrigin(BODY) as origin:
        origin.bot_check_after = {a.source: 4}  # the egress gets blocked after a few chunks
        proxies_file.write_text(f"# the pool\n{a.url}\n127.0.0.1:{b.port}:user:{SECRET}\n")
        code, err = await cli("get", origin.url, "-o", str(out), "--proxy-file", str(proxies_file), *FAST)
        assert code == 0, err
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(BODY).digest()
        assert origin.remotes.count(a.source) > 4  # it really moved mid-download
        after = origin.remotes[origin.remotes.index(b.source):]
        assert set(after) == {b.source}
        assert SECRET not in err
        assert summary(err)["ok"] is True


async def test_the_pool_flags_come_from_the_environment_and_a_quarantine_is_written(tmp_path: Path) -> None:
    proxies_file = tmp_path / "proxies.txt"
    quarantine = tmp_path / "quarantine.txt"
    async with loopback_proxies(2, credentials=("user", SECRET)) as (a, b), SourceOrigin(BODY) as origin:
        origin.bot_check_from = {a.source}
        proxies_file.write_text(f"{a.url}\n{b.socks_url}\n")
        code, err = await cli("get", origin.url, "-o", str(tmp_path / "o.bin"), "--quarantine-after", "1",
                              "--proxy-quarantine", str(quarantine), *FAST,
                              env={"RANGESTREAM_PROXY_FILE": str(proxies_file)})
        assert code == 0, err
        assert (tmp_path / "o.bin").read_bytes() == BODY
        assert quarantine.read_text() == f"127.0.0.1:{a.port}\n"
        assert SECRET not in err and SECRET not in quarantine.read_text()
        # Next run: the quarantined proxy is skipped from the start.
        origin.remotes.clear()
        code, err = await cli("get", origin.url, "-o", str(tmp_path / "p.bin"), "--proxy-file",
                              str(proxies_file), "--proxy-quarantine", str(quarantine), *FAST)
        assert code == 0, err
        assert origin.sources() == {b.source}


async def test_mux_of_two_streams_holds_one_proxy_for_the_job(tmp_path: Path) -> None:
    from rangestream.testing.media import generate_clip

    video, audio = generate_clip("h264-fmp4", 1.0), generate_clip("aac-fmp4", 1.0)
    proxies_file = tmp_path / "proxies.txt"
    async with loopback_proxies(2) as (a, b), SourceOrigin(video) as v, SourceOrigin(audio) as au:
        await a.set_mode("refuse")
        proxies_file.write_text(f"{a.url}\n{b.url}\n")
        code, err = await cli("mux", v.url, au.url, "-o", str(tmp_path / "out.mp4"), "--proxy-file",
                              str(proxies_file), *FAST)
        assert code == 0, err
        assert v.sources() == au.sources() == {b.source}


async def test_a_bad_proxy_file_is_a_usage_error_naming_the_line_not_the_secret(tmp_path: Path) -> None:
    proxies_file = tmp_path / "proxies.txt"
    proxies_file.write_text(f"127.0.0.1:3128\nftp://user:{SECRET}@127.0.0.1:21\n")
    code, err = await cli("get", "http://127.0.0.1:9/x", "-o", str(tmp_path / "x"), "--proxy-file", str(proxies_file))
    assert code == 2, err
    assert "line 2" in err and SECRET not in err
    code, err = await cli("get", "http://127.0.0.1:9/x", "--proxy-file", str(tmp_path / "missing.txt"))
    assert code == 2 and "proxy file" in err
    code, err = await cli("get", "http://127.0.0.1:9/x", "--proxy-file", str(proxies_file), "--max-per-proxy", "0")
    assert code == 2


async def test_no_usable_proxy_exits_with_the_proxy_code(tmp_path: Path) -> None:
    proxies_file = tmp_path / "proxies.txt"
    quarantine = tmp_path / "quarantine.txt"
    proxies_file.write_text(f"http://user:{SECRET}@127.0.0.1:3128\n")
    quarantine.write_text("127.0.0.1:3128\n")
    code, err = await cli("get", "http://127.0.0.1:9/x", "-o", str(tmp_path / "x"), "--proxy-file",
                          str(proxies_file), "--proxy-quarantine", str(quarantine), "--json")
    assert code == 7, err
    assert "no usable proxy" in err and SECRET not in err
    assert summary(err)["exit_code"] == 7


class _NumberedOrigin(SourceOrigin):
    """:class:`SourceOrigin` at ``/file?n=N`` (one URL per download), noting (N, source) per request."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.asked: list[tuple[str, str]] = []

    async def _file(self, request):  # type: ignore[no-untyped-def]
        self.asked.append((request.query.get("n", ""), request.remote or ""))
        return await super()._file(request)


async def test_a_batch_gives_each_download_its_own_proxy_least_loaded_first(tmp_path: Path) -> None:
    proxies_file = tmp_path / "proxies.txt"
    body = os.urandom(256 * 1024)
    async with loopback_proxies(2) as (a, b), _NumberedOrigin(body) as origin:
        proxies_file.write_text(f"{a.url}\n{b.url}\n")
        # Held until every download has asked: all four are in flight at once, so the pool must
        # spread them (each proxy takes at most 2) rather than one proxy serving one at a time.
        origin.gate = asyncio.Event()
        urls = [f"{origin.url}?n={n}" for n in range(4)]
        run = asyncio.create_task(cli("get", *urls, "-j", "4", "-o", f"{tmp_path / 'dl'}/", "--proxy-file",
                                      str(proxies_file), "--max-per-proxy", "2", *FAST))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len({n for n, _ in origin.asked}) < 4 and loop.time() < deadline and not run.done():
            await asyncio.sleep(0.02)
        all_asked = len({n for n, _ in origin.asked}) == 4
        origin.gate.set()
        code, err = await run
        assert code == 0, err
        assert all_asked, origin.asked
        by_download: dict[str, set[str]] = {}
        for n, source in origin.asked:
            by_download.setdefault(n, set()).add(source)
        assert all(len(sources) == 1 for sources in by_download.values()), by_download  # sticky
        per_proxy = [sum(1 for s in by_download.values() if s == {p.source}) for p in (a, b)]
        assert per_proxy == [2, 2], by_download
        files = sorted((tmp_path / "dl").iterdir())
        assert len(files) == 4 and all(f.read_bytes() == body for f in files), files


async def test_help_names_exit_code_7_for_no_usable_proxy() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rangestream", "get", "--help", stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    lines = [" ".join(line.split()) for line in out.decode().splitlines()]
    assert "7 proxy refused (authentication required) or no usable proxy in --proxy-file" in lines, lines


async def test_a_playlist_is_listed_through_the_pool_and_each_entry_through_its_own_proxy(tmp_path: Path) -> None:
    pytest.importorskip("yt_dlp", reason="listing a playlist needs yt-dlp (rangestream[youtube])")
    proxies_file = tmp_path / "proxies.txt"
    bodies = [os.urandom(20_000 + i) for i in range(2)]
    async with loopback_proxies(2) as (a, b), Feed(media=bodies) as feed:
        proxies_file.write_text(f"{a.url}\n{b.url}\n")
        code, err = await cli("get", "--resolve", feed.url, "-o", f"{tmp_path / 'dl'}/", "--proxy-file",
                              str(proxies_file), *FAST)
        assert code == 0, err
        assert sorted(f.read_bytes() for f in (tmp_path / "dl").iterdir()) == sorted(bodies)
        sources = {source for _, source in feed.asked}
        assert sources <= {a.source, b.source}, feed.asked  # nothing went out directly
        assert [s for path, s in feed.asked if path == "/feed.xml"] == [a.source], feed.asked
