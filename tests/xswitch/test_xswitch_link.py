"""The XSwitch link for real: the simulator's node on the local NATS server, the gateway,
RabbitMQ, a consumer. Each test has its own subject prefix, stream and tenant."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
import yaml

from gateway.connectors.xswitch import connector as xswitch_connector
from gateway.connectors.xswitch.connector import XSwitchConnector
from gateway.connectors.xswitch.settings import XSwitchPbxSettings
from gateway.settings import BackoffSettings
from gateway.sim.xswitch.cli import XSwitchSimulator, command_prefix_for
from gateway.sim.xswitch.flows import KINDS
from tests.conftest import AMQP_URL, wait_for
from tests.integration.bridge import BrokerBridge
from tests.integration.fixtures import Collected, running_gateway
from tests.integration.process import GatewayProcess
from tests.integration.test_process_faults import DurableConsumer
from tests.xswitch.link_helpers import connected_count, pbx_for, stream_removed

pytestmark = pytest.mark.integration

FAST = BackoffSettings(initial_s=0.05, max_s=0.5, reset_after_s=5)
NATS_PORT = 4222


def _sent_legs(sim: XSwitchSimulator) -> tuple[set[str], set[str]]:
    """Every leg uuid the node published a CDR for, and every call's first leg."""
    bodies = [data for _subject, data in sim.node.published]
    cdrs = {
        body["params"]["uuid"]
        for body in map(orjson.loads, bodies)
        if body["method"] == "Event.CDR"
    }
    return cdrs, _first_legs(bodies)


def _complete(counts: dict[str, int]) -> bool:
    return counts["cdrs_lost"] == 0 and counts["calls_not_ended"] == 0


def _first_legs(bodies: list[bytes]) -> set[str]:
    return {
        body["params"]["uuid"]
        for body in map(orjson.loads, bodies)
        if body["method"] == "Event.Channel"
        and body["params"]["state"] in ("START", "CALLING")
        and not body["params"].get("peer_uuid")
    }


def _ended(events: list[dict[str, Any]]) -> set[str]:
    return {e["data"]["call_id"] for e in events if e["type"] == "call.ended"}


def _audit(sim: XSwitchSimulator, events: list[dict[str, Any]]) -> dict[str, int]:
    cdrs, calls = _sent_legs(sim)
    got_cdrs = {e["data"]["raw"]["params"]["uuid"] for e in events if e["type"] == "cdr.created"}
    ended = {e["data"]["call_id"] for e in events if e["type"] == "call.ended"}
    ids = Counter(e["id"] for e in events)
    return {
        "calls_sent": len(calls),
        "cdrs_sent": len(cdrs),
        "cdrs_lost": len(cdrs - got_cdrs),
        "calls_not_ended": len(calls - ended),
        "duplicates": sum(n - 1 for n in ids.values()),
        "dup_types": sorted({e["type"] for e in events if ids[e["id"]] > 1}),
        "gaps": len([e for e in events if e["type"] == "gateway.gap"]),
        "rejected": len([e for e in events if e["type"] == "gateway.rejected"]),
    }


@pytest.mark.parametrize("jetstream", ["on", "off"])
async def test_calls_reach_the_consumer(
    jetstream: str, xsim: XSwitchSimulator, unique: str, collector
) -> None:
    tenant = f"x{unique}"
    got: Collected = await collector(tenant)
    async with stream_removed(pbx_for(xsim, tenant, jetstream=jetstream)) as pbx:
        async with running_gateway(pbx) as app:
            await wait_for(lambda: connected_count(got) >= 1, timeout=15)
            await xsim.node.publish_calls(KINDS)
            await wait_for(lambda: _complete(_audit(xsim, got.events)), timeout=20)
            (health,) = [c.health() for c in app.connectors if c.tenant == tenant]
    counts = _audit(xsim, got.events)
    assert counts["calls_sent"] == len(KINDS)
    assert counts["cdrs_lost"] == 0 and counts["rejected"] == 0 and counts["duplicates"] == 0
    calls: dict[str, list[dict[str, Any]]] = {}
    for event in got.events:
        if event["type"].startswith(("call.", "cdr.")):
            calls.setdefault(event["data"]["call_id"], []).append(event)
    for story in calls.values():
        # CDRs come on a subject of their own: only a JetStream stream keeps their order
        # relative to the channel events (core NATS orders per subscription).
        first = (
            story[0] if jetstream == "on" else next(e for e in story if e["type"] != "cdr.created")
        )
        assert first["type"] == "call.ringing"
        assert len({e["data"]["direction"] for e in story if "direction" in e["data"]}) == 1
    assert {e["type"] for e in got.events} >= {
        "call.ringing",
        "call.answered",
        "call.ended",
        "call.failed",
        "call.dtmf",
        "cdr.created",
    }
    assert health["jetstream"] is (jetstream == "on")


