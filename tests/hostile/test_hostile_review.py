"""Engine bugs a cold review reproduced: each server below makes the engine choose between
two of the server's answers, and each test pins the choice that keeps the invariant (every
byte exactly once, or a typed error after a correct prefix). Through the library in order
and ``unordered()``; the two that delivered a wrong object silently also through the CLI."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiohttp import web
from engine_servers import Books, hold, parse_range, payload, ranged
from hostile_support import check_cli, fetch, serve

import rangestream
from rangestream import Retry
from rangestream.cli.exits import EXIT_CHANGED

CAP = 64 * 1024  # a CDN's response cap: every 206 carries at most this many bytes
CHUNK = 100_000
RETRY = Retry(attempts=3, backoff=0.001, cap=0.005, jitter=0)
CLI_ARGS = ("--chunk-size", str(CHUNK), "--window", "2", "--retries", "3", "--backoff", "0.001")


def capped(data: bytes, *, total: str = "*", special=None):
    """206 ``bytes a-b/<total>`` of at most CAP bytes; past the end a 416 ``*/*``.
    ``special(request, a)`` may answer first (None falls through)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        a, b = parse_range(request) or (0, None)
        if special is not None and (answer := await special(request, a)) is not None:
            return answer
        if a >= len(data):
            return web.Response(status=416, headers={"Content-Range": "bytes */*"})
        last = min(len(data) - 1, a + CAP - 1, len(data) - 1 if b is None else b)
        return web.Response(status=206, body=data[a:last + 1],
                            headers={"Content-Range": f"bytes {a}-{last}/{total}"})

    return handler


async def collect(url: str, *, unordered: bool, **options) -> tuple[list[tuple[int, bytes]], Exception | None]:
    """(offset, piece) as delivered, and the StreamError that ended the stream (None: success)."""
    pieces: list[tuple[int, bytes]] = []
    try:
        async with asyncio.timeout(20), rangestream.open_stream(url, retry=RETRY, **options) as s:
            if unordered:
                async for offset, piece in s.unordered():
                    pieces.append((offset, piece))
            else:
                at = 0
                async for piece in s:
                    pieces.append((at, piece))
                    at += len(piece)
    except rangestream.StreamError as e:
        return pieces, e
    return pieces, None


def assert_right_bytes(data: bytes, pieces: list[tuple[int, bytes]], err: Exception | None) -> int:
    """Every delivered piece is the object's bytes at its offset; an error says how many were delivered."""
    assert all(data[o:o + len(p)] == p for o, p in pieces), "bytes delivered at a wrong offset"
    delivered = sum(len(p) for _, p in pieces)
    if err is not None:
        assert err.offset == delivered
    return delivered


# -- 1. HIGH: an empty 206 whose Content-Range names bytes is not the end ----------------------

@pytest.mark.parametrize(("total", "bad_at"), [("*", 0), ("*", CAP), ("200000", 0)])
async def test_an_empty_206_naming_bytes_is_retried_not_taken_as_the_end(tmp_path, total, bad_at):
    # Every other request at ``bad_at`` gets "206, Content-Range: bytes a-b/..., Content-Length: 0"
    # (a proxy answering like a HEAD). It names bytes it does not send: retried, never "the end"
    # (before: 0 or 65 536 of 200 000 bytes and success).
    data = payload(200_000)
    seen = {"n": 0}

    async def empty_once(request, a):
        if a != bad_at:
            return None
        seen["n"] += 1
        if seen["n"] % 2:
            last = min(len(data), a + CAP) - 1
            return web.Response(status=206, body=b"", headers={"Content-Range": f"bytes {a}-{last}/{total}"})
        return None

    async with serve(capped(data, total=total, special=empty_once)) as url:
        for unordered in (False, True):
            assert await fetch(url, unordered=unordered, chunk_size=CHUNK, window=2, retry=RETRY) == data
        await check_cli(url, tmp_path, expected=data, args=CLI_ARGS)
    assert seen["n"] >= 8  # each of the four runs met the empty answer and retried


# -- 2. HIGH: the end learned while a later chunk is in flight -----------------------------------

