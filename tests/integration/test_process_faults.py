"""The gateway process killed (SIGKILL) or stopped (SIGTERM) under load, then started again.

What "nothing lost" means here: every CDR reaches the consumer (spool + back-fill), and every
other frame the simulated PBX sent either reaches it or falls inside a `gateway.gap` window the
gateway published (a PBX keeps no event history, so frames sent to nobody cannot be replayed;
they are announced, never lost silently). Duplicates carry identical ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
import yaml

from tests.conftest import AMQP_URL, wait_for
from tests.integration.process import GatewayProcess
from tests.yeastar.test_yeastar_events import frame_key

pytestmark = pytest.mark.integration

CDR_EVENT = 30012


class DurableConsumer:
    """A consumer that outlives gateway processes: a durable queue, deleted at the end."""

    def __init__(self, channel: Any, queue: Any) -> None:
        self.channel, self.queue = channel, queue
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, amqp: Any, tenant: str) -> DurableConsumer:
        channel = await amqp.channel()
        exchange = await channel.declare_exchange(
            "pbx.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(f"test-{tenant}", durable=True)
        await queue.bind(exchange, routing_key=f"{tenant}.#")
        consumer = cls(channel, queue)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            consumer.events.append(orjson.loads(message.body))
            await message.ack()

        await queue.consume(on_message)
        return consumer

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.queue.delete(if_unused=False, if_empty=False)
        with contextlib.suppress(Exception):
            await self.channel.close()


def audit(sim: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Sent vs received, CDRs separately, missing frames checked against the gap windows."""
    ids = Counter(e["id"] for e in events)
    by_id: dict[str, dict[str, Any]] = {}
    for e in events:  # a live event and its back-filled twin share the id: keep the live one
        if e["id"] not in by_id or "raw" in e["data"]:
            by_id[e["id"]] = e
    unique = by_id.values()
    # A fact the PBX repeats (an extension going idle again) has the same key each time: match
    # each sent frame to the received one of that key closest in time (loopback: well under 0.5 s).
    arrivals: dict[bytes, list[float]] = {}
    for e in unique:
        if e.get("vendorevent") and e["data"].get("raw"):
            key = frame_key(e["data"]["raw"])
            arrivals.setdefault(key, []).append(datetime.fromisoformat(e["time"]).timestamp())
    for times in arrivals.values():
        times.sort()
    gaps = [
        (
            datetime.fromisoformat(e["data"]["from"]).timestamp(),
            datetime.fromisoformat(e["data"]["to"]).timestamp(),
        )
        for e in unique
        if e["type"] == "gateway.gap"
    ]
    cdr_ids: dict[str, set[str]] = {}  # call id or uid -> the event ids it was published under
    for e in unique:
        if e["type"] == "cdr.created":
            cdr_ids.setdefault(e["data"]["call_id"], set()).add(e["id"])
    cdrs_lost = [r for r in sim.cdrs.records if r.call_id not in cdr_ids and r.uid not in cdr_ids]
    # One call's CDR under two ids (live by call id, back-filled by uid) is a duplicate that
    # de-duplication by id cannot catch.
    cdr_twins = sum(
        1
        for r in sim.cdrs.records
        if len(cdr_ids.get(r.call_id, set()) | cdr_ids.get(r.uid, set())) > 1
    )
    # Each arrival belongs to the nearest earlier frame of its key (loopback: well under 0.5 s);
    # a CDR's event time is the call's start, so CDR frames match by key alone.
    sent_by_key: dict[bytes, list[Any]] = {}
    for frame in sim.sent:
        sent_by_key.setdefault(frame_key(orjson.loads(frame.text)), []).append(frame)
    matched: set[int] = set()
    for key, times in arrivals.items():
        frames = sent_by_key.get(key, [])
        for arrived in times:
            candidates = [
                f
                for f in frames
                if f.seq not in matched
                and (f.event == CDR_EVENT or -0.5 <= arrived - f.time <= 0.5)
            ]
            if candidates:
                nearest = min(candidates, key=lambda f: abs(arrived - f.time))
                matched.add(nearest.seq)
    received, missing, silent = len(matched), 0, 0
    for frame in sim.sent:
        if frame.seq in matched:
            continue
        missing += 1
        if not any(start - 1.0 <= frame.time <= end + 1.0 for start, end in gaps):
            silent += 1
    return {
        "sent": len(sim.sent),
        "received": received,
        "missing_in_gaps": missing - silent,
        "lost_silently": silent,
        "duplicates": sum(n - 1 for n in ids.values()),
        "cdrs": len(sim.cdrs.records),
        "cdrs_lost": len(cdrs_lost),
        "cdrs_under_two_ids": cdr_twins,
        "gaps": len(gaps),
    }


