"""The event publisher against the real RabbitMQ: properties, pipelining, surviving a reconnect,
publishing what was spooled while the broker was away or before a restart."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
import orjson
import pytest
from structlog.testing import capture_logs

from gateway.bus.connection import connect_bus
from gateway.bus.outbox import Outbox
from gateway.bus.publisher import EventPublisher
from gateway.schema.events import CdrData, NormalizeContext, make_event
from tests.conftest import AMQP_URL, wait_for
from tests.integration.bridge import BrokerBridge

pytestmark = pytest.mark.integration


def cdr_event(tenant: str, n: int):
    ctx = NormalizeContext(tenant, "yeastar", ZoneInfo("UTC"), datetime.now(UTC))
    data = CdrData(
        call_id=f"c{n}",
        started_at=None,
        caller="2001",
        callee="2002",
        direction="internal",
        disposition="answered",
        duration_s=n,
        talk_duration_s=n,
    )
    return make_event(ctx, "cdr.created", data, identity=("cdr", n), subject=f"c{n}")


async def durable_queue(channel, tenant: str):
    exchange = await channel.declare_exchange(
        "pbx.events", aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(f"test-{tenant}", durable=True)
    await queue.bind(exchange, routing_key=f"{tenant}.#")
    return queue


async def drain(
    queue, expected: int, timeout: float = 30
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    ids: set[str] = set()
    async with asyncio.timeout(timeout):
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                got.append(message)
                ids.add(message.message_id)
                if len(ids) >= expected:
                    return got
    return got


@contextlib.asynccontextmanager
async def publishing(
    amqp, tenant: str, outbox: Outbox, **options: Any
) -> AsyncIterator[tuple[EventPublisher, Any]]:
    """A publisher (not started) on a connection of its own to the local broker, and a durable
    queue of the tenant's events; stopped, closed and deleted after."""
    queue = await durable_queue(await amqp.channel(), tenant)
    connection = await connect_bus(AMQP_URL)
    publisher = EventPublisher(connection, "pbx.events", outbox=outbox, **options)
    try:
        yield publisher, queue
    finally:
        await publisher.stop()
        await connection.close()
        await queue.delete(if_unused=False, if_empty=False)


async def test_events_carry_the_cloudevents_amqp_binding(amqp, unique) -> None:
    tenant = f"p{unique}"
    async with publishing(amqp, tenant, Outbox(":memory:"), window=64) as (publisher, queue):
        await publisher.start()
        events = [cdr_event(tenant, n) for n in range(500)]
        for event in events:
            await publisher.submit(event)
        assert await publisher.flush(timeout=30)
        got = await drain(queue, 500)
    assert [m.message_id for m in got] == [e.id for e in events], "order and completeness"
    first, event = got[0], events[0]
    assert first.routing_key == f"{tenant}.cdr.created"
    assert first.content_type == "application/cloudevents+json"
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert first.type == "cdr.created"
    assert first.headers["cloudEvents:source"] == f"pbx://{tenant}"
    assert first.headers["cloudEvents:subject"] == "c0"
    assert orjson.loads(first.body) == orjson.loads(event.to_json())


