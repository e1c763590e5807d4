"""RabbitMQ goes away under steady PBX traffic: the outbox holds events until it is back.

(a) ``rabbitmqctl close_all_connections`` a few times, (b) ``rabbitmqctl stop_app`` for a few
seconds, then ``start_app``. The consumer reads a durable queue over a robust connection, so it
survives both; it de-duplicates by id. These tests run against the session's own RabbitMQ node
(fixture ``broker_node``), never the machine's broker on 5672, which others use meanwhile; the
node is still restarted in a ``finally`` for the next test, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
import pytest

from gateway.settings import LeaseSettings
from tests.conftest import wait_for
from tests.integration import fixtures as gateway_fixtures
from tests.integration.brokers import RabbitNode
from tests.integration.fixtures import Collected, pbx_settings, running_gateway
from tests.yeastar.test_yeastar_events import account

pytestmark = pytest.mark.integration

STOPPED_S = 3.0  # how long the broker stays stopped


@pytest.fixture
def leases_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """With leases on, losing the broker also means giving up the PBX link (and other instances
    on this shared broker may take it over); here the link must stay up so that every frame the
    PBX sends has to go through the outbox while RabbitMQ is away or blocks."""
    monkeypatch.setattr(
        gateway_fixtures, "LeaseSettings", functools.partial(LeaseSettings, enabled=False)
    )


async def all_delivered(publisher: Any, sim: Any, collected: Collected) -> None:
    """The spool is empty and every frame the simulator sent has reached the consumer."""
    await wait_for(lambda: publisher.backlog == 0, timeout=60)
    try:
        await wait_for(lambda: account(sim, collected)["lost"] == 0, timeout=30)
    except TimeoutError:
        pytest.fail(f"events missing: {account(sim, collected)}")


async def broker_up(node: RabbitNode) -> None:
    """Start the app (a no-op when running) and wait until the broker answers."""
    await node.start_app()


class DurableCollector:
    """A consumer that outlives broker restarts: robust connection, durable queue."""

    def __init__(self, url: str, tenant: str, queue_name: str) -> None:
        self.url = url
        self.tenant = tenant
        self.queue_name = queue_name
        self.collected = Collected()
        self.last_received = 0.0
        self._connection: Any = None
        self._queue: Any = None

    async def start(self) -> Collected:
        self._connection = await aio_pika.connect_robust(self.url, reconnect_interval=0.5)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            "pbx.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._queue = await channel.declare_queue(self.queue_name, durable=True)
        await self._queue.bind(exchange, routing_key=f"{self.tenant}.#")
        await self._queue.consume(self._on_message)
        return self.collected

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.collected.events.append(orjson.loads(message.body))
        self.last_received = time.monotonic()
        with contextlib.suppress(Exception):  # a lost ack only means a redelivered copy
            await message.ack()

    async def close(self) -> None:
        if self._connection is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(15):
                await self._queue.delete(if_unused=False, if_empty=False)
        with contextlib.suppress(Exception):
            await self._connection.close()


async def steady_traffic(sim: Any, stop: asyncio.Event) -> None:
    """Calls and background events, a few at a time, until ``stop``."""
    async with asyncio.timeout(180):
        while not stop.is_set():
            await sim.run_traffic(calls=3, concurrency=3)


async def test_broker_outages_lose_nothing(sim_factory, unique, leases_off, broker_node) -> None:
    sim = await sim_factory(trap_rate=0.2)
    tenant = f"t{unique}"
    node = broker_node
    consumer = DurableCollector(node.url, tenant, f"test-faults-{unique}")
    collected = await consumer.start()
    stop_traffic = asyncio.Event()
    closes = 0
    recovery_s = float("nan")
    try:
        async with running_gateway(pbx_settings(sim, tenant), bus={"url": node.url}) as app:
            await wait_for(lambda: app.connectors[0].health()["state"] == "connected")
            traffic = asyncio.create_task(steady_traffic(sim, stop_traffic))
            try:
                # (a) the broker drops every connection, three times
                for _ in range(3):
                    await asyncio.sleep(1.5)
                    await node.ctl("close_all_connections", "test: broker fault")
                    closes += 1
                await asyncio.sleep(2.0)
                # (b) the broker stops for a few seconds
                try:
                    await node.stop_app()
                    await asyncio.sleep(STOPPED_S)
                    spooled = app.publisher.backlog if app.publisher else 0
                finally:
                    await broker_up(node)
                back_at = time.monotonic()
                assert app.publisher is not None
                publisher = app.publisher
                await wait_for(lambda: publisher.backlog == 0, timeout=60)
                recovery_s = time.monotonic() - back_at  # broker answering -> spool empty
                await asyncio.sleep(2.0)  # traffic continues after the restart
            finally:
                stop_traffic.set()
                await asyncio.wait_for(traffic, 60)
            # everything spooled during the outages reaches the consumer
            await all_delivered(publisher, sim, collected)
    finally:
        stop_traffic.set()
        await broker_up(node)  # whatever happened, leave the node running for the next test
        await consumer.close()
    counts = account(sim, collected)
    print(
        f"\nbroker faults: closes={closes} stopped_s={STOPPED_S} spooled_while_stopped={spooled} "
        f"sent={counts['sent']} received={counts['published']} unique={counts['unique']} "
        f"lost={counts['lost']} duplicates={counts['duplicates']} "
        f"unexpected={counts['unexpected']} unsubscribed={counts['unsubscribed']} "
        f"recovery_s={recovery_s:.2f}"
    )
    assert counts["sent"] >= 50
    assert counts["lost"] == 0 and counts["unexpected"] == 0
    assert counts["unsubscribed"] == 0, "the PBX link stayed up through the broker outages"
    assert spooled > 0, "events were spooled while RabbitMQ was stopped"
    ids = [e["id"] for e in collected.events]
    copies = {i for i in ids if ids.count(i) > 1}
    by_id: dict[str, bytes] = {}
    for e in collected.events:
        body = orjson.dumps(e, option=orjson.OPT_SORT_KEYS)
        assert by_id.setdefault(e["id"], body) == body, "a duplicate differs from its original"
    assert len(copies) <= counts["duplicates"]


async def memory_watermark(node: RabbitNode) -> str:
    value = await node.ctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
    return value if value.replace(".", "", 1).isdigit() else "0.4"


def arrival_disorder(collected: Collected) -> int:
    """Events received before one the gateway took earlier (first copies only; a CDR's time is
    its call's start, so only the other PBX events count)."""
    seen: set[str] = set()
    last = datetime.min.replace(tzinfo=UTC)
    disorder = 0
    for event in collected.events:
        if event["id"] in seen or not event.get("vendorevent") or event["type"] == "cdr.created":
            continue
        seen.add(event["id"])
        at = datetime.fromisoformat(event["time"])
        if at < last:
            disorder += 1
        last = max(last, at)
    return disorder


async def test_memory_alarm_holds_events_in_the_spool(
    sim_factory, unique, leases_off, broker_node
) -> None:
    """RabbitMQ blocks publishers on a memory alarm: the spool takes the events meanwhile, and
    they go out in order once the alarm clears."""
    sim = await sim_factory(trap_rate=0.2)
    tenant = f"m{unique}"
    node = broker_node
    consumer = DurableCollector(node.url, tenant, f"test-alarm-{unique}")
    collected = await consumer.start()
    stop_traffic = asyncio.Event()
    watermark = await memory_watermark(node)
    spooled, blocked_s, drain_s = 0, 0.0, float("nan")
    try:
        async with running_gateway(pbx_settings(sim, tenant), bus={"url": node.url}) as app:
            await wait_for(lambda: app.connectors[0].health()["state"] == "connected")
            assert app.publisher is not None
            publisher = app.publisher
            traffic = asyncio.create_task(steady_traffic(sim, stop_traffic))
            try:
                await wait_for(lambda: len(collected.events) > 20, timeout=30)
                try:
                    await node.ctl("set_vm_memory_high_watermark", "0.0000001")
                    blocked_at = time.monotonic()
                    await wait_for(lambda: publisher.backlog > 50, timeout=30)
                    received_while_blocked = len(collected.events)
                    await asyncio.sleep(2.0)  # the alarm lasts; frames keep coming meanwhile
                    spooled = publisher.backlog
                    assert len(collected.events) - received_while_blocked <= 64  # the window
                finally:
                    await node.ctl("set_vm_memory_high_watermark", watermark)
                cleared_at = time.monotonic()
                blocked_s = cleared_at - blocked_at
                await wait_for(lambda: publisher.backlog == 0, timeout=60)
                drain_s = time.monotonic() - cleared_at
            finally:
                stop_traffic.set()
                await asyncio.wait_for(traffic, 60)
            await all_delivered(publisher, sim, collected)
    finally:
        stop_traffic.set()
        with contextlib.suppress(Exception):
            await node.ctl("set_vm_memory_high_watermark", watermark)
        await consumer.close()
    counts = account(sim, collected)
    disorder = arrival_disorder(collected)
    print(
        f"\nmemory alarm: blocked_s={blocked_s:.1f} spooled={spooled} sent={counts['sent']} "
        f"received={counts['published']} lost={counts['lost']} "
        f"duplicates={counts['duplicates']} out_of_order={disorder} drain_s={drain_s:.2f}"
    )
    assert spooled > 50, "events were spooled while the broker blocked publishers"
    assert counts["lost"] == 0 and counts["unexpected"] == 0 and counts["unsubscribed"] == 0
    assert disorder == 0
