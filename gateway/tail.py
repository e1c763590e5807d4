"""``gateway tail``: follow the events a running gateway publishes, live.

A temporary queue (exclusive, auto-deleted, no acks: nothing is taken from anyone else's queue)
bound to the events exchange with ``<tenant>.<type pattern>``; each event printed as the demo
prints it, or as its JSON line. The exchange is only looked up, never declared, so tailing a
broker that has no gateway leaves nothing behind and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from gateway.bus.connection import bus_problem
from gateway.demo import summarize
from gateway.settings import amqp_url_problem, redact_url

#: Exit status when RabbitMQ is unreachable, refusing, or has no events exchange (as ``send``).
EXIT_BROKER = 4


class TailError(Exception):
    """A failure the user can fix, with its exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class TailOptions:
    amqp_url: str
    tenant: str = "*"
    types: list[str] = field(default_factory=lambda: ["#"])
    json: bool = False
    exchange: str = "pbx.events"


def routing_keys(tenant: str, types: list[str]) -> list[str]:
    """Topic bindings for a tenant (``*``: every tenant) and type patterns (``call.*``, ``#``)."""
    tenant = tenant.strip() or "*"
    if "." in tenant or "#" in tenant:
        raise TailError(f"--tenant {tenant!r}: a tenant name has no '.' or '#'", 2)
    patterns = [t.strip() for t in types if t.strip()] or ["#"]
    return [f"{tenant}.{pattern}" for pattern in dict.fromkeys(patterns)]


def render(body: bytes, as_json: bool) -> str:
    """The line printed for one message; a body that is not an event is shown, never fatal."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        event = None
    if not isinstance(event, dict):
        text = body[:200].decode("utf-8", "replace")
        return orjson.dumps({"not_an_event": text}).decode() if as_json else f"?? {text!r}"
    return body.decode("utf-8", "replace") if as_json else summarize(event)


async def tail(options: TailOptions, stop: asyncio.Event) -> None:
    keys = routing_keys(options.tenant, options.types)
    problem = amqp_url_problem(options.amqp_url)
    if problem:
        raise TailError(f"--amqp-url {redact_url(options.amqp_url)}: {problem}", 2)
    try:
        connection = await aio_pika.connect(options.amqp_url, timeout=10)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        raise TailError(
            f"{bus_problem(exc, '--amqp-url')} (at {redact_url(options.amqp_url)})", EXIT_BROKER
        ) from None
    try:
        channel = await connection.channel()
        try:
            exchange = await channel.get_exchange(options.exchange, ensure=True)
        except aio_pika.exceptions.ChannelClosed:
            raise TailError(
                f"RabbitMQ at {redact_url(options.amqp_url)} has no exchange"
                f" {options.exchange!r}: has a gateway ever run against it?",
                EXIT_BROKER,
            ) from None
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in keys:
            await queue.bind(exchange, routing_key=key)
        print(
            f"tail: events from {options.exchange} {', '.join(repr(k) for k in keys)}"
            f" into temporary queue {queue.name} (Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )

        closed = asyncio.Event()
        reader_gone = asyncio.Event()  # `gateway tail | head`: the reader has what it wanted

        async def on_message(message: AbstractIncomingMessage) -> None:
            if reader_gone.is_set():
                return
            try:
                print(render(message.body, options.json), flush=True)
            except BrokenPipeError:
                reader_gone.set()

        connection.close_callbacks.add(lambda *_: closed.set())
        await queue.consume(on_message, no_ack=True)
        waits = [asyncio.create_task(e.wait()) for e in (stop, closed, reader_gone)]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        if reader_gone.is_set():
            raise BrokenPipeError
        if closed.is_set() and not stop.is_set():
            raise TailError("RabbitMQ closed the connection", EXIT_BROKER)
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
