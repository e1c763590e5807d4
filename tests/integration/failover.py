"""The node-kill scenario, shared by the cluster test and ``bench/cluster_failover.py``.

A gateway (quorum queues) on node 0 of a 3-node cluster the caller started, a simulated Yeastar
PBX sending calls, one ``call.dial`` every 200 ms; ``kill -9`` node 0 mid-burst, then restart it
(always, so the cluster has its 3 nodes again). Counted: the failover time (kill -> RabbitMQ
confirms events again, on another node), events lost, commands dialled twice, commands answered
"outcome unknown" that never reached the PBX, and ERROR log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import structlog

from gateway.logging import configure_logging
from gateway.settings import CommandSettings
from gateway.sim.yeastar import YeastarSimulator
from tests.conftest import wait_for
from tests.integration.brokers import RabbitNode
from tests.integration.fixtures import Collected, pbx_settings, running_gateway
from tests.yeastar.test_yeastar_events import account

ERROR_LINE = re.compile(
    r"\[(error|critical)\s*\]|\"level\": ?\"(error|critical)\"|^Callback .* error"
)


def urls(nodes: list[RabbitNode]) -> str:
    return ",".join(n.url for n in nodes)


class Client:
    """Events (a quorum queue bound to ``<tenant>.#``) and command replies, on one node."""

    def __init__(self, node: RabbitNode, tenant: str, exchange: str) -> None:
        self.node, self.tenant, self.exchange = node, tenant, exchange
        self.collected = Collected()
        self.results: dict[str, dict[str, Any]] = {}
        self.queue = f"test-cluster-{uuid.uuid4().hex[:8]}"
        self._connection: Any = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self.node.url, reconnect_interval=0.5)
        channel = await self._connection.channel()
        events = await channel.declare_exchange(
            "pbx.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            self.queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(events, routing_key=f"{self.tenant}.#")
        await queue.consume(self._on_event)
        self.replies = await channel.declare_queue(
            f"pbx.replies.{uuid.uuid4().hex}", exclusive=True, auto_delete=True
        )
        await self.replies.consume(self._on_reply, no_ack=True)
        self._channel = channel

    async def _on_event(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.collected.events.append(orjson.loads(message.body))
        with contextlib.suppress(Exception):
            await message.ack()

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.results.setdefault(message.correlation_id or "", orjson.loads(message.body))

    async def command(self, command: str, args: dict[str, Any]) -> str:
        command_id = uuid.uuid4().hex
        exchange = await self._channel.get_exchange(self.exchange)
        await exchange.publish(
            aio_pika.Message(
                orjson.dumps({"command": command, "args": args}),
                message_id=command_id,
                correlation_id=command_id,
                reply_to=self.replies.name,
            ),
            routing_key=f"{self.tenant}.{command}",
        )
        return command_id

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._channel.queue_delete(self.queue)
        with contextlib.suppress(Exception):
            await self._connection.close()


@contextlib.contextmanager
def gateway_log_to(path: Path) -> Iterator[None]:
    """Logging as ``gateway run`` configures it (library records included), every line of it
    (stdout and stderr, file descriptors and Python streams) into ``path`` for counting; the
    previous logging set-up is restored afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    streams = sys.stdout, sys.stderr
    saved = [os.dup(1), os.dup(2)]
    with open(path, "w", buffering=1, errors="replace") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        sys.stdout = sys.stderr = sink
        try:
            configure_logging("console", "INFO")
            yield
        finally:
            structlog.configure(**config)
            root.handlers, root.level = handlers, level
            sink.flush()
            sys.stdout, sys.stderr = streams
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


def error_lines(path: Path) -> list[str]:
    return [
        line for line in path.read_text(errors="replace").splitlines() if ERROR_LINE.search(line)
    ]


async def node_kill_run(
    nodes: list[RabbitNode], run: int, log: Path, *, seed: int | None = None
) -> dict[str, Any]:
    """One kill of ``nodes[0]`` (the gateway's node) during traffic and a dial burst; the node is
    running again when this returns, whatever happened."""
    unique = uuid.uuid4().hex[:8]
    tenant = f"f{unique}"
    sim = YeastarSimulator(seed=run if seed is None else seed, tz="Asia/Shanghai", trap_rate=0.0)
    await sim.start(port=0)
    commands = CommandSettings(exchange=f"kill-{unique}.commands", execute_timeout_s=5)
    client = Client(nodes[2], tenant, commands.exchange)
    bus = {"url": urls(nodes), "queue_type": "quorum", "reconnect_interval_s": 0.5}
    sent: list[str] = []
    stop = asyncio.Event()
    failover_s = float("nan")
    victim = nodes[0]
    killed = False

    async def traffic() -> None:
        while not stop.is_set():
            await sim.run_traffic(calls=2, concurrency=2)

    async def dial() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                sent.append(await client.command("call.dial", {"caller": "2001", "callee": "2002"}))
            await asyncio.sleep(0.2)

    try:
        await client.start()
        with gateway_log_to(log):
            async with running_gateway(
                pbx_settings(sim, tenant), commands=commands, bus=bus
            ) as app:
                await wait_for(lambda: app.connectors[0].health()["state"] == "connected", 30)
                publisher = app.publisher
                assert publisher is not None
                tasks = [asyncio.create_task(traffic()), asyncio.create_task(dial())]
                try:
                    await wait_for(lambda: len(client.results) >= 5, timeout=60)
                    pid = victim.pid()
                    assert pid is not None
                    killed_at = time.monotonic()
                    os.kill(pid, signal.SIGKILL)
                    killed = True
                    # Flowing again: the publisher noticed the loss, then RabbitMQ confirmed
                    # events again (on another node).
                    await wait_for(lambda: publisher._failing, timeout=30, interval=0.01)
                    await wait_for(lambda: not publisher._failing, timeout=120, interval=0.01)
                    failover_s = time.monotonic() - killed_at
                    await asyncio.sleep(3)  # the burst goes on without the node
                    await asyncio.to_thread(victim.start_sync)  # back into the cluster
                    killed = False
                    await asyncio.sleep(2)  # and on, with the node back
                finally:
                    stop.set()
                    await asyncio.gather(*tasks, return_exceptions=True)
                await wait_for(lambda: all(c in client.results for c in sent), timeout=120)
                await wait_for(lambda: publisher.backlog == 0, timeout=60)
                with contextlib.suppress(TimeoutError):
                    await wait_for(lambda: account(sim, client.collected)["lost"] == 0, 30)
    finally:
        stop.set()
        if killed:
            await asyncio.to_thread(victim.start_sync)
        await client.close()
        await sim.stop()
    counts = account(sim, client.collected)
    results = [client.results[c] for c in sent if c in client.results]
    executed = sim.control_calls["call/dial"]
    unknown = sum(1 for r in results if "outcome unknown" in str(r.get("error") or ""))
    known = sum(
        1
        for r in results
        if r.get("ok") or (r.get("error") and "outcome unknown" not in str(r["error"]))
    )
    return {
        "run": run,
        "failover_s": round(failover_s, 2),
        "events_sent": counts["sent"],
        "events_lost": counts["lost"],
        "commands": len(sent),
        "dialled": executed,
        "dialled_twice": max(0, executed - len(sent)),
        "unknown": unknown,
        "unknown_never_sent": max(0, known + unknown - executed),
        "error_lines": len(error_lines(log)),
        "log": str(log),
    }
