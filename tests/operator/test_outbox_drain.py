"""``gateway outbox drain``: an operator publishes the spool of an instance that will not come
back (the next start of an instance does that itself); nothing is lost, nothing shed, each event
leaves the spool only once confirmed."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import aio_pika
import orjson
import pytest

from gateway.bus.outbox import Outbox
from gateway.schema.events import CloudEvent
from tests.conftest import AMQP_URL, gateway_cli, wait_for

pytestmark = pytest.mark.integration


def spooled(n: int, type_: str) -> CloudEvent:
    return CloudEvent(
        id=f"left-{n}",
        source="pbx://acme",
        type=type_,
        time=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n),
        subject=f"s{n}",
        tenant="acme",
        vendor="yeastar",
        data={"n": n},
    )


async def test_drain_publishes_a_dead_instances_spool_in_order_and_empties_it(
    tmp_path, unique
) -> None:
    types = ["call.ringing", "agent.presence", "cdr.created", "gateway.gap"] * 50
    outbox = Outbox(tmp_path / "outbox.sqlite3")  # what the instance left when it died
    for n, type_ in enumerate(types):
        outbox.append(spooled(n, type_))
    outbox.close()
    exchange = f"test-{unique}.events"
    connection = await aio_pika.connect(AMQP_URL)
    received: list[dict[str, object]] = []
    try:
        channel = await connection.channel()
        events = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(events, routing_key="acme.#")

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received.append(orjson.loads(message.body))
            await message.ack()

        await queue.consume(take)
        done = await asyncio.to_thread(
            gateway_cli,
            "outbox",
            "drain",
            "--state-dir",
            str(tmp_path),
            "--amqp-url",
            AMQP_URL,
            "--exchange",
            exchange,
            "--timeout",
            "30",
        )
        assert done.returncode == 0, done.stderr
        summary = orjson.loads(done.stdout)
        assert summary["published"] == len(types) and summary["left"] == 0
        await wait_for(lambda: len(received) == len(types), timeout=10)
        assert [e["id"] for e in received] == [f"left-{n}" for n in range(len(types))]
        left = Outbox(tmp_path / "outbox.sqlite3")
        assert len(left) == 0
        left.close()
        again = await asyncio.to_thread(
            gateway_cli, "outbox", "drain", "--state-dir", str(tmp_path), "--amqp-url", AMQP_URL,
            "--exchange", exchange,
        )  # fmt: skip
        assert again.returncode == 0 and orjson.loads(again.stdout)["published"] == 0
    finally:
        with contextlib.suppress(Exception):
            channel = await connection.channel()
            await channel.exchange_delete(exchange)
        await connection.close()


def test_drain_without_a_spool_or_a_broker_says_why(tmp_path) -> None:
    missing = gateway_cli("outbox", "drain", "--state-dir", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no outbox in" in missing.stderr
    Outbox(tmp_path / "outbox.sqlite3").close()
    closed = gateway_cli(
        "outbox",
        "drain",
        "--state-dir",
        str(tmp_path),
        "--amqp-url",
        "amqp://guest:guest@127.0.0.1:1/",
    )
    assert closed.returncode == 4 and "RabbitMQ unreachable" in closed.stderr
