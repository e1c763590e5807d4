"""The command edge over the real RabbitMQ and the Yeastar simulator, as a sender with broker
access would try it: refused commands, audit of the sender, replayed ids, stray ``reply_to``."""

from __future__ import annotations

import asyncio
import random

import aio_pika
import orjson
import pytest

from gateway.runtime.metrics import COMMANDS
from tests.conftest import wait_for
from tests.integration.fixtures import pbx_settings, running_gateway

pytestmark = pytest.mark.integration

WINDOW = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}
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


async def test_a_reply_to_naming_any_other_queue_is_refused_and_answered_as_an_event(
    sim_factory, command_bus, collector, amqp, unique
) -> None:
    """Else anyone could make the gateway publish, under its own login and with a forged
    correlation_id, into a queue another service reads."""
    sim = await sim_factory()
    tenant = f"q{unique}"
    events = await collector(tenant)
    channel = await amqp.channel()
    victim = await channel.declare_queue(f"victim-{unique}", exclusive=True, auto_delete=True)
    try:
        async with running_gateway(pbx_settings(sim, tenant), commands=command_bus.settings):
            dial = {"caller": "2001", "callee": "2002"}
            refused = await publish(
                command_bus,
                tenant,
                "call.dial",
                dial,
                reply_to=victim.name,
                correlation_id="forged-correlation",
            )
            await wait_for(lambda: events.of_type("command.failed"), timeout=15)
            dead = await command_bus.dead_letters(expected=1)
        stray = await victim.get(fail=False)
    finally:
        await channel.close()
    failed = events.of_type("command.failed")[0]
    assert failed["subject"] == refused and failed["data"]["error"]["code"] == "forbidden"
    assert "reply_to" in failed["data"]["error"]["message"]
    assert stray is None and len(dead) == 1
    assert sim.control_calls["call/dial"] == 0


def fuzz_case(rng: random.Random, n: int, tenant: str, victim: str) -> dict:
    """One malformed or refused command, of a kind drawn from ``rng`` (seeded)."""
    dial = {"caller": "2001", "callee": "2002"}
    kind = rng.randrange(9)
    noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    control = rng.choice(["\x00", "\u202e", "\u2066", "\x1b", "\u200f"])
    cases = [
        {"body": noise},
        {"body": orjson.dumps(rng.choice([[], 1, "x", None, [dial]]))},
        {"body": orjson.dumps({"command": f"call.{noise.hex()[:8]}", "args": {}})},
        {"command": "call.dial", "args": {**dial, "callee": f"20{control}02"}},
        {"command": "call.dial", "args": {"caller": rng.randrange(9999), "callee": [1]}},
        {
            "command": rng.choice(["xswitch.extension.delete", "uucall.subuser.delete"]),
            "args": {"id": "1"} if n % 2 else {"subUserId": 1},
        },
        {"command": "call.dial", "args": dial, "reply_to": victim},
        {"command": "call.query", "args": {"direction": "inbound"}, "id": "known"},
        {"command": "call.hangup", "args": {"channel_id": "x"}, "key": f"{tenant}.call.hold"},
    ]
    case = cases[kind]
    case["kind"] = kind
    return case


async def test_fuzz_the_command_edge(sim_factory, command_bus, collector, amqp, unique) -> None:
    """1,000 malformed or refused commands from a seeded generator: each is answered, none runs,
    nothing reaches a queue it should not, and the gateway still serves a valid command."""
    rng = random.Random(20261206)
    sim = await sim_factory()
    tenant = f"f{unique}"
    events = await collector(tenant)
    channel = await amqp.channel()
    victim = await channel.declare_queue(f"victim-{unique}", exclusive=True, auto_delete=True)
    known = f"known-{unique}"
    kinds: dict[int, int] = {}
    try:
        async with running_gateway(pbx_settings(sim, tenant), commands=command_bus.settings) as app:
            await wait_for(lambda: app.connectors[0].health()["state"] == "connected")
            first = await command_bus.call(tenant, "cdr.search", dict(WINDOW), command_id=known)
            assert first["ok"], first
            exchange = await command_bus.channel.get_exchange(command_bus.exchange)
            ids = []
            for n in range(1000):
                case = fuzz_case(rng, n, tenant, victim.name)
                kinds[case["kind"]] = kinds.get(case["kind"], 0) + 1
                command_id = known if case.get("id") else f"fz-{unique}-{n}"
                command = case.get("command", "call.dial")
                payload = case.get("body") or orjson.dumps(
                    {"command": command, "args": case["args"]}
                )
                await exchange.publish(
                    aio_pika.Message(
                        payload,
                        message_id=command_id,
                        correlation_id=f"fz-{n}",
                        reply_to=case.get("reply_to", command_bus.replies.name),
                    ),
                    routing_key=case.get("key", f"{tenant}.{command}"),
                )
                ids.append(f"fz-{n}")
            refused_by_event = kinds.get(6, 0)
            await wait_for(
                lambda: (
                    sum(1 for i in ids if i in command_bus.results) >= 1000 - refused_by_event
                    and len(events.of_type("command.failed")) >= refused_by_event
                ),
                timeout=120,
            )
            after = await command_bus.call(tenant, "cdr.search", dict(WINDOW))
            dead = await command_bus.dead_letters(expected=1000)
        stray = await victim.get(fail=False)
    finally:
        await channel.close()
    answered = [command_bus.results[i] for i in ids if i in command_bus.results]
    codes: dict[str, int] = {}
    for result in [*answered, *(e["data"] for e in events.of_type("command.failed"))]:
        codes[result["error"]["code"]] = codes.get(result["error"]["code"], 0) + 1
    print(
        f"\nfuzz: sent=1000 kinds={dict(sorted(kinds.items()))} answers={codes}"
        f" dead_lettered={len(dead)} executed={dict(sim.control_calls)} ready_after={after['ok']}"
    )
    assert not any(r["ok"] for r in answered)
    assert sum(codes.values()) == 1000 and set(codes) <= {"invalid", "forbidden"}
    assert not events.of_type("command.succeeded")
    assert stray is None and len(dead) == 1000
    assert "call/dial" not in sim.control_calls and after["ok"]
