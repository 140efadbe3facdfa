"""What a command imports before and while it runs: start-up is part of every download's time
(issue 11), so ``get URL -o FILE`` and ``-o -`` load only what a direct download uses.

The CLI runs as a real subprocess, as the ``rangestream`` script runs it (``main()`` of
``rangestream.cli``), and writes the names in ``sys.modules`` when it exits: every module the
run imported, lazily inside a function or through ``importlib`` included.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import cli_env

from rangestream.testing.origin import Origin

# Never needed by a direct download to a file or a pipe (stderr not a terminal: no rich).
OPTIONAL = {
    "rich",  # the progress bar: on a terminal only
    "av",  # PyAV: mux, page URLs with separate video and audio
    "yt_dlp",  # page URLs, playlists
    "curl_cffi",  # --impersonate
    "prometheus_client",  # serve's /metrics
    "aiohttp", "yarl", "multidict",  # through a proxy only (the default transport is asyncio's)
    "rangestream.muxer", "rangestream.refresh", "rangestream.service", "rangestream.testing",
    "rangestream.cli.batch", "rangestream.cli.progress", "rangestream.cli.playlist", "rangestream.cli.page",
    "rangestream.cli.mux", "rangestream.cli.muxfiles", "rangestream.cli.demo",
    "http.cookiejar", "urllib.request", "email",  # --cookies only
    "tempfile", "shutil", "pathlib",
    "hashlib",  # --sha256 only
}

# The console script's body, plus the module list written at exit (with nothing imported for it).
SCRIPT = (
    "import sys, atexit\n"
    "listing = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(listing, 'w').write('\\n'.join(sorted(sys.modules))))\n"
    "from rangestream.cli import main\n"
    "sys.exit(main())\n"
)


async def run_listing(listing: Path, *args: str, cwd: Path) -> tuple[int, bytes, str, set[str]]:
    """``rangestream ARGS``: (exit code, stdout, stderr, the modules it imported)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRIPT, str(listing), *args, cwd=cwd, env=cli_env(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"rangestream {' '.join(args)} still running after 60 s") from None
    assert proc.returncode is not None
    return proc.returncode, out, err.decode(errors="replace"), set(listing.read_text().split())


def unwanted(modules: set[str], forbidden: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("target", ["file", "stdout"])
async def test_a_direct_get_imports_only_what_it_uses(origin: Origin, tmp_path: Path, target: str) -> None:
    size = 300_000
    url = origin.url(size, "lean")
    work = tmp_path / "work"
    work.mkdir()
    output = "lean.bin" if target == "file" else "-"
    rc, out, err, modules = await run_listing(tmp_path / "modules.txt", "get", url, "-o", output, cwd=work)
    assert rc == 0, err
    got = out if target == "stdout" else (work / "lean.bin").read_bytes()
    assert got == origin.content("lean", size)
    # The listing covers the whole run: the command's own modules and the engine are in it.
    assert {"rangestream.cli.get", "rangestream.cli.download", "rangestream.engine.stream",
            "rangestream.client"} <= modules
    forbidden = OPTIONAL | ({"json"} if target == "stdout" else set())  # json: the sidecar's
    assert unwanted(modules, forbidden) == []


def test_import_rangestream_loads_its_parts_on_first_use() -> None:
    """``import rangestream`` (which ``import rangestream.cli`` runs first) loads no layer; each
    public name still resolves to its module's object on first use."""
    code = (
        "import json, sys, importlib\n"
        "import rangestream\n"
        "before = sorted(m for m in sys.modules if m.startswith('rangestream.') or m in ('asyncio', 'av'))\n"
        "where = {n: getattr(rangestream, n).__module__ if hasattr(getattr(rangestream, n), '__module__')"
        " else None for n in rangestream.__all__}\n"
        "same = all(getattr(rangestream, n) is getattr(importlib.import_module(m), n)"
        " for n, m in where.items() if m)\n"
        "star = {}\n"
        "exec('from rangestream import *', star)\n"
        "print(json.dumps({'before': before, 'same': same, 'star': sorted(set(rangestream.__all__) - set(star)),"
        " 'mux': rangestream.mux.__module__, 'pool': rangestream.ProxyPool.__module__}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=cli_env())
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["before"] == []
    assert report["same"] and report["star"] == []
    assert report["mux"] == "rangestream.muxer.core" and report["pool"] == "rangestream.proxypool"
