"""The command edge over the real RabbitMQ and the Yeastar simulator, as a sender with broker
access would try it: refused commands, audit of the sender, replayed ids, stray ``reply_to``."""

from __future__ import annotations

import pytest

from gateway.runtime.metrics import COMMANDS
from tests.conftest import wait_for
from tests.integration.fixtures import pbx_settings, running_gateway

pytestmark = pytest.mark.integration

LISTEN = {"channel_id": "PJSIP/2001-00000001", "listener": "2003", "mode": "barge"}


def counted(tenant: str, command: str, outcome: str) -> float:
    return COMMANDS.labels(tenant, "yeastar", command, outcome)._value.get()


async def test_a_denied_command_is_forbidden_dead_lettered_counted_and_never_sent(
    sim_factory, command_bus, unique
) -> None:
    sim = await sim_factory()
    tenant = f"p{unique}"
    pbx = pbx_settings(sim, tenant, command_policy={"deny": ["call.listen"]})
    async with running_gateway(pbx, commands=command_bus.settings) as app:
        await wait_for(lambda: app.connectors[0].health()["state"] == "connected")
        refused = await command_bus.call(tenant, "call.listen", LISTEN)
        dead = await command_bus.dead_letters(expected=1)
    assert refused["ok"] is False and refused["error"]["code"] == "forbidden", refused
    assert len(dead) == 1 and dead[0].routing_key == f"{tenant}.call.listen"
    assert counted(tenant, "call.listen", "forbidden") == 1
    assert not any("listen" in path for path in sim.control_calls), sim.control_calls
