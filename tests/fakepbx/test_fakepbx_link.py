"""The fake vendor through the gateway in-process: the seam's command, gap, polling and webhook
paths over the real RabbitMQ."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from gateway.testing import HttpSettings
from tests.conftest import wait_for
from tests.fakepbx.conftest import fake_settings
from tests.fakepbx.sim import frame
from tests.integration.fixtures import Collected, running_gateway

pytestmark = pytest.mark.integration

DIAL = {"caller": "2001", "callee": "2002"}


def _calls(got: Collected, type_: str) -> list[str]:
    return [e["data"]["call_id"] for e in got.of_type(type_)]


async def test_dial_reaches_the_pbx_once_and_a_refused_token_is_forbidden(
    fakepbx_sim, command_bus, unique
) -> None:
    sim = await fakepbx_sim()
    good, bad = f"c-{unique}", f"c-{unique}-bad"
    pbxs = fake_settings(sim, good), fake_settings(sim, bad, token="not-the-token")
    async with running_gateway(*pbxs, commands=command_bus.settings):
        result = await command_bus.call(good, "call.dial", DIAL)
        assert result["ok"] is True, result
        assert result["result"] == {"call_id": "d1"}
        assert sim.dials == [DIAL] and sim.requests["/dial"] == 1

        refused = await command_bus.call(bad, "call.dial", DIAL)
        assert refused["ok"] is False, refused
        assert refused["error"]["code"] == "forbidden", refused
        assert sim.dials == [DIAL] and sim.requests["/dial"] == 2  # asked, not dialled


async def test_a_dropped_socket_is_followed_by_a_gap_and_a_reconnect(
    fakepbx_sim, collector, unique
) -> None:
    sim = await fakepbx_sim()
    tenant = f"c-{unique}"
    got = await collector(tenant)
    async with running_gateway(fake_settings(sim, tenant)):
        await wait_for(lambda: sim.ws_connections == 1 and len(sim.sockets) == 1)
        await sim.push(frame("c1", "ringing"))
        await wait_for(lambda: _calls(got, "call.ringing") == ["c1"])

        await sim.drop()
        await wait_for(lambda: got.of_type("gateway.gap"))
        await wait_for(lambda: sim.ws_connections == 2 and len(sim.sockets) == 1)
        await sim.push(frame("c1", "answered"))  # heard on the new socket
        await wait_for(lambda: _calls(got, "call.answered") == ["c1"])

    [gap] = got.of_type("gateway.gap")
    assert gap["data"]["from"] <= gap["data"]["to"] and gap["data"]["recovered"] == 0
    states = [(e["data"]["state"], e["data"]["reason"]) for e in got.of_type("gateway.connection")]
    dropped = next(
        i for i, (s, r) in enumerate(states) if s == "disconnected" and "closed by PBX" in (r or "")
    )
    assert ("connected", None) in states[dropped + 1 :], states


async def test_overlapping_polls_publish_each_record_once_also_after_a_restart(
    fakepbx_sim, collector, unique, tmp_path: Path
) -> None:
    sim = await fakepbx_sim()
    tenant = f"c-{unique}"
    got = await collector(tenant)

    def published(call_id: str) -> bool:
        return call_id in _calls(got, "cdr.created")

    async def overlapping_polls(n: int) -> None:
        start = sim.overlaps
        await wait_for(lambda: sim.overlaps >= start + n)

    pbx = fake_settings(sim, tenant)
    async with running_gateway(pbx, state_dir=tmp_path):
        for n in (1, 2, 3):
            sim.add_record(f"r{n}", talk=n)
        await wait_for(lambda: all(published(f"r{n}") for n in (1, 2, 3)))
        await overlapping_polls(3)  # the newest record served again, three times
        sim.add_record("r4", talk=0)
        await wait_for(lambda: published("r4"))  # published after any repeat of r1-r3 would be
        await overlapping_polls(3)
    async with running_gateway(pbx, state_dir=tmp_path):  # the cursor and seen ids persisted
        await overlapping_polls(3)
        sim.add_record("r5")
        await wait_for(lambda: published("r5"))

    counts = Counter(_calls(got, "cdr.created"))
    assert counts == {f"r{n}": 1 for n in range(1, 6)}, counts
    r1 = next(e for e in got.of_type("cdr.created") if e["data"]["call_id"] == "r1")
    assert r1["data"]["caller"] == "2001" and r1["data"]["talk_duration_s"] == 1
    r4 = next(e for e in got.of_type("cdr.created") if e["data"]["call_id"] == "r4")
    assert r4["data"]["disposition"] == "no_answer"


async def test_the_webhook_route_answers_over_http_and_publishes(
    fakepbx_sim, collector, unique
) -> None:
    sim = await fakepbx_sim()
    tenant = f"c-{unique}"
    got = await collector(tenant)
    http = HttpSettings(enabled=True, port=0)
    async with (
        running_gateway(fake_settings(sim, tenant), http=http) as app,
        aiohttp.ClientSession() as client,
    ):
        assert app.web is not None and app.web.port
        base = f"http://127.0.0.1:{app.web.port}/webhooks/fakepbx"
        hook = f"{base}/{tenant}/webhook"

        async with client.post(hook, json=frame("w1", "ringing")) as response:
            assert response.status == 202, await response.text()
            [accepted] = (await response.json())["accepted"]
        async with client.post(hook, data=b"{not json") as response:
            assert response.status == 400
            assert "not JSON" in (await response.json())["error"]
        async with client.post(hook, json={"kind": "sms", "id": "x"}) as response:
            assert response.status == 400
            assert "unknown kind" in (await response.json())["error"]
        async with client.post(f"{base}/nobody-{unique}/webhook", json=frame("w2", "ringing")) as r:
            assert r.status == 404
            assert "unknown tenant" in (await r.json())["error"]

        await wait_for(lambda: _calls(got, "call.ringing") == ["w1"])
    [event] = got.of_type("call.ringing")
    assert event["id"] == accepted and event["vendor"] == "fakepbx"
    assert not got.of_type("gateway.rejected")  # refused bodies are answered, not published
