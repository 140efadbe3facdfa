"""One Python download library fetching URL to OUT, as its users call it (run by peers.py).

    python benchmarks/_peer_child.py TOOL URL OUT [KEY=INT ...]

TOOL is hf_transfer, parfive or pypdl; KEY=INT are keyword arguments for the tool's call
(hf_transfer.download, parfive.Downloader, Pypdl.start). It runs in its own process so that
its CPU time and peak RSS (``os.wait4`` in the parent) are the library's own, interpreter
start-up included, and it imports only the library under test (never rangestream).
Exit status 0 when the library reports success; the parent checks size and sha256 anyway.
"""

from __future__ import annotations

import os
import sys


def hf_transfer_get(url: str, out: str, opts: dict[str, int]) -> None:
    import hf_transfer

    hf_transfer.download(url, out, **opts)


def parfive_get(url: str, out: str, opts: dict[str, int]) -> None:
    from parfive import Downloader

    dl = Downloader(progress=False, overwrite=True, **opts)
    dl.enqueue_file(url, path=os.path.dirname(out), filename=os.path.basename(out))
    results = dl.download()
    if results.errors:
        raise RuntimeError(f"parfive: {len(results.errors)} error(s): {results.errors[0].exception!r}")


def pypdl_get(url: str, out: str, opts: dict[str, int]) -> None:
    from pypdl import Pypdl

    os.chdir(os.path.dirname(os.path.abspath(out)))  # pypdl writes pypdl.log into the working directory
    dl = Pypdl()
    dl.start(url, out, display=False, block=True, **opts)
    if dl.failed:
        raise RuntimeError(f"pypdl: failed {dl.failed!r}")


TOOLS = {"hf_transfer": hf_transfer_get, "parfive": parfive_get, "pypdl": pypdl_get}


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in TOOLS:
        print(f"usage: _peer_child.py {{{','.join(TOOLS)}}} URL OUT [KEY=INT ...]", file=sys.stderr)
        return 2
    tool, url, out = argv[:3]
    opts = {k: int(v) for k, v in (a.split("=", 1) for a in argv[3:])}
    try:
        TOOLS[tool](url, out, opts)
    except Exception as e:  # noqa: BLE001 - the parent records the failure; a traceback adds nothing
        print(f"{tool}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
