"""Meiqia commands through the real bus: RabbitMQ -> gateway -> simulator, and back."""

from __future__ import annotations

import pytest

from gateway.sim.meiqia.server import MeiqiaSimulator
from tests.conftest import wait_for
from tests.integration.fixtures import Collected, running_gateway
from tests.meiqia.helpers import pbx_for

pytestmark = pytest.mark.integration


async def test_every_command_through_the_bus(
    msim: MeiqiaSimulator, unique: str, collector, command_bus
) -> None:
    tenant = f"m{unique}"
    got: Collected = await collector(tenant)
    async with running_gateway(pbx_for(msim, tenant), commands=command_bus.settings):
        await wait_for(
            lambda: any(
                e["data"]["state"] == "connected" for e in got.of_type("gateway.connection")
            ),
            timeout=15,
        )
        # the README's Meiqia click-to-dial example
        dial = await command_bus.call(tenant, "call.dial", {"agent_id": 1, "callee": "13800000000"})
        assert dial["ok"] is True, dial
        assert dial["result"] == {"call_id": msim.callouts[0]["uuid"]}
        await wait_for(lambda: bool(got.of_type("cdr.created")), timeout=15)
        [cdr] = got.of_type("cdr.created")
        assert cdr["data"]["call_id"] == dial["result"]["call_id"]
        assert (cdr["data"]["caller"], cdr["data"]["callee"]) == ("8001", "13800000000")
        window = {"start": "2020-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z"}
        search = await command_bus.call(tenant, "cdr.search", window)
        assert [e["id"] for e in search["result"]["events"]] == [cdr["id"]]  # the live id
        seats = await command_bus.call(tenant, "meiqia.sips.list", {"occupied": True})
        assert [s["sip"] for s in seats["result"]["data"]] == ["8001", "8002", "8003", "8004"]
        bind = await command_bus.call(tenant, "meiqia.sip.bind", {"agent_id": 5, "sip": "8006"})
        assert bind["ok"] is True and msim.seats["8006"].agent_id == 5
        groups = await command_bus.call(tenant, "meiqia.number_groups.list", {})
        assert len(groups["result"]["groups"]) == 2
        assign = await command_bus.call(
            tenant,
            "meiqia.number_groups.assign",
            {"agent_ids": [3], "group_ids": [1], "numbers": []},
        )
        assert assign["ok"] is True and msim.assignments[3] == {"group_ids": [1], "numbers": []}
        # refused by Meiqia: the vendor's message comes back
        unregistered = await command_bus.call(tenant, "call.dial", {"agent_id": 5, "callee": "138"})
        assert unregistered["error"]["code"] == "failed"
        assert unregistered["error"]["message"] == "坐席未注册"
        assert unregistered["error"]["vendor_code"] == "Unauthenticated"
        # refused before any request
        requests = sum(msim.requests.values()) - msim.requests["records"] - msim.requests["sips"]
        too_long = {"agent_id": 1, "callee": "138", "user_data": "x" * 101}
        for command, args, code in [
            ("call.dial", too_long, "invalid"),
            ("call.dial", {"caller": "8001", "callee": "138"}, "invalid"),
            ("call.hangup", {"channel_id": "x"}, "unsupported"),
            ("call.transfer", {"channel_id": "x", "mode": "blind", "target": "1"}, "unsupported"),
            ("agent.pause", {"agent": "1"}, "unsupported"),
        ]:
            result = await command_bus.call(tenant, command, args)
            assert result["ok"] is False and result["error"]["code"] == code, (command, result)
        polled = msim.requests["records"] + msim.requests["sips"]
        assert sum(msim.requests.values()) - polled == requests
