"""The command edge over the real RabbitMQ and the Yeastar simulator, as a sender with broker
access would try it: refused commands, audit of the sender, replayed ids, stray ``reply_to``."""

from __future__ import annotations

import asyncio

import aio_pika
import orjson
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


async def publish(bus, tenant: str, command: str, args: dict, **properties) -> str:
    """A command as any client would send it, with the AMQP properties given."""
    properties.setdefault("message_id", f"{command}-{len(bus.tenants)}-{id(args)}")
    bus.tenants.add(tenant)
    exchange = await bus.channel.get_exchange(bus.exchange)
    await exchange.publish(
        aio_pika.Message(orjson.dumps({"command": command, "args": args}), **properties),
        routing_key=f"{tenant}.{command}",
    )
    return properties["message_id"]


async def test_the_broker_checked_sender_is_in_the_result_event_and_the_shared_ledger(
    sim_factory, command_bus, collector, amqp, unique
) -> None:
    sim = await sim_factory()
    tenant = f"a{unique}"
    events = await collector(tenant)
    async with running_gateway(pbx_settings(sim, tenant), commands=command_bus.settings) as app:
        await wait_for(lambda: app.connectors[0].health()["state"] == "connected")
        dial = {"caller": "2001", "callee": "2002"}
        command_id = await publish(  # the shared broker's login is guest: RabbitMQ checks it
            command_bus, tenant, "call.dial", dial, user_id="guest", app_id="crm"
        )
        await wait_for(lambda: events.of_type("command.succeeded"), timeout=15)
    data = events.of_type("command.succeeded")[0]["data"]
    assert data["command_id"] == command_id
    assert (data["user_id"], data["app_id"]) == ("guest", "crm")
    channel = await amqp.channel()
    try:
        await channel.set_qos(prefetch_count=100)
        stream = await channel.get_queue(command_bus.exchange + ".ledger")
        records: list[dict] = []
        async with (
            asyncio.timeout(10),
            stream.iterator(arguments={"x-stream-offset": "first"}) as messages,
        ):
            async for message in messages:
                await message.ack()
                record = orjson.loads(message.body)
                if record.get("command_id") == command_id:
                    records.append(record)
                if len(records) == 2:
                    break
    finally:
        await channel.close()
    assert [(r["user_id"], r["app_id"]) for r in records] == [("guest", "crm")] * 2


async def test_a_public_command_id_reused_for_another_command_gets_invalid_not_the_result(
    sim_factory, command_bus, unique, tmp_path
) -> None:
    sim = await sim_factory()
    tenant = f"r{unique}"
    pbx = pbx_settings(sim, tenant)
    used = f"used-{unique}"
    dial = {"caller": "2001", "callee": "2002"}
    async with running_gateway(pbx, commands=command_bus.settings, state_dir=tmp_path / "a"):
        first = await command_bus.call(tenant, "call.dial", dial, command_id=used)
        command_bus.results.pop(used)
        reused = await command_bus.call(
            tenant, "call.query", {"direction": "inbound"}, command_id=used
        )
    assert first["ok"], first
    assert reused["ok"] is False and reused["error"]["code"] == "invalid", reused
    assert reused["error"]["message"] == "command id already used for another command"
    # Another instance learns the binding from the shared ledger stream.
    command_bus.results.pop(used)
    async with running_gateway(pbx, commands=command_bus.settings, state_dir=tmp_path / "b"):
        elsewhere = await command_bus.call(
            tenant, "call.dial", {**dial, "callee": "900123"}, command_id=used
        )
    assert elsewhere["error"]["code"] == "invalid", elsewhere
    assert sim.control_calls["call/dial"] == 1
