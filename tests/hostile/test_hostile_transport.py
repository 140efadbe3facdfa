"""Hostile servers for the transport: slow headers, redirect loops, untrusted TLS, a proxy
that wants credentials (issue 9, items 6, 8 and 12).

Each is checked through the library on both built-in transports (the ``transport``
fixture: aiohttp, then curl_cffi) and through the CLI: the bytes are exact, or the
error is the documented one, raised at once (not retried).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from hostile_support import check_cli, cli, fetch, serve

import rangestream
from rangestream import Retry, Timeouts

PAYLOAD = bytes(range(256)) * 256  # 64 KiB
NO_RETRY = Retry(attempts=0, backoff=0.001, jitter=0)
FEW_RETRIES = Retry(attempts=3, backoff=0.001, cap=0.01, jitter=0)


def ranged(request: web.Request, payload: bytes = PAYLOAD) -> web.Response:
    """206 for the requested range (or 200 for the whole object)."""
    size = len(payload)
    rng = request.headers.get("Range")
    if rng is None:
        return web.Response(body=payload)
    a, _, b = rng.removeprefix("bytes=").partition("-")
    start, stop = int(a), min(int(b) + 1 if b else size, size)
    return web.Response(status=206, body=payload[start:stop],
                        headers={"Content-Range": f"bytes {start}-{stop - 1}/{size}"})


async def failing_stream(url: str, **options) -> tuple[BaseException, rangestream.Stream]:
    """Open ``url``, read it to the end, and return the error it fails with (and the stream)."""
    stream = rangestream.open_stream(url, **options)
    with pytest.raises(rangestream.RangestreamError) as info:
        async with stream:
            async for _ in stream:
                pass
    return info.value, stream


# -- item 6: the idle timeout starts with the body ------------------------------------------

def slow_headers(delay: float, release: asyncio.Event, log: list[float]):
    async def handle(request: web.Request) -> web.StreamResponse:
        log.append(time.monotonic())
        try:
            await asyncio.wait_for(release.wait(), delay)
        except TimeoutError:
            pass
        return ranged(request)
    return handle


async def test_headers_after_a_second_succeed_with_a_half_second_idle_timeout(transport):
    release, log = asyncio.Event(), []
    async with serve(slow_headers(1.0, release, log)) as url:
        data = await fetch(url, chunk_size=len(PAYLOAD), window=1, retry=NO_RETRY,
                           timeouts=Timeouts(request=3, idle=0.5))
    assert data == PAYLOAD
    assert len(log) == 1  # in time at the first request, not after retries


async def test_slow_headers_fail_at_the_request_timeout_not_the_idle_timeout(transport):
    release, log = asyncio.Event(), []
    async with serve(slow_headers(30.0, release, log)) as url:
        started = time.monotonic()
        err, _ = await failing_stream(url, window=1, retry=NO_RETRY, timeouts=Timeouts(request=1.5, idle=0.3))
        elapsed = time.monotonic() - started
        release.set()
    assert isinstance(err, rangestream.RetriesExhaustedError), err
    assert "no response headers within the request timeout" in str(err)
    # Not at the idle timeout (0.3 s); the upper bound only guards against a hang.
    assert 1.4 <= elapsed < 10, elapsed
    assert len(log) == 1


async def test_cli_headers_after_a_second_with_a_half_second_idle_timeout(tmp_path):
    release, log = asyncio.Event(), []
    async with serve(slow_headers(1.0, release, log)) as url:
        await check_cli(url, tmp_path, expected=PAYLOAD,
                        args=("--timeout", "3", "--idle-timeout", "0.5", "--retries", "0", "--window", "1"))
    assert len(log) == 2  # one request per run


# -- item 8: a redirect loop is terminal ----------------------------------------------------

def redirect_loop(log: list[str]):
    async def handle(request: web.Request) -> web.StreamResponse:
        log.append(request.path_qs)
        n = int(request.query.get("n", "0"))
        # A loop that looks new at each hop (as a CDN adding a token would), then back to the start.
        raise web.HTTPFound(f"/x?n={(n + 1) % 5}&sig=LOOPSECRET{n}")
    return handle


async def test_redirect_loop_is_terminal_after_the_redirect_limit(transport):
    log: list[str] = []
    async with serve(redirect_loop(log)) as url:
        err, _ = await failing_stream(url, retry=FEW_RETRIES)
    assert type(err) is rangestream.TooManyRedirectsError, repr(err)
    assert len(log) == 11  # the first request and 10 redirects followed: never retried
    assert "too many redirects" in str(err) and "LOOPSECRET" not in str(err)


async def test_cli_redirect_loop_exits_4_with_a_clear_message(tmp_path):
    log: list[str] = []
    async with serve(redirect_loop(log)) as url:
        # --window 2: one request at a time before the size is known (auto asks a few at once,
        # each following the loop), so the count shows that nothing is retried.
        args = ("--retries", "3", "--backoff", "0.01", "--window", "2")
        await check_cli(url, tmp_path, exit_code=4, args=args)
        rc, _, err = await cli("get", url, "-o", "-", *args)
    assert rc == 4 and "too many redirects" in err and "LOOPSECRET" not in err, err
    assert len(log) == 3 * 11  # each run: 11 requests, no retry


# -- item 12: TLS ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


@asynccontextmanager
async def serve_tls(ca: trustme.CA, log: list[str]) -> AsyncIterator[str]:
    """An HTTPS origin on 127.0.0.1 with a certificate issued by ``ca`` (unknown to the system)."""
    async def handle(request: web.Request) -> web.StreamResponse:
        log.append(request.path_qs)
        return ranged(request)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    app = web.Application()
    app.router.add_get("/x", handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}/x"
    finally:
        await runner.cleanup()


async def test_untrusted_certificate_is_a_tls_error_at_once(transport, tls_ca):
    ca, _ = tls_ca
    log: list[str] = []
    async with serve_tls(ca, log) as url:
        err, stream = await failing_stream(url, retry=FEW_RETRIES)
    assert type(err) is rangestream.TLSError, repr(err)
    assert stream.stats.requests == 1 and err.attempts == 1  # not retried
    text = str(err)
    assert "certificate" in text and "invalid URL" not in text
    for hint in ("--cacert FILE", "SSL_CERT_FILE", "--insecure"):
        assert hint in text, text
    assert not log  # no request got through


async def test_cacert_and_insecure_give_the_exact_bytes(transport, tls_ca):
    ca, ca_file = tls_ca
    log: list[str] = []
    async with serve_tls(ca, log) as url:
        trusted = await fetch(url, cacert=ca_file, chunk_size=20_000, window=3, retry=NO_RETRY)
        async with rangestream.Client(insecure=True) as client, \
                client.open_stream(url, chunk_size=20_000, window=3, retry=NO_RETRY) as stream:
            unverified = b"".join([p async for p in stream])
    assert trusted == PAYLOAD and unverified == PAYLOAD
    assert len(log) == 2 * 4


def test_unusable_cacert_is_a_clear_error(tmp_path):
    bad = tmp_path / "not-pem.txt"
    bad.write_text("hello")
    for path in (bad, tmp_path / "missing.pem"):
        with pytest.raises(rangestream.RangestreamError, match="cannot use the CA file"):
            rangestream.Client(cacert=path)


async def test_cli_tls_untrusted_then_cacert_then_insecure(tls_ca, tmp_path, monkeypatch):
    ca, ca_file = tls_ca
    log: list[str] = []
    async with serve_tls(ca, log) as url:
        await check_cli(url, tmp_path, exit_code=3, args=("--retries", "2"))
        assert not log
        rc, _, err = await cli("get", url, "-o", "-", "--retries", "2")
        assert rc == 3 and "--cacert" in err and "invalid URL" not in err, err
        for name, args in (("a", ("--cacert", str(ca_file))), ("b", ("--insecure",))):
            (tmp_path / name).mkdir()
            await check_cli(url, tmp_path / name, expected=PAYLOAD, args=args)
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the hint's third way (the subprocess inherits it)
        (tmp_path / "c").mkdir()
        await check_cli(url, tmp_path / "c", expected=PAYLOAD)
    # Each successful run: the first request, and the chunks its auto window asked with it before
    # the size was known (past the end of this small object: dropped, maybe before being sent).
    assert 3 * 2 <= len(log) <= 3 * 2 * 4


# -- item 12: a proxy answering 407 -----------------------------------------------------------

PROXY_SECRET = "PROXYSECRET77"


@asynccontextmanager
async def proxy_407(log: list[str]) -> AsyncIterator[int]:
    """A forward proxy on loopback that answers every request (CONNECT or plain) with 407."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            log.append(head.split(b"\r\n", 1)[0].decode())
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                         b"Proxy-Authenticate: Basic realm=\"hostile\"\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("scheme", ["http", "https"])  # plain request / CONNECT tunnel
async def test_proxy_407_is_a_proxy_error_without_its_credentials(transport, scheme):
    log: list[str] = []
    async with proxy_407(log) as port:
        proxy = f"http://user:{PROXY_SECRET}@127.0.0.1:{port}"
        err, stream = await failing_stream(f"{scheme}://origin.invalid/x", proxy=proxy, retry=FEW_RETRIES)
    assert type(err) is rangestream.ProxyError and err.status == 407, repr(err)
    assert len(log) == 1 and stream.stats.requests == 1  # not retried
    assert log[0].startswith("CONNECT " if scheme == "https" else "GET http://origin.invalid/x")
    shown = "".join(traceback.format_exception(err))
    assert "407" in str(err) and "refused the credentials" in str(err)
    assert PROXY_SECRET not in shown and "user:" not in shown


async def test_cli_proxy_407(tmp_path):
    log: list[str] = []
    async with proxy_407(log) as port:
        rc, _, err = await cli("get", "http://origin.invalid/x", "-o", str(tmp_path / "f"),
                               "--proxy", f"http://user:{PROXY_SECRET}@127.0.0.1:{port}", "--retries", "3",
                               "--window", "2")  # one request at a time before the size is known
    assert rc == 7 and "407" in err and PROXY_SECRET not in err, err
    assert len(log) == 1 and not (tmp_path / "f").exists()
