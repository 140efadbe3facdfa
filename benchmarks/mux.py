"""Mux throughput: rangestream.mux against the FFmpeg command line, in one run.

    .venv/bin/python benchmarks/mux.py [--size-mb 300] [--repeat 5] [--formats mp4,mkv,webm]
                                       [--noise 40] [--engine]

For each output format it muxes one large generated pair (video + audio, DASH
layouts: fragmented MP4 H.264 + AAC for mp4/mkv, WebM VP9 + Opus for webm)
and reports MB/s (input bytes over wall time, median of ``--repeat`` runs) and
CPU seconds per GB of input (user + system, all threads), for:

- ``rangestream``: ``rangestream.mux`` fed by async iterators that read the
  local files in 1 MiB pieces, writing to a file in ``--cache-dir``;
- ``ffmpeg-cli``: ``ffmpeg -i v -i a -map 0:v -map 1:a -c copy`` with the same
  muxer and options (if an ``ffmpeg`` binary is on PATH; Debian's package,
  whose FFmpeg version may differ from PyAV's);
- ``pyav-local``: PyAV remuxing straight from the local files (``av.open(path)``),
  the same stream copy without streaming, queues or a worker thread;
- ``rangestream+engine`` (``--engine``): the whole pipeline, both files served
  by the emulated CDN on loopback and fetched by the engine (``mux_urls``).

Ratios are rangestream / ffmpeg-cli (or / pyav-local when there is no CLI):
throughput above 1 is faster, CPU above 1 costs more.

The pair is generated once (4 s of noisy 640x360 video encoded, ``--noise``
setting the packet size, its packets
repeated to reach ``--size-mb``; audio encoded at full length) and cached in
``--cache-dir`` (default /tmp/rangestream-bench). Only local files and
loopback are used; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import av

from rangestream.muxer import FORMATS, mux
from rangestream.testing.media import KINDS, generate_clip

PIECE = 1024 * 1024
BASE_SECONDS = 4.0

PAIRS = {  # output format -> (video kind, audio kind)
    "mp4": ("h264-fmp4", "aac-fmp4"),
    "mkv": ("h264-fmp4", "aac-fmp4"),
    "webm": ("vp9-webm", "opus-webm"),
}
EXT = {"mp4": ".mp4", "webm": ".webm", "matroska": ".mkv"}


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------
# the generated pair
# --------------------------------------------------------------------------


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _repeat_video(kind: str, base: bytes, repeats: int, path: Path) -> None:
    """Write ``base``'s packets ``repeats`` times, back to back in time, in the kind's layout."""
    spec = KINDS[kind]
    with av.open(io.BytesIO(base)) as probe:
        s = probe.streams.video[0]
        pk = [p for p in probe.demux(s) if p.size]
        period = max(p.pts + p.duration for p in pk) - min(p.pts for p in pk)
    with av.open(str(path), mode="w", format=spec.format, options=dict(spec.options)) as out:
        ostream = None
        for k in range(repeats):  # bounded
            with av.open(io.BytesIO(base)) as src:
                s = src.streams.video[0]
                if ostream is None:
                    ostream = out.add_stream_from_template(s, opaque=True)
                for p in src.demux(s):
                    if not p.size:
                        continue
                    p.pts += k * period
                    p.dts += k * period
                    p.stream = ostream
                    out.mux(p)


def make_pair(fmt: str, size_mb: int, cache: Path, noise: int) -> tuple[Path, Path]:
    vkind, akind = PAIRS[fmt]
    cache.mkdir(parents=True, exist_ok=True)
    base_kw = dict(seconds=BASE_SECONDS, width=640, height=360, noise=noise,
                   crf=18 if vkind.startswith("h264") else 20)
    key = f"{vkind}|{akind}|{size_mb}|{sorted(base_kw.items())}|{av.__version__}"
    tag = hashlib.sha1(key.encode()).hexdigest()[:10]
    vext = ".mp4" if KINDS[vkind].format == "mp4" else ".webm"
    aext = ".m4a" if KINDS[akind].format == "mp4" else ".weba"
    vpath = cache / f"video-{vkind}-{tag}{vext}"
    apath = cache / f"audio-{akind}-{tag}{aext}"
    if not vpath.exists() or not apath.exists():
        t = time.monotonic()
        print(f"generating a {size_mb} MB {vkind} + {akind} pair in {cache} (once) ...", file=sys.stderr, flush=True)
        base = generate_clip(vkind, **base_kw)
        repeats = max(1, round(size_mb * 1e6 / len(base)))
        _atomic_write(vpath, lambda p: _repeat_video(vkind, base, repeats, p))
        audio = generate_clip(akind, seconds=BASE_SECONDS * repeats)
        _atomic_write(apath, lambda p: p.write_bytes(audio))
        print(f"  done in {time.monotonic() - t:.1f} s", file=sys.stderr)
    return vpath, apath


# --------------------------------------------------------------------------
# the contenders
# --------------------------------------------------------------------------


@dataclass
class Run:
    wall: float
    cpu: float
    out_bytes: int
    packets: int | None = None


async def _read_file(path: Path):
    with open(path, "rb") as f:
        while data := f.read(PIECE):  # bounded by the file's size
            yield data
            await asyncio.sleep(0)


def run_rangestream(vpath: Path, apath: Path, fmt: str, out: Path) -> Run:
    c0, t0 = cpu_self(), time.perf_counter()
    result = asyncio.run(mux(_read_file(vpath), _read_file(apath), out, fmt))
    wall, cpu = time.perf_counter() - t0, cpu_self() - c0
    return Run(wall, cpu, result.bytes_written, sum(result.packets.values()))


def run_engine(vpath: Path, apath: Path, fmt: str, out: Path) -> Run:
    from rangestream.muxer import mux_urls
    from rangestream.testing.origin import Origin

    vdata, adata = vpath.read_bytes(), apath.read_bytes()

    async def main() -> Run:
        async with Origin() as origin:
            vurl = origin.add_object("v", vdata, "video/mp4")
            aurl = origin.add_object("a", adata, "audio/mp4")
            c0, t0 = cpu_self(), time.perf_counter()
            result = await mux_urls(vurl, aurl, out, fmt)
            return Run(time.perf_counter() - t0, cpu_self() - c0, result.bytes_written, sum(result.packets.values()))

    return asyncio.run(main())


def run_ffmpeg(ffmpeg: str, vpath: Path, apath: Path, fmt: str, out: Path) -> Run:
    spec = FORMATS[fmt]
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y", "-i", str(vpath), "-i", str(apath),
           "-map", "0:v:0", "-map", "1:a:0", "-c", "copy"]
    for k, v in spec.options:
        cmd += [f"-{k}", v]
    cmd += ["-f", spec.name, str(out)]
    c0, t0 = cpu_children(), time.perf_counter()
    subprocess.run(cmd, check=True, timeout=600)
    return Run(time.perf_counter() - t0, cpu_children() - c0, out.stat().st_size)


def run_pyav_local(vpath: Path, apath: Path, fmt: str, out: Path) -> Run:
    spec = FORMATS[fmt]
    c0, t0 = cpu_self(), time.perf_counter()
    n = 0
    with av.open(str(vpath)) as vi, av.open(str(apath)) as ai, \
            av.open(str(out), mode="w", format=spec.name, options=dict(spec.options)) as o:
        ins = {"v": (vi, vi.streams.video[0]), "a": (ai, ai.streams.audio[0])}
        outs = {k: o.add_stream_from_template(s, opaque=True) for k, (_, s) in ins.items()}
        its = {k: c.demux(s) for k, (c, s) in ins.items()}
        tbs = {k: float(s.time_base) for k, (_, s) in ins.items()}

        def pull(k):
            for p in its[k]:
                if p.size:
                    return p
            return None

        heads = {k: pull(k) for k in its}
        while heads["v"] is not None or heads["a"] is not None:  # ends with the inputs
            v, a = heads["v"], heads["a"]
            k = "v" if a is None or (v is not None and v.dts * tbs["v"] <= a.dts * tbs["a"]) else "a"
            p = heads[k]
            p.stream = outs[k]
            o.mux(p)
            n += 1
            heads[k] = pull(k)
    return Run(time.perf_counter() - t0, cpu_self() - c0, out.stat().st_size, n)


def count_packets(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for p in c.demux() if p.size)


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=300, help="video size to generate (default 300)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per contender, median reported (default 5)")
    ap.add_argument("--formats", default="mp4,mkv,webm")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/rangestream-bench"))
    ap.add_argument("--ffmpeg", default=shutil.which("ffmpeg"), help="ffmpeg binary (default: from PATH)")
    ap.add_argument("--engine", action="store_true", help="also run the full pipeline through the emulated CDN")
    ap.add_argument("--noise", type=int, default=40,
                    help="noise in the generated video, 0-100: 40 gives ~120 KB packets, 8 gives ~20 KB "
                         "(YouTube 1080p H.264 averages ~20 KB); smaller packets cost more per byte")
    args = ap.parse_args(argv)
    if not 1 <= args.repeat <= 20:
        ap.error("--repeat must be 1..20")

    ffmpeg_version = None
    if args.ffmpeg:
        first = subprocess.run([args.ffmpeg, "-version"], capture_output=True, text=True, timeout=30).stdout
        ffmpeg_version = first.split("\n")[0].split(" Copyright")[0]
    baseline = "ffmpeg-cli" if args.ffmpeg else "pyav-local"
    print(f"PyAV {av.__version__} (libavformat {'.'.join(map(str, av.library_versions['libavformat']))}); "
          f"CLI: {ffmpeg_version or 'no ffmpeg binary: baseline is PyAV remuxing local files'}")

    rows = []
    for fmt in args.formats.split(","):
        fmt = fmt.strip()
        vpath, apath = make_pair(fmt, args.size_mb, args.cache_dir, args.noise)
        in_bytes = vpath.stat().st_size + apath.stat().st_size
        packets = None
        out = args.cache_dir / f"out{EXT[FORMATS[fmt].name]}"
        # partial binds this iteration's paths now, not whatever the loop variables hold later
        contenders = {"rangestream": partial(run_rangestream, vpath, apath, fmt, out),
                      "pyav-local": partial(run_pyav_local, vpath, apath, fmt, out)}
        if args.ffmpeg:
            contenders["ffmpeg-cli"] = partial(run_ffmpeg, args.ffmpeg, vpath, apath, fmt, out)
        if args.engine:
            contenders["rangestream+engine"] = partial(run_engine, vpath, apath, fmt, out)
        runs: dict[str, list[Run]] = {k: [] for k in contenders}
        for _ in range(args.repeat):  # interleaved, so drift hits all alike
            for name, fn in contenders.items():
                runs[name].append(fn())
                if name == "rangestream" and len(runs[name]) == 1:
                    packets = count_packets(out)
                    want = runs[name][0].packets
                    if packets != want:
                        raise SystemExit(f"{fmt}: output has {packets} packets, mux reported {want}")
                out.unlink(missing_ok=True)
        stats = {}
        for name, rs in runs.items():
            wall = statistics.median(r.wall for r in rs)
            cpu = statistics.median(r.cpu for r in rs)
            stats[name] = (in_bytes / 1e6 / wall, cpu / (in_bytes / 1e9), wall)
        base = stats[baseline]
        for name, (mbs, cpu_gb, wall) in stats.items():
            rows.append((fmt, name, in_bytes / 1e6, in_bytes / packets / 1e3, wall, mbs, cpu_gb,
                         mbs / base[0] if name != baseline else None,
                         cpu_gb / base[1] if name != baseline else None))

    print()
    head = f"{'format':6} {'contender':19} {'input MB':>9} {'KB/pkt':>7} {'wall s':>7} {'MB/s':>8} " \
           f"{'CPU s/GB':>9} {'x MB/s':>7} {'x CPU':>6}"
    print(head)
    print("-" * len(head))
    for fmt, name, mb, kb_pkt, wall, mbs, cpu_gb, r_mbs, r_cpu in rows:
        rm = f"{r_mbs:7.2f}" if r_mbs is not None else f"{'(base)':>7}"
        rc = f"{r_cpu:6.2f}" if r_cpu is not None else f"{'':>6}"
        print(f"{fmt:6} {name:19} {mb:9.1f} {kb_pkt:7.1f} {wall:7.2f} {mbs:8.1f} {cpu_gb:9.2f} {rm} {rc}")
    print(f"\nx MB/s, x CPU: relative to {baseline} (throughput above 1 is faster; CPU above 1 costs more). "
          f"Median of {args.repeat} runs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
