"""The sink through faults: PostgreSQL stopped for 10 s mid-stream loses nothing (a private
instance, never the shared server); the gateway restarted mid-stream and every message
redelivered doubles no row."""

from __future__ import annotations

import asyncio
import signal

import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection

from gateway.settings import BackoffSettings
from gateway.sink.service import SinkOptions
from tests.conftest import AMQP_URL, wait_for
from tests.consumer.factory import cdr, publish
from tests.consumer.postgres import PG_URL, PrivatePostgres, count, ids
from tests.consumer.test_sink_postgres import running_sink
from tests.integration.process import GatewayProcess
from tests.integration.test_process_faults import DurableConsumer, traffic_until, write_config

pytestmark = pytest.mark.integration


@pytest.mark.slow
async def test_a_database_outage_of_10_s_loses_nothing(
    amqp: AbstractRobustConnection, unique: str
) -> None:
    tenant, queue, schema = f"out-{unique}", f"sink-{unique}", f"t_{unique}"
    pg = PrivatePostgres()
    await asyncio.to_thread(pg.init)
    await asyncio.to_thread(pg.start)
    options = SinkOptions(
        AMQP_URL,
        pg.dsn,
        [f"{tenant}.cdr.created"],
        queue=queue,
        schema=schema,
        backoff=BackoffSettings(initial_s=0.2, max_s=1.0),
    )
    published: list[str] = []
    done = asyncio.Event()

    async def stream() -> None:  # 40 CDRs a second, throughout
        n = 0
        while not done.is_set():
            batch = [cdr(tenant, f"call-{n + k}") for k in range(4)]
            await publish(amqp, batch)
            published.extend(e.id for e in batch)
            n += 4
            await asyncio.sleep(0.1)

    try:
        async with running_sink(amqp, options) as sink:
            streaming = asyncio.create_task(stream())
            await wait_for(lambda: sink.stats.written >= 100, timeout=30)
            await asyncio.to_thread(pg.stop)
            await asyncio.sleep(10)  # the outage itself
            assert sink.stats.database_retries >= 3
            await asyncio.to_thread(pg.start)
            await wait_for(lambda: len(published) > sink.stats.written + 200, timeout=10)
            done.set()
            await streaming
            await wait_for(lambda: sink.stats.written >= len(published), timeout=60)
            rows = await asyncio.to_thread(ids, pg.dsn, schema)
            print(
                f"\nsink outage: published {len(published)}, rows {len(rows)},"
                f" database retries {sink.stats.database_retries}"
            )
            assert sorted(rows) == sorted(published), "lost 0, doubled 0"
    finally:
        done.set()
        await asyncio.to_thread(pg.destroy)


async def test_gateway_restart_and_redelivery_double_no_row(
    amqp: AbstractRobustConnection, sim_factory, unique: str, tmp_path
) -> None:
    """Simulated Yeastar traffic through `gateway run` into the sink; the gateway is killed and
    started again mid-stream (it replays its spool and back-fills the gap's CDRs, same ids),
    then every CDR the gateway published is published to the sink once more."""
    tenant, queue, schema = f"rs{unique}", f"sink-{unique}", f"t_{unique}"
    sim = await sim_factory()
    reference = await DurableConsumer.open(amqp, tenant)  # every event the gateway published
    config = write_config(tmp_path, sim, tenant)
    options = SinkOptions(AMQP_URL, PG_URL, [f"{tenant}.cdr.created"], queue=queue, schema=schema)
    stop_traffic = asyncio.Event()
    gateways: list[GatewayProcess] = []

    def cdrs() -> list[dict]:
        return [e for e in reference.events if e["type"] == "cdr.created"]

    try:
        async with running_sink(amqp, options) as sink:
            gateways.append(await GatewayProcess.start(config))
            traffic = asyncio.create_task(traffic_until(sim, stop_traffic))
            await wait_for(lambda: len(cdrs()) >= 15, timeout=60)
            await gateways[0].stop(signal.SIGKILL)
            gateways.append(await GatewayProcess.start(config))
            await wait_for(lambda: len(cdrs()) >= 40, timeout=60)
            stop_traffic.set()
            await asyncio.wait_for(traffic, 60)
            await gateways[1].stop()
            distinct = {e["id"] for e in cdrs()}
            await wait_for(lambda: sink.stats.written >= len(distinct), timeout=30)
            copies = [orjson.dumps(e) for e in cdrs()]
            await publish(amqp, copies, f"{tenant}.cdr.created")  # all of them, again
            await wait_for(
                lambda: sink.stats.written + sink.stats.duplicates >= len(distinct) + len(copies),
                timeout=30,
            )
            rows = await asyncio.to_thread(ids, PG_URL, schema)
            total = await asyncio.to_thread(
                count, PG_URL, f'SELECT count(*) FROM "{schema}".cdr_legs'
            )
            print(
                f"\nsink restart+redelivery: {len(cdrs())} CDR messages, {len(distinct)} ids,"
                f" rows {total}, duplicates skipped {sink.stats.duplicates}"
            )
            assert total == len(distinct) and set(rows) == distinct, "none doubled, none missing"
    finally:
        stop_traffic.set()
        for gateway in gateways:
            await gateway.stop()
        await reference.close()