async def test_publishing_survives_the_broker_closing_connections(unique, broker_node) -> None:
    """The broker drops every connection mid-stream (on the suite's own node: on 5672 it would
    drop everyone's): nothing submitted is lost."""
    tenant = f"p{unique}"
    url = broker_node.url
    setup = await aio_pika.connect_robust(url)
    await durable_queue(await setup.channel(), tenant)
    connection = await connect_bus(url)
    publisher = EventPublisher(
        connection, "pbx.events", outbox=Outbox(":memory:"), window=32, retry_interval_s=0.2
    )
    await publisher.start()
    total = 3000
    try:
        for n in range(total // 2):
            await publisher.submit(cdr_event(tenant, n))
        await broker_node.ctl("close_all_connections", "test: publisher outage")
        for n in range(total // 2, total):
            await publisher.submit(cdr_event(tenant, n))
        assert await publisher.flush(timeout=60), f"backlog left: {publisher.backlog}"
    finally:
        await publisher.stop()
        await connection.close()
        await setup.close()
    check = await aio_pika.connect_robust(url)
    try:
        check_channel = await check.channel()
        queue = await durable_queue(check_channel, tenant)
        got = await drain(queue, total)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await check.close()
    ids = {m.message_id for m in got}
    print(
        f"\nbroker outage: sent={total} received={len(got)} unique={len(ids)} "
        f"lost={total - len(ids)} duplicates={len(got) - len(ids)}"
    )
    assert len(ids) == total


@pytest.fixture
async def bridge() -> AsyncIterator[BrokerBridge]:
    relay = BrokerBridge()
    await relay.start()
    yield relay
    await relay.cut()


async def received_ids(tenant: str, expected: int, timeout: float = 30) -> list[tuple[str, bytes]]:
    check = await aio_pika.connect_robust(AMQP_URL)
    try:
        queue = await durable_queue(await check.channel(), tenant)
        got = await drain(queue, expected, timeout)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await check.close()
    return [(m.message_id or "", m.body) for m in got]


async def test_events_submitted_while_the_broker_is_away_go_out_after(amqp, unique, bridge) -> None:
    tenant = f"p{unique}"
    await durable_queue(await amqp.channel(), tenant)
    connection = await aio_pika.connect_robust(bridge.url, reconnect_interval=0.2)
    outbox = Outbox(":memory:")
    publisher = EventPublisher(
        connection, "pbx.events", outbox=outbox, window=16, retry_interval_s=0.2
    )
    await publisher.start()
    events = [cdr_event(tenant, n) for n in range(400)]
    try:
        for event in events[:100]:
            await publisher.submit(event)
        assert await publisher.flush(timeout=30)
        await bridge.cut()
        await wait_for(lambda: not connection.connected.is_set(), timeout=10)
        async with asyncio.timeout(30):  # returns at all while cut: submit never waits on it
            for event in events[100:]:
                await publisher.submit(event)
        assert not connection.connected.is_set(), "the broker is still away"
        assert publisher.backlog >= 250, "spooled, not published"
        await bridge.restore()
        assert await publisher.flush(timeout=60), f"backlog left: {publisher.backlog}"
        assert len(outbox) == 0
    finally:
        await publisher.stop()
        await connection.close()
        outbox.close()
    got = await received_ids(tenant, len(events))
    ids = {i for i, _ in got}
    print(
        f"\nsubmitted while away: sent={len(events)} received={len(got)} "
        f"lost={len(events) - len(ids)} duplicates={len(got) - len(ids)}"
    )
    assert ids == {e.id for e in events}


async def test_a_restart_publishes_what_the_last_run_left_spooled(
    amqp, unique, tmp_path, bridge
) -> None:
    tenant = f"p{unique}"
    await durable_queue(await amqp.channel(), tenant)
    spool = tmp_path / "outbox.sqlite3"
    events = [cdr_event(tenant, n) for n in range(300)]
    first = await aio_pika.connect_robust(bridge.url, reconnect_interval=0.2)
    outbox = Outbox(spool)
    publisher = EventPublisher(first, "pbx.events", outbox=outbox, window=32, retry_interval_s=0.2)
    await publisher.start()
    try:
        for event in events[:100]:
            await publisher.submit(event)
        assert await publisher.flush(timeout=30)
        await bridge.cut()
        await wait_for(lambda: not first.connected.is_set(), timeout=10)
        for event in events[100:]:
            await publisher.submit(event)
        await publisher.stop(timeout=0.5)  # cannot flush: the rest stays spooled
        left = publisher.backlog
    finally:
        await first.close()
        outbox.close()
    assert left == 200

    second = await aio_pika.connect_robust(AMQP_URL)
    reopened = Outbox(spool)
    assert len(reopened) == 200
    publisher = EventPublisher(second, "pbx.events", outbox=reopened, window=32)
    await publisher.start()
    try:
        assert await publisher.flush(timeout=30), f"backlog left: {publisher.backlog}"
    finally:
        await publisher.stop()
        await second.close()
        reopened.close()
    assert len(Outbox(spool)) == 0

    got = await received_ids(tenant, len(events))
    bodies = {e.id: e.to_json() for e in events}
    ids = {i for i, _ in got}
    print(
        f"\nrestart: sent={len(events)} received={len(got)} lost={len(events) - len(ids)} "
        f"duplicates={len(got) - len(ids)}"
    )
    assert ids == set(bodies), "0 lost"
    for message_id, body in got:
        assert orjson.loads(body) == orjson.loads(bodies[message_id]), "copies are identical"
    order = [i for i, _ in got]
    first_seen = sorted(set(order), key=order.index)
    assert first_seen == [e.id for e in events], "the spool is published in seq order"


class RefusingOutbox(Outbox):
    """Its disk refuses every commit while ``refuse`` is set (a full disk, say)."""

    refuse = False

    def commit(self) -> None:
        if self.refuse and self.staged:
            raise sqlite3.OperationalError("database or disk is full")
        super().commit()


async def test_while_the_disk_refuses_what_is_on_it_still_goes_out(amqp, unique) -> None:
    """Staged events wait (in order, retried every ``retry_interval_s``, not on every event);
    the events already on disk are published meanwhile."""
    tenant = f"p{unique}"
    outbox = RefusingOutbox(":memory:")
    events = [cdr_event(tenant, n) for n in range(3)]
    async with publishing(amqp, tenant, outbox, retry_interval_s=0.1) as (publisher, queue):
        await publisher.submit(events[0])  # on disk
        outbox.refuse = True
        publisher.spool(events[1])
        publisher.spool(events[2])
        await publisher.start()
        first = await drain(queue, 1)
        assert [m.message_id for m in first] == [events[0].id]
        await wait_for(lambda: publisher.backlog == 2, timeout=10)  # e0 confirmed, removed
        assert outbox.staged == 2
        outbox.refuse = False
        assert await publisher.flush(timeout=30)
        rest = await drain(queue, 2)
    assert [m.message_id for m in rest] == [events[1].id, events[2].id]


async def test_an_event_amqp_cannot_carry_is_set_aside_not_retried_for_ever(amqp, unique) -> None:
    """A time before 1970 has no AMQP ``timestamp``: that event leaves the spool, whole in the
    error log; the events behind it go out, in order, with their confirms matched."""
    tenant = f"p{unique}"
    events = [cdr_event(tenant, n) for n in range(5)]
    events[2] = events[2].model_copy(update={"time": datetime(1960, 1, 1, tzinfo=UTC)})
    async with publishing(amqp, tenant, Outbox(":memory:")) as (publisher, queue):
        await publisher.start()
        with capture_logs() as logs:
            for event in events:
                await publisher.submit(event)
            assert await publisher.flush(timeout=30)
        got = await drain(queue, 4)
    assert [m.message_id for m in got] == [e.id for n, e in enumerate(events) if n != 2]
    aside = [log for log in logs if log["event"] == "event_not_publishable"]
    assert len(aside) == 1 and events[2].id in aside[0]["body"]


async def test_the_configured_reconnect_interval_reaches_the_connection() -> None:
    """Not aio-pika's default 5 s: after losing a node, the next attempt comes this soon."""
    connection = await connect_bus(AMQP_URL, reconnect_interval_s=0.3, name="pbx-gateway test")
    try:
        assert connection.reconnect_interval == 0.3  # type: ignore[attr-defined]
    finally:
        await connection.close()