@pytest.mark.parametrize("jetstream", ["on", "off"])
async def test_nats_connection_cut_mid_traffic(
    jetstream: str, xsim: XSwitchSimulator, unique: str, collector
) -> None:
    """The gateway's NATS connection is cut (a relay drops it and refuses new ones for a
    while) as calls keep coming: reconnect, one gap per cut, no duplicate ids; with JetStream
    nothing is lost, without it only what the cut hid."""
    relay = BrokerBridge(port=NATS_PORT)
    await relay.start()
    tenant = f"x{unique}"
    got: Collected = await collector(tenant)
    pbx = pbx_for(xsim, tenant, jetstream=jetstream, nats_url=f"nats://127.0.0.1:{relay.port}")
    try:
        async with stream_removed(pbx), running_gateway(pbx):
            await wait_for(lambda: connected_count(got) >= 1, timeout=15)
            await xsim.node.publish_calls(KINDS)
            await relay.cut()
            await wait_for(
                lambda: any(
                    e["data"]["state"] == "disconnected" for e in got.of_type("gateway.connection")
                ),
                timeout=15,
            )
            await xsim.node.publish_calls(KINDS)  # while the gateway is away
            await relay.restore()
            await wait_for(lambda: connected_count(got) >= 2, timeout=15)
            await wait_for(lambda: bool(got.of_type("gateway.gap")), timeout=15)
            last = _first_legs(await xsim.node.publish_calls(KINDS))
            await wait_for(lambda: last <= _ended(got.events), timeout=20)
            if jetstream == "on":
                await wait_for(lambda: _complete(_audit(xsim, got.events)), timeout=20)
    finally:
        await relay.cut()
    counts = _audit(xsim, got.events)
    print(f"\nNATS cut, jetstream {jetstream}:", counts)
    assert counts["duplicates"] == 0
    assert counts["gaps"] == 1
    assert counts["rejected"] == 0
    if jetstream == "on":
        assert counts["cdrs_lost"] == 0 and counts["calls_not_ended"] == 0
        gap = got.of_type("gateway.gap")[0]["data"]
        assert gap["recovered"] >= 1  # the stream kept what the cut hid
    else:  # core NATS: what was in flight at the cut and sent during it is gone, and said so
        assert counts["calls_not_ended"] <= 2 * len(KINDS)


def _config(tmp_path: Path, pbx: XSwitchPbxSettings) -> Path:
    config = tmp_path / "gateway.yaml"
    entry = pbx.model_dump(mode="json", exclude_none=True)
    entry["dev_key"] = pbx.secret()
    config.write_text(
        yaml.safe_dump(
            {
                "bus": {"url": AMQP_URL},
                "http": {"enabled": False},
                "state_dir": str(tmp_path / "state"),
                "lease": {"heartbeat_s": 0.2, "member_timeout_s": 0.6, "acquire_interval_s": 0.2},
                "pbxs": [entry],
            }
        )
    )
    return config


async def test_sigkill_mid_traffic_loses_nothing_with_jetstream(
    xsim: XSwitchSimulator, amqp, unique: str, tmp_path: Path
) -> None:
    """Kill -9 the gateway while calls flow: the durable consumer hands the restarted gateway
    everything it had not acknowledged; every CDR and every call end arrives."""
    tenant = f"x{unique}"
    pbx = pbx_for(xsim, tenant, jetstream="on")
    consumer = await DurableConsumer.open(amqp, tenant)
    gateways: list[GatewayProcess] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            await xsim.node.publish_calls(KINDS)
            await asyncio.sleep(0.05)

    async with stream_removed(pbx):
        try:
            gateways.append(await GatewayProcess.start(_config(tmp_path, pbx)))
            await wait_for(lambda: bool(consumer.events), timeout=20)
            flowing = asyncio.create_task(traffic())
            await wait_for(lambda: len(consumer.events) > 300, timeout=30)
            await gateways[0].stop(signal.SIGKILL)
            await xsim.node.publish_calls(KINDS)  # while no gateway runs
            gateways.append(await GatewayProcess.start(_config(tmp_path, pbx)))
            await wait_for(lambda: len(consumer.events) > 700, timeout=60)
            stop.set()
            await asyncio.wait_for(flowing, 30)
            await wait_for(
                lambda: (
                    _audit(xsim, consumer.events)["cdrs_lost"] == 0
                    and _audit(xsim, consumer.events)["calls_not_ended"] == 0
                ),
                timeout=30,
            )
        finally:
            stop.set()
            for gateway in gateways:
                await gateway.stop()
            await consumer.close()
    counts = _audit(xsim, consumer.events)
    print("\nSIGKILL with JetStream:", counts)
    assert counts["cdrs_lost"] == 0
    assert counts["calls_not_ended"] == 0
    assert counts["rejected"] == 0


