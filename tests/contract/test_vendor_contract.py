"""The vendor contract: what every registered vendor with a simulator must do, checked the same
way for each (over the real RabbitMQ, the vendor's own simulator and the gateway in-process).

A new vendor gets these tests by registering its plugin and keeping, in its own fixtures folder,
``tests/fixtures/<vendor>/sample.jsonl``: raw messages its normalizer reads, one per line (also
an example for ``gateway normalize``). Every registered plugin's declaration is checked, with a
simulator or without; a probe in ``VENDOR_REQUESTS`` (did a command reach the PBX?) is optional.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.connectors import registry
from gateway.connectors.plugin import DemoOptions, VendorPlugin
from gateway.schema.commands import BASE_COMMANDS
from gateway.settings import BackoffSettings, PbxSettings
from gateway.testing import check_declaration, check_envelope, check_ids_deterministic
from tests.conftest import wait_for
from tests.integration.fixtures import Collected, running_gateway

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FAST_BACKOFF = BackoffSettings(initial_s=0.05, max_s=0.5, reset_after_s=5)

#: Every registered vendor that ships a simulator (read at collection: the test vendors are
#: registered by tests/conftest.py before it).
VENDORS = sorted(name for name, p in registry.plugins().items() if p.simulator is not None)


#: Every registered vendor, simulator or not.
ALL_VENDORS = sorted(registry.plugins())


def sample_lines(vendor: str) -> list[str]:
    """The vendor's raw sample messages (``tests/fixtures/<vendor>/sample.jsonl``)."""
    path = FIXTURES / vendor / "sample.jsonl"
    assert path.is_file(), f"add raw {vendor} messages, one per line, to {path}"
    return [line for line in path.read_text().splitlines() if line.strip()]


def _fakepbx_requests(pbx: PbxSettings) -> int:
    """Requests that would mean a command reached the fake PBX (everything but the link's
    own WebSocket and record polling)."""
    from tests.fakepbx.sim import FakePbxSimulator

    counted = FakePbxSimulator.at(pbx.base_url).requests  # type: ignore[attr-defined]
    return sum(n for path, n in counted.items() if path not in ("/events", "/records"))


#: vendor -> how many command-like requests its simulator has served (where it can tell).
VENDOR_REQUESTS: dict[str, Callable[[PbxSettings], int]] = {"fakepbx": _fakepbx_requests}

#: Valid args for contract commands, to pick one a vendor does not declare.
SAMPLE_ARGS: dict[str, dict[str, Any]] = {
    "call.park_status": {},
    "call.hangup": {"channel_id": "PJSIP/2001-00000001"},
    "call.query": {"direction": "inbound"},
    "agent.logout": {"extension": "2001"},
    "call.dial": {"caller": "2001", "callee": "2002"},
}


def _unsupported(plugin: VendorPlugin) -> str | None:
    """A contract command the vendor does not declare (with sample args), if there is one."""
    missing = [c for c in BASE_COMMANDS if c not in plugin.commands and c in SAMPLE_ARGS]
    return missing[0] if missing else None


@pytest.mark.parametrize("vendor", VENDORS)
async def test_vendor_contract(vendor: str, unique: str, collector, command_bus) -> None:
    """The vendor's simulated traffic through the gateway: CloudEvents envelope, routing keys,
    payload models, link state events."""
    plugin = registry.plugin(vendor)
    tenant = f"c-{unique}"
    got: Collected = await collector(tenant)
    async with _gateway(plugin, tenant, command_bus):
        await wait_for(lambda: _connected(got) and len(_traffic(got)) >= 5, timeout=30)

    events, keys = list(got.events), list(got.routing_keys)
    assert len(events) == len(keys)
    for event, key in zip(events, keys, strict=True):
        check_envelope(event, key, tenant, plugin.name)
    rejected = [e["data"] for e in got.of_type("gateway.rejected")]
    assert not rejected, f"the {vendor} simulator's own traffic was rejected: {rejected[:3]}"


@pytest.mark.parametrize("vendor", ALL_VENDORS)
def test_vendor_ids_are_deterministic(vendor: str) -> None:
    """The same raw message in the same context always gives the same ids, and every sample
    message of the vendor becomes valid, non-rejected events."""
    check_ids_deterministic(registry.plugin(vendor), sample_lines(vendor))


@pytest.mark.parametrize("vendor", VENDORS)
async def test_vendor_contract_unsupported_command(
    vendor: str, unique: str, collector, command_bus
) -> None:
    """A contract command the plugin does not declare is answered ``unsupported`` by the
    gateway, without reaching the vendor."""
    plugin = registry.plugin(vendor)
    command = _unsupported(plugin)
    if command is None:
        pytest.skip(f"{vendor} declares every contract command that has sample args")
    tenant = f"c-{unique}"
    got: Collected = await collector(tenant)
    async with _gateway(plugin, tenant, command_bus) as pbx:
        await wait_for(lambda: _connected(got), timeout=30)
        probe = VENDOR_REQUESTS.get(vendor)
        before = probe(pbx) if probe else 0
        result = await command_bus.call(tenant, command, SAMPLE_ARGS[command])
        assert result["ok"] is False, result
        assert result["error"]["code"] == "unsupported", result
        if probe is not None:
            assert probe(pbx) == before, f"{command} reached the {vendor} PBX"


@pytest.mark.parametrize("vendor", ALL_VENDORS)
def test_vendor_declaration(vendor: str) -> None:
    """The declaration the gateway relies on: a consistent plugin whose declared commands
    parse, and a normalizer that never raises (unreadable lines become gateway.rejected)."""
    plugin = registry.plugin(vendor)
    check_declaration(plugin)
    catalog = registry.command_catalog()
    for name in sorted(plugin.commands & SAMPLE_ARGS.keys()):
        body = json.dumps({"command": name, "args": SAMPLE_ARGS[name]})
        assert catalog.parse(body).command == name


def _connected(got: Collected) -> bool:
    return any(e["data"]["state"] == "connected" for e in got.of_type("gateway.connection"))


def _traffic(got: Collected) -> list[dict[str, Any]]:
    return [e for e in got.events if not e["type"].startswith("gateway.")]


@contextlib.asynccontextmanager
async def _gateway(
    plugin: VendorPlugin, tenant: str, command_bus: Any
) -> AsyncIterator[PbxSettings]:
    """The vendor's demo simulator (5 calls a second) and a gateway linked to it."""
    assert plugin.simulator is not None
    options = DemoOptions(tenant=tenant, calls_per_second=5, seed=3)
    async with plugin.simulator.demo(options) as pbx:
        pbx = pbx.model_copy(update={"backoff": FAST_BACKOFF})
        async with running_gateway(pbx, commands=command_bus.settings):
            yield pbx
