"""rangestream against its peers on the same origin profiles, in one run, each as its users run it.

    .venv/bin/python benchmarks/peers.py [--profiles youtube,lossy,fast] [--size 200M] [--big 1G]
                                         [--timeout 90] [--tools curl,wget2,hf_transfer,...]
                                         [--https] [--origin emulated|nginx]

For each origin profile (an emulated CDN in its own process, loopback only) every
client fetches the same generated object from the plain ``/data/NAME/SIZE.bin`` URL
and its sha256 is checked against the expected digest. With ``--origin nginx`` (profile
``fast`` only) nginx serves the same object from a file instead: a server in C and OpenSSL, as
a CDN's edge is, so that over ``--https`` the clients' own TLS cost sets the pace rather than
the emulated origin's Python encryption on the core they share. The clients are the rows of
``TOOLS`` below; each is one of three kinds:

- ``stdout``: the tool writes the object to its stdout, hashed here (curl, yt-dlp,
  ``rangestream get -o -``);
- ``file``: the tool writes a file in a fresh directory under /tmp, hashed after it exits
  (its seconds stop at exit; the hashing counts in its CPU): aria2c (which cannot write to a
  pipe), wget2, ``rangestream get -o FILE`` and ``-o - | cat > FILE``, and the Python
  libraries hf_transfer, parfive and pypdl, each in a child process of its own
  (``_peer_child.py``, which imports only that library) so CPU and peak RSS are its own;
- ``engine``: rangestream's engine in-process at window 1, 2, 4 and auto (chunk 9.5 MB), in a
  fresh child process (``run_rangestream``: in-order delivery into sha256), shown with its
  ``max_buffer`` budget.

"N splits" for parfive and pypdl is ceil(size / 9.5 MB): parts stay under the CDN's 10 MB
throttle threshold, the same per-request bound as rangestream's default chunk.

Columns: wall seconds, MB/s, ratio to the link limit (size / link rate + one first-byte
delay; profiles without a link rate show "-"), client CPU seconds per GB (the child and
what it reaped, plus the hashing in this process) and its ratio to curl's, peak RSS
(``ru_maxrss`` from ``os.wait4``; for a shell pipeline the larger of its two ends). A client
that exceeds ``--timeout`` is killed; its row shows "> T" seconds and the MB/s of what it had
received. A missing tool is reported with its install command and its rows are skipped.

The peers are set-up of this benchmark only, never runtime dependencies:
``apt-get install -y aria2 wget2``; ``.venv/bin/pip install -e '.[bench]'`` (hf_transfer,
parfive, pypdl) and ``.venv/bin/pip install yt-dlp``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    Result,
    expected_sha256,
    measured,
    nginx_origin,
    origin_process,
    run_command,
    run_file_command,
    run_rangestream,
)

from rangestream.plan import parse_size
from rangestream.testing.origin import PROFILES

CHUNK = 9_500_000
MIB = 1 << 20
RSS_ALLOWANCE = 64e6  # target: peak RSS of the in-process engine < 64 MB + max_buffer
VENV_BIN = Path(os.path.abspath(sys.executable)).parent  # normalised: the path is shown in install hints
CHILD = str(Path(__file__).parent / "_peer_child.py")
PIP_BENCH = f"{VENV_BIN / 'pip'} install -e '.[bench]'"


@dataclass
class Row:
    res: Result | None  # None: skipped
    label: str
    key: str = ""
    timed_out: bool = False
    rss: int | None = None  # bytes
    max_buffer: int | None = None
    note: str = ""


# --- the clients ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ctx:
    """What a tool's command line is built from."""
    exe: str  # the resolved executable (sys.executable for a Python library)
    url: str
    out: str  # the file to write (kind "file")
    splits: int  # parts under 10 MB: ceil(size / 9.5 MB)
    ca: str | None = None  # --https: the origin's CA (PEM) for the tool to trust


