"""Bad values on the command line of `serve` and `origin`: a usage message and exit 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CASES = [
    (["serve", "--port", "99999"], "a port is 0..65535"),
    (["serve", "--port", "-1"], "a port is 0..65535"),
    (["serve", "--port", "http"], "not a port number"),
    (["serve", "--token", ""], "an empty token"),
    (["serve", "--signing-key", ""], "an empty signing key"),
    (["origin", "--port", "70000"], "a port is 0..65535"),
    (["serve", "--allow-host", ""], "a domain is needed"),  # an empty allow-list would allow every host
    (["serve", "--allow-host", "."], "a domain is needed"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(a) or "''" for a, _ in CASES])
def test_bad_value_is_a_usage_error(argv: list[str], message: str) -> None:
    # No RANGESTREAM_TOKEN or RANGESTREAM_SIGNING_KEY from the caller's environment.
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("RANGESTREAM_")}
    proc = subprocess.run([sys.executable, "-m", "rangestream", *argv], capture_output=True, text=True,
                          timeout=30, env=env_free)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
