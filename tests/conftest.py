from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rangestream.origin import PROFILES, Origin


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    """A started emulated CDN on a loopback port with the "fast" profile."""
    server = Origin(PROFILES["fast"])
    await server.start()
    try:
        yield server
    finally:
        await server.close()
