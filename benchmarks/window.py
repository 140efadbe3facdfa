"""Window 1 vs window 2 on a YouTube-like origin, and CPU per GB against curl unthrottled.

    .venv/bin/python benchmarks/window.py [--size 95M] [--big 1G]

Prints, side by side from one run: each mode's seconds, MB/s and ratio to the
single-connection limit (size / 16 MB/s + one 150 ms first byte), the time
sequential chunking spends waiting for first bytes, and, on an unthrottled
origin, MB/s and client CPU seconds per GB of rangestream beside curl.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import expected_sha256, origin_process, run_command, run_rangestream  # noqa: E402

from rangestream.plan import parse_size  # noqa: E402

RATE, TTFB, CHUNK = 16e6, 0.15, 9_500_000


async def throttled(base: str, size: int) -> None:
    name = "bench-window"
    url = f"{base}/videoplayback?id={name}&clen={size}&expire=9999999999&itag=137"
    sha = expected_sha256(name, size)
    limit = size / RATE + TTFB
    chunks = -(-size // CHUNK)
    rows = []
    for label, opts in [("window=1 (sequential)", dict(window=1)),
                        ("window=2 (next-request prefetch)", dict(window=2)),
                        ("window=2 + read-ahead", dict(window=2, max_buffer=CHUNK))]:
        res, stream = await run_rangestream(label, url, size, sha, chunk_size=CHUNK, **opts)
        rows.append(res)
    print(f"\nYouTube-like origin: {size / 1e6:.0f} MB, {chunks} chunks of {CHUNK / 1e6} MB, "
          f"{TTFB * 1000:.0f} ms first byte, {RATE / 1e6:.0f} MB/s per connection")
    print(f"single-connection limit: {limit:.2f} s; sequential chunks wait {chunks} x {TTFB:.2f} = "
          f"{chunks * TTFB:.2f} s for first bytes")
    print(f"{'mode':28} {'seconds':>8} {'MB/s':>8} {'x limit':>8} {'sha256':>7}")
    for r in rows:
        print(f"{r.label:28} {r.seconds:8.2f} {r.mbps:8.1f} {limit / r.seconds:8.2f} {'ok' if r.ok else 'BAD':>7}")
    saved = rows[0].seconds - rows[1].seconds
    print(f"window=2 saves {saved:.2f} s over window=1 = {saved / (chunks * TTFB):.2f} of the waiting time "
          f"({saved / rows[0].seconds:.0%} of the sequential time; waiting share "
          f"{chunks * TTFB / rows[0].seconds:.0%})")


async def unthrottled(base: str, size: int) -> None:
    name = "bench-fast"
    url = f"{base}/data/{name}/{size}.bin"
    sha = expected_sha256(name, size)
    rows = []
    curl = shutil.which("curl")
    if curl:
        rows.append(run_command("curl (one request)", [curl, "-s", url], size, sha, timeout=120))
    for label, opts in [("rangestream window=1", dict(window=1)), ("rangestream window=2", dict(window=2)),
                        ("rangestream window=auto", dict(window="auto"))]:
        res, _ = await run_rangestream(label, url, size, sha, chunk_size=CHUNK, **opts)
        rows.append(res)
    print(f"\nUnthrottled origin: {size / 1e9:.1f} GB (every client's bytes are sha256-hashed in this "
          f"process; CPU = client + hashing, for all rows alike)")
    base_row = rows[0] if curl else None
    print(f"{'client':28} {'seconds':>8} {'MB/s':>8} {'CPU s/GB':>9} "
          f"{'vs curl MB/s':>13} {'vs curl CPU':>12} {'sha256':>7}")
    for r in rows:
        rel = (f"{r.mbps / base_row.mbps:13.2f} {r.cpu_per_gb / base_row.cpu_per_gb:12.2f}" if base_row
               else f"{'-':>13} {'-':>12}")
        print(f"{r.label:28} {r.seconds:8.2f} {r.mbps:8.0f} {r.cpu_per_gb:9.2f} {rel} {'ok' if r.ok else 'BAD':>7}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="95M", help="object size for the YouTube-like run (default 95M)")
    ap.add_argument("--big", default="1G", help="object size for the unthrottled run (default 1G)")
    args = ap.parse_args()
    with origin_process("youtube") as base:
        await throttled(base, parse_size(args.size))
    with origin_process("fast") as base:
        await unthrottled(base, parse_size(args.big))


if __name__ == "__main__":
    asyncio.run(main())
