"""Peak RSS of ``rangestream get --window auto -o -`` into a reader slower than the link (issue 11).

    .venv/bin/python benchmarks/slow_reader.py [--size 400M] [--rate 8M] [--profile youtube] [--timeout 120]

The emulated CDN runs in its own process; the CLI runs as a whole process under
``_spawn.py`` (its own peak RSS, ``ru_maxrss``, not inherited from this benchmark), writing
the object to a pipe that this process reads at ``--rate`` bytes per second, paced from the
first byte, hashing what it reads. Target: peak RSS <= 100 MB, byte-exact.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import expected_sha256, measured, origin_process

from rangestream.plan import parse_size

TARGET_RSS = 100e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="400M")
    ap.add_argument("--rate", default="8M", help="the reader's bytes per second")
    ap.add_argument("--profile", default="youtube")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    size, rate = parse_size(args.size), parse_size(args.rate)
    name = "slow-reader"
    sha = expected_sha256(name, size)
    exe = str(Path(sys.executable).parent / "rangestream")
    with origin_process(args.profile) as base, tempfile.TemporaryFile() as err:
        url = f"{base}/data/{name}/{size}.bin"
        argv = [exe, "get", url, "--window", "auto", "-o", "-", "--quiet"]
        with measured(argv, args.timeout, stdout=subprocess.PIPE, stderr=err) as (proc, wait):
            h, n, began = hashlib.sha256(), 0, None
            for _ in range(size // 65536 + 1_000_000):  # bounded in count; the launcher bounds the time
                block = proc.stdout.read1(1 << 20)
                if not block:
                    break
                began = began or time.monotonic()
                h.update(block)
                n += len(block)
                ahead = n / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
            proc.stdout.close()
            u = wait()
        ok = n == size and h.hexdigest() == sha and not u.timed_out
    print(f"rangestream get --window auto -o - into a {rate / 1e6:.0f} MB/s reader, {size / 1e6:.0f} MB, "
          f"profile {args.profile}: {u.seconds:.1f} s, peak RSS {u.rss / 1e6:.0f} MB "
          f"(target <= {TARGET_RSS / 1e6:.0f} MB), CPU {u.cpu:.2f} s, sha256 {'ok' if ok else 'BAD'}")
    print("target: " + ("MET" if ok and u.rss <= TARGET_RSS else "NOT MET"))


if __name__ == "__main__":
    main()
