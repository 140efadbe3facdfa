"""`rangestream sign` as a careless user runs it, and `rangestream --help` naming it.

Real subprocesses (`python -m rangestream`); each is quick and bounded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def rangestream(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANGESTREAM_")}
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH") or SRC
    return subprocess.run([sys.executable, "-m", "rangestream", *args], capture_output=True, text=True,
                          env=env, timeout=25, stdin=subprocess.DEVNULL)


def test_help_lists_every_command_including_sign():
    done = rangestream("--help")
    assert done.returncode == 0
    for command in ("get", "mux", "serve", "sign", "origin", "demo"):
        assert f"\n    {command} " in done.stdout, (command, done.stdout)
    assert rangestream("sign", "--help").returncode == 0


@pytest.mark.parametrize("extra, words", [
    # the service refuses an exp of more than 12 digits: such a link would never work
    (["http://cdn.example/v.mp4", "--expires", "99999999999999"], "too far"),
    (["http://cdn.example/v.mp4", "--expires", "9" * 400], "too far"),  # no float overflow traceback
    # a query or fragment in --base would swallow the endpoint and its signed parameters
    (["http://cdn.example/v.mp4", "--base", "http://h:8080/?x=1"], "--base"),
    (["http://cdn.example/v.mp4", "--base", "http://h:8080/#top"], "--base"),
    # the service only fetches http(s): a link for anything else is useless
    (["file:///etc/passwd"], "http(s)"),
    (["--video", "http://cdn.example/v", "--audio", "ftp://cdn.example/a"], "http(s)"),
])
def test_sign_refuses_links_the_service_would_never_accept(extra, words):
    args = ["sign", "--key", "k", *extra]
    if "--base" not in extra:
        args += ["--base", "http://127.0.0.1:8080"]
    done = rangestream(*args)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == "" and words in done.stderr and "Traceback" not in done.stderr


def test_sign_with_a_base_path_prefix_still_works():
    done = rangestream("sign", "http://cdn.example/v.mp4", "--key", "k", "--base", "https://h.example/media/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("https://h.example/media/stream?url=")
