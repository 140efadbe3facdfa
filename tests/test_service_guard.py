"""The SSRF guard: the address classifier as a pure function over every special range,
numeric host forms, connect-time refusals (terminal, never retried), and end to end
through the service with loopback not allowed: the emulated CDN sees no request."""

from __future__ import annotations

import time

import pytest
from service_support import q, serve

from rangestream import Client, Retry
from rangestream.service import Guard, GuardedTransport
from rangestream.service.guard import is_public_address

pytestmark = pytest.mark.timeout(20)

# One address inside every non-public block (first, inner and last addresses where it matters).
NOT_PUBLIC = [
    "0.0.0.0", "0.255.255.255", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.255",
    "127.0.0.1", "127.255.255.254", "169.254.169.254", "172.16.0.1", "172.31.255.255",
    "192.0.0.8", "192.0.2.1", "192.88.99.1", "192.168.1.1", "198.18.0.1", "198.19.255.255",
    "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    # IPv6 outside 2000::/3
    "::", "::1", "fe80::1", "fe80::1%eth0", "febf::1", "fec0::1", "feff::1", "fc00::1", "fd12:3456::1",
    "ff02::1", "ff0e::1", "100::1", "4000::1", "e000::1",
    # IPv6 forms that carry a non-public IPv4
    "::127.0.0.1", "::169.254.169.254", "::10.0.0.1",  # IPv4-compatible
    "::ffff:127.0.0.1", "::ffff:10.1.2.3",  # IPv4-mapped
    "::ffff:0:a9fe:a9fe", "::ffff:0:7f00:1",  # SIIT
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b::c0a8:101",  # NAT64 well-known prefix
    "64:ff9b:1::a00:1", "64:ff9b:1::808:808", "64:ff9b:1:ffff::1",  # NAT64 local-use (RFC 8215)
    "2002:7f00:1::1", "2002:a9fe:a9fe::1",  # 6to4 of loopback / link-local
    # special blocks inside 2000::/3
    "2001::1", "2001:0:4136:e378::1", "2001:2::1", "2001:10::1", "2001:20::1", "2001:1ff:ffff::1",
    "2001:db8::1", "2001:db8:ffff::1", "3fff::1", "3fff:fff::1",
    # not addresses
    "", "localhost", "1.2.3", "::g",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "172.32.0.1", "100.128.0.1", "192.0.1.1", "11.0.0.1",
          "223.255.255.254", "2606:4700:4700::1111", "2a00:1450:4001::1", "2001:4860:4860::8888",
          "2001:200::1", "2400:cb00::1", "3ffe::1", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_classifier_refuses_every_special_range(address):
    assert not is_public_address(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_classifier_accepts_global_unicast(address):
    assert is_public_address(address)


def test_classifier_names_what_it_refused():
    from rangestream.service import classify_address

    assert classify_address("127.0.0.2") == "loopback"
    assert classify_address("::1") == "loopback"
    assert classify_address("::") == "unspecified"
    assert classify_address("::169.254.169.254") == "link-local"
    assert classify_address("::ffff:0:a9fe:a9fe") == "link-local"
    assert classify_address("64:ff9b::a00:1") == "private"
    assert classify_address("64:ff9b:1::a00:1") == "nat64-local"
    assert classify_address("fec0::1") == "site-local"
    assert classify_address("fd00::1") == "private"
    assert classify_address("2001:db8::1") == "documentation"
    assert classify_address("ff02::1") == "multicast"
    assert classify_address("nonsense") == "invalid"
    assert classify_address("8.8.8.8") == "public"


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0177.0.0.1", "0", "0x7f.1", "0x7f000001",
                                  "017700000001", "127.0.1", "10.1", "1.2.3.4.5", "169.254.43518"])
def test_numeric_host_forms_are_refused_by_the_guard(host):
    with pytest.raises(Exception) as info:
        Guard(allow_private=False).check_name(host)
    assert type(info.value).__name__ == "UpstreamRefused"
    assert Guard(allow_private=False).check_name("8.8.8.8") == "8.8.8.8"  # the canonical form passes


@pytest.mark.parametrize("host", [
    "[::127.0.0.1]", "[::169.254.169.254]", "[::ffff:0:a9fe:a9fe]", "[64:ff9b::a9fe:a9fe]",
    "[64:ff9b:1::a00:1]", "[fec0::1]", "[::ffff:7f00:1]", "2130706433", "127.1", "0177.0.0.1", "0",
])
async def test_end_to_end_refusals_never_reach_the_origin(origin, host):
    # The origin listens on 127.0.0.1: each of these forms means (or could mean) it.
    url = f"http://{host}:{origin.port}/data/x/1000.bin"
    async with serve(allow_private=False) as client:
        resp = await client.get(f"/stream?url={q(url)}")
        assert resp.status == 403, (host, await resp.text())
        assert "not public" in (await resp.json())["error"]
        resp = await client.get(f"/mux?video={q(url)}&audio={q(url)}")
        assert resp.status == 403
    assert origin.request_count == 0


async def test_connect_time_refusal_is_terminal_at_once(origin):
    """A name that resolves to loopback at connect time (DNS rebinding, a redirect to an
    internal name) is refused as UpstreamRefused at once, never retried as a network error."""
    retry = Retry(attempts=3, backoff=10.0, jitter=0.0)  # one retry would take 10 s, all three 60 s
    started = time.monotonic()
    async with Client(transport=GuardedTransport(Guard(allow_private=False)), retry=retry) as c:
        with pytest.raises(Exception) as info:
            async with c.open_stream(f"http://localhost:{origin.port}/data/n/1000.bin") as s:
                async for _ in s:
                    pass
    assert time.monotonic() - started < 5.0  # ms at once; a busy machine stays far below 10 s
    assert type(info.value).__name__ == "UpstreamRefused"
    assert info.value.kind == "not-public" and info.value.host == "localhost"
    assert origin.request_count == 0