async def test_an_end_learned_before_a_later_chunk_answered_drops_that_chunk(tmp_path):
    # Unknown total; the request for byte 65 536 gets "416 */*" (the server's word: the object
    # ends there) while the next chunk's request [100 000, ...) waits for its answer. That
    # chunk is dropped and its request closed: exactly 65 536 bytes, never 65 536 bytes then
    # bytes from 100 000 on (before: a 34 464-byte gap, and success).
    data = payload(300_000)
    later: list[bool] = []  # per request at 100 000: True if the client still waited after 2 s

    async def end_at_cap(request, a):
        if a == CAP:
            return web.Response(status=416, headers={"Content-Range": "bytes */*"})
        if a == CHUNK:
            later.append(await hold(request, 2.0))  # answers only if the client still asks
        return None

    async with serve(capped(data, special=end_at_cap)) as url:
        for unordered in (False, True):
            pieces, err = await collect(url, unordered=unordered, chunk_size=CHUNK, window=2)
            assert err is None, repr(err)
            assert assert_right_bytes(data, pieces, err) == CAP
            assert max(o + len(p) for o, p in pieces) == CAP
        await check_cli(url, tmp_path, expected=data[:CAP], args=CLI_ARGS)
    assert later and not any(later), later  # every later request was closed, not answered


async def test_an_end_learned_after_a_later_chunk_read_bytes_past_it_is_a_change(tmp_path):
    # As above, but the "416 */*" for byte 65 536 comes only after the chunk at 100 000 read a
    # whole response (its next request, at 165 536, shows it): the server contradicts itself,
    # ObjectChangedError after the correct prefix (before: the bytes after the gap, and success).
    data = payload(300_000)
    state = {"read_past": asyncio.Event()}

    async def end_after_later_read(request, a):
        if a == CHUNK + CAP:
            state["read_past"].set()
        if a == CAP:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state["read_past"].wait(), 5)
            state["read_past"] = asyncio.Event()  # the next run waits again
            return web.Response(status=416, headers={"Content-Range": "bytes */*"})
        return None

    async with serve(capped(data, special=end_after_later_read)) as url:
        for unordered in (False, True):
            pieces, err = await collect(url, unordered=unordered, chunk_size=CHUNK, window=2,
                                        max_buffer=1_000_000)
            assert isinstance(err, rangestream.ObjectChangedError), repr(err)
            delivered = assert_right_bytes(data, pieces, err)
            if not unordered:
                assert delivered == CAP
        await check_cli(url, tmp_path, exit_code=EXIT_CHANGED, args=(*CLI_ARGS, "--max-buffer", "1000000"))


# -- 3. MEDIUM: a total that appears below bytes already read ------------------------------------

@pytest.mark.parametrize("unordered", [False, True])
async def test_a_total_appearing_below_bytes_already_read_is_a_change(unordered):
    # Unknown total; the chunk at 100 000 reads a whole response (it then asks for 165 536), and
    # only then does the response at 65 536 say "/120000". 120 000 bytes cannot hold what was
    # read: ObjectChangedError (before: 300 000 bytes delivered, success, size 120 000).
    data = payload(300_000)
    read_past = asyncio.Event()

    async def late_small_total(request, a):
        if a == CHUNK + CAP:
            read_past.set()
        if a == CAP:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(read_past.wait(), 5)
            return web.Response(status=206, body=data[CAP:CHUNK],
                                headers={"Content-Range": f"bytes {CAP}-{CHUNK - 1}/120000"})
        return None

    async with serve(capped(data, special=late_small_total)) as url:
        pieces, err = await collect(url, unordered=unordered, chunk_size=CHUNK, window=2, max_buffer=1_000_000)
    assert read_past.is_set()
    assert isinstance(err, rangestream.ObjectChangedError), repr(err)
    assert "120000" in str(err)
    assert_right_bytes(data, pieces, err)


# -- 4. MEDIUM: a validator first seen on a later response is held to ------------------------------

SIZE = 300_000
V1 = payload(SIZE, seed=1)
V2 = payload(SIZE, seed=2)  # another version of the same size