@dataclass(frozen=True)
class Tool:
    key: str  # what --tools selects (several rows share a key)
    label: str  # may use {splits}
    kind: str  # "stdout" | "file" | "engine"
    needs: str  # an executable name, or "py:MODULE" for a Python library run by _peer_child.py
    install: str
    argv: Callable[[Ctx], list[str]] | None = None
    window: int | str | None = None  # kind "engine"
    # --https: how the tool trusts the origin's CA: argv added after the executable, "argv" (its
    # argv function reads Ctx.ca), "env" (SSL_CERT_FILE, read by OpenSSL's and rustls-native-certs'
    # default paths), or None: it cannot trust a CA file (rows skipped with `no_ca`, the reason).
    ca_args: Callable[[str], list[str]] | str | None = "env"
    no_ca: str = ""


def aria2c(n: int) -> Tool:
    # --retry-wait must be > 0 for aria2c to retry a 503 at all; --timeout catches stalls.
    return Tool("aria2c", f"aria2c -x{n} -s{n} (file)", "file", "aria2c", "apt-get install -y aria2",
                lambda c: [c.exe, "-x", str(n), "-s", str(n), "-k", "1M", "--file-allocation=none",
                           "--allow-overwrite=true", "--auto-file-renaming=false", "--max-tries=20",
                           "--retry-wait=1", "--timeout=5", "--connect-timeout=5", "-q",
                           "-d", os.path.dirname(c.out), "-o", os.path.basename(c.out), c.url],
                ca_args=lambda ca: [f"--ca-certificate={ca}"])


def py_peer(key: str, label: str, *opts: str) -> Tool:
    """A Python library in a child process; opts are KEY=INT (may use {splits})."""
    return Tool(key, label, "file", f"py:{key}", PIP_BENCH,
                lambda c: [c.exe, CHILD, key, c.url, c.out, *(o.format(splits=c.splits) for o in opts)])


def rs_cli(label: str, kind: str, tail: Callable[[Ctx], list[str]]) -> Tool:
    return Tool("rangestream-cli", label, kind, "rangestream", f"{VENV_BIN / 'pip'} install -e .",
                lambda c: [c.exe, "get", c.url, "--window", "auto", *(["--cacert", c.ca] if c.ca else []),
                           *tail(c)],
                ca_args="argv")


def rs_engine(window: int | str) -> Tool:
    return Tool("rangestream-engine", f"rangestream engine window={window}", "engine", "", "", window=window)


TOOLS: list[Tool] = [
    Tool("curl", "curl (one request)", "stdout", "curl", "apt-get install -y curl", lambda c: [c.exe, "-s", c.url],
         ca_args=lambda ca: ["--cacert", ca]),
    Tool("curl", "curl -o FILE (one request)", "file", "curl", "apt-get install -y curl",
         lambda c: [c.exe, "-s", "-o", c.out, c.url], ca_args=lambda ca: ["--cacert", ca]),
    aria2c(1), aria2c(4), aria2c(16),
    Tool("yt-dlp", "yt-dlp --http-chunk-size 9.5M", "stdout", "yt-dlp", f"{VENV_BIN / 'pip'} install yt-dlp",
         lambda c: [c.exe, "--http-chunk-size", str(CHUNK), "-o", "-", "--no-part", "--quiet",
                    "--force-generic-extractor", c.url],
         ca_args=None, no_ca="yt-dlp cannot be given a CA file (only --no-check-certificates, which "
                             "would not verify at all)"),
    Tool("wget2", "wget2 --chunk-size 9.5M (file)", "file", "wget2", "apt-get install -y wget2",
         lambda c: [c.exe, "-q", "--chunk-size", "9500000", "-O", c.out, c.url],
         ca_args=lambda ca: [f"--ca-certificate={ca}"]),
    py_peer("hf_transfer", "hf_transfer 8 files, 9.5 MB chunks",
            "max_files=8", f"chunk_size={CHUNK}", "parallel_failures=3", "max_retries=5"),
    py_peer("hf_transfer", "hf_transfer as huggingface_hub (100, 10 MiB)",
            "max_files=100", f"chunk_size={10 * MIB}", "parallel_failures=3", "max_retries=5"),
    py_peer("parfive", "parfive 8 conn, {splits} splits", "max_conn=8", "max_splits={splits}"),
    py_peer("parfive", "parfive defaults (5 conn, 5 splits)"),
    py_peer("pypdl", "pypdl {splits} segments", "segments={splits}"),
    rs_cli("rangestream get -o FILE", "file", lambda c: ["-o", c.out]),
    rs_cli("rangestream get -o - | cat > FILE", "file", lambda c: ["-o", "-"]),  # piped in run_tool
    rs_cli("rangestream get -o - (hashed pipe)", "stdout", lambda c: ["-o", "-"]),
    *(rs_engine(w) for w in (1, 2, 4, "auto")),
]

