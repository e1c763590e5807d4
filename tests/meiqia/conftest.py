"""Fixtures of the Meiqia tests: a quiet simulator on loopback, an HTTP session, a client of it
(helpers are in ``helpers.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.connectors.meiqia.client import MeiqiaClient
from gateway.sim.meiqia.server import MeiqiaSimulator
from tests.meiqia.helpers import pbx_for


@pytest.fixture
async def msim() -> AsyncIterator[MeiqiaSimulator]:
    """A quiet simulator (no background traffic): tests place the calls they count."""
    sim = MeiqiaSimulator(seed=5, record_delay_s=0.5, ring_s=(0.05, 0.1), talk_s=(0.1, 0.3))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@pytest.fixture
def client(msim: MeiqiaSimulator, http: aiohttp.ClientSession, unique: str) -> MeiqiaClient:
    return MeiqiaClient(http, pbx_for(msim, f"m{unique}"))
