"""Http1Transport, the default for direct connections, against raw servers on loopback that
frame their responses the ways real servers (and broken ones) do. The engine-level suites
(tests/hostile, test_transport.py) run on it too, through the ``transport`` fixture."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

import rangestream
from rangestream.errors import RetriesExhaustedError, StreamError
from rangestream.testing import FAST_RETRY

DATA = bytes(range(256)) * 4096  # 1 MiB
Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int, int], Awaitable[bool]]


@asynccontextmanager
async def raw_server(reply: Reply) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A server reading Range GETs on kept-alive connections and answering each with ``reply``
    (reader, writer, start, stop); ``reply`` returns False to close the connection. Yields
    the URL and counters (connections, requests, and each request's head)."""
    counts: dict = {"connections": 0, "requests": 0, "heads": []}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counts["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                counts["requests"] += 1
                counts["heads"].append(head)
                start, stop = 0, len(DATA)
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("range: bytes="):
                        a, _, b = line.split("=", 1)[1].partition("-")
                        start, stop = int(a), min(int(b) + 1 if b else len(DATA), len(DATA))
                if not await reply(reader, writer, start, stop):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/x", counts
    finally:
        server.close()


def head_206(start: int, stop: int, extra: str = "", length: bool = True) -> bytes:
    lines = ["HTTP/1.1 206 Partial Content", f"Content-Range: bytes {start}-{stop - 1}/{len(DATA)}"]
    if length:
        lines.append(f"Content-Length: {stop - start}")
    return ("\r\n".join(lines) + extra + "\r\n\r\n").encode()


async def plain_206(reader, writer, start: int, stop: int) -> bool:
    writer.write(head_206(start, stop) + DATA[start:stop])
    await writer.drain()
    return True


async def plain_206_then_close(reader, writer, start: int, stop: int) -> bool:
    await plain_206(reader, writer, start, stop)
    return False  # without saying Connection: close


async def fetch(url: str, **options: object) -> bytes:
    opts = {"chunk_size": 256 << 10, "window": 2, "retry": FAST_RETRY, **options}
    async with rangestream.open_stream(url, **opts) as stream:  # type: ignore[arg-type]
        return b"".join([piece async for piece in stream])


async def test_a_response_split_at_every_byte_is_read_exactly() -> None:
    async def reply(reader, writer, start, stop):
        for b in head_206(start, stop) + DATA[start:stop][:64]:
            writer.write(bytes([b]))
            await writer.drain()
        writer.write(DATA[start + 64:stop])
        await writer.drain()
        return True

    async with raw_server(reply) as (url, _):
        assert await fetch(url, chunk_size=100_000) == DATA


async def test_chunked_206_with_extensions_and_trailers_is_decoded() -> None:
    async def reply(reader, writer, start, stop):
        writer.write(head_206(start, stop, "\r\nTransfer-Encoding: chunked", length=False))
        body = DATA[start:stop]
        for i in range(0, len(body), 70_000):
            part = body[i:i + 70_000]
            writer.write(f"{len(part):x};note=1\r\n".encode() + part + b"\r\n")
        writer.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        await writer.drain()
        return True

    async with raw_server(reply) as (url, counts):
        assert await fetch(url) == DATA
    assert counts["connections"] <= 2, "a complete chunked body leaves its connection reusable"


async def test_kept_alive_connections_are_reused() -> None:
    async with raw_server(plain_206) as (url, counts):
        assert await fetch(url, chunk_size=64 << 10) == DATA
    assert counts["requests"] == 16
    assert counts["connections"] <= 3, counts


async def test_a_connection_closed_while_idle_is_replaced_without_a_retry() -> None:
    """A server that answers once per connection without saying ``Connection: close`` (as
    servers whose keep-alive timer fires between requests): each next request finds its
    kept-alive connection closed and goes again on a new one, not charged as a retry."""
    async with raw_server(plain_206_then_close) as (url, counts):
        async with rangestream.open_stream(url, chunk_size=128 << 10, window=1,
                                           retry=rangestream.Retry(attempts=0)) as stream:
            assert b"".join([p async for p in stream]) == DATA
            assert stream.stats.retries == 0
    assert counts["requests"] == 8


@pytest.mark.parametrize("framing", [
    "\r\nTransfer-Encoding: chunked\r\nContent-Length: 10",
    "\r\nContent-Length: 7",
    "\r\nContent-Length: 1x",
])
async def test_ambiguous_framing_is_refused_never_read(framing: str) -> None:
    """Both Transfer-Encoding and Content-Length, or two different lengths: the body's end is
    ambiguous (request smuggling relies on it), so the response is refused, never read."""
    async def reply(reader, writer, start, stop):
        writer.write(head_206(start, stop, framing) + DATA[start:stop])
        await writer.drain()
        return False

    async with raw_server(reply) as (url, _):
        with pytest.raises(RetriesExhaustedError, match="Content-Length"):
            await fetch(url)


async def test_extra_bytes_after_a_body_never_reach_the_next_response() -> None:
    """Garbage after a Content-Length body must not be read as the next response's start."""
    async def reply(reader, writer, start, stop):
        fake = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-3/4\r\nContent-Length: 4\r\n\r\nEVIL"
        writer.write(head_206(start, stop) + DATA[start:stop] + fake)
        await writer.drain()
        return True

    async with raw_server(reply) as (url, _):
        assert await fetch(url, chunk_size=64 << 10, window=1) == DATA


async def test_informational_responses_before_the_answer_are_skipped() -> None:
    async def reply(reader, writer, start, stop):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        writer.write(head_206(start, stop) + DATA[start:stop])
        await writer.drain()
        return True

    async with raw_server(reply) as (url, _):
        assert await fetch(url) == DATA


async def test_header_values_with_line_breaks_are_refused_before_sending() -> None:
    async def reply(reader, writer, start, stop):
        raise AssertionError("no request may reach the server")

    async with raw_server(reply) as (url, counts):
        with pytest.raises(StreamError, match="invalid header"):
            await fetch(url, headers={"X-A": "1\r\nX-Injected: yes"})
    assert counts["requests"] == 0


async def test_connections_per_host_never_exceed_the_limit() -> None:
    active, peak = 0, 0

    async def reply(reader, writer, start, stop):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        writer.write(head_206(start, stop) + DATA[start:stop])
        await writer.drain()
        active -= 1
        return True

    async with raw_server(reply) as (url, counts):
        async with rangestream.Client(limit_per_host=2) as client:
            async with client.open_stream(url, chunk_size=64 << 10, window=6, retry=FAST_RETRY) as stream:
                assert b"".join([p async for p in stream]) == DATA
    assert peak <= 2 and counts["connections"] <= 2, (peak, counts)


def test_a_direct_download_through_the_cli_never_imports_aiohttp(tmp_path) -> None:
    """The CLI's direct download path runs without aiohttp (its import is ~0.15 s of start-up):
    the real `get -o FILE` code against the emulated CDN, in a fresh interpreter."""
    origin = subprocess.Popen([sys.executable, "-m", "rangestream.testing.origin", "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert origin.stdout is not None
        base = origin.stdout.readline().strip().removeprefix("listening on ")
        out = tmp_path / "obj.bin"
        probe = ("import sys, json\nfrom rangestream.cli import main\n"
                 f"rc = main(['get', '{base}/data/obj/3000000.bin', '-o', {str(out)!r}, '-q'])\n"
                 "print(json.dumps([rc, sorted(m for m in sys.modules if m.split('.')[0] in "
                 "('aiohttp', 'yarl', 'multidict'))]))\n")
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
        rc, loaded = json.loads(done.stdout.strip().splitlines()[-1])
        assert rc == 0, done.stderr
        assert out.stat().st_size == 3_000_000
        assert loaded == [], f"the direct download imported {loaded[:5]}"
    finally:
        origin.terminate()
        origin.wait(10)


async def test_http1_transport_closes_every_connection_on_aclose() -> None:
    from rangestream.transports import Http1Transport

    async with raw_server(plain_206) as (url, _):
        transport = Http1Transport()
        resp = await transport.request("GET", url, {"Range": "bytes=0-99"}, connect_timeout=5, idle_timeout=5)
        assert resp.status == 206 and await resp.read_piece() == DATA[:100]
        resp.close()
        await transport.aclose()
        assert transport._pool is not None and not transport._pool._live


async def test_a_host_name_is_looked_up_once_for_a_window_of_connections(monkeypatch) -> None:
    """``localhost`` for eight connections in a row: one name lookup, the answer kept for the
    others (aiohttp's connector kept lookups too; a window opens several connections at once)."""
    loop = asyncio.get_running_loop()
    lookups: list[str] = []
    real = loop.getaddrinfo

    async def counted(host, *args, **kwargs):  # observes the loop's resolver, answers as it does
        lookups.append(host)
        return await real(host, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", counted)
    async with raw_server(plain_206_then_close) as (url, counts):  # a new connection per request
        assert await fetch(url.replace("127.0.0.1", "localhost"), chunk_size=128 << 10, window=1) == DATA
    assert counts["connections"] == 8
    assert lookups == ["localhost"]


# -- interoperability found by a review: each behaves as aiohttp (the previous default) did ----

@pytest.mark.parametrize("shape", ["bare LF", "folded header", "blank line first"])
async def test_heads_in_the_forms_rfc_9112_lets_a_client_accept_are_read(shape: str) -> None:
    """Bare LF line ends, an obs-fold continuation and a blank line before the status line: read
    as RFC 9112 (2.2, 5.2) allows; before, a bare-LF head waited out the request timeout."""
    def shaped(head: bytes) -> bytes:
        if shape == "bare LF":
            return head.replace(b"\r\n", b"\n")
        if shape == "folded header":
            return head[:-2] + b"X-Folded: a\r\n b\r\n\r\n"
        return b"\r\n" + head

    async def reply(reader, writer, start, stop):
        writer.write(shaped(head_206(start, stop)) + DATA[start:stop])
        await writer.drain()
        return True

    async with raw_server(reply) as (url, _):
        timeouts = rangestream.Timeouts(request=2, idle=2, prefetch=2)
        assert await fetch(url, timeouts=timeouts) == DATA


async def test_the_callers_host_header_chooses_the_virtual_host() -> None:
    """``-H 'Host: NAME'`` reaches a virtual host by address (as curl and aiohttp send it);
    before, it was dropped and the default host's object came back with success."""
    other = bytes(reversed(DATA))

    async def reply(reader, writer, start, stop):
        wanted = b"\r\nHost: cdn.example\r\n" in counts["heads"][-1]
        writer.write(head_206(start, stop) + (other if wanted else DATA)[start:stop])
        await writer.drain()
        return True

    async with raw_server(reply) as (url, counts):
        assert await fetch(url, headers={"Host": "cdn.example"}) == other


async def test_a_utf8_redirect_location_is_escaped_once() -> None:
    async def reply(reader, writer, start, stop):
        line = counts["heads"][-1].split(b"\r\n", 1)[0]
        if line.startswith(b"GET /%C3%BC.bin "):
            writer.write(head_206(start, stop) + DATA[start:stop])
        elif line.startswith(b"GET /x "):
            writer.write("HTTP/1.1 302 Found\r\nLocation: /ü.bin\r\nContent-Length: 0\r\n\r\n".encode())
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return True

    async with raw_server(reply) as (url, counts):
        assert await fetch(url) == DATA


async def test_credentials_in_the_url_are_sent_as_basic_auth() -> None:
    async def reply(reader, writer, start, stop):
        if b"\r\nAuthorization: Basic dTpwIHc=\r\n" not in counts["heads"][-1]:  # u:p w
            writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
        else:
            writer.write(head_206(start, stop) + DATA[start:stop])
        await writer.drain()
        return True

    async with raw_server(reply) as (url, counts):
        assert await fetch(url.replace("http://", "http://u:p%20w@")) == DATA


async def test_a_cookie_set_by_a_redirect_goes_with_the_next_request() -> None:
    async def reply(reader, writer, start, stop):
        head = counts["heads"][-1]
        if head.startswith(b"GET /final ") and b"sess=abc" in head:
            writer.write(head_206(start, stop) + DATA[start:stop])
        elif head.startswith(b"GET /final "):
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 302 Found\r\nSet-Cookie: sess=abc; Path=/\r\nLocation: /final\r\n"
                         b"Content-Length: 0\r\n\r\n")
        await writer.drain()
        return True

    async with raw_server(reply) as (url, counts):
        assert await fetch(url.replace("127.0.0.1", "localhost")) == DATA


async def test_non_ascii_header_values_go_as_utf8() -> None:
    async with raw_server(plain_206) as (url, counts):
        assert await fetch(url, headers={"X-Name": "Zoë €"}) == DATA
    assert "X-Name: Zoë €".encode() in counts["heads"][0]


@pytest.mark.parametrize("host", ["a..b", "x" * 64 + ".example"])
async def test_a_host_name_with_a_bad_label_is_an_invalid_url_not_a_crash(host: str) -> None:
    with pytest.raises(StreamError, match="bad host name"):
        await fetch(f"http://{host}/x")


async def test_https_keep_alive_download_with_a_slow_consumer_is_byte_exact():
    # Over TLS the connection reads into its own buffer (asyncio's buffered path): many reads
    # per chunk, reading paused and resumed behind a consumer that holds back, connections
    # reused for later chunks, every byte in order.
    from rangestream.testing.origin import Origin, Profile

    size = 6 * (1 << 20) + 12_345
    async with Origin(Profile(), tls=True) as origin:
        async with rangestream.Client(cacert=origin.ca_path) as client:
            out = bytearray()
            async with client.open_stream(origin.url(size, "tls-ka"), chunk_size=1 << 20, window=3,
                                          retry=FAST_RETRY) as stream:
                async for piece in stream:
                    out += piece
                    await asyncio.sleep(0.002)  # a consumer slower than loopback TLS
        assert bytes(out) == origin.content("tls-ka", size)
        peers = {r.peer for r in origin.log}
    assert len(origin.log) >= 7 and len(peers) < len(origin.log)  # some connection carried several chunks
