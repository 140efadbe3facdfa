"""``--workers N``: N worker processes serving one port (each its own SO_REUSEPORT
listener, so the kernel spreads connections), their /metrics summed through
prometheus_client's multiprocess mode in a temporary directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from prometheus_client import multiprocess

from .metrics import MULTIPROC_ENV

_START_TIMEOUT = 60.0  # seconds a worker may take to print its address


def _reserve(host: str, port: int) -> socket.socket:
    """A bound (not listening) SO_REUSEPORT socket: fixes the port for ``--port 0`` and
    keeps it ours while workers come and go; it never receives connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class _Pool:
    def __init__(self, argv: list[str], port: int, env: dict[str, str]) -> None:
        self.cmd = [sys.executable, "-m", "rangestream.service", *argv,
                    "--port", str(port), "--workers", "1", "--reuse-port"]
        self.env = env
        self.procs: list[subprocess.Popen[str]] = []

    def start(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, text=True, env=self.env)
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("listening on"):
            proc.wait(timeout=_START_TIMEOUT)
            raise OSError(f"a worker failed to start (exit {proc.returncode})")
        self.procs.append(proc)
        return proc

    def reap(self, path: str) -> list[subprocess.Popen[str]]:
        """The workers that exited, removed from the pool."""
        dead = [p for p in self.procs if p.poll() is not None]
        for p in dead:
            self.procs.remove(p)
            multiprocess.mark_process_dead(p.pid, path)  # type: ignore[no-untyped-call, unused-ignore]  # prometheus_client leaves it unannotated
        return dead

    def stop(self, path: str) -> bool:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        ok = True
        for p in self.procs:
            try:
                ok = p.wait() == 0 and ok
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for the grace period
                p.kill()
                ok = False
            multiprocess.mark_process_dead(p.pid, path)  # type: ignore[no-untyped-call, unused-ignore]  # prometheus_client leaves it unannotated
        return ok


def supervise(argv: list[str], host: str, port: int, workers: int) -> int:
    """Run ``workers`` copies of ``rangestream serve`` on one port until SIGINT/SIGTERM."""
    try:
        reserved = _reserve(host, port)
    except OSError as exc:
        print(f"rangestream serve: {exc}", file=sys.stderr)
        return 1
    port = reserved.getsockname()[1]
    path = tempfile.mkdtemp(prefix="rangestream-metrics-")
    pool = _Pool(argv, port, {**os.environ, MULTIPROC_ENV: path})
    stop: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, f: stop.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for _ in range(workers):
            pool.start()
        shown = f"[{host}]" if ":" in host else host
        print(f"listening on http://{shown}:{port} ({workers} workers)", flush=True)
        while not stop:
            time.sleep(0.2)
            for dead in pool.reap(path):
                if not stop:
                    print(f"rangestream serve: worker {dead.pid} exited ({dead.returncode}); restarting",
                          file=sys.stderr, flush=True)
                    pool.start()
        return 0 if pool.stop(path) else 1
    except OSError as exc:
        pool.stop(path)
        print(f"rangestream serve: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reserved.close()
        shutil.rmtree(path, ignore_errors=True)
