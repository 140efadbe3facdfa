"""The engine on each transport (http1, the default; aiohttp; curl_cffi): throughput, CPU and memory.

    .venv/bin/python benchmarks/transports.py [--size 500M] [--windows 1,4,auto] [--repeat 1]

The same object from the emulated CDN ("fast" profile, unthrottled, in a subprocess
on loopback: plain HTTP/1.1, so no TLS cost on either side) through each transport,
each run in a fresh child process that sha256-checks what it receives. Columns:
MB/s, client CPU seconds per GB (child user+sys from wait4, hashing included), peak
RSS of the child, and both as a ratio to aiohttp at the same window. A reference row
streams the object with curl_cffi's own ``AsyncSession(stream=True)`` (one request, no
engine, no backpressure) to show what the library does by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import expected_sha256, origin_process  # noqa: E402

from rangestream.plan import parse_size  # noqa: E402

CHUNK = 9_500_000


async def _child(kind: str, window: str, url: str) -> dict:
    import rangestream

    h = hashlib.sha256()
    n = 0
    t0 = time.perf_counter()
    if kind == "curl_cffi-raw":
        from curl_cffi.requests import AsyncSession

        async with AsyncSession(impersonate="chrome") as s:
            async with s.stream("GET", url, headers={"Accept-Encoding": "identity"}) as r:
                async for piece in r.aiter_content():
                    h.update(piece)
                    n += len(piece)
        extra: dict = {}
    else:
        if kind == "http1":
            from rangestream.transports import Http1Transport

            client = rangestream.Client(transport=Http1Transport())
        elif kind == "aiohttp":
            from rangestream.transports.aiohttp import AiohttpTransport

            client = rangestream.Client(transport=AiohttpTransport())
        else:
            from rangestream.transports.curl import CurlTransport

            client = rangestream.Client(transport=CurlTransport("chrome"))
        w: int | str = window if window == "auto" else int(window)
        async with client:
            async with client.open_stream(url, chunk_size=CHUNK, window=w) as stream:
                async for piece in stream:
                    h.update(piece)
                    n += len(piece)
            t = client._transport
            extra = {"buffered_peak": getattr(t, "buffered_peak", None), "pauses": getattr(t, "pauses", None)}
    return {"seconds": time.perf_counter() - t0, "bytes": n, "sha256": h.hexdigest(), **extra}


def run_child(kind: str, window: str, url: str) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, window, url], stdout=subprocess.PIPE,
                            text=True)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"{kind} window={window} failed (status {status})")
    res = json.loads(out)
    res["cpu"] = ru.ru_utime + ru.ru_stime
    res["rss_mb"] = ru.ru_maxrss / 1024
    return res


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(asyncio.run(_child(*sys.argv[2:5]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="500M")
    ap.add_argument("--windows", default="1,4,auto")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row; the best MB/s is kept")
    args = ap.parse_args()
    size = parse_size(args.size)
    name = "bench-transports"
    sha = expected_sha256(name, size)
    rows = []
    with origin_process("fast") as base:
        url = f"{base}/data/{name}/{size}.bin"
        kinds = ("http1", "aiohttp", "curl")
        plan = [("curl_cffi-raw", "-")] + [(k, w) for w in args.windows.split(",") for k in kinds]
        for kind, window in plan:
            best = None
            for _ in range(args.repeat):
                r = run_child(kind, window, url)
                if best is None or r["seconds"] < best["seconds"]:
                    best = r
            best.update(kind=kind, window=window, ok=best["sha256"] == sha and best["bytes"] == size)
            rows.append(best)
    print(f"\n{size / 1e6:.0f} MB from the emulated CDN (fast profile, loopback HTTP/1.1), chunk "
          f"{CHUNK / 1e6} MB; best of {args.repeat}; CPU = the child's user+sys (sha256 included)")
    print(f"{'transport':22} {'window':>6} {'MB/s':>8} {'CPU s/GB':>9} {'RSS MB':>7} "
          f"{'MB/s vs aiohttp':>15} {'CPU vs aiohttp':>14} {'queue peak':>10} {'sha256':>7}")
    ref = {r["window"]: r for r in rows if r["kind"] == "aiohttp"}
    for r in rows:
        mbps = size / r["seconds"] / 1e6
        cpu_gb = r["cpu"] / (size / 1e9)
        base_row = ref.get(r["window"])
        if base_row is not None:
            ratio = f"{(size / r['seconds']) / (size / base_row['seconds']):.2f}"
            cpu_ratio = f"{r['cpu'] / base_row['cpu']:.2f}"
        else:
            ratio = cpu_ratio = "-"
        peak = r.get("buffered_peak")
        peak_s = f"{peak / 2**20:.2f} MiB" if peak else "-"
        label = "curl_cffi (raw, 1 req)" if r["kind"] == "curl_cffi-raw" else r["kind"]
        print(f"{label:22} {r['window']:>6} {mbps:8.0f} {cpu_gb:9.2f} {r['rss_mb']:7.0f} {ratio:>15} "
              f"{cpu_ratio:>14} {peak_s:>10} {'ok' if r['ok'] else 'BAD':>7}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
