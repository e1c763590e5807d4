"""Fixtures of the UUCall tests: the simulator on loopback, an HTTP session, a client of it
(helpers are in ``helpers.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.connectors.uucall.client import UucallClient
from gateway.sim.uucall.rest import UucallSimulator
from tests.uucall.helpers import make_sim, pbx_for


@pytest.fixture
async def uusim() -> AsyncIterator[UucallSimulator]:
    sim = make_sim()
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def uu_http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def uu(uusim: UucallSimulator, uu_http: aiohttp.ClientSession) -> UucallClient:
    return UucallClient(uu_http, pbx_for(uusim))