def selected(tool: Tool, picks: list[str] | None) -> bool:
    """--tools: a key ("parfive", "rangestream-cli") or the prefix before its dash ("rangestream")."""
    return picks is None or any(tool.key == p or tool.key.startswith(p + "-") for p in picks)


def resolve(needs: str) -> str | None:
    if needs.startswith("py:"):
        return sys.executable if importlib.util.find_spec(needs[3:]) else None
    if (VENV_BIN / needs).exists():
        return str(VENV_BIN / needs)
    return shutil.which(needs)


def with_ca(tool: Tool, argv: list[str], ca: str | None) -> list[str]:
    """argv trusting the origin's CA (--https): the tool's own flag after the executable, or
    SSL_CERT_FILE in its environment."""
    if ca is None or tool.ca_args == "argv":
        return argv
    if tool.ca_args == "env":
        return ["env", f"SSL_CERT_FILE={ca}", *argv]
    assert callable(tool.ca_args)
    return [argv[0], *tool.ca_args(ca), *argv[1:]]


def run_tool(tool: Tool, url: str, size: int, sha: str, timeout: float, ca: str | None = None) -> Row:
    label = tool.label.format(splits=math.ceil(size / CHUNK))
    # Each row starts with no dirty page cache: the previous row's 1 GB would otherwise be
    # written back to disk during this one, charging its CPU and seconds to whoever runs next.
    os.sync()
    if tool.kind == "engine":
        return run_rangestream_child(label, url, size, sha, tool.window, timeout, ca)
    if ca is not None and tool.ca_args is None:
        print(f"  {label}: skipped over HTTPS: {tool.no_ca}", flush=True)
        return Row(None, label, tool.key, note=f"HTTPS: {tool.no_ca}")
    exe = resolve(tool.needs)
    if exe is None:
        print(f"  {label}: {tool.needs.removeprefix('py:')} not found: install it with `{tool.install}` "
              "(row skipped)", flush=True)
        return Row(None, label, tool.key, note=f"not installed ({tool.install})")
    tmp = tempfile.mkdtemp(prefix="rangestream-peers-", dir="/tmp")
    try:
        ctx = Ctx(exe, url, os.path.join(tmp, "obj.bin"), math.ceil(size / CHUNK), ca)
        assert tool.argv is not None
        argv = with_ca(tool, tool.argv(ctx), ca)
        if "| cat" in label:  # the CLI streaming into a pipe, as `... -o - | cat > FILE` in a shell
            argv = ["sh", "-c", f"{shlex.join(argv)} | cat > {shlex.quote(ctx.out)}"]
        res = (run_command(label, argv, size, sha, timeout) if tool.kind == "stdout"
               else run_file_command(label, argv, ctx.out, size, sha, timeout))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Row(res, label, tool.key, res.note.startswith("timed out"), res.rss, None, res.note)


# --- rangestream's engine in a child process --------------------------------------------------

def default_max_buffer(window: int | str, window_max: int | None = None) -> int:
    """The engine's documented default (engine.Stream docstring): (window - 1) chunks for
    window >= 3; for auto it follows the window, so its largest value is (window_max - 1) chunks."""
    if window == "auto":
        return (max(window_max or 2, 1) - 1) * CHUNK
    return 0 if window <= 2 else (window - 1) * CHUNK