def versions(per_start, if_range: list[str | None]):
    """A 206 server whose body and headers depend on the range start: ``per_start(a) -> (data, headers)``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        a, b = parse_range(request) or (0, None)
        if_range.append(request.headers.get("If-Range"))
        stop = SIZE if b is None else min(b + 1, SIZE)
        data, headers = per_start(a)
        return web.Response(status=206, body=data[a:stop],
                            headers={"Content-Range": f"bytes {a}-{stop - 1}/{SIZE}", **headers})

    return handler


@pytest.mark.parametrize(("name", "first", "second"), [
    ("ETag", '"v1"', '"v2"'),
    ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT", "Tue, 02 Jan 2024 00:00:00 GMT"),
])
async def test_a_validator_first_seen_on_a_later_response_pins_the_version(name, first, second):
    # Chunk 0 comes from an edge node that sends no validator, chunk 1 from one with v1's,
    # chunk 2 from one with v2's (every byte different, same size). The validator is pinned
    # when it first appears (and sent as If-Range from then on): ObjectChangedError after
    # v1's 200 000 bytes (before: v1's first 200 000 bytes then v2's last 100 000, success).
    def per_start(a):
        if a < 100_000:
            return V1, {}
        return (V1, {name: first}) if a < 200_000 else (V2, {name: second})

    for unordered in (False, True):
        if_range: list[str | None] = []
        async with serve(versions(per_start, if_range)) as url:
            pieces, err = await collect(url, unordered=unordered, chunk_size=100_000, window=1)
        assert isinstance(err, rangestream.ObjectChangedError), repr(err)
        assert_right_bytes(V1, pieces, err)
        assert sum(len(p) for _, p in pieces) == 200_000
        assert if_range == [None, None, first]  # pinned from the response that first showed it
        assert "None" not in str(err)


# -- 5. LOW-MEDIUM: what a 416's named total says --------------------------------------------------

async def test_a_416_naming_fewer_bytes_than_were_sent_is_a_change():
    # Unknown total, 200 000 bytes delivered from "/*" answers, then "416 */1000" for byte
    # 200 000: the object cannot have 1000 bytes: ObjectChangedError (before: success with
    # 200 000 bytes). A 416 naming exactly the byte asked is the end, as before.
    data = payload(300_000)

    def end_at(at: int, named: int):
        async def answer(request, a):
            if a >= at:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{named}"})
            return None if a + CAP <= at else web.Response(
                status=206, body=data[a:at], headers={"Content-Range": f"bytes {a}-{at - 1}/*"})
        return answer

    for unordered in (False, True):
        async with serve(capped(data, special=end_at(200_000, 1000))) as url:
            pieces, err = await collect(url, unordered=unordered, chunk_size=1_000_000, window=1)
        assert isinstance(err, rangestream.ObjectChangedError), repr(err)
        assert_right_bytes(data, pieces, err)
        async with serve(capped(data, special=end_at(200_000, 200_000))) as url:
            assert await fetch(url, unordered=unordered, chunk_size=1_000_000, window=1, retry=RETRY) \
                == data[:200_000]


async def test_a_416_naming_another_total_than_the_known_size_is_a_change_at_once():
    # The size is known (300 000); the request for byte 100 000 gets "416 */400000": another
    # version, ObjectChangedError at the first such answer (before: retried into
    # RetriesExhaustedError, as if the byte might come back).
    data = payload(300_000)
    asked: list[int] = []

    async def handler(request):
        a, b = parse_range(request) or (0, None)
        asked.append(a)
        if a >= 100_000:
            return web.Response(status=416, headers={"Content-Range": "bytes */400000"})
        stop = 100_000 if b is None else min(b + 1, 100_000)
        return web.Response(status=206, body=data[a:stop], headers={"Content-Range": f"bytes {a}-{stop - 1}/300000"})

    async with serve(handler) as url:
        for unordered in (False, True):
            asked.clear()
            pieces, err = await collect(url, unordered=unordered, chunk_size=100_000, window=1)
            assert isinstance(err, rangestream.ObjectChangedError), repr(err)
            assert err.total == 400_000
            assert assert_right_bytes(data, pieces, err) == 100_000
            assert asked.count(100_000) == 1  # not retried


# -- 6. LOW: the same version, told differently ------------------------------------------------------

@pytest.mark.parametrize(("name", "first", "later"), [
    ("ETag", 'W/"a"', '"a"'),  # a compressing proxy weakens the tag of the same version
    ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT", "Mon, 01 Jan 2024 00:00:00 -0000"),
])
async def test_the_same_validator_written_differently_is_not_a_change(name, first, later):
    # Before: ObjectChangedError("... ETag None -> None, Last-Modified ... GMT -> ... -0000").
    def per_start(a):
        return V1, {name: first if a == 0 else later}

    for unordered in (False, True):
        async with serve(versions(per_start, [])) as url:
            assert await fetch(url, unordered=unordered, chunk_size=100_000, window=1, retry=RETRY) == V1


async def test_a_changed_last_modified_is_reported_without_an_absent_etag():
    def per_start(a):
        return (V1, {"Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"}) if a == 0 else \
            (V2, {"Last-Modified": "Tue, 02 Jan 2024 00:00:00 GMT"})

    async with serve(versions(per_start, [])) as url:
        pieces, err = await collect(url, unordered=False, chunk_size=100_000, window=1)
    assert isinstance(err, rangestream.ObjectChangedError), repr(err)
    assert "Last-Modified Mon, 01 Jan 2024 00:00:00 GMT -> Tue, 02 Jan 2024 00:00:00 GMT" in str(err)
    assert "ETag" not in str(err)  # before: "ETag None -> None"


# -- 7. LOW: ranges= wholly past the end of an object without clen -----------------------------------

@pytest.mark.parametrize("ranges", [[(100, 200)], [(150, 160)]])
async def test_ranges_wholly_past_the_end_deliver_nothing_without_clen(ranges):
    # The first request gets "416 */100": the object has 100 bytes, none of them asked for,
    # so nothing to deliver, as with clen=100 (before: ObjectChangedError).
    data = payload(100)

    async def handler(request):
        a, b = parse_range(request) or (0, None)
        if a >= len(data):
            return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
        stop = len(data) if b is None else min(b + 1, len(data))
        return web.Response(status=206, body=data[a:stop],
                            headers={"Content-Range": f"bytes {a}-{stop - 1}/{len(data)}"})

    async with serve(handler) as url:
        for unordered in (False, True):
            assert await fetch(url, unordered=unordered, chunk_size=2, window=3, ranges=ranges, retry=RETRY) == b""


# -- Second review ---------------------------------------------------------------------------------
# -- 8. HIGH: a total that appears after the server said where the object ends -----------------------

def end_and_total(data: bytes, order: str, how: str, applied):
    """Unknown total ("/*"), capped 206s. The open-ended chunk's request at CHUNK gets "416 */*"
    (the object ends there); the probe's second request, at CAP, gets a total: a 206
    ``.../<len>`` or (``how="200"``) a 200 with the whole object. ``order`` says which answer
    goes first: the other waits for ``await applied(start of the chunk it went to)``."""
    first, second = (CHUNK, CAP) if order == "end first" else (CAP, CHUNK)

    async def special(request, a):
        if a not in (CAP, CHUNK):
            return None
        if a == second:
            await applied(0 if first == CAP else CHUNK)  # CAP is the probe's second request
        if a == CHUNK:
            return web.Response(status=416, headers={"Content-Range": "bytes */*"})
        if how == "200":
            return web.Response(status=200, body=data)  # Range ignored: the whole object, clen = total
        return web.Response(status=206, body=data[CAP:CHUNK],
                            headers={"Content-Range": f"bytes {CAP}-{CHUNK - 1}/{len(data)}"})

    return capped(data, special=special)


@pytest.mark.parametrize(("order", "how"), [("end first", "206"), ("end first", "200"), ("total first", "206")])
@pytest.mark.parametrize("unordered", [False, True])
async def test_a_total_and_an_end_that_disagree_are_a_change(order, how, unordered):
    # "416 */*" for byte 100 000, then "/300000" (or a 200 of 300 000 bytes) for byte 65 536:
    # the two answers cannot both hold. ObjectChangedError after a correct prefix (before:
    # success with 100 000 bytes while stream.size said 300 000). Total first, then the end
    # at another byte: a change too.
    data = payload(300_000)
    state: dict = {}

    async def applied(start: int) -> None:
        # The client applied the first answer: the chunk it went to has ended (bounded polling).
        for _ in range(250):
            s = state.get("stream")
            if s is not None and any(t.start == start and t.done is not None for t in s.stats.traces):
                return
            await asyncio.sleep(0.02)

    pieces: list[tuple[int, bytes]] = []
    err: Exception | None = None
    async with serve(end_and_total(data, order, how, applied)) as url:
        try:
            async with asyncio.timeout(20), rangestream.open_stream(url, chunk_size=CHUNK, window=2,
                                                                    retry=RETRY) as s:
                state["stream"] = s
                if unordered:
                    async for item in s.unordered():
                        pieces.append(item)
                else:
                    async for piece in s:
                        pieces.append((sum(len(p) for _, p in pieces), piece))
        except rangestream.StreamError as e:
            err = e
    assert isinstance(err, rangestream.ObjectChangedError), (repr(err), sum(len(p) for _, p in pieces))
    assert_right_bytes(data, pieces, err)
    if order == "end first":
        assert "300000" in str(err) and "100000" in str(err), str(err)
    else:
        assert "HTTP 416" in str(err), str(err)  # the end came for a byte the total says exists


async def test_a_total_after_the_end_fails_the_cli(tmp_path):
    # As above through `get`: exit EXIT_CHANGED and no final file (before: exit 0 and a
    # 100 000-byte file for a 300 000-byte object). The CLI runs in another process, so the
    # server gives it 0.3 s to apply the end; were the total applied first, that is a change too.
    data = payload(300_000)
    sent = {"end": asyncio.Event()}

    async def applied(start: int) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sent["end"].wait(), 5)
        sent["end"] = asyncio.Event()  # the next run waits again
        await asyncio.sleep(0.3)

    handler = end_and_total(data, "end first", "206", applied)

    async def marking(request: web.Request) -> web.StreamResponse:
        resp = await handler(request)
        if resp.status == 416:
            sent["end"].set()
        return resp

    async with serve(marking) as url:
        await check_cli(url, tmp_path, exit_code=EXIT_CHANGED, args=CLI_ARGS)


# -- 9. MEDIUM: a 200 to If-Range that does not show the pinned validator ------------------------------

@pytest.mark.parametrize(("name", "pinned"), [("ETag", '"v1"'), ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")])
@pytest.mark.parametrize("unordered", [False, True])
async def test_a_200_to_if_range_without_the_pinned_validator_is_a_change(name, pinned, unordered):
    # Chunk 0 shows v1's validator, which is then sent as If-Range; the object changes (same
    # size) and an edge that strips validators relays the origin's answer: a 200 with the whole
    # new version and no validator. ObjectChangedError after v1's 100 000 bytes (before: v1's
    # first 100 000 bytes then v2's last 200 000, success).
    if_range: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        a, b = parse_range(request) or (0, None)
        if_range.append(request.headers.get("If-Range"))
        stop = SIZE if b is None else min(b + 1, SIZE)
        if a < 100_000:
            return web.Response(status=206, body=V1[a:stop],
                                headers={"Content-Range": f"bytes {a}-{stop - 1}/{SIZE}", name: pinned})
        if request.headers.get("If-Range") == pinned:
            return web.Response(status=200, body=V2)  # If-Range failed: the new version, validator stripped
        return web.Response(status=206, body=V2[a:stop], headers={"Content-Range": f"bytes {a}-{stop - 1}/{SIZE}"})

    async with serve(handler) as url:
        pieces, err = await collect(url, unordered=unordered, chunk_size=100_000, window=1)
    assert if_range[:2] == [None, pinned]
    assert isinstance(err, rangestream.ObjectChangedError), repr(err)
    assert assert_right_bytes(V1, pieces, err) == 100_000


# -- 10. LOW: a slow in-order consumer shrinks the auto window with small chunks ----------------------

@pytest.mark.parametrize("unordered", [False, True])
async def test_a_slow_consumer_shrinks_the_auto_window_with_small_chunks(unordered):
    # 256 KiB chunks from a fast loopback server into a consumer taking about 8 MiB/s: the
    # consumer is the limit, so the auto window (ceiling 8) ends well below its ceiling and
    # max_buffer with it (before, in order: the head never held the 1 MiB backlog that marks
    # the consumer as the limit, so the window stayed at its ceiling).
    mib = 1 << 20
    data = payload(10 * mib)
    async with serve(ranged(data, Books())) as url, \
            rangestream.open_stream(url, chunk_size=256 << 10, window="auto", retry=RETRY) as s:
        got = 0
        async with asyncio.timeout(20):
            async for item in (s.unordered() if unordered else s):
                piece = item[1] if unordered else item
                got += len(piece)
                await asyncio.sleep(len(piece) / (8 * mib))
        window, timeline = s.window, s.stats.timeline
    assert got == len(data)
    assert window <= 4, [w for _, _, w in timeline]  # the ceiling is 8
