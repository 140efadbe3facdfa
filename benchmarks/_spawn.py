"""Run one command and report its own wall time, CPU and peak RSS (used by _common.measured).

    python -I -S benchmarks/_spawn.py REPORT TIMEOUT ARGV...

Why a launcher: Linux carries a process's peak RSS across exec, and Python's subprocess
spawns with vfork, so a tool started straight from the benchmark reports at least the
benchmark's own peak (~60 MB with rangestream imported): curl would show 51-59 MB. Started
from this small interpreter (-I -S: no site, nothing imported but os/sys/json/time), the
floor is this launcher's footprint (~10 MB) instead.

The command runs in a process group of its own; at TIMEOUT seconds the whole group is
killed (both ends of a ``sh -c 'a | b'`` too), then reaped. REPORT receives one JSON object:
seconds (fork to reap), cpu (user + system of the command and what it reaped), rss (bytes,
ru_maxrss), status (the raw wait status) and timed_out. Stdin/stdout/stderr are inherited.
"""

import json
import os
import signal
import sys
import time


def main() -> int:
    report, timeout, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    try:
        os.setpgid(pid, pid)  # also here, so a kill at the deadline cannot precede the child's own call
    except OSError:
        pass  # the child already exec'd (its call succeeded) or exited
    timed_out = False
    for _ in range(int(timeout / 0.01) + 1000):  # bounded; polls every 10 ms until the deadline
        got, status, ru = os.wait4(pid, os.WNOHANG)
        if got:
            break
        if time.perf_counter() - t0 > timeout:
            timed_out = True
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status, ru = os.wait4(pid, 0)
            break
        time.sleep(0.01)
    else:
        os.killpg(pid, signal.SIGKILL)
        _, status, ru = os.wait4(pid, 0)
        timed_out = True
    seconds = time.perf_counter() - t0
    with open(report, "w") as f:
        json.dump({"seconds": seconds, "cpu": ru.ru_utime + ru.ru_stime, "rss": ru.ru_maxrss * 1024,
                   "status": status, "timed_out": timed_out}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
