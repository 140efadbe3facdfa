"""A hostile server whose behaviour per request is drawn by hypothesis, against one invariant.

Per request the server may cap the response (honestly, with a shorter ``Content-Range``,
or by cutting the body), answer 200 with the whole object (Range ignored), 416, 429, 500,
503 (with or without ``Retry-After``), 403 or 404, delay its headers, give the total as
``/N``, ``/*`` or a wrong number, leave ``Content-Length`` out, or serve another version
of the object (new ``ETag``, every byte different), send a ``Content-Length`` one byte
short of its ``Content-Range``, or pause mid-body (past the idle timeout: a stall). It
never lies in a way no client could detect (bytes that disagree with their own headers
under the same validator, or a 200 whose length is all there is to go by).

The invariant, whatever was drawn: the library delivers exactly the object (one version,
every byte once), or raises a typed ``rangestream.StreamError`` and what it delivered
before is an exact prefix of one version (ordered), or pieces of one version at their
offsets (``unordered()``), and the error's ``offset`` is the number of bytes delivered.

Behaviour is keyed by (range start, how many times that start was asked), not by arrival
order, so an example replays the same way whatever the timing; a start asked more than
``MISBEHAVE`` times gets honest answers, so most examples can also succeed.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass
from itertools import pairwise

from aiohttp import web
from hostile_support import serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rangestream
from rangestream import Retry, Timeouts

MISBEHAVE = 2  # answers per range start that may be drawn; later ones are honest
RETRY = Retry(attempts=3, backoff=0.001, cap=0.005, jitter=0)
TIMEOUTS = Timeouts(request=2, idle=0.3, prefetch=1)


@dataclass(frozen=True)
class Act:
    status: int = 206
    cap: int | None = None  # at most this many body bytes
    honest_cap: bool = True  # the headers say so (a capping CDN); else the body is cut short
    total: str = "exact"  # "exact" (/N), "star" (/*), "off" (/N+7: a wrong size)
    # Content-Length: "yes", "no" (chunked) or "short" (206 only: one byte less than its
    # Content-Range says, and the body ends there: the framing is right, the range is not)
    length: str = "yes"
    delay: float = 0.0  # before the headers
    pause: float = 0.0  # after the first piece of the body (longer than the idle timeout: a stall)
    other_version: bool = False  # this response comes from a node with a newer version
    retry_after: bool = False


HONEST = Act()

acts = st.builds(
    Act,
    status=st.sampled_from([206, 206, 206, 206, 200, 416, 429, 500, 503, 403, 404]),
    # Not 1 byte: a drawn honest cap may apply to every start, and 150 000 requests take too long.
    cap=st.one_of(st.none(), st.sampled_from([1000, 16_384, 40_000])),
    honest_cap=st.booleans(),
    total=st.sampled_from(["exact", "exact", "star", "star", "off"]),
    length=st.sampled_from(["yes", "yes", "no", "short"]),
    delay=st.sampled_from([0.0, 0.0, 0.01, 0.05]),
    pause=st.sampled_from([0.0, 0.0, 0.0, 0.02, 0.4]),
    other_version=st.sampled_from([False, False, False, True]),
    retry_after=st.booleans(),
)


def versions(size: int) -> tuple[bytes, bytes]:
    v1 = bytes((i * 7 + (i >> 8) * 13 + (i >> 16)) % 251 for i in range(size))
    return v1, bytes((b + 1) % 256 for b in v1)  # every byte differs between the versions


def hostile(script: list[Act], size: int) -> tuple[web.RequestHandler, list]:
    objects = versions(size)
    seen: dict[int, int] = {}
    log: list[tuple[int, int, Act]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        rng = request.headers.get("Range", "")
        first, _, last = rng.removeprefix("bytes=").partition("-")
        a = int(first) if rng else 0
        nth = seen[a] = seen.get(a, 0) + 1
        act = script[zlib.crc32(f"{a}|{nth}".encode()) % len(script)] if script and nth <= MISBEHAVE else HONEST
        log.append((a, nth, act))
        await asyncio.sleep(act.delay)
        if act.status in (403, 404, 429, 500, 503):
            return web.Response(status=act.status, text="no",
                                headers={"Retry-After": "0"} if act.retry_after else {})
        data, etag = (objects[1], '"v2"') if act.other_version else (objects[0], '"v1"')
        headers = {"ETag": etag}
        if act.status == 416 or (rng and a >= size):
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        if act.status == 200 or not rng:
            start, end, status = 0, size, 200
        else:
            start, end, status = a, size if not last else min(int(last) + 1, size), 206
            if act.cap is not None and act.honest_cap:
                end = min(end, start + act.cap)
            total = {"exact": str(size), "star": "*", "off": str(size + 7)}[act.total]
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
        body = data[start:end]
        if act.length == "short" and status == 206 and len(body) > 1:
            body = body[:-1]
        cut = act.cap is not None and (status == 200 or not act.honest_cap) and act.cap < len(body)
        resp = web.StreamResponse(status=status, headers=headers)
        if act.length == "no":
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(body)
        await resp.prepare(request)
        sent = body[:act.cap] if cut else body
        await resp.write(sent[:4096])
        await asyncio.sleep(act.pause)
        await resp.write(sent[4096:])
        if cut:
            assert request.transport is not None
            request.transport.close()  # a clean close before the promised end: a truncated body
        return resp

    return handler, log


async def run(script: list[Act], size: int, clen: bool, window: object, chunk: int, unordered: bool) -> None:
    handler, log = hostile(script, size)
    pieces: list[tuple[int, bytes]] = []
    error: BaseException | None = None
    async with serve(handler, path=f"/x?clen={size}" if clen else "/x") as url:
        try:
            async with asyncio.timeout(15), rangestream.open_stream(
                    url, chunk_size=chunk, window=window, retry=RETRY, timeouts=TIMEOUTS) as stream:
                if unordered:
                    async for offset, piece in stream.unordered():
                        pieces.append((offset, piece))
                else:
                    at = 0
                    async for piece in stream:
                        pieces.append((at, piece))
                        at += len(piece)
        except rangestream.StreamError as e:
            error = e
        except TimeoutError:
            raise AssertionError(f"no outcome within 15 s (a hang); requests (start, nth, act): {log[-40:]}") from None
    check(pieces, error, size, log)


def check(pieces: list[tuple[int, bytes]], error: BaseException | None, size: int, log: list) -> None:
    delivered = sum(len(p) for _, p in pieces)
    where = f"requests (start, nth, act): {log[:40]}"
    assert any(all(v[o:o + len(p)] == p for o, p in pieces) for v in versions(size)), \
        f"delivered bytes match no single version of the object; error={error!r}; {where}"
    spans = sorted((o, o + len(p)) for o, p in pieces if p)
    assert all(x[1] <= y[0] for x, y in pairwise(spans)), f"a byte delivered twice; {where}"
    if error is None:
        assert delivered == size, f"finished after {delivered} of {size} bytes without an error; {where}"
    else:
        assert error.offset == delivered, f"{error!r}: offset {error.offset}, delivered {delivered}; {where}"


@settings(max_examples=45, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(script=st.lists(acts, max_size=6),
       size=st.sampled_from([0, 1, 1000, 70_000, 150_001]),
       clen=st.booleans(),
       window=st.sampled_from([1, 2, 3, "auto"]),
       chunk=st.sampled_from([16_384, 50_000, 100_000]),
       unordered=st.booleans())
def test_drawn_hostile_server_exact_object_or_typed_error_after_a_prefix(script, size, clen, window, chunk,
                                                                        unordered):
    asyncio.run(run(script, size, clen, window, chunk, unordered))