async def child(spec: dict) -> None:
    window = spec["window"]
    extra = {"cacert": spec["ca"]} if spec.get("ca") else {}
    res, stream = await run_rangestream(spec["label"], spec["url"], spec["size"], spec["sha"],
                                        chunk_size=CHUNK, window=window, **extra)
    stats = getattr(stream, "stats", None)
    out = {"seconds": res.seconds, "cpu": res.cpu, "ok": res.ok,
           "retries": getattr(stats, "retries", None), "window_max": getattr(stats, "window_max", None),
           "buffered_peak": getattr(stats, "buffered_peak", None)}
    print(json.dumps(out), flush=True)


def run_rangestream_child(label: str, url: str, size: int, sha: str, window: int | str, timeout: float,
                          ca: str | None = None) -> Row:
    spec = {"label": label, "url": url, "size": size, "sha": sha, "window": window, "ca": ca}
    key = "rangestream-engine"
    with tempfile.TemporaryFile(mode="w+") as out, \
            measured([sys.executable, __file__, "--child", json.dumps(spec)], timeout, stdout=out) as (_, wait):
        u = wait()
        out.seek(0)
        text = out.read().strip()
    mb = default_max_buffer(window)
    if u.timed_out or not text:
        why = f"timed out after {timeout:.0f} s" if u.timed_out else f"child exited with status {u.status}"
        return Row(Result(label, u.seconds, 0, u.cpu, False, why), label, key, u.timed_out, u.rss, mb, why)
    d = json.loads(text.splitlines()[-1])
    mb = default_max_buffer(window, d.get("window_max"))
    note = f"retries {d['retries']}, window max {d['window_max']}, buffered peak {d['buffered_peak'] / 1e6:.1f} MB" \
        if d.get("buffered_peak") is not None else ""
    return Row(Result(label, d["seconds"], size, d["cpu"], d["ok"]), label, key, False, u.rss, mb, note)


# --- one profile ------------------------------------------------------------------------------

def bench_profile(profile: str, size: int, timeout: float, picks: list[str] | None,
                  https: bool = False, nginx: bool = False) -> list[Row]:
    prof = PROFILES[profile]
    name = f"peers-{profile}"
    where = (" over HTTPS" if https else "") + (" from nginx" if nginx else "")
    print(f"\n[{profile}{where}] hashing the expected object ({size / 1e6:.0f} MB)...", flush=True)
    sha = expected_sha256(name, size)
    rows: list[Row] = []
    with (nginx_origin(name, size, tls=https) if nginx else origin_process(profile, tls=https)) as base:
        url = f"{base}/data/{name}/{size}.bin"
        for tool in TOOLS:
            if not selected(tool, picks):
                continue
            row = run_tool(tool, url, size, sha, timeout, base.ca)
            if row.res is not None:
                verdict = "ok" if row.res.ok else "-" if row.timed_out else "BAD"
                print(f"  {row.label:{W}} {row.res.seconds:7.2f} s  {verdict}  {row.note}", flush=True)
            rows.append(row)
    print_table(profile, prof, size, timeout, rows)
    return rows


def link_limit(prof, size: int) -> float | None:
    return None if prof.link_rate is None else size / prof.link_rate + prof.ttfb


W = 44  # label column


