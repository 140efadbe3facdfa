"""Shared pieces of the benchmarks: an origin in its own process, timing, CPU accounting.

The origin runs as a subprocess so that the client under test has a core of its
own (the machine has two) and so that CPU figures of the client exclude it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import rangestream
from rangestream.origin import object_bytes


@contextmanager
def origin_process(profile: str):
    proc = subprocess.Popen([sys.executable, "-m", "rangestream.origin", "--profile", profile, "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"origin did not start: {line!r}")
        yield line.removeprefix("listening on ")
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def expected_sha256(name: str, size: int) -> str:
    h = hashlib.sha256()
    step = 8 << 20
    for a in range(0, size, step):
        h.update(object_bytes(name, size, 0, a, min(a + step, size)))
    return h.hexdigest()


@dataclass
class Result:
    label: str
    seconds: float
    size: int
    cpu: float  # CPU seconds of the client
    ok: bool
    note: str = ""

    @property
    def mbps(self) -> float:
        return self.size / self.seconds / 1e6

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu / (self.size / 1e9)


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run_rangestream(label: str, url: str, size: int, sha: str, **opts) -> tuple[Result, rangestream.Stream]:
    h = hashlib.sha256()
    cpu0, t0 = self_cpu(), time.perf_counter()
    async with rangestream.open_stream(url, **opts) as stream:
        async for piece in stream:
            h.update(piece)
    seconds, cpu = time.perf_counter() - t0, self_cpu() - cpu0
    return Result(label, seconds, size, cpu, h.hexdigest() == sha), stream


def run_command(label: str, argv: list[str], size: int, sha: str | None, timeout: float) -> Result:
    """Run a peer tool writing the object to stdout and hash it here. CPU = the child's (wait4)
    plus this process's reading and hashing, so it compares with a rangestream run that hashes."""
    cpu0, t0 = self_cpu(), time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    h = hashlib.sha256()
    n = 0
    deadline = t0 + timeout
    timed_out = False
    os.set_blocking(proc.stdout.fileno(), True)
    while True:
        if time.perf_counter() > deadline:
            proc.kill()
            timed_out = True
            break
        block = proc.stdout.read1(1 << 20)
        if not block:
            break
        n += len(block)
        if sha is not None:
            h.update(block)
    _, status, ru = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    ok = not timed_out and n == size and (sha is None or h.hexdigest() == sha)
    note = f"timed out after {timeout:.0f} s ({n / 1e6:.0f} MB)" if timed_out else ""
    cpu = ru.ru_utime + ru.ru_stime + self_cpu() - cpu0
    return Result(label, seconds, size if not timed_out else n, cpu, ok, note)


def run(coro):
    return asyncio.run(coro)