def write_config(tmp_path: Path, sim: Any, tenant: str) -> Path:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "bus": {"url": AMQP_URL},
                "http": {"enabled": False},
                "state_dir": str(tmp_path / "state"),
                "shutdown_timeout_s": 10,
                "lease": {"heartbeat_s": 0.2, "member_timeout_s": 0.6, "acquire_interval_s": 0.2},
                "pbxs": [
                    {
                        "tenant": tenant,
                        "vendor": "yeastar",
                        "base_url": sim.base_url,
                        "client_id": sim.client_id,
                        "client_secret": sim.client_secret,
                        "timezone": "Asia/Shanghai",
                        "include_raw": True,
                        "heartbeat_interval_s": 1.0,
                    }
                ],
            }
        )
    )
    return config


async def traffic_until(sim: Any, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await sim.run_traffic(calls=3, concurrency=3)


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_process_stop_and_restart_loses_nothing_silently(
    kill: signal.Signals, amqp, sim_factory, unique, tmp_path
) -> None:
    sim = await sim_factory(trap_rate=0.2)
    tenant = f"p{unique}"
    consumer = await DurableConsumer.open(amqp, tenant)
    config = write_config(tmp_path, sim, tenant)
    stop_traffic = asyncio.Event()
    gateways: list[GatewayProcess] = []
    try:
        gateways.append(await GatewayProcess.start(config))
        await wait_for(lambda: bool(consumer.events), timeout=30)  # connected
        traffic = asyncio.create_task(traffic_until(sim, stop_traffic))
        await wait_for(lambda: len(consumer.events) > 150, timeout=30)
        stopped_at = time.monotonic()
        code = await gateways[0].stop(kill)
        stop_s = time.monotonic() - stopped_at
        log = "".join(gateways[0].log)
        with contextlib.closing(sqlite3.connect(tmp_path / "state" / "outbox.sqlite3")) as db:
            spool_left = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        await asyncio.sleep(1.5)  # the PBX keeps producing while no gateway runs
        gateways.append(await GatewayProcess.start(config))
        await wait_for(lambda: len(consumer.events) > 300, timeout=60)
        stop_traffic.set()
        await asyncio.wait_for(traffic, 60)
        settled: dict[str, Any] = {}

        def complete() -> bool:
            settled.update(audit(sim, consumer.events))
            return settled["cdrs_lost"] == 0 and settled["lost_silently"] == 0

        with contextlib.suppress(TimeoutError):
            await wait_for(complete, timeout=30, interval=0.5)
    finally:
        stop_traffic.set()
        for gateway in gateways:
            await gateway.stop()
        await consumer.close()
    counts = audit(sim, consumer.events)
    counts.update(signal=kill.name, exit_code=code, stop_s=round(stop_s, 2), spool_left=spool_left)
    print("\nprocess fault:", counts)
    if kill == signal.SIGTERM:
        assert code == 0, log[-2000:]
        assert stop_s < 15
        assert "gateway_stopped" in log
    # What was spooled is remembered (facts of CDRs without a call id too), also after a kill.
    assert counts["cdrs_under_two_ids"] == 0
    assert counts["cdrs_lost"] == 0
    assert counts["lost_silently"] == 0
    assert counts["gaps"] >= 1