def print_table(profile: str, prof, size: int, timeout: float, rows: list[Row]) -> None:
    limit = link_limit(prof, size)
    desc = (f"link {prof.link_rate / 1e6:.0f} MB/s, {prof.rate / 1e6:.0f} MB/s per connection, "
            f"{prof.ttfb * 1000:.0f} ms first byte, responses > {prof.throttle_over / 1e6:.0f} MB at "
            f"{prof.throttle_rate / 1e3:.0f} KB/s" if prof.link_rate else "unthrottled")
    if prof.fault_rate:
        desc += f", {prof.fault_rate:.0%} faults {'/'.join(prof.fault_kinds)} (stalls {prof.stall_seconds:.0f} s)"
    print(f"\n== profile {profile}: {size / 1e6:.0f} MB object; {desc}")
    if limit is not None:
        print(f"   link limit: {size / 1e6:.0f} MB / {prof.link_rate / 1e6:.0f} MB/s + {prof.ttfb:.2f} s "
              f"= {limit:.2f} s")
    curl = done(rows, "curl")
    print(f"| {'client':{W}} | {'seconds':>8} | {'MB/s':>7} | {'x link limit':>12} | {'CPU s/GB':>8} | "
          f"{'CPU vs curl':>11} | {'peak RSS MB':>11} | {'max_buffer MB':>13} | {'sha256':>6} |")
    print(f"|{'-' * (W + 2)}|{'-' * 9}:|{'-' * 8}:|{'-' * 13}:|{'-' * 9}:|"
          f"{'-' * 12}:|{'-' * 12}:|{'-' * 14}:|{'-' * 7}:|")
    for row in rows:
        r = row.res
        if r is None:
            print(f"| {row.label:{W}} | {'skipped: ' + row.note}")
            continue
        secs = f"> {timeout:.0f}" if row.timed_out else f"{r.seconds:.2f}"
        # MB/s over the link-limit rate: for a timed-out row, what it received in the time it had.
        x = None if limit is None else r.mbps * 1e6 / (size / limit)
        ratio = "-" if x is None else f"{x:.3f}" if x < 0.1 else f"{x:.2f}"
        cpu_gb = f"{r.cpu_per_gb:.2f}" if r.size else "-"
        cpu_rel = f"{r.cpu_per_gb / curl.res.cpu_per_gb:.2f}" if curl and r.size and not row.timed_out else "-"
        rss = f"{row.rss / 1e6:.0f}" if row.rss else "-"
        mb = f"{row.max_buffer / 1e6:.1f}" if row.max_buffer is not None else "-"
        sha = "ok" if r.ok else ("-" if row.timed_out else "BAD")
        print(f"| {row.label:{W}} | {secs:>8} | {r.mbps:7.1f} | {ratio:>12} | {cpu_gb:>8} | {cpu_rel:>11} | "
              f"{rss:>11} | {mb:>13} | {sha:>6} |")
    for row in rows:
        if row.res is not None and row.note:
            print(f"   - {row.label}: {row.note}")


def done(rows: list[Row], label_start: str) -> Row | None:
    """The first row whose label starts with label_start that finished byte-exact."""
    return next((r for r in rows if r.label.startswith(label_start) and r.res is not None
                 and r.res.ok and not r.timed_out), None)


