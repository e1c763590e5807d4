"""XSwitch commands through the real bus: RabbitMQ -> gateway -> simulator (REST or NATS)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.connectors.xswitch.commands import COMMAND_NAMES
from tests.conftest import wait_for
from tests.integration.fixtures import EVERY_COMMAND, Collected, running_gateway
from tests.xswitch.link_helpers import connected_count, pbx_for, stream_removed
from tests.xswitch.test_commands import CASES, INVALID

pytestmark = pytest.mark.integration


def _first_case_of_each() -> list[tuple[str, dict[str, Any], str]]:
    seen: dict[str, tuple[str, dict[str, Any], str]] = {}
    for command, args, path, _body in CASES:
        seen.setdefault(command, (command, args, path))
    return list(seen.values())


async def test_every_management_command_through_the_bus(
    xsim, unique: str, collector, command_bus
) -> None:
    """Each ``xswitch.*`` command once, published on ``pbx.commands``: it reaches its REST
    endpoint exactly once and its result comes back ``ok``; invalid arguments are answered
    ``invalid`` without a request and dead-lettered."""
    cases = _first_case_of_each()
    assert {c[0] for c in cases} == set(COMMAND_NAMES)
    tenant = f"x{unique}"
    got: Collected = await collector(tenant)
    pbx = pbx_for(xsim, tenant, jetstream="off").model_copy(
        update={"command_policy": EVERY_COMMAND}  # sensitive ones included
    )
    async with running_gateway(pbx, commands=command_bus.settings):
        await wait_for(lambda: connected_count(got) >= 1, timeout=15)
        for command, args, path in cases:
            before = len(xsim.rest.calls(f"/api/xcc/{path}"))
            result = await command_bus.call(tenant, command, args)
            assert result["ok"] is True, (command, result)
            assert len(xsim.rest.calls(f"/api/xcc/{path}")) >= before + 1, command
        requests = sum(xsim.rest.requests.values())
        invalid = INVALID[:5]
        for command, args, _field in invalid:
            result = await command_bus.call(tenant, command, args)
            assert result["ok"] is False and result["error"]["code"] == "invalid", result
        assert sum(xsim.rest.requests.values()) == requests  # nothing reached the PBX
        dead = await command_bus.dead_letters(len(invalid))
        assert len(dead) == len(invalid)


async def test_hangup_over_nats(xsim, unique: str, collector, command_bus) -> None:
    """``call.hangup`` -> ``XNode.Hangup`` to the node owning the channel; the node's DESTROY
    and CDR then come back as events. An unknown channel is ``not_found``."""
    tenant = f"x{unique}"
    got: Collected = await collector(tenant)
    pbx = pbx_for(xsim, tenant, jetstream="off")
    async with stream_removed(pbx), running_gateway(pbx, commands=command_bus.settings):
        await wait_for(lambda: connected_count(got) >= 1, timeout=15)
        a_leg, b_leg = await xsim.node.open_call()
        await wait_for(lambda: bool(got.of_type("call.answered")), timeout=15)
        result = await command_bus.call(tenant, "call.hangup", {"channel_id": b_leg})
        assert result["ok"] is True, result
        assert result["result"] == {"channel_id": b_leg}
        await wait_for(lambda: bool(got.of_type("call.ended")), timeout=15)
        (ended,) = got.of_type("call.ended")
        assert ended["data"]["call_id"] == a_leg
        assert xsim.node.hangups[0]["uuid"] == b_leg
        assert xsim.node.hangups[0]["ctrl_uuid"] == pbx.ctrl_uuid
        missing = await command_bus.call(tenant, "call.hangup", {"channel_id": "no-such-leg"})
        assert missing["ok"] is False and missing["error"]["code"] == "not_found", missing
        dial = await command_bus.call(tenant, "call.dial", {"caller": "1001", "callee": "1002"})
        assert dial["error"]["code"] == "unsupported"
