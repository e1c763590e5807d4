"""Fixtures of the XSwitch tests: the XCC REST simulator on loopback, an HTTP session and a
client of it, and the node simulator on the local NATS server (helpers are in
``link_helpers`` and ``rest_helpers``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.connectors.xswitch.client import XccClient
from gateway.sim.xswitch.cli import XSwitchSimulator
from gateway.sim.xswitch.rest import XccRestSimulator
from tests.xswitch.rest_helpers import DEV_KEY, pbx_settings


@pytest.fixture
async def rest_sim() -> AsyncIterator[XccRestSimulator]:
    sim = XccRestSimulator(DEV_KEY, seed=7)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
def xcc(rest_sim: XccRestSimulator, http_session: aiohttp.ClientSession) -> XccClient:
    return XccClient(http_session, pbx_settings(rest_sim.base_url))


@pytest.fixture
async def xsim(unique: str) -> AsyncIterator[XSwitchSimulator]:
    sim = XSwitchSimulator(prefix=f"from-t{unique}.", seed=11)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()