def met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def verdicts(results: dict[str, tuple[object, int, list[Row]]], https: bool = False) -> None:
    """Issue 11's targets, as ratios within this run."""
    print("\n== targets (issue 11)" + (" over HTTPS" if https else ""))
    for profile, (prof, size, rows) in results.items():
        limit = link_limit(prof, size)
        clis = [r for r in rows if r.key == "rangestream-cli" and r.res is not None]
        peers = [r for r in rows if not r.key.startswith("rangestream") and r.res is not None]
        if limit and profile != "lossy":
            for r in clis:
                x = limit / r.res.seconds
                print(f"[{profile}] {r.label} at {x:.2f} of the link limit (target >= 0.95, byte-exact): "
                      f"{met(x >= 0.95 and r.res.ok)}")
                slower = [p.label for p in peers if p.res.ok and p.res.seconds <= r.res.seconds]
                print(f"[{profile}]   faster than every peer: "
                      + ("MET" if not slower else "NOT MET, not faster than " + ", ".join(slower)))
        if profile == "lossy":
            bad = [r.label for r in rows if r.key.startswith("rangestream") and r.res is not None and not r.res.ok]
            print("[lossy] every rangestream row byte-exact: "
                  + ("MET" if not bad else "NOT MET for " + ", ".join(bad)))
            print("[lossy] peers byte-exact: " + ", ".join(f"{p.label} {'ok' if p.res.ok else 'no'}" for p in peers))
        wget2 = done(rows, "wget2")
        cli_file = done(rows, "rangestream get -o FILE")
        curl_pipe, curl_file = done(rows, "curl (one request)"), done(rows, "curl -o FILE")
        if https and limit is None:
            for r in clis:
                # Like with like: a row writing a file against curl writing one, a pipe against curl's stdout.
                curl = curl_file if "FILE" in r.label else curl_pipe
                if r.res is None or not r.res.ok or curl is None:
                    continue
                t, c = r.res.mbps / curl.res.mbps, r.res.cpu_per_gb / curl.res.cpu_per_gb
                print(f"[{profile} https] {r.label} at {t:.2f}x {curl.label}'s MB/s (target >= 1) and {c:.2f}x "
                      f"its CPU per GB (target <= 1.3): {met(t >= 1 and c <= 1.3)}")
        if limit is None and wget2 and cli_file:
            t = cli_file.res.mbps / wget2.res.mbps
            c = cli_file.res.cpu_per_gb / wget2.res.cpu_per_gb
            print(f"[{profile}] get -o FILE at {t:.2f}x wget2's MB/s (target >= 0.5) and {c:.2f}x its CPU per GB "
                  f"(target <= 2): {met(t >= 0.5 and c <= 2)}")
        engine = [r for r in rows if r.key == "rangestream-engine" and r.res is not None]
        over = [f"{r.label} ({r.rss / 1e6:.0f} MB > {(RSS_ALLOWANCE + r.max_buffer) / 1e6:.1f} MB)"
                for r in engine if r.rss and r.rss >= RSS_ALLOWANCE + (r.max_buffer or 0)]
        if engine:
            print(f"[{profile}] engine peak RSS < 64 MB + max_buffer: "
                  + ("MET for all engine rows" if not over else "NOT MET for " + ", ".join(over)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", default="youtube,lossy,fast", help="comma-separated origin profiles")
    ap.add_argument("--size", default="200M", help="object size for throttled profiles (default 200M)")
    ap.add_argument("--big", default="1G", help="object size for the unthrottled profile 'fast' (default 1G)")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds allowed to each client (default 90)")
    keys = sorted({t.key for t in TOOLS})
    ap.add_argument("--tools", help=f"comma-separated subset: {', '.join(keys)}, or rangestream for both "
                                    "of its kinds (default: all)")
    ap.add_argument("--https", action="store_true",
                    help="the origin serves HTTPS (TLS 1.3, a CA made at start-up) and each tool is told to "
                         "trust that CA (curl --cacert, wget2/aria2c --ca-certificate, rangestream --cacert, "
                         "SSL_CERT_FILE for the Python libraries); tools that cannot trust a CA are skipped")
    ap.add_argument("--origin", choices=("emulated", "nginx"), default="emulated",
                    help="who serves the object: the emulated CDN (default), or nginx (from PATH; "
                         "`apt-get install -y nginx`) serving it as a file, unthrottled: profile fast only. "
                         "nginx encrypts in C, so over --https the client, not a Python origin sharing "
                         "its two cores, sets the pace")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        asyncio.run(child(json.loads(args.child)))
        return
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    for p in profiles:
        if p not in PROFILES:
            ap.error(f"unknown profile {p!r} (choose from {', '.join(sorted(PROFILES))})")
    if args.origin == "nginx" and profiles != ["fast"]:
        ap.error("--origin nginx serves the unthrottled profile only: use --profiles fast")
    picks = None if not args.tools else [t.strip() for t in args.tools.split(",") if t.strip()]
    for p in picks or []:
        if not any(selected(t, [p]) for t in TOOLS):
            ap.error(f"unknown tool {p!r} (choose from {', '.join(keys)}, rangestream)")
    print(f"rangestream peers benchmark: {os.cpu_count()} cores, timeout {args.timeout:.0f} s per client")
    results = {}
    for p in profiles:
        prof = PROFILES[p]
        size = parse_size(args.big if prof.link_rate is None and prof.rate is None else args.size)
        results[p] = (prof, size, bench_profile(p, size, args.timeout, picks, args.https,
                                                  args.origin == "nginx"))
    verdicts(results, args.https)


if __name__ == "__main__":
    main()
