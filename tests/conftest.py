from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import settings

import rangestream.client
from rangestream.testing.origin import PROFILES, Origin

# No per-example deadline (hypothesis' default is 200 ms): no property here is about speed, and
# one example paused past it on a busy machine fails the test as "Flaky" although it passed.
settings.register_profile("rangestream", deadline=None)
settings.load_profile("rangestream")


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

    monkeypatch.setattr(rangestream.client, "default_transport",
                        lambda proxy, **options: CurlTransport(impersonate, proxy=proxy, **options))


def use_aiohttp_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every ``Client`` / ``open_stream`` without ``transport=`` build an AiohttpTransport,
    also without a proxy (where the default is Http1Transport)."""
    from rangestream.transports.aiohttp import AiohttpTransport

    monkeypatch.setattr(rangestream.client, "default_transport",
                        lambda proxy, **options: AiohttpTransport(proxy=proxy, **options))


@pytest.fixture(params=["http1", "aiohttp", "curl"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once per built-in transport: ``rangestream.Client`` and ``open_stream``
    build the named one by default (``http1`` is the default itself). Yields the name."""
    if request.param == "curl":
        use_curl_transport(monkeypatch)
    elif request.param == "aiohttp":
        use_aiohttp_transport(monkeypatch)
    return request.param
