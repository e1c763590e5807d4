"""The command path over the real RabbitMQ and the simulator: validate, dedupe, execute, reply."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from gateway.bus.journal import CommandJournal
from gateway.bus.topology import CommandNames
from gateway.connectors.yeastar.connector import YeastarConnector
from tests.conftest import wait_for
from tests.integration.fixtures import pbx_settings, running_gateway

pytestmark = pytest.mark.integration

WINDOW = {
    "start": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
    "end": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
}


def malformed(n: int) -> dict:
    """Ten kinds of broken commands, cycled."""
    kinds = [
        {"body": b"{not json"},
        {"body": b"[1, 2, 3]"},
        {
            "body": orjson.dumps({"command": "call.teleport", "args": {}}),
            "command": "call.teleport",
        },
        {"body": orjson.dumps({"command": "call.dial"}), "command": "call.dial"},
        {
            "body": orjson.dumps({"command": "call.dial", "args": {"caller": 2001, "callee": []}}),
            "command": "call.dial",
        },
        {
            "body": orjson.dumps({"command": "call.hold", "args": {"channel_id": "x", "extra": 1}}),
            "command": "call.hold",
        },
        {
            "body": b'{"command": "call.dial", "args": {"caller": "' + b"9" * 70000 + b'"}}',
            "command": "call.dial",
        },
        {
            "body": orjson.dumps({"command": "call.hangup", "args": {"channel_id": "a"}}),
            "command": "call.hold",
        },  # routing key says hold, body says hangup
        {
            "body": orjson.dumps(
                {
                    "command": "call.dial",
                    "args": {"caller": "1", "callee": "2", "deadline": "2030-01-01T00:00:00"},
                }
            ),
            "command": "call.dial",
        },  # naive deadline
        {
            "body": orjson.dumps({"command": "call.dial", "args": "2001 -> 2002"}),
            "command": "call.dial",
        },
    ]
    return kinds[n % len(kinds)]


async def test_malformed_commands_answer_invalid_and_are_dead_lettered(
    sim_factory, command_bus, unique
) -> None:
    sim = await sim_factory()
    tenant = f"c{unique}"
    async with running_gateway(pbx_settings(sim, tenant), commands=command_bus.settings) as app:
        await wait_for(lambda: app.connectors[0].health()["state"] == "connected")
        sent_ids: list[str] = []
        valid_ids: list[str] = []
        for n in range(1000):
            kind = malformed(n)
            sent_ids.append(
                await command_bus.publish(
                    tenant, kind.get("command", "call.dial"), body=kind["body"]
                )
            )
            if n % 100 == 0:  # valid commands keep being served in between
                valid_ids.append(await command_bus.publish(tenant, "cdr.search", WINDOW))
        results = [await command_bus.result(i, timeout=60) for i in sent_ids]
        valid = [await command_bus.result(i, timeout=30) for i in valid_ids]
        await wait_for(lambda: command_bus.replies_seen >= 1000 + len(valid_ids), timeout=30)

        dead = await command_bus.dead_letters(expected=1000)
    invalid = [r for r in results if r["ok"] is False and r["error"]["code"] == "invalid"]
    print(
        f"\nmalformed: sent=1000 invalid_results={len(invalid)} dead_lettered={len(dead)} "
        f"valid_ok={sum(r['ok'] for r in valid)}/{len(valid)}"
    )
    assert len(invalid) == len(sent_ids) == 1000
    assert command_bus.replies_seen == 1000 + len(valid_ids)
    assert len(dead) == 1000
    assert all(r["ok"] for r in valid)
    assert {m.headers["x-first-death-reason"] for m in dead} == {"rejected"}


async def test_same_command_id_executes_once(sim_factory, command_bus, unique, tmp_path) -> None:
    sim = await sim_factory()
    tenant = f"c{unique}"
    state = {"commands": command_bus.settings, "state_dir": tmp_path}
    async with running_gateway(pbx_settings(sim, tenant), **state) as app:
        await wait_for(lambda: app.connectors[0].health()["state"] == "connected")
        args = {"caller": "2001", "callee": "2002"}
        command_id = "dial-once-" + unique
        for _ in range(3):  # duplicate publishes, back to back
            await command_bus.publish(tenant, "call.dial", args, command_id=command_id)
        await wait_for(lambda: command_bus.replies_seen >= 3, timeout=15)
        first = await command_bus.result(command_id)
    assert first["ok"], first
    # A restart keeps the ledger: the same id redelivered later still does not dial again.
    async with running_gateway(pbx_settings(sim, tenant), **state) as app:
        await wait_for(lambda: app.connectors[0].health()["state"] == "connected")
        command_bus.results.pop(command_id)
        await command_bus.publish(tenant, "call.dial", args, command_id=command_id)
        again = await command_bus.result(command_id)
    print(f"\nduplicates: deliveries=4 executions={sim.control_calls['call/dial']}")
    assert again == first
    assert sim.control_calls["call/dial"] == 1


async def test_a_new_owner_never_repeats_what_the_last_one_ran(
    sim_factory, command_bus, amqp, unique, tmp_path
) -> None:
    """Two instances with their own ledgers, one after the other (a takeover): the journal
    answers a duplicate published after the takeover, and runs a command the first owner took
    but dropped before it started."""
    sim = await sim_factory()
    tenant = f"j{unique}"
    pbx = pbx_settings(sim, tenant)
    args = {"caller": "2001", "callee": "2002"}
    ran = "ran-" + unique
    async with running_gateway(pbx, commands=command_bus.settings, state_dir=tmp_path / "a") as app:
        await wait_for(lambda: app.connectors[0].health()["state"] == "connected")
        first = await command_bus.result(
            await command_bus.publish(tenant, "call.dial", args, command_id=ran)
        )
    assert first["ok"], first
    # An instance takes a command and dies before journaling it: the broker redelivers it.
    dropped = "dropped-" + unique
    await command_bus.publish(tenant, "call.dial", args, command_id=dropped)
    taker = await amqp.channel()
    queue = await taker.get_queue(command_bus.settings.exchange + "." + tenant)
    taken = None
    async with asyncio.timeout(10):
        while taken is None:
            taken = await queue.get(fail=False)
    await taker.close()  # unacked: back in the queue, flagged redelivered

    command_bus.results.pop(ran)
    await command_bus.publish(tenant, "call.dial", args, command_id=ran)
    async with running_gateway(pbx, commands=command_bus.settings, state_dir=tmp_path / "b"):
        again = await command_bus.result(ran)
        recovered = await command_bus.result(dropped)
    # The first instance comes back with its old ledger: it replays only what came after its
    # newest record, which must still include what the second one ran.
    command_bus.results.pop(dropped)
    await command_bus.publish(tenant, "call.dial", args, command_id=dropped)
    async with running_gateway(pbx, commands=command_bus.settings, state_dir=tmp_path / "a"):
        back = await command_bus.result(dropped)
    dials = sim.control_calls["call/dial"]
    print(
        f"\ntakeover: duplicate answered={again == first} dropped ran={recovered['ok']} "
        f"answered again after a second takeover={back == recovered} {dials=}"
    )
    assert again == first
    assert recovered["ok"], recovered
    assert back == recovered
    assert dials == 2


async def test_the_ledger_journal_replays_from_a_point_in_time(amqp, unique) -> None:
    journal = CommandJournal(
        amqp, CommandNames(f"test-{unique}.commands"), retention_s=3600, replay_overlap_s=0
    )
    tenant = f"r{unique}"
    try:
        await journal.record(tenant, "before", "call.dial", None)
        boundary = math.floor(time.time()) + 2  # stream chunks are found by whole seconds
        await wait_for(lambda: time.time() >= boundary, timeout=5)
        await journal.record(tenant, "after", "call.dial", None)
        everything = await journal.replay(tenant)
        recent = await journal.replay(tenant, since=boundary)
    finally:
        await journal.close()
    assert [e.command_id for e in everything] == ["before", "after"]
    assert [e.command_id for e in recent] == ["after"]


async def test_commands_wait_while_the_pbx_is_down(sim_factory, command_bus, unique) -> None:
    sim = await sim_factory()
    port = sim.port
    tenant = f"c{unique}"
    pbx = pbx_settings(sim, tenant)
    async with running_gateway(pbx, commands=command_bus.settings) as app:
        connector = app.connectors[0]
        assert isinstance(connector, YeastarConnector)
        await wait_for(lambda: connector.state == "connected")
        await sim.stop()
        await wait_for(lambda: connector.state == "disconnected", timeout=10)
        # RabbitMQ expires messages at the head of the queue: the short-lived one goes first.
        short = await command_bus.publish(tenant, "cdr.search", WINDOW, expiration=0.5)
        waiting = await command_bus.publish(tenant, "cdr.search", WINDOW)
        soon = (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat()
        late = await command_bus.publish(tenant, "cdr.search", {**WINDOW, "deadline": soon})
        expired = await command_bus.result(short, timeout=10)  # answered while the PBX is down
        assert expired["error"]["code"] == "expired"
        assert waiting not in command_bus.results
        await asyncio.sleep(0.6)  # let the args deadline pass while the PBX is still down
        revived = await sim_factory(port=port)
        await wait_for(lambda: connector.state == "connected", timeout=15)
        done = await command_bus.result(waiting, timeout=15)
        too_late = await command_bus.result(late, timeout=15)
    assert done["ok"], done
    assert too_late["error"]["code"] == "expired"
    assert revived.token_requests >= 1
