"""``gateway sink postgres`` against the real PostgreSQL and RabbitMQ: bad input never crashes
it and reaches the dead-letter queue with the reason; rows are keyed by event id."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection

from gateway.consumer import REASON_HEADER, parse_event
from gateway.schema.events import AccountBillData, make_event
from gateway.sink.postgres import describe_dsn
from gateway.sink.rows import Unstorable, row_of
from gateway.sink.service import PostgresSink, SinkOptions
from tests.conftest import AMQP_URL, wait_for
from tests.consumer.factory import call_event, cdr, context, gap, publish
from tests.consumer.postgres import PG_URL, count, drop_schema
from tests.consumer.test_consumer_runner import dead_letters, queues_deleted

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def running_sink(
    amqp: AbstractRobustConnection, options: SinkOptions
) -> AsyncIterator[PostgresSink]:
    """The sink in this process; its queues and schema are gone afterwards."""
    sink = PostgresSink(options)
    stop = asyncio.Event()
    async with queues_deleted(amqp, options.queue, f"{options.queue}.dead"):
        task = asyncio.create_task(sink.run(stop))
        try:
            await wait_for(lambda: sink.consumer._queue is not None or task.done(), timeout=30)
            if task.done():
                task.result()
            yield sink
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await asyncio.to_thread(drop_schema, options.dsn, options.schema)


def test_rows_and_what_is_not_stored() -> None:
    event = parse_event(cdr("acme", "c1", caller=None).to_json())
    row = row_of(event, {})
    assert row.table == "cdr_legs" and row.values[0] == event.id and None in row.values
    assert row_of(parse_event(gap("acme").to_json()), {}).table == "gaps"
    assert row_of(parse_event(call_event("acme", "c1").to_json()), {}).table == "call_events"
    bill = make_event(
        context("acme"),
        "account.bill",
        AccountBillData(enterprise="e", month="2026-03", action="created", minor_unit=100),
        identity=("bill",),
    )
    with pytest.raises(Unstorable, match=r"'account\.bill' is not stored by this sink"):
        row_of(parse_event(bill.to_json()), {})
    assert describe_dsn("postgresql://u:secret@db:6543/x") == "postgresql://u@db:6543/x"


async def test_bad_input_goes_to_the_dead_letter_queue_with_the_reason(
    amqp: AbstractRobustConnection, unique: str
) -> None:
    tenant, queue, schema = f"bad-{unique}", f"sink-{unique}", f"t_{unique}"
    options = SinkOptions(AMQP_URL, PG_URL, [f"{tenant}.#"], queue=queue, schema=schema)
    bill = make_event(
        context(tenant),
        "account.bill",
        AccountBillData(enterprise="e", month="2026-03", action="created", minor_unit=100),
        identity=("bill",),
    )
    nulls = {
        field: None
        for field in ("started_at", "caller", "callee", "direction", "disposition", "duration_s")
    }
    good = [
        cdr(tenant, "nulls", **nulls, talk_duration_s=None),  # nulls the contract allows: a row
        cdr(tenant, "fine"),
        call_event(tenant, "fine"),
    ]
    bad_rows = {
        "too long": cdr(tenant, "long", caller="1" * 200),
        "out of range": cdr(tenant, "big", duration_s=2**40),
        "NUL": cdr(tenant, "nul", recording="a\x00b"),
    }
    body = orjson.loads(cdr(tenant, "shape").to_json())
    refused_payload = orjson.dumps({**body, "data": {**body["data"], "duration_s": "long"}})
    async with running_sink(amqp, options) as sink:
        await publish(amqp, [b"\x00\x01 binary"], f"{tenant}.cdr.created")
        await publish(amqp, [b'{"hello": "world"}'], f"{tenant}.cdr.created")
        await publish(amqp, [refused_payload], f"{tenant}.cdr.created")
        await publish(amqp, [bill, *bad_rows.values(), *good])
        dead = await dead_letters(amqp, f"{queue}.dead", 7)
        await wait_for(lambda: sink.stats.written >= len(good), timeout=15)
        await publish(amqp, [cdr(tenant, "after")])  # the sink goes on
        await wait_for(lambda: sink.stats.written >= len(good) + 1, timeout=15)
        stored_nulls = (
            f'SELECT count(*) FROM "{schema}".cdr_legs WHERE call_id = \'nulls\''
            " AND caller IS NULL AND started_at IS NULL AND duration_s IS NULL"
        )
        assert await asyncio.to_thread(count, PG_URL, stored_nulls) == 1
    reasons = {m.body: m.headers[REASON_HEADER] for m in dead}
    assert reasons[b"\x00\x01 binary"].startswith("not a gateway event: not JSON")
    assert reasons[b'{"hello": "world"}'].startswith("not a gateway event")
    assert "payload not as in the contract: data.duration_s" in reasons[refused_payload]
    assert "'account.bill' is not stored by this sink" in reasons[bill.to_json()]
    assert "value too long for type character varying(128)" in reasons[
        bad_rows["too long"].to_json()
    ]
    assert "out of range" in reasons[bad_rows["out of range"].to_json()]
    assert "NUL" in reasons[bad_rows["NUL"].to_json()]
    for event in bad_rows.values():
        assert reasons[event.to_json()].startswith("PostgreSQL refused the row: ")
    assert sink.stats.dead_lettered == 7 and sink.stats.duplicates == 0


async def test_legs_are_rows_by_id_and_queryable_by_call(
    amqp: AbstractRobustConnection, unique: str
) -> None:
    tenant, queue, schema = f"legs-{unique}", f"sink-{unique}", f"t_{unique}"
    options = SinkOptions(AMQP_URL, PG_URL, [f"{tenant}.cdr.created"], queue=queue, schema=schema)
    legs = [cdr(tenant, "call-1", leg=n) for n in range(3)]
    async with running_sink(amqp, options) as sink:
        await publish(amqp, [*legs, legs[0], legs[2], gap(tenant)])
        await wait_for(lambda: sink.stats.written + sink.stats.duplicates >= 6, timeout=15)
        query = f'SELECT legs FROM "{schema}".calls WHERE tenant = \'{tenant}\''
        assert await asyncio.to_thread(count, PG_URL, query) == 3
        assert await asyncio.to_thread(count, PG_URL, f'SELECT count(*) FROM "{schema}".gaps') == 1
        version = f'SELECT max(version) FROM "{schema}".schema_version'
        assert await asyncio.to_thread(count, PG_URL, version) == 1
    assert sink.stats.duplicates == 2 and sink.stats.written == 4


