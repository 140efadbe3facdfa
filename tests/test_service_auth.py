"""Who may ask: signed links (HMAC over the endpoint, every parameter and an expiry),
the bearer token beside them, `rangestream sign`, the Host check against DNS rebinding
on loopback, and cross-site browser requests refused on API endpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from service_support import SRC, q, serve

pytestmark = pytest.mark.timeout(20)

KEY = "k3y-for-tests"


def signed(path: str, params: list[tuple[str, str]], expires: float = 60, key: str = KEY) -> str:
    from rangestream.service import sign

    return f"{path}?{sign(key, path, params, expires=expires)}"


async def test_signed_links_valid_altered_expired_unsigned(origin):
    url = origin.url(5000, "sig", youtube=True)
    other = origin.url(5000, "other", youtube=True)
    async with serve(signing_key=KEY, token="op-token") as client:
        link = signed("/stream", [("url", url)])
        resp = await client.get(link)
        assert resp.status == 200 and await resp.read() == origin.content("sig", 5000)
        # unsigned: 401
        resp = await client.get(f"/stream?url={q(url)}")
        assert resp.status == 401 and "WWW-Authenticate" in resp.headers
        # altered: another URL, an extra parameter, a later expiry, another endpoint, another key
        parts = dict(parse_qsl(urlsplit(link).query))
        for changed in ({**parts, "url": other}, {**parts, "extra": "1"},
                        {**parts, "exp": str(int(parts["exp"]) + 3600)}, {**parts, "sig": parts["sig"][:-2] + "AA"}):
            resp = await client.get(f"/stream?{urlencode(changed)}")
            assert resp.status == 403, changed
        resp = await client.get(signed("/mux", [("url", url)]).replace("/mux", "/stream", 1))
        assert resp.status == 403
        resp = await client.get(signed("/stream", [("url", url)], key="another key"))
        assert resp.status == 403
        # expired: 403
        resp = await client.get(signed("/stream", [("url", url)], expires=-5))
        assert resp.status == 403 and "expired" in (await resp.json())["error"]
        # the operators' bearer token still works
        resp = await client.get(f"/stream?url={q(url)}", headers={"Authorization": "Bearer op-token"})
        assert resp.status == 200
        # /mux links cover video, audio and format
        mux = signed("/mux", [("video", url), ("audio", other), ("format", "mkv")])
        resp = await client.get(mux.replace("format=mkv", "format=mp4"))
        assert resp.status == 403
    # one request upstream per accepted link (200, bearer), none for a refused one
    assert origin.request_count == 2


async def test_signing_key_alone_leaves_healthz_open(origin):
    async with serve(signing_key=KEY) as client:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get(f"/mux?video={q(origin.url(9))}&audio={q(origin.url(9))}")).status == 401
    assert origin.request_count == 0


def test_sign_command_prints_a_link_the_service_accepts():
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-m", "rangestream", "sign", "https://cdn.example/v.mp4?sig=s3",
                          "--key", KEY, "--base", "http://127.0.0.1:8080", "--expires", "120"],
                         check=False, capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    link = out.stdout.strip().splitlines()[-1]
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "http://127.0.0.1:8080/stream"
    from rangestream.service import verify

    pairs = parse_qsl(parts.query, keep_blank_values=True)
    assert dict(pairs)["url"] == "https://cdn.example/v.mp4?sig=s3"
    assert verify(KEY, "/stream", pairs) == "valid"
    assert 100 < int(dict(pairs)["exp"]) - time.time() <= 121
    out = subprocess.run([sys.executable, "-m", "rangestream", "sign", "--video", "http://a/v", "--audio",
                          "http://a/a", "--key", KEY, "--base", "http://h:1"],
                         check=False, capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0 and "/mux?video=" in out.stdout.splitlines()[-1]
    out = subprocess.run([sys.executable, "-m", "rangestream", "sign", "http://a/v", "--base", "http://h:1"],
                         check=False, capture_output=True, text=True, timeout=30,
                         env={**env, "RANGESTREAM_SIGNING_KEY": ""})
    assert out.returncode == 2 and "--key" in out.stderr and "Traceback" not in out.stderr


async def test_host_header_must_be_loopback_or_public_host(origin):
    url = q(origin.url(1000, "host", youtube=True))
    async with serve(public_hosts=("media.example",)) as client:
        for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example", "10.0.0.1"):
            resp = await client.get(f"/stream?url={url}", headers={"Host": host})
            assert resp.status == 403, host
            assert "Host" in (await resp.json())["error"]
        assert origin.request_count == 0
        for host in ("localhost", "localhost:1234", "127.0.0.1", "[::1]:80", "media.example:443", "app.localhost"):
            resp = await client.get(f"/stream?url={url}", headers={"Host": host})
            assert resp.status == 200, host
    async with serve(loopback_only=False) as client:  # bound elsewhere: any Host
        resp = await client.get(f"/stream?url={url}", headers={"Host": "media.example"})
        assert resp.status == 200


async def test_cross_site_requests_refused_on_api_endpoints(origin):
    url = origin.url(1000, "xs", youtube=True)
    async with serve(signing_key=KEY) as client:
        for site in ("same-origin", "same-site", "none"):
            resp = await client.get(signed("/stream", [("url", url)]), headers={"Sec-Fetch-Site": site})
            assert resp.status == 200, site
        resp = await client.get(signed("/stream", [("url", url)]), headers={"Sec-Fetch-Site": "cross-site"})
        assert resp.status == 200  # a signed link is meant to be shared
    async with serve() as client:
        resp = await client.get(f"/stream?url={q(url)}", headers={"Sec-Fetch-Site": "cross-site"})
        assert resp.status == 403 and "cross-site" in (await resp.json())["error"]
        resp = await client.get("/metrics", headers={"Sec-Fetch-Site": "cross-site"})
        assert resp.status == 403
        resp = await client.get("/healthz", headers={"Sec-Fetch-Site": "cross-site"})
        assert resp.status == 200
    assert origin.request_count == 4
