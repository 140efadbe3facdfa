from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import rangestream.client
from rangestream.testing.origin import PROFILES, Origin


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    """A started emulated CDN on a loopback port with the "fast" profile."""
    server = Origin(PROFILES["fast"])
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def use_curl_transport(monkeypatch: pytest.MonkeyPatch, impersonate: str | None = "chrome") -> None:
    """Make every ``Client`` / ``open_stream`` without ``transport=`` build a CurlTransport
    (same options as the aiohttp one); skips the test when curl_cffi is not installed."""
    pytest.importorskip("curl_cffi")
    from rangestream.transports.curl import CurlTransport

    monkeypatch.setattr(rangestream.client, "AiohttpTransport",
                        lambda **options: CurlTransport(impersonate, **options))


@pytest.fixture(params=["aiohttp", "curl"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once per built-in transport: ``rangestream.Client`` and ``open_stream``
    build the named one by default. Yields the name."""
    if request.param == "curl":
        use_curl_transport(monkeypatch)
    return request.param
