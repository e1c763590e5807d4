"""Fixtures of the UUCall tests: the simulator on loopback, an HTTP session, a client of it
(helpers are in ``helpers.py``; the HTTP session is the root ``http_session``)."""

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
def uu(uusim: UucallSimulator, http_session: aiohttp.ClientSession) -> UucallClient:
    return UucallClient(http_session, pbx_for(uusim))
