"""Simulator -> gateway -> RabbitMQ -> consumer, over real sockets and the real broker."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from gateway.connectors.yeastar.connector import YeastarConnector
from tests.conftest import wait_for
from tests.integration.fixtures import pbx_settings, running_gateway

pytestmark = pytest.mark.integration

STOPPED = "link stopped by the gateway"  # published when the gateway itself closes the link


def frame_key(frame: dict[str, Any]) -> bytes:
    """The vendor fact a frame carries, independent of msg double-encoding."""
    msg = frame.get("msg")
    if isinstance(msg, str | bytes):
        msg = orjson.loads(msg)
    return orjson.dumps([int(frame["type"]), msg], option=orjson.OPT_SORT_KEYS)


def account(sim: Any, collected: Any) -> dict[str, int]:
    """Sent (to at least one subscriber) vs received facts; every number is a count of frames."""
    sent = Counter(frame_key(orjson.loads(f.text)) for f in sim.sent if f.subscribers > 0)
    vendor_events = [e for e in collected.events if e.get("vendorevent") and "raw" in e["data"]]
    unique_ids: dict[str, dict[str, Any]] = {e["id"]: e for e in vendor_events}
    received = Counter(frame_key(e["data"]["raw"]) for e in unique_ids.values())
    lost = sum((sent - received).values())
    return {
        "sent": sum(sent.values()),
        "unsubscribed": sum(1 for f in sim.sent if f.subscribers == 0),
        "published": len(vendor_events),
        "unique": len(unique_ids),
        "duplicates": len(vendor_events) - len(unique_ids),
        "lost": lost,
        "unexpected": sum((received - sent).values()),
    }


async def settle(sim: Any, collected: Any, timeout: float = 15.0) -> dict[str, int]:
    """Wait until everything the simulator delivered has come out of RabbitMQ."""
    try:
        await wait_for(lambda: account(sim, collected)["lost"] == 0, timeout=timeout)
    except TimeoutError:
        pytest.fail(f"events still missing after {timeout} s: {account(sim, collected)}")
    return account(sim, collected)


async def test_traffic_reaches_consumers_normalized(sim_factory, collector, unique) -> None:
    sim = await sim_factory(trap_rate=0.5)
    tenant = f"t{unique}"
    collected = await collector(tenant)
    async with running_gateway(pbx_settings(sim, tenant)) as app:
        await wait_for(lambda: app.connectors[0].health()["state"] == "connected")
        await sim.run_traffic(calls=30, concurrency=4)
        counts = await settle(sim, collected)
    print("\nend-to-end counts:", counts)
    assert counts["lost"] == 0 and counts["unexpected"] == 0 and counts["duplicates"] == 0
    assert counts["sent"] >= 100
    first = collected.events[0]
    assert first["type"] == "gateway.connection" and first["data"]["state"] == "connected"
    assert not collected.of_type("gateway.rejected")
    cdr_calls = {e["subject"] for e in collected.of_type("cdr.created")}
    ended_calls = {e["subject"] for e in collected.of_type("call.ended")}
    assert cdr_calls and ended_calls <= cdr_calls
    for event in collected.events:
        assert event["source"] == f"pbx://{tenant}" and event["specversion"] == "1.0"


async def test_token_expiry_during_traffic_loses_nothing(sim_factory, collector, unique) -> None:
    sim = await sim_factory(access_ttl=2, trap_rate=0.3)
    tenant = f"t{unique}"
    collected = await collector(tenant)
    async with running_gateway(pbx_settings(sim, tenant)) as app:
        await wait_for(lambda: app.connectors[0].health()["state"] == "connected")
        traffic = asyncio.create_task(sim.run_traffic(calls=60, concurrency=3))
        await asyncio.wait_for(traffic, 60)
        await wait_for(lambda: sim.stats()["tokens_issued"] >= 4, timeout=10)
        counts = await settle(sim, collected)
    counts["token_moves"] = sim.stats()["tokens_issued"]
    print("\ntoken expiry counts:", counts)
    assert counts["lost"] == 0 and counts["unsubscribed"] == 0
    assert counts["duplicates"] == 0 and counts["unexpected"] == 0
    full_logins = REGISTRY.get_sample_value(
        "gateway_yeastar_token_refreshes_total",
        {"tenant": tenant, "kind": "get_token", "outcome": "ok"},
    )
    assert full_logins == 1, "after the first login only refresh_token is used"
    disconnects = [
        e
        for e in collected.of_type("gateway.connection")
        if e["data"]["state"] != "connected" and e["data"]["reason"] != STOPPED
    ]
    assert disconnects == [], "a token handover must not drop the link"


async def test_socket_drops_reconnect_without_duplicates(sim_factory, collector, unique) -> None:
    sim = await sim_factory(trap_rate=0.3)
    tenant = f"t{unique}"
    collected = await collector(tenant)
    async with running_gateway(pbx_settings(sim, tenant)) as app:
        connector = app.connectors[0]
        assert isinstance(connector, YeastarConnector)
        await wait_for(lambda: connector.state == "connected")
        traffic = asyncio.create_task(sim.run_traffic(calls=40, concurrency=3))
        drops = 0
        while not traffic.done() and drops < 4:
            await wait_for(lambda: connector.state == "connected", timeout=10)
            await asyncio.sleep(0.5)
            drops += await sim.drop_connections() > 0
        await asyncio.wait_for(traffic, 60)
        await wait_for(lambda: connector.state == "connected", timeout=10)
        counts = await settle(sim, collected)
        # The last recovery may still be holding back-filled CDRs (recovery.cdr_settle_s).
        await wait_for(lambda: len(collected.of_type("gateway.gap")) >= drops, timeout=15)
    counts["drops"] = drops
    print("\nsocket drop counts:", counts)
    assert drops >= 2
    assert counts["lost"] == 0 and counts["duplicates"] == 0 and counts["unexpected"] == 0
    assert len(collected.of_type("gateway.gap")) == drops
    states = [
        e["data"]["state"]
        for e in collected.of_type("gateway.connection")
        if e["data"]["reason"] != STOPPED
    ]
    assert states.count("disconnected") == drops and states.count("connected") == drops + 1


async def test_wrong_secret_backs_off_and_never_gets_banned(sim_factory, collector, unique) -> None:
    sim = await sim_factory()
    tenant = f"t{unique}"
    collected = await collector(tenant)
    pbx = pbx_settings(sim, tenant, client_secret="wrong-secret")
    async with running_gateway(pbx):
        await wait_for(
            lambda: any(
                "not retrying" in (e["data"].get("reason") or "")
                for e in collected.of_type("gateway.connection")
            ),
            timeout=15,
        )
        failures_at_give_up = dict(sim.auth_failures)
        await asyncio.sleep(1.0)  # a window in which a hammering client would fail again
        assert dict(sim.auth_failures) == failures_at_give_up
    print("\nauth failures seen by the PBX:", failures_at_give_up)
    assert not sim.blocked
    assert max(failures_at_give_up.values()) == pbx.max_auth_failures < 5
    assert collected.of_type("gateway.connection")[0]["data"]["state"] == "auth_failed"


async def test_banned_address_reports_blocked_without_retrying(
    sim_factory, collector, unique
) -> None:
    sim = await sim_factory()
    sim.blocked.add("127.0.0.1")
    tenant = f"t{unique}"
    collected = await collector(tenant)
    async with running_gateway(pbx_settings(sim, tenant, blocked_retry_s=60)):
        await wait_for(lambda: bool(collected.of_type("gateway.connection")), timeout=10)
        requests = sim.token_requests
        await asyncio.sleep(0.5)
        assert sim.token_requests == requests
    event = collected.of_type("gateway.connection")[0]
    assert event["data"]["state"] == "blocked" and "70004" in event["data"]["reason"]
