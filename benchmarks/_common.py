"""Shared pieces of the benchmarks: an origin in its own process, timing, CPU accounting.

The origin runs as a subprocess so that the client under test has a core of its
own (the machine has two) and so that CPU figures of the client exclude it.
"""

from __future__ import annotations

import asyncio
import compileall
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass

import rangestream
from rangestream.testing.origin import expected_sha256, object_bytes  # noqa: F401  (re-exported for the scripts)


def compile_installed() -> None:
    """Write rangestream's bytecode, as installing a wheel does: an editable checkout run with
    PYTHONDONTWRITEBYTECODE (set on this machine) would otherwise compile every module from
    source at each CLI start (~50 ms measured), a cost users of an installed package never pay."""
    compileall.compile_dir(os.path.dirname(rangestream.__file__), quiet=1)


compile_installed()


class OriginURL(str):
    """The origin's base URL; ``ca`` is the PEM file of the CA to trust when it serves HTTPS."""

    ca: str | None = None


@contextmanager
def origin_process(profile: str, tls: bool = False):
    argv = [sys.executable, "-m", "rangestream.testing.origin", "--profile", profile, "--port", "0"]
    proc = subprocess.Popen([*argv, "--tls"] if tls else argv, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"origin did not start: {line!r}")
        base = OriginURL(line.removeprefix("listening on "))
        if tls:
            ca = proc.stdout.readline().strip()
            if not ca.startswith("ca-cert "):
                raise RuntimeError(f"origin printed no CA file: {ca!r}")
            base.ca = ca.removeprefix("ca-cert ")
        yield base
    finally:
        _stop(proc)


NGINX_CONF = """worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port}{ssl};
    {tls}
    root {d}/www;
  }}
}}
"""


@contextmanager
def nginx_origin(name: str, size: int, tls: bool = False):
    """nginx serving generated object ``name`` of ``size`` bytes at ``/data/NAME/SIZE.bin``
    (unthrottled, as a CDN's edge: C and OpenSSL, not the emulated origin's Python), with TLS 1.3
    and a certificate from a CA made here (trustme) when ``tls``. One worker: the client keeps a
    core of its own, as with the emulated origin. Yields an :class:`OriginURL`."""
    exe = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
    if exe is None:
        raise RuntimeError("nginx not found: install it with `apt-get install -y nginx`")
    d = tempfile.mkdtemp(prefix="rangestream-nginx-", dir="/tmp")
    os.chmod(d, 0o755)  # nginx's worker runs as another user (www-data) when started as root
    try:
        path = os.path.join(d, "www", "data", name, f"{size}.bin")
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            for a in range(0, size, 8 << 20):
                f.write(object_bytes(name, size, 0, a, min(a + (8 << 20), size)))
        os.sync()  # the object's writeback must not land in the first row's time
        base, tls_conf = _nginx_tls(d) if tls else (None, "")
        port = _free_port()
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(d=d, port=port, ssl=" ssl" if tls else "", tls=tls_conf))
        proc = subprocess.Popen([exe, "-c", os.path.join(d, "nginx.conf"), "-p", d],
                                stderr=subprocess.DEVNULL)
        try:
            _wait_listening(port, proc)
            url = OriginURL(f"{'https' if tls else 'http'}://127.0.0.1:{port}")
            url.ca = base
            yield url
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    """Ask a server process to end; kill it if it has not within 5 s."""
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


def _nginx_tls(d: str) -> tuple[str, str]:
    import trustme  # a benchmark dependency, as for the emulated origin's --tls

    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(os.path.join(d, "server.pem"))
    ca_path = os.path.join(d, "ca.pem")
    ca.cert_pem.write_to_path(ca_path)
    pem = os.path.join(d, "server.pem")
    return ca_path, f"ssl_certificate {pem}; ssl_certificate_key {pem}; ssl_protocols TLSv1.3;"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # bounded: nginx starts in milliseconds
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with status {proc.returncode} (see its error.log)")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nginx did not listen on port {port} within {seconds:.0f} s")


@dataclass
class Result:
    label: str
    seconds: float
    size: int
    cpu: float  # CPU seconds of the client
    ok: bool
    note: str = ""
    rss: int | None = None  # peak RSS in bytes, where the benchmark reaped the process itself

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


def wait_bounded(proc: subprocess.Popen, deadline: float) -> tuple[bool, int, resource.struct_rusage]:
    """Reap proc by deadline (killing it then). Returns (timed_out, wait status, rusage): the
    rusage of a reaped child covers it and the descendants it reaped (e.g. both ends of a
    ``sh -c 'a | b'``), so ru_maxrss is the largest of their peaks."""
    timed_out = False
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = status
            return timed_out, status, ru
        if time.perf_counter() > deadline:
            proc.kill()
            timed_out = True
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = status
            return timed_out, status, ru
        time.sleep(0.02)


