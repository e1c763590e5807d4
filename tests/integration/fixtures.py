"""Integration fixtures: simulator on loopback, the gateway app, a consumer on pbx.events."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection

from gateway.app import GatewayApp
from gateway.connectors.yeastar.settings import YeastarPbxSettings
from gateway.settings import (
    BackoffSettings,
    CommandSettings,
    HttpSettings,
    LeaseSettings,
    LoggingSettings,
    PbxSettings,
    Settings,
)
from gateway.settings_models import CommandPolicySettings
from gateway.sim.yeastar.server import YeastarSimulator
from tests.conftest import AMQP_URL, wait_for
from tests.integration.brokers import RabbitNode, start_node


@dataclass
class Collected:
    """Every event a test consumer received, in arrival order."""

    events: list[dict[str, Any]] = field(default_factory=list)
    routing_keys: list[str] = field(default_factory=list)  # of each event, in the same order

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type_]

    def ids(self) -> list[str]:
        return [e["id"] for e in self.events]


@pytest.fixture
async def collector(
    amqp: AbstractRobustConnection, unique: str
) -> AsyncIterator[Callable[[str], Any]]:
    """``await collector(tenant)`` binds an exclusive queue to ``<tenant>.#`` and collects."""
    channel = await amqp.channel()
    tasks: list[asyncio.Task[None]] = []

    async def start(tenant: str) -> Collected:
        exchange = await channel.declare_exchange(
            "pbx.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            f"test-{unique}-{tenant}", exclusive=True, auto_delete=True
        )
        await queue.bind(exchange, routing_key=f"{tenant}.#")
        collected = Collected()

        async def consume() -> None:
            async with queue.iterator() as messages:
                async for message in messages:
                    collected.routing_keys.append(message.routing_key or "")
                    collected.events.append(orjson.loads(message.body))
                    await message.ack()

        tasks.append(asyncio.create_task(consume()))
        return collected

    try:
        yield start
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await channel.close()


#: A command policy that lets every command through, sensitive ones included (tests that run
#: each command once); the default refuses deletes, credential changes and secret-returning lists.
EVERY_COMMAND = CommandPolicySettings(allow_sensitive=["*"])


def pbx_settings(sim: YeastarSimulator, tenant: str, **overrides: Any) -> YeastarPbxSettings:
    values: dict[str, Any] = {
        "tenant": tenant,
        "vendor": "yeastar",
        "base_url": sim.base_url,
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "timezone": "Asia/Shanghai",
        "include_raw": True,
        "heartbeat_interval_s": 1.0,
        "heartbeat_timeout_s": 2.0,
        "handover_grace_s": 0.3,
        "backoff": BackoffSettings(initial_s=0.05, max_s=0.5, reset_after_s=5),
    }
    values.update(overrides)
    return YeastarPbxSettings(**values)


@contextlib.asynccontextmanager
async def running_gateway(
    *pbxs: PbxSettings,
    commands: CommandSettings | None = None,
    state_dir: Path | None = None,
    http: HttpSettings | None = None,
    bus: dict[str, Any] | None = None,
) -> AsyncIterator[GatewayApp]:
    settings = Settings(
        state_dir=state_dir or Path(tempfile.mkdtemp(prefix="gateway-test-")),
        bus={"url": AMQP_URL, **(bus or {})},
        http=http or HttpSettings(enabled=False),
        logging=LoggingSettings(format="console", level="WARNING"),
        commands=commands or CommandSettings(enabled=False),
        lease=LeaseSettings(heartbeat_s=0.2, member_timeout_s=0.6, acquire_interval_s=0.2),
        pbxs=list(pbxs),
    )
    async with running(GatewayApp(settings)) as app:
        yield app


@contextlib.asynccontextmanager
async def running(
    app: GatewayApp, *, start_s: float = 15, stop_s: float = 20
) -> AsyncIterator[GatewayApp]:
    """``app`` running until the block ends; a start that fails raises here."""
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(app.run(stop, started))
    try:
        async with asyncio.timeout(start_s):
            await asyncio.wait(
                [asyncio.create_task(started.wait()), task], return_when=asyncio.FIRST_COMPLETED
            )
        if task.done():
            task.result()
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(task, stop_s)


