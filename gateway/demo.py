"""``gateway demo``: a simulated PBX (``--vendor``, Yeastar by default), the gateway and a consumer
printing what it receives.

Everything runs in one process against the local RabbitMQ. The consumer's queue is exclusive and
auto-deleted; at the end the demo deletes the tenant's queues the gateway declared (its command
queue, command ledger and shared state, when no other process uses them) and its state folder, so
it leaves nothing behind but the shared exchanges. ``--tenant`` must not be a real tenant's name.
The gateway's status page is served while it runs; its URL is printed first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import aio_pika
import orjson

from gateway.app import GatewayApp
from gateway.bus.connection import bus_problem
from gateway.bus.shared_state import STATE_PREFIX
from gateway.bus.topology import CommandNames
from gateway.connectors import registry
from gateway.connectors.plugin import DemoOptions
from gateway.settings import (
    AdminListenerSettings,
    HttpSettings,
    LeaseSettings,
    LoggingSettings,
    PbxSettings,
    PublicListenerSettings,
    Settings,
    amqp_url_problem,
    redact_url,
)

#: Exit status when RabbitMQ is unreachable or refuses the login (as ``gateway send``).
EXIT_BROKER = 4


class DemoError(Exception):
    """A failure the user can fix (RabbitMQ away, a bad URL), with its exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


_SUMMARY_FIELDS = (
    "state",
    "direction",
    "disposition",
    "caller",
    "callee",
    "duration_s",
    "registered",
    "presence",
    "digit",
    "result",
    "reason",
    "queue",
    "object",
    "action",
    "recovered",
    "operation",
    "occupied",
    "agent_id",
    "changes",
    "balance",
    "change",
    "threshold",
    "money",
    "total",
    "who",
    "what",
    "title",
)


def _shown(value: Any) -> Any:
    """An amount (``{"value", "amount"}``, as in ``account.*`` events) as its decimal amount."""
    return value["amount"] if isinstance(value, dict) and "amount" in value else value


def summarize(event: dict[str, Any]) -> str:
    """One readable line per event: time, type, subject and the telling fields."""
    data = event.get("data") or {}
    parts = [
        f"{key}={_shown(data[key])}"
        for key in _SUMMARY_FIELDS
        if data.get(key) not in (None, "", [])
    ]
    members = data.get("members")
    if members:
        parts.append(
            "members="
            + ",".join(
                f"{m.get('number') or m.get('from') or '?'}:{m.get('status')}" for m in members
            )
        )
    time = str(event.get("time", ""))[11:19]
    return (
        f"{time}  {event.get('type', '?'):<22} {event.get('subject') or '-':<18} {' '.join(parts)}"
    )


async def run_demo(args: argparse.Namespace, stop: asyncio.Event) -> None:
    plugin = registry.plugin(args.vendor)
    if plugin.simulator is None:
        raise registry.PluginError(f"vendor {args.vendor!r} ships no simulator")
    variants = _variants(getattr(args, "sim", None) or [])
    problem = amqp_url_problem(args.amqp_url)
    if problem:
        raise DemoError(f"--amqp-url {redact_url(args.amqp_url)}: {problem}", 2)
    try:  # RabbitMQ first: without it there is nothing to show
        connection = await aio_pika.connect_robust(args.amqp_url, timeout=10)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        raise DemoError(
            f"{bus_problem(exc, '--amqp-url')} (at {redact_url(args.amqp_url)});"
            " scripts/demo installs and starts a local RabbitMQ",
            EXIT_BROKER,
        ) from None
    # the admin listener (status page) and the public one, where a simulator posts webhooks
    ports = (_free_port(), _free_port())
    options = DemoOptions(
        args.tenant,
        args.calls_per_second,
        args.seed,
        gateway_url=f"http://127.0.0.1:{ports[1]}",
        variants=variants,
    )
    try:
        async with plugin.simulator.demo(options) as pbx:
            await _run(args, stop, plugin.title, pbx, ports, connection)
    finally:
        await connection.close()


def _variants(items: list[str]) -> dict[str, str]:
    """``--sim KEY=VALUE`` flags -> a dict; a flag without ``=`` is a usage error."""
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DemoError(f"--sim {item!r}: expected KEY=VALUE", 2)
        found[key.strip()] = value.strip()
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _run(
    args: argparse.Namespace,
    stop: asyncio.Event,
    title: str,
    pbx: PbxSettings,
    ports: tuple[int, int],
    connection: aio_pika.abc.AbstractRobustConnection,
) -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    settings = Settings(
        bus={"url": args.amqp_url},
        state_dir=state_dir,
        lease=LeaseSettings(enabled=False),  # one instance: no need to wait for peers
        http=HttpSettings(
            admin=AdminListenerSettings(host="127.0.0.1", port=ports[0]),
            public=PublicListenerSettings(host="127.0.0.1", port=ports[1]),
        ),
        logging=LoggingSettings(format="console", level="WARNING"),
        pbxs=[pbx],
    )
    app_stop = asyncio.Event()
    app_task: asyncio.Task[None] | None = None
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            settings.bus.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=f"{args.tenant}.#")
        app_task = asyncio.create_task(GatewayApp(settings).run(app_stop), name="gateway")
        print(
            f"demo: simulated {title} ({pbx.vendor}), events from pbx.events "
            f"'{args.tenant}.#' (Ctrl-C stops)\n"
            f"demo: status page http://127.0.0.1:{ports[0]}/ (admin listener),"
            f" webhooks http://127.0.0.1:{ports[1]}/webhooks/ (public listener)",
            flush=True,
        )

        async def consume() -> None:
            async with queue.iterator() as messages:
                async for message in messages:
                    async with message.process():
                        event = orjson.loads(message.body)
                        line = message.body.decode() if args.json else summarize(event)
                        print(line, flush=True)

        consumer = asyncio.create_task(consume(), name="demo-consumer")
        waits = [asyncio.create_task(stop.wait()), app_task, consumer]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.duration):
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        consumer.cancel()
        waits[0].cancel()
        await asyncio.gather(consumer, waits[0], return_exceptions=True)
    finally:
        app_stop.set()
        if app_task is not None:
            await asyncio.gather(app_task, return_exceptions=True)
        await _delete_declared(connection, settings, args.tenant)
        shutil.rmtree(state_dir, ignore_errors=True)
        print("demo: stopped", file=sys.stderr, flush=True)


async def _delete_declared(
    connection: aio_pika.abc.AbstractRobustConnection, settings: Settings, tenant: str
) -> None:
    """The tenant's queues the gateway declared: its command queue, command ledger (a stream)
    and shared state. ``if_unused``: a queue another process consumes is left alone."""
    commands = CommandNames(settings.commands.exchange).tenant_queue(tenant)
    for name in (commands, f"{commands}.ledger", f"{STATE_PREFIX}{tenant}"):
        try:
            channel = await connection.channel()
        except Exception:
            return
        try:
            async with asyncio.timeout(5):
                await channel.queue_delete(name, if_unused=True)
        except Exception:  # absent, or in use: nothing to tidy
            pass
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
