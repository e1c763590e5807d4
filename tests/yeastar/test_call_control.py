"""Every Yeastar command once through RabbitMQ: command in -> REST -> PBX state -> event out."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.conftest import AMQP_URL, wait_for
from tests.integration.fixtures import pbx_settings, running_gateway

pytestmark = pytest.mark.integration


def channel_of(sim: Any, call_id: str, number: str) -> str:
    state = sim.call_state(call_id)
    assert state is not None, f"call {call_id} is not live"
    return next(m["channel_id"] for m in state["members"] if m.get("number") == number)


def status_of(sim: Any, call_id: str, number: str) -> str | None:
    state = sim.call_state(call_id)
    members = state["members"] if state else []
    return next((m["status"] for m in members if m.get("number") == number), None)


class Flow:
    """Runs commands for one tenant and waits for their events on pbx.events."""

    def __init__(self, bus: Any, tenant: str, events: Any) -> None:
        self.bus, self.tenant, self.events = bus, tenant, events
        self.ran: list[str] = []

    async def ok(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.bus.call(self.tenant, command, args)
        assert result["ok"], f"{command}: {result}"
        self.ran.append(command)
        return result["result"] or {}

    async def event(self, type_: str, subject: str, **data: Any) -> dict[str, Any]:
        def match() -> dict[str, Any] | None:
            for event in self.events.of_type(type_):
                if event["subject"] == subject and all(
                    event["data"].get(k) == v for k, v in data.items()
                ):
                    return event
            return None

        await wait_for(lambda: match() is not None, timeout=10)
        found = match()
        assert found is not None
        return found


async def test_every_command_against_the_simulator(
    sim_factory, command_bus, collector, unique
) -> None:
    sim = await sim_factory(inbound_wait=True, auto_hangup_s=60)
    tenant = f"cc{unique}"
    events = await collector(tenant)
    async with running_gateway(pbx_settings(sim, tenant), commands=command_bus.settings) as app:
        await wait_for(lambda: app.connectors[0].health()["state"] == "connected")
        flow = Flow(command_bus, tenant, events)

        # dial: a new call, its call-status events.
        call_id = (await flow.ok("call.dial", {"caller": "2001", "callee": "2002"}))["call_id"]
        await flow.event("call.answered", call_id)
        queried = await flow.ok("call.query", {"call_id": call_id})
        assert [c["call_id"] for c in queried["calls"]] == [call_id]
        callee = channel_of(sim, call_id, "2002")

        # hold / unhold change member status and report it.
        await flow.ok("call.hold", {"channel_id": callee})
        assert status_of(sim, call_id, "2002") == "HOLD"
        await flow.event("call.held", call_id)
        await flow.ok("call.unhold", {"channel_id": callee})
        assert status_of(sim, call_id, "2002") != "HOLD"

        # mute and recording are PBX-side state only.
        await flow.ok("call.mute", {"channel_id": callee})
        assert next(m for m in sim.call_state(call_id)["members"] if m["number"] == "2002")["muted"]
        await flow.ok("call.unmute", {"channel_id": callee})
        for command, state in (
            ("call.record_start", "recording"),
            ("call.record_pause", "paused"),
            ("call.record_resume", "recording"),
        ):
            await flow.ok(command, {"channel_id": callee})
            assert sim.call_state(call_id)["recording"] == state, command

        # blind transfer: 2002 stays and is put through to 2005, 2001 leaves.
        await flow.ok("call.transfer", {"channel_id": callee, "mode": "blind", "target": "2005"})
        await flow.event("call.transferred", call_id)
        await wait_for(lambda: status_of(sim, call_id, "2005") in ("ANSWER", "ANSWERED"))

        # listen and add_member bring new members in.
        await flow.ok("call.listen", {"channel_id": callee, "listener": "2003", "mode": "whisper"})
        await wait_for(lambda: status_of(sim, call_id, "2003") is not None)
        await flow.ok("call.add_member", {"channel_id": callee, "number": "2004"})
        await wait_for(lambda: status_of(sim, call_id, "2004") is not None)

        # hangup ends the call: call.ended + its CDR.
        for number in ("2002", "2003", "2004", "2005", "2001"):
            state = sim.call_state(call_id)
            if state is None:
                break
            member = next(
                (m for m in state["members"] if m["number"] == number and m["status"] != "BYE"),
                None,
            )
            if member is not None:
                await flow.ok("call.hangup", {"channel_id": member["channel_id"]})
        await flow.event("call.ended", call_id)
        live_cdr = await flow.event("cdr.created", call_id)

        # park / park status on a second call.
        parked_call = (await flow.ok("call.dial", {"caller": "2006", "callee": "2007"}))["call_id"]
        await flow.event("call.answered", parked_call)
        parked = await flow.ok("call.park", {"channel_id": channel_of(sim, parked_call, "2007")})
        status = await flow.ok("call.park_status", {})
        assert any(p["slot"] == parked["slot"] for p in status["parked"])

        # play_prompt: a prompt call, then prompt_finished.
        await flow.ok("call.play_prompt", {"number": "2008", "prompts": ["welcome"]})
        await wait_for(lambda: bool(events.of_type("call.prompt_finished")), timeout=10)

        # inbound call control inside the 10 s window.
        accepted = await sim.start_inbound_call()
        await flow.event("call.incoming", accepted["call_id"])
        await flow.ok("call.accept_inbound", {"channel_id": accepted["channel_id"]})
        refused = await sim.start_inbound_call()
        await flow.event("call.incoming", refused["call_id"])
        await flow.ok("call.refuse_inbound", {"channel_id": refused["channel_id"]})
        await flow.event("cdr.created", refused["call_id"], disposition="busy")

        # uaCSTA phones.
        for command in ("call.uacsta_accept", "call.uacsta_hangup", "call.uacsta_refuse"):
            phone = await sim.start_uacsta_call()
            if command == "call.uacsta_hangup":
                await flow.ok(
                    "call.uacsta_accept",
                    {
                        "extension": phone["extension"],
                        "call_id": phone["uacsta_call_id"],
                        "device_address": phone["ip_address"],
                    },
                )
            await flow.ok(
                command,
                {
                    "extension": phone["extension"],
                    "call_id": phone["uacsta_call_id"],
                    "device_address": phone["ip_address"],
                },
            )
        await wait_for(lambda: len(events.of_type("call.uacsta")) >= 4, timeout=10)

        # queue agents: extension 2010 is agent id 11 in queue 6402 (id 3).
        def agent() -> dict[str, Any]:
            return next(a for a in sim.agents.agent_status(3)["data"] if a["number"] == "2010")

        await flow.ok("agent.logout", {"agent": "11", "queues": ["3"]})
        assert agent()["is_login"] == 0
        await flow.ok("agent.login", {"agent": "11"})
        assert agent()["is_login"] == 1
        await flow.ok("agent.pause", {"agent": "11", "queues": ["3"], "pause_reason": "*01"})
        assert agent()["is_pause"] == 1
        await flow.ok("agent.unpause", {"agent": "11", "queues": ["3"]})
        assert agent()["is_pause"] == 0
        # by numbers, as agent.* events name agents and queues (extension/search, queue/list)
        await flow.ok("agent.pause", {"extension": "2010", "queue_numbers": ["6402"]})
        assert agent()["is_pause"] == 1
        await flow.ok("agent.unpause", {"extension": "2010"})
        assert agent()["is_pause"] == 0

        # cdr.search finds the CDR, with the same event id as the live one.
        window = {
            "start": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            "end": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        }
        found = await flow.ok("cdr.search", window)
        by_call = {e["subject"]: e for e in found["events"]}
        assert by_call[call_id]["id"] == live_cdr["id"]

    expected = {
        "call.dial",
        "call.query",
        "call.hold",
        "call.unhold",
        "call.mute",
        "call.unmute",
        "call.record_start",
        "call.record_pause",
        "call.record_resume",
        "call.listen",
        "call.add_member",
        "call.transfer",
        "call.hangup",
        "call.park",
        "call.park_status",
        "call.play_prompt",
        "call.accept_inbound",
        "call.refuse_inbound",
        "call.uacsta_accept",
        "call.uacsta_refuse",
        "call.uacsta_hangup",
        "agent.login",
        "agent.logout",
        "agent.pause",
        "agent.unpause",
        "cdr.search",
    }
    assert set(flow.ran) == expected
    print(
        f"\ncommands executed through the bus: {len(flow.ran)} ({len(expected)} kinds); "
        f"PBX requests: {dict(sim.control_calls)}"
    )


async def test_token_expiry_between_two_commands(sim_factory, command_bus, unique) -> None:
    sim = await sim_factory()
    tenant = f"cc{unique}"
    async with running_gateway(pbx_settings(sim, tenant), commands=command_bus.settings) as app:
        await wait_for(lambda: app.connectors[0].health()["state"] == "connected")
        first = await command_bus.call(tenant, "call.query", {"direction": "internal"})
        logins = sim.refresh_requests + sim.token_requests
        sim.expire_tokens()  # the PBX forgets the token between the two commands
        second = await command_bus.call(tenant, "call.query", {"direction": "internal"})
    assert first["ok"] and second["ok"], second
    assert sim.control_calls["call/query"] == 2, "the rejected try is not executed by the PBX"
    assert sim.refresh_requests + sim.token_requests - logins == 1, "exactly one refresh"


async def gateway_send(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "send",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_gateway_send_prints_results_and_exit_status(
    sim_factory, command_bus, unique
) -> None:
    sim = await sim_factory()
    tenant = f"cc{unique}"
    command_bus.tenants.add(tenant)
    common = ("--exchange", command_bus.exchange, "--amqp-url", AMQP_URL)
    async with running_gateway(pbx_settings(sim, tenant), commands=command_bus.settings) as app:
        await wait_for(lambda: app.connectors[0].health()["state"] == "connected")
        code, out, _ = await gateway_send(
            tenant, "call.dial", "--args", '{"caller": "2001", "callee": "2002"}', *common
        )
        assert code == 0 and orjson.loads(out)["result"]["call_id"], out
        code, out, _ = await gateway_send(
            tenant, "call.hold", "--args", '{"channel_id": "PJSIP/9999-0000"}', *common
        )
        assert code == 1 and orjson.loads(out)["error"]["code"] == "not_found", out
        asked = time.monotonic()
        code, _, err = await gateway_send(
            f"nobody{unique}",
            "call.query",
            "--args",
            '{"direction": "inbound"}',
            "--timeout",
            "10",  # an unknown tenant is answered at once (the broker returns the command)
            *common,
        )
        assert code == 3 and "no gateway takes commands" in err, err
        assert time.monotonic() - asked < 8, "an unknown tenant waited out the timeout"
    dials = sim.control_calls["call/dial"]
    print(f"\ngateway send: ok -> 0, not_found -> 1, unknown tenant -> 3; dials: {dials}")
