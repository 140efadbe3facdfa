"""A resumed ``get -o FILE`` holds the server's validators to the sidecar's as the engine does:
ETags compared weakly, dates as instants. A proxy that weakens the tag (``W/"a"`` one day,
``"a"`` the next) or a date written with ``-0000`` instead of ``GMT`` is the same object, and
the bytes already in FILE.part are kept. Real subprocess, loopback server."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web
from cli_support import LoopbackApp, run

SIZE = 1_000_000
HALF = 4 * 128_000  # the first run fails here, at a chunk boundary (128K is 128,000 bytes)


class Server(LoopbackApp):
    """One object; the ETag and Last-Modified it shows and where it starts failing (503) are set
    per run; ``served`` notes each 206's (first, last + 1) byte."""

    path = "/object.bin"

    def __init__(self) -> None:
        self.payload = bytes(range(256)) * (SIZE // 256) + bytes(SIZE % 256)
        self.etag, self.modified, self.fail_from = "", "", SIZE
        self.served: list[tuple[int, int]] = []
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        headers = {"ETag": self.etag, "Last-Modified": self.modified, "Accept-Ranges": "bytes"}
        a, _, b = request.headers.get("Range", "bytes=0-").removeprefix("bytes=").partition("-")
        start, stop = int(a), min(int(b) + 1 if b else SIZE, SIZE)
        if start >= self.fail_from:
            return web.Response(status=503, headers={"Retry-After": "0"})
        self.served.append((start, stop))
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{SIZE}"
        return web.Response(status=206, body=self.payload[start:stop], headers=headers)



def overlaps(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    ordered = sorted(spans)
    return [(a, b) for (a, b), (c, _) in zip(ordered, ordered[1:], strict=False) if c < b]


async def test_a_weakened_etag_and_a_date_in_another_form_keep_the_saved_bytes(tmp_path: Path):
    out = tmp_path / "object.bin"
    async with Server() as server:
        server.etag, server.modified, server.fail_from = 'W/"a"', "Sun, 06 Nov 1994 08:49:37 GMT", HALF
        rc, _, err = await run("get", server.url, "-o", str(out), "--chunk-size", "128K", "--window", "1",
                               "--retries", "0", cwd=tmp_path)
        assert rc != 0 and "run the same command again to resume" in err, err
        sidecar = json.loads((tmp_path / "object.bin.part.json").read_text())
        assert sidecar["etag"] == 'W/"a"' and sidecar["bytes_done"] == HALF, sidecar
        first = list(server.served)
        # The same version: the tag no longer weakened, the same instant written with -0000.
        server.etag, server.modified, server.fail_from = '"a"', "Sun, 06 Nov 1994 08:49:37 -0000", SIZE
        rc, _, err = await run("get", server.url, "-o", str(out), "--chunk-size", "128K", cwd=tmp_path)
    assert rc == 0, err
    assert "starting over" not in err and "Resuming" in err, err  # was: "its ETag changed"; starting over
    assert out.read_bytes() == server.payload
    assert overlaps(server.served) == [], (first, server.served[len(first):])  # no byte fetched twice
