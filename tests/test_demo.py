"""``rangestream demo`` runs to completion offline, and cleans up its origin on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import av
import pytest


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANGESTREAM_")}
    env.pop("COLUMNS", None)
    return env


def test_demo_runs_to_completion(tmp_path):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rangestream", "demo", "--size", "12M", "--out", "clip.mp4"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for mode in ("sequential", "next-request prefetch", "auto window"):
        assert re.search(rf"{mode}\s+[\d.]+ s\s+[\d.]+ MB/s\s+sha256 ok", out), out
    assert "MISMATCH" not in out and "Traceback" not in proc.stderr
    assert "link limit" in out and "Time (shorter is better)" in out and "Throughput" in out
    assert "█" in out  # the bar charts
    assert re.search(r"faster than sequential, \d+% of the link limit", out)
    clip = tmp_path / "clip.mp4"
    assert str(clip) in out.replace("\n", "")
    with av.open(str(clip)) as container:
        kinds = sorted(s.type for s in container.streams)
    assert kinds == ["audio", "video"]
    assert not (tmp_path / "clip.mp4.part").exists()
    assert time.monotonic() - started < 60


def test_demo_ctrl_c_stops_its_origin(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "rangestream", "demo", "--size", "400M", "--no-mux"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "Emulated CDN listening on http://127.0.0.1:" in line, line
        port = int(line.strip().rsplit(":", 1)[1])
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass  # the origin subprocess is gone


def test_demo_never_writes_through_a_planted_part_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious data")
    (tmp_path / "clip.mp4.part").symlink_to(victim)
    proc = subprocess.run([sys.executable, "-m", "rangestream", "demo", "--size", "1M", "--out", "clip.mp4"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=90)
    assert victim.read_bytes() == b"precious data"
    assert proc.returncode == 6, proc.stderr
    assert "clip.mp4.part is a symbolic link" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "clip.mp4").exists()
