"""CDRs written per second by ``gateway sink postgres`` at several batch sizes.

Needs the local RabbitMQ and PostgreSQL (``scripts/ensure-postgres``). For each batch size: N
CDR events are published first (so the sink is never waiting on the publisher), then the sink
(in this process) drains them into a fresh schema; the rate is rows committed per second of
draining. A table is printed and the figures saved to ``bench/results/sink-latest.json``.

    python bench/sink.py [--events 3000] [--batch 1 --batch 50 --batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

import aio_pika

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.sink.service import PostgresSink, SinkOptions  # noqa: E402
from tests.conftest import wait_for  # noqa: E402
from tests.consumer.factory import cdr, publish  # noqa: E402
from tests.consumer.postgres import drop_schema  # noqa: E402

AMQP = os.environ.get("GATEWAY_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
PG = os.environ.get("GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


async def one(events: int, batch: int) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    tenant, queue, schema = f"bench{tag}", f"bench-sink-{tag}", f"bench_{tag}"
    options = SinkOptions(
        AMQP, PG, [f"{tenant}.cdr.created"], queue=queue, schema=schema, batch=batch, linger_s=0.02
    )
    sink = PostgresSink(options)
    connection = await aio_pika.connect_robust(AMQP)
    stop = asyncio.Event()
    try:
        await sink.consumer.open()  # the queue exists before the events are published
        await sink.consumer.close()
        await publish(connection, [cdr(tenant, f"call-{n}") for n in range(events)])
        started = time.monotonic()
        task = asyncio.create_task(sink.run(stop))
        await wait_for(lambda: sink.stats.written >= events, timeout=600, interval=0.01)
        elapsed = time.monotonic() - started
        stop.set()
        await task
    finally:
        channel = await connection.channel()
        for name in (queue, f"{queue}.dead"):
            await channel.queue_delete(name)
        await connection.close()
        drop_schema(PG, schema)
    return {
        "batch": batch,
        "events": events,
        "seconds": round(elapsed, 3),
        "cdrs_per_s": round(events / elapsed),
        "duplicates": sink.stats.duplicates,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batch", type=int, action="append", default=None)
    args = parser.parse_args()
    rows = [await one(args.events, size) for size in args.batch or [1, 50, 500]]
    print(f"{'batch':>6} {'events':>7} {'seconds':>8} {'CDRs/s':>8}")
    for row in rows:
        print(f"{row['batch']:>6} {row['events']:>7} {row['seconds']:>8} {row['cdrs_per_s']:>8}")
    out = ROOT / "bench/results/sink-latest.json"
    out.write_text(json.dumps({"bench": "sink", "runs": rows}, indent=2) + "\n")
    print(f"saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