@pytest.mark.parametrize("jetstream", ["on", "off"])
async def test_calls_another_controller_accepted_are_observed_to_their_end(
    jetstream: str, xsim: XSwitchSimulator, unique: str, collector
) -> None:
    """``docs/ctrl.md`` ``EnableApp``: controllers share ``cn.xswitch.ctrl`` as a queue group
    and each reads its own ``cn.xswitch.ctrl.<ctrl_uuid>``; ``xctrl.proto`` ``AcceptRequest``
    ("all subsequent events will be delivered to the new controller"); ``tboy/tboy.go``
    publishes a call's later events to ``"cn.xswitch.ctrl." + channel.CtrlUuid``. The
    simulator's business controller (a dotted id, as ``tboy_acd.go``'s ``app.acd``) accepts
    every other call: the gateway sees each of those end, without answering anything."""
    tenant = f"x{unique}"
    got: Collected = await collector(tenant)
    assert xsim.controller is not None
    async with stream_removed(pbx_for(xsim, tenant, jetstream=jetstream)) as pbx:
        async with running_gateway(pbx):
            await wait_for(lambda: connected_count(got) >= 1, timeout=15)
            await xsim.node.publish_calls(KINDS)
            accepted = set(xsim.controller.accepted)
            await wait_for(lambda: accepted <= _ended(got.events), timeout=20)
    assert accepted, "the controller accepted no call"
    own = f"{xsim.prefix}cn.xswitch.ctrl.{xsim.controller.ctrl_uuid}"
    destroys = [
        subject
        for subject, data in xsim.node.published
        if orjson.loads(data)["params"].get("uuid") in accepted
        and orjson.loads(data)["params"].get("state") == "DESTROY"
    ]
    assert destroys and set(destroys) == {own}  # reported only to that controller
    assert not [e for e in got.events if e["type"] == "gateway.rejected"]


@pytest.mark.parametrize("jetstream", ["on", "off"])
async def test_connected_is_said_only_once_the_link_is_subscribed(
    jetstream: str, xsim: XSwitchSimulator, unique: str, collector, monkeypatch
) -> None:
    """The configuration poller is up long before the NATS session (held here): the link must
    not say ``connected`` until it is subscribed (with JetStream: its stream made), else what
    the PBX publishes on that cue is never read."""
    opened = asyncio.Event()
    real_open = xswitch_connector.open_session

    async def held_open(pbx: XSwitchPbxSettings) -> Any:
        await opened.wait()
        return await real_open(pbx)

    monkeypatch.setattr(xswitch_connector, "open_session", held_open)
    tenant = f"x{unique}"
    got: Collected = await collector(tenant)
    async with stream_removed(pbx_for(xsim, tenant, jetstream=jetstream)) as pbx:
        async with running_gateway(pbx) as app:
            await wait_for(lambda: bool(app.connectors), timeout=15)
            (link,) = [c for c in app.connectors if c.tenant == tenant]
            assert isinstance(link, XSwitchConnector)
            await wait_for(lambda: link.config.last_success is not None, timeout=15)
            assert link.health()["state"] != "connected"
            opened.set()
            await wait_for(lambda: connected_count(got) >= 1, timeout=15)
            calls = _first_legs(await xsim.node.publish_calls(KINDS))
            await wait_for(lambda: calls <= _ended(got.events), timeout=20)
    assert connected_count(got) == 1


async def test_a_simulator_answers_only_its_own_command_subjects(
    xsim: XSwitchSimulator, unique: str
) -> None:
    """Two simulators on one NATS server (two test runs at once): a request to one node is
    answered by that node alone, never also by the other (which would act on it too)."""
    assert command_prefix_for("from-acme.") == "to-acme." and command_prefix_for("") == ""
    other = XSwitchSimulator(prefix=f"from-u{unique}.", seed=11, controller=False)
    await other.start()
    nc = await nats.connect(xsim.nats_url)
    try:
        inbox = nc.new_inbox()
        answers: list[dict[str, Any]] = []

        async def collect(msg: Any) -> None:
            answers.append(orjson.loads(msg.data))

        await nc.subscribe(inbox, cb=collect)
        for sim, uuid in ((xsim, "ours"), (other, "probe")):
            subject = f"{sim.command_prefix}cn.xswitch.node.{sim.node.node_uuid}"
            hangup = {"jsonrpc": "2.0", "id": uuid, "method": "XNode.Hangup"}
            await nc.publish(subject, orjson.dumps({**hangup, "params": {"uuid": uuid}}), inbox)
        # the other node answers its probe after anything sent before it on the same subject
        await wait_for(lambda: any(a["id"] == "probe" for a in answers), timeout=15)
        await wait_for(lambda: any(a["id"] == "ours" for a in answers), timeout=15)
    finally:
        await nc.close()
        await other.stop()
    assert sorted(a["id"] for a in answers) == ["ours", "probe"]  # one answer each
    assert [h["uuid"] for h in xsim.node.hangups] == ["ours"]
    assert [h["uuid"] for h in other.node.hangups] == ["probe"]
