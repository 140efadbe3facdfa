"""`rangestream serve` under load: 50 concurrent clients, each fetching a different
object from the emulated CDN through the service (one worker, then --workers 2).

Every body is checked byte for byte (sha256 against the origin's generator). Reported:
aggregate MB/s, the service's CPU seconds per GB (all its processes), its peak RSS (sum
of each process's high-water mark), and time to first byte p50/p99.

    .venv/bin/python benchmarks/service.py [--clients 50] [--size 10M] [--workers 1,2]

The origin runs in its own process (benchmarks/_common.py); the clients run here.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import origin_process  # noqa: E402

from rangestream.testing.origin import object_bytes  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """pid and its descendants (the workers of --workers N)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            todo.extend(int(c) for c in children)
    return out


def _cpu_and_hwm(pids: list[int]) -> tuple[float, int]:
    cpu, hwm = 0.0, 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / TICK
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm += int(line.split()[1]) * 1024
        except (FileNotFoundError, ProcessLookupError):
            pass
    return cpu, hwm


def _expected(name: str, size: int) -> str:
    h = hashlib.sha256()
    for pos in range(0, size, 4 << 20):
        h.update(object_bytes(name, size, 0, pos, min(size, pos + (4 << 20))))
    return h.hexdigest()


async def _client(session: aiohttp.ClientSession, url: str) -> tuple[float, str, int]:
    started = time.monotonic()
    ttfb = None
    h, n = hashlib.sha256(), 0
    async with session.get(url) as resp:
        resp.raise_for_status()
        async for piece in resp.content.iter_any():
            if ttfb is None:
                ttfb = time.monotonic() - started
            h.update(piece)
            n += len(piece)
    return ttfb or 0.0, h.hexdigest(), n


async def _run(base: str, origin: str, clients: int, size: int) -> tuple[float, list[float], int]:
    names = [f"svc{i}" for i in range(clients)]
    urls = [f"{base}/stream?url={quote(f'{origin}/data/{n}/{size}.bin', safe='')}" for n in names]
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600)) as s:
        started = time.monotonic()
        results = await asyncio.gather(*(_client(s, u) for u in urls))
        elapsed = time.monotonic() - started
    bad = sum(1 for name, (_, digest, n) in zip(names, results, strict=True)
              if n != size or digest != _expected(name, size))
    return elapsed, [r[0] for r in results], bad


def _serve(workers: int, clients: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "rangestream.service", "--port", "0", "--allow-private",
                             "--max-streams", str(clients), "--workers", str(workers)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        raise RuntimeError(f"service did not start: {line!r}")
    return proc, line.split()[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--size", default="10M", help="bytes per object (K/M suffix)")
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    size = int(float(args.size[:-1]) * {"K": 1e3, "M": 1e6}[args.size[-1].upper()]) \
        if args.size[-1].isalpha() else int(args.size)
    print(f"{args.clients} clients x {size / 1e6:g} MB, fast profile, loopback")
    print("| workers | MB/s | CPU s/GB | peak RSS MB | TTFB p50 ms | TTFB p99 ms | byte-exact |")
    print("|--:|--:|--:|--:|--:|--:|--|")
    with origin_process("fast") as origin:
        for workers in (int(w) for w in args.workers.split(",")):
            proc, base = _serve(workers, args.clients)
            try:
                elapsed, ttfbs, bad = asyncio.run(_run(base, origin, args.clients, size))
                cpu, hwm = _cpu_and_hwm(_tree(proc.pid))
            finally:
                proc.terminate()
                proc.wait(60)
            total = args.clients * size
            q = statistics.quantiles(sorted(ttfbs), n=100)
            print(f"| {workers} | {total / elapsed / 1e6:.0f} | {cpu / (total / 1e9):.2f} | {hwm / 1e6:.0f} | "
                  f"{q[49] * 1000:.0f} | {q[98] * 1000:.0f} | {'yes' if bad == 0 else f'NO ({bad} bad)'} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
