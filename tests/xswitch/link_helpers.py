"""Helpers of the XSwitch link tests (their fixtures are in ``conftest.py``): a PBX's settings
pointing at the simulator on the local NATS server, and the clean-up of the JetStream stream a
test made."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from gateway.connectors.xswitch.link import delete_stream
from gateway.connectors.xswitch.settings import XSwitchPbxSettings
from gateway.settings import BackoffSettings
from gateway.sim.xswitch.cli import XSwitchSimulator
from tests.integration.fixtures import Collected

FAST = BackoffSettings(initial_s=0.05, max_s=0.5, reset_after_s=5)


def pbx_for(sim: XSwitchSimulator, tenant: str, **overrides: Any) -> XSwitchPbxSettings:
    values: dict[str, Any] = {
        "tenant": tenant,
        "vendor": "xswitch",
        "base_url": sim.base_url,
        "dev_key": sim.dev_key,
        "nats_url": sim.nats_url,
        "subject_prefix": sim.prefix,
        "command_prefix": sim.command_prefix,  # this test's node alone answers
        "timezone": "Asia/Shanghai",
        "include_raw": True,
        "ping_interval_s": 10.0,  # a cut is seen at once (EOF); a loaded machine is no cut
        "ack_wait_s": 2.0,
        "config_poll_interval_s": 30.0,
        "backoff": FAST,
    }
    values.update(overrides)
    return XSwitchPbxSettings(**values)


@contextlib.asynccontextmanager
async def stream_removed(pbx: XSwitchPbxSettings) -> AsyncIterator[XSwitchPbxSettings]:
    try:
        yield pbx
    finally:
        if pbx.jetstream != "off":
            await delete_stream(pbx)


def connected_count(got: Collected) -> int:
    return sum(e["data"]["state"] == "connected" for e in got.of_type("gateway.connection"))