def sha256_file(path: str, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for _ in range(size // (8 << 20) + 2):  # bounded: the file was checked to be `size` bytes
            block = f.read(8 << 20)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def last_line(f) -> str:
    """The last non-empty line a tool wrote to its captured stderr (for a failed row's note)."""
    f.seek(0)
    lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:160] if lines else ""


def failure_note(timed_out: bool, timeout: float, got: int, status: int, err) -> str:
    if timed_out:
        return f"timed out after {timeout:.0f} s ({got / 1e6:.0f} MB)"
    code = os.waitstatus_to_exitcode(status)
    return "" if code == 0 else f"exit status {code}: {last_line(err)}".rstrip(": ")


SPAWN = [sys.executable, "-I", "-S", os.path.join(os.path.dirname(os.path.abspath(__file__)), "_spawn.py")]


@dataclass
class Usage:
    seconds: float
    cpu: float
    rss: int  # bytes
    status: int  # raw wait status
    timed_out: bool


@contextmanager
def measured(argv: list[str], timeout: float, **popen_kw):
    """Run argv under _spawn.py (its own wall time, CPU and peak RSS, killed with its process
    group at `timeout`). Yields (proc, wait) where wait() reaps it and returns a Usage."""
    fd, report = tempfile.mkstemp(prefix="rangestream-bench-", suffix=".json")
    os.close(fd)
    try:
        proc = subprocess.Popen([*SPAWN, report, str(timeout), *argv], **popen_kw)

        def wait() -> Usage:
            # The launcher enforces the timeout; this deadline only catches a launcher gone wrong.
            _, status, ru = wait_bounded(proc, time.perf_counter() + timeout + 30)
            try:
                with open(report) as f:
                    d = json.load(f)
            except (OSError, ValueError):
                return Usage(timeout, ru.ru_utime + ru.ru_stime, 0, status, True)
            return Usage(d["seconds"], d["cpu"], d["rss"], d["status"], d["timed_out"])

        yield proc, wait
    finally:
        os.unlink(report)


def run_command(label: str, argv: list[str], size: int, sha: str | None, timeout: float) -> Result:
    """Run a peer tool writing the object to stdout and hash it here. CPU = the tool's plus this
    process's reading and hashing, so it compares with a rangestream run that hashes. The
    launcher kills the tool at the deadline, which ends its output, so the loop below ends too."""
    with tempfile.TemporaryFile() as err, measured(argv, timeout, stdout=subprocess.PIPE, stderr=err) as (proc, wait):
        cpu0 = self_cpu()
        h = hashlib.sha256()
        n = 0
        try:
            for _ in range(size // 4096 + 1_000_000):  # bounded in count; the launcher bounds the time
                block = proc.stdout.read1(1 << 20)
                if not block:
                    break
                n += len(block)
                if sha is not None:
                    h.update(block)
        finally:
            proc.stdout.close()
        u = wait()
        cpu = u.cpu + self_cpu() - cpu0
        ok = not u.timed_out and n == size and (sha is None or h.hexdigest() == sha)
        note = failure_note(u.timed_out, timeout, n, u.status, err)
    return Result(label, u.seconds, size if not u.timed_out else n, cpu, ok, note, u.rss)


def run_file_command(label: str, argv: list[str], out: str, size: int, sha: str, timeout: float) -> Result:
    """Run a peer tool that writes the object to the file ``out`` (in a directory of its own)
    and hash that file after it exits. Seconds stop at exit; the hashing counts in its CPU, as
    reading a pipe does for run_command. A timed-out row's bytes are the blocks written in the
    directory (files may be sparse or in parts), at most ``size``."""
    with tempfile.TemporaryFile() as err, measured(argv, timeout, stdin=subprocess.DEVNULL,
                                                   stdout=subprocess.DEVNULL, stderr=err) as (_, wait):
        u = wait()
        cpu0 = self_cpu()
        ok = False
        if not u.timed_out and os.path.exists(out) and os.path.getsize(out) == size:
            ok = sha256_file(out, size) == sha
        got = size if not u.timed_out else min(size, blocks_written(os.path.dirname(out)))
        cpu = u.cpu + self_cpu() - cpu0
        note = failure_note(u.timed_out, timeout, got, u.status, err)
        if not note and not ok:
            have = os.path.getsize(out) if os.path.exists(out) else None
            note = "no output file" if have is None else f"wrong content ({have} bytes)"
    return Result(label, u.seconds, got, cpu, ok, note, u.rss)


def blocks_written(directory: str) -> int:
    total = 0
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False):
            total += entry.stat().st_blocks * 512
    return total


def run(coro):
    return asyncio.run(coro)