@pytest.fixture(scope="session")
def broker_node() -> Iterator[RabbitNode]:
    """A RabbitMQ node of this test session's own (see :mod:`tests.integration.brokers`), for
    tests that stop, restart or alarm a broker: the machine's broker on 5672 is never touched.
    Started on first use, reused by every such test, removed at the end of the session."""
    node = start_node()
    try:
        yield node
    finally:
        node.destroy_sync()


@pytest.fixture
async def sim_factory() -> AsyncIterator[Callable[..., Any]]:
    sims: list[YeastarSimulator] = []

    async def make(port: int = 0, **kwargs: Any) -> YeastarSimulator:
        kwargs.setdefault("seed", 7)
        kwargs.setdefault("tz", "Asia/Shanghai")  # as pbx_settings() configures the gateway
        sim = YeastarSimulator(**kwargs)
        await sim.start(port=port)
        sims.append(sim)
        return sim

    try:
        yield make
    finally:
        for sim in sims:
            await sim.stop()


@dataclass
class CommandBus:
    """An isolated command topology (unique exchange name) and helpers to talk to it."""

    settings: CommandSettings
    channel: Any
    replies: Any
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    tenants: set[str] = field(default_factory=set)
    replies_seen: int = 0

    @property
    def exchange(self) -> str:
        return self.settings.exchange

    async def publish(
        self,
        tenant: str,
        command: str,
        args: Any = None,
        *,
        command_id: str | None = None,
        body: bytes | None = None,
        routing_key: str | None = None,
        expiration: float | None = None,
        reply: bool = True,
    ) -> str:
        command_id = command_id if command_id is not None else uuid.uuid4().hex
        self.tenants.add(tenant)
        exchange = await self.channel.get_exchange(self.exchange)
        payload = (
            body if body is not None else orjson.dumps({"command": command, "args": args or {}})
        )
        await exchange.publish(
            aio_pika.Message(
                body=payload,
                message_id=command_id,
                correlation_id=command_id or None,
                reply_to=self.replies.name if reply else None,
                expiration=expiration,
                content_type="application/json",
            ),
            routing_key=routing_key or f"{tenant}.{command}",
        )
        return command_id

    async def result(self, command_id: str, timeout: float = 15.0) -> dict[str, Any]:
        await wait_for(lambda: command_id in self.results, timeout=timeout)
        return self.results[command_id]

    async def call(self, tenant: str, command: str, args: Any = None, **kw: Any) -> dict[str, Any]:
        return await self.result(await self.publish(tenant, command, args, **kw))

    async def dead_letters(self, expected: int, timeout: float = 30.0) -> list[Any]:
        """Take dead letters until ``expected`` arrived (or the timeout)."""
        queue = await self.channel.get_queue(f"{self.exchange}.dead")
        got: list[Any] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while len(got) < expected:
                    message = await queue.get(fail=False, no_ack=True)
                    if message is None:
                        await asyncio.sleep(0.05)
                        continue
                    got.append(message)
        return got


@pytest.fixture
async def command_bus(amqp: AbstractRobustConnection, unique: str) -> AsyncIterator[CommandBus]:
    settings = CommandSettings(exchange=f"test-{unique}.commands", execute_timeout_s=10)
    channel = await amqp.channel()
    # named as the gateway lets a reply_to be by default (or Direct Reply-to)
    replies = await channel.declare_queue(
        f"pbx.replies.test-{unique}", exclusive=True, auto_delete=True
    )
    bus = CommandBus(settings, channel, replies)

    async def collect() -> None:
        async with replies.iterator() as messages:
            async for message in messages:
                await message.ack()
                bus.results.setdefault(message.correlation_id or "", orjson.loads(message.body))
                bus.replies_seen += 1

    task = asyncio.create_task(collect())
    try:
        yield bus
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        cleanup = await amqp.channel()
        tenant_queues = [f".{t}" for t in bus.tenants]
        for name in (".dead", ".expired", ".ledger", *tenant_queues):
            with contextlib.suppress(Exception):
                await cleanup.queue_delete(settings.exchange + name)
        for name in ("", ".dlx"):
            with contextlib.suppress(Exception):
                await cleanup.exchange_delete(settings.exchange + name)
        with contextlib.suppress(Exception):
            await cleanup.close()
        with contextlib.suppress(Exception):
            await channel.close()
