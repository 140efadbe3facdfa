"""Failures a user meets through ``rangestream get``: TLS, proxies, redirect loops, refresh commands.

Each has its documented exit code, a message and hint saying what to do, and never a secret
(URL signatures, proxy passwords) on stderr, not even in ``--debug`` tracebacks.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from pathlib import Path

from aiohttp import web
from test_cli_files import _env, closed_port_url, ranged_handler, run

KB = 1024


# -- TLS -----------------------------------------------------------------------------------------


async def _https_server(payload: bytes, tmp_path: Path) -> tuple[web.AppRunner, str, Path]:
    """A Range-capable HTTPS server on loopback whose certificate comes from a private CA."""
    import trustme

    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    app = web.Application()
    app.router.add_get("/f.bin", ranged_handler(payload))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    return runner, f"https://127.0.0.1:{runner.addresses[0][1]}/f.bin", ca_file


async def test_untrusted_certificate_exits_3_with_a_hint_and_cacert_or_insecure_work(tmp_path):
    payload = os.urandom(300 * KB)
    runner, url, ca_file = await _https_server(payload, tmp_path)
    env = _env()
    env.pop("SSL_CERT_FILE", None)
    env.pop("SSL_CERT_DIR", None)
    fast = ("--retries", "1", "--backoff", "0.01", "--chunk-size", "100K")
    try:
        (rc, out, err), (rc_ca, out_ca, err_ca), (rc_k, out_k, err_k), (rc_env, out_env, err_env), \
            (rc_bad, _, err_bad) = await asyncio.gather(
                run("get", url, "-o", "-", *fast, cwd=tmp_path, env=env),
                run("get", url, "-o", "-", "--cacert", str(ca_file), *fast, cwd=tmp_path, env=env),
                run("get", url, "-o", "-", "-k", *fast, cwd=tmp_path, env=env),
                run("get", url, "-o", "-", *fast, cwd=tmp_path, env={**env, "RANGESTREAM_CACERT": str(ca_file)}),
                run("get", url, "-o", "-", "--cacert", str(tmp_path / "missing.pem"), cwd=tmp_path, env=env))
    finally:
        await runner.cleanup()
    assert rc == 3 and out == b"", err
    assert "--cacert" in err and "--insecure" in err and "Traceback" not in err, err
    assert "invalid URL" not in err and "bad URL" not in err
    assert rc_ca == 0 and out_ca == payload, err_ca
    assert rc_k == 0 and out_k == payload, err_k
    assert rc_env == 0 and out_env == payload, err_env
    assert rc_bad == 2 and "--cacert" in err_bad and "missing.pem" in err_bad, err_bad


# -- proxies and redirects -------------------------------------------------------------------------


async def test_proxy_answering_407_exits_7_without_showing_the_password(tmp_path):
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"p\"\r\n"
                     b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    proxy = f"http://user:pw-secret@127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        rc, out, err = await run("get", closed_port_url(), "-o", "-", "--proxy", proxy, "--retries", "2",
                                 "--backoff", "0.01", cwd=tmp_path)
    finally:
        server.close()
        await server.wait_closed()
    assert rc == 7, err
    assert "407" in err and "proxy" in err.lower() and "Traceback" not in err, err
    assert "pw-secret" not in err and out == b""


async def test_redirect_loop_exits_4_at_once(tmp_path):
    hits = 0

    async def loop_back(request: web.Request) -> web.StreamResponse:
        nonlocal hits
        hits += 1
        raise web.HTTPFound("/loop")

    app = web.Application()
    app.router.add_get("/loop", loop_back)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        rc, _, err = await run("get", f"http://127.0.0.1:{runner.addresses[0][1]}/loop", "-o", "x.bin",
                                 "--retries", "3", "--backoff", "0.01", "--window", "2", cwd=tmp_path)
    finally:
        await runner.cleanup()
    assert rc == 4, err
    assert "redirect" in err and "Traceback" not in err, err
    assert hits <= 21  # one chain of hops, not retried as a transient failure
    assert not (tmp_path / "x.bin").exists()


# -- --refresh-command ------------------------------------------------------------------------------


async def test_refresh_command_text_is_redacted_even_in_debug_tracebacks(origin, tmp_path):
    expired = origin.url(50 * KB, "exp", youtube=True, expire=time.time() - 60)
    secret_line = ("ERROR: cannot fetch https://cdn.example/videoplayback?id=1&sig=SIGSECRET123&itag=18 "
                   "via http://user:pw-secret@127.0.0.1:3128 (token=TOKSECRET9)")
    command = f"echo '{secret_line}' >&2; exit 1"
    results = await asyncio.gather(*(run("get", expired, "-o", "-", "--refresh-command", command, *extra,
                                         cwd=tmp_path) for extra in ((), ("--debug",), ("-v",))))
    for rc, out, err in results:
        assert rc == 4 and out == b"", err
        assert "--refresh-command exited with 1" in err, err
        for secret in ("SIGSECRET123", "pw-secret", "TOKSECRET9"):
            assert secret not in err, (secret, err)
        assert "REDACTED" in err
    assert "Traceback" in results[1][2]  # --debug still shows where it failed


# -- documentation ----------------------------------------------------------------------------------


async def test_help_documents_tls_flags_and_the_proxy_exit_code(tmp_path):
    rc, out, _ = await run("get", "--help", cwd=tmp_path)
    text = " ".join(out.decode().split())
    assert rc == 0
    for needle in ("--cacert FILE", "-k, --insecure", "RANGESTREAM_CACERT",
                   "7 proxy refused (authentication required", "too many redirects",
                   "TLS certificate not trusted", "--window N|auto", "1..64"):
        assert needle in text, needle
