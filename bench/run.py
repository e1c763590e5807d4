"""Reproducible benchmarks: `python bench/run.py [--events N]`.

Ratios are measured against a baseline in the same run (this machine is noisy):
- publisher: confirmed events/s (through the durable outbox) with a pipeline window of 1 (await
  each confirm) vs wider windows,
  straight to the broker and through a loopback proxy adding 1 ms each way (a LAN-like round trip);
- normalizer: 30011 frames/s through the pure Yeastar normalizer.
Results are printed as a table and saved to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aio_pika  # noqa: E402

from gateway.bus.connection import connect_bus  # noqa: E402
from gateway.bus.outbox import Outbox  # noqa: E402
from gateway.bus.publisher import EventPublisher  # noqa: E402
from gateway.connectors.yeastar.normalize import normalize_frame  # noqa: E402
from gateway.schema.events import CdrData, NormalizeContext, make_event  # noqa: E402

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
FRAME = json.dumps(
    {
        "type": 30011,
        "sn": "3631A2124XXX",
        "msg": json.dumps(
            {
                "call_id": "1648801160.110",
                "members": [
                    {
                        "extension": {
                            "number": "2002",
                            "channel_id": "PJSIP/2002-0000004f",
                            "member_status": "ANSWERED",
                            "call_path": " ",
                        }
                    },
                    {
                        "outbound": {
                            "from": "2002",
                            "to": "5503301",
                            "trunk_name": "peer-to-41",
                            "channel_id": "PJSIP/trunk-peer-to-41-endpoint-00000050",
                            "member_status": "ANSWER",
                            "call_path": " ",
                        }
                    },
                ],
            }
        ),
    }
)


def _ctx(tenant: str) -> NormalizeContext:
    return NormalizeContext(tenant, "yeastar", ZoneInfo("UTC"), datetime.now(UTC))


class DelayProxy:
    """TCP proxy on loopback that delays every chunk by ``delay_s`` in each direction."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5672)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                dst.write(chunk)
                await dst.drain()

        sender = asyncio.create_task(deliver())
        try:
            while chunk := await src.read(65536):
                queue.put_nowait((loop.time() + self.delay_s, chunk))
        finally:
            sender.cancel()
            dst.close()


async def publish_rate(window: int, events: int, url: str = AMQP_URL) -> float:
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    connection = await connect_bus(url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(
        "pbx.events", aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key=f"{tenant}.#")
    spool = Path(tempfile.mkdtemp(prefix="bench-")) / "outbox.sqlite3"
    outbox = Outbox(spool, max_events=max(events * 2, 1000))
    publisher = EventPublisher(connection, "pbx.events", outbox=outbox, window=window)
    await publisher.start()
    batch = cdr_events(tenant, events)
    started = time.perf_counter()
    for event in batch:
        await publisher.submit(event)
    assert await publisher.flush(timeout=300)
    elapsed = time.perf_counter() - started
    await publisher.stop()
    outbox.close()
    await queue.delete(if_unused=False, if_empty=False)
    await connection.close()
    return events / elapsed


def cdr_events(tenant: str, count: int) -> list:
    ctx = _ctx(tenant)
    data = {
        "started_at": None,
        "caller": "1",
        "callee": "2",
        "direction": "internal",
        "disposition": "answered",
        "duration_s": 1,
        "talk_duration_s": 1,
    }
    return [
        make_event(ctx, "cdr.created", CdrData(call_id=str(n), **data), identity=("cdr", n))
        for n in range(count)
    ]


def outbox_append_rate(count: int) -> float:
    """Each append is its own commit: the event is on disk when submit returns."""
    outbox = Outbox(
        Path(tempfile.mkdtemp(prefix="bench-")) / "outbox.sqlite3", max_events=count * 2
    )
    events = cdr_events("bench", count)
    started = time.perf_counter()
    for event in events:
        outbox.append(event)
    elapsed = time.perf_counter() - started
    outbox.close()
    return count / elapsed


def normalize_rate(frames: int) -> float:
    ctx = _ctx("bench")
    started = time.perf_counter()
    for _ in range(frames):
        normalize_frame(FRAME, ctx)
    return frames / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=3000)
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    proxy = DelayProxy(0.001)
    await proxy.start()
    for label, url in (
        ("loopback", AMQP_URL),
        ("1 ms each way", f"amqp://guest:guest@127.0.0.1:{proxy.port}/"),
    ):
        baseline = await publish_rate(1, args.events, url)
        rows.append({"bench": f"publish, {label}, window=1", "rate_per_s": baseline, "ratio": 1.0})
        for window in (64, 256):
            rate = await publish_rate(window, args.events, url)
            rows.append(
                {
                    "bench": f"publish, {label}, window={window}",
                    "rate_per_s": rate,
                    "ratio": rate / baseline,
                }
            )
    await proxy.stop()
    rows.append(
        {
            "bench": "normalize 30011 frames",
            "rate_per_s": normalize_rate(args.events * 5),
            "ratio": None,
        }
    )
    rows.append(
        {
            "bench": "outbox append (on disk per event)",
            "rate_per_s": outbox_append_rate(args.events * 5),
            "ratio": None,
        }
    )
    print(f"{'benchmark':<40} {'per second':>12} {'vs window=1':>12}")
    for row in rows:
        ratio = f"{row['ratio']:.1f}x" if row["ratio"] is not None else "-"
        print(f"{row['bench']:<40} {row['rate_per_s']:>12,.0f} {ratio:>12}")
    out = ROOT / "bench/results/latest.json"
    out.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(),
                "events": args.events,
                "python": platform.python_version(),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
