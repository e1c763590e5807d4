"""``gateway send``: publish one command, wait for its result, print it.

Exit status: 0 when the result is ok, 1 for a failed result, 2 when no result came in time,
3 for bad arguments (``--args`` not a JSON object, or no gateway takes commands for the tenant),
4 when RabbitMQ is unreachable, refuses the login or has no command exchange.

``--timeout`` bounds the whole exchange (connect, publish, wait): the command goes out with that
AMQP expiration, and the command gives up when it is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import aio_pika
import orjson

#: RabbitMQ's Direct Reply-to pseudo-queue.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"

EXIT_OK, EXIT_FAILED, EXIT_TIMEOUT, EXIT_BAD_ARGS, EXIT_BROKER = 0, 1, 2, 3, 4

#: Closing the connection is tidy-up: it may not stretch the user's timeout by more than this.
CLOSE_GRACE_S = 0.3


class SendError(Exception):
    """A failure the user can fix, with its exit status; ``str()`` is one line."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


async def send_command(
    amqp_url: str,
    tenant: str,
    command: str,
    args: dict[str, Any],
    *,
    timeout_s: float = 30.0,
    exchange: str = "pbx.commands",
    command_id: str | None = None,
    started_at: float | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """Publish with a fresh id, ``reply_to`` and an AMQP expiration of ``timeout_s``; wait for
    the result until ``timeout_s`` after ``started_at`` (``time.monotonic()``, default now).

    Returns (exit status, result or None); raises :class:`SendError` for what the user can fix.
    """
    command_id = command_id or str(uuid.uuid4())
    deadline = (started_at if started_at is not None else time.monotonic()) + timeout_s
    left = max(0.05, deadline - time.monotonic())
    connection: aio_pika.abc.AbstractConnection | None = None
    try:
        async with asyncio.timeout(left):
            connection = await _connect(amqp_url)
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            # Direct Reply-to: no queue of its own, and a reply_to the gateway accepts.
            replies = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
            answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

            async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                if message.correlation_id == command_id and not answer.done():
                    answer.set_result(orjson.loads(message.body))

            await replies.consume(on_reply, no_ack=True)
            try:
                target = await channel.get_exchange(exchange, ensure=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                raise SendError(
                    f"RabbitMQ has no exchange {exchange!r}: no gateway has started on this"
                    " broker (or --exchange is wrong)",
                    EXIT_BROKER,
                ) from None
            try:
                await target.publish(
                    aio_pika.Message(
                        body=orjson.dumps({"command": command, "args": args}),
                        content_type="application/json",
                        message_id=command_id,
                        correlation_id=command_id,
                        reply_to=DIRECT_REPLY_TO,
                        expiration=timeout_s,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=f"{tenant}.{command}",
                    mandatory=True,
                )
            except aio_pika.exceptions.DeliveryError:
                raise SendError(
                    f"no gateway takes commands for tenant {tenant!r} (nothing on {exchange!r}"
                    f" is bound to {tenant}.{command}): check the tenant's name",
                    EXIT_BAD_ARGS,
                ) from None
            result = await answer
            return (EXIT_OK if result.get("ok") else EXIT_FAILED), result
    except TimeoutError:
        if connection is None:
            raise SendError(
                f"RabbitMQ did not answer within {timeout_s:g} s: check --amqp-url", EXIT_BROKER
            ) from None
        return EXIT_TIMEOUT, None
    finally:
        if connection is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_GRACE_S):
                    await connection.close()
    return EXIT_TIMEOUT, None


async def _connect(url: str) -> aio_pika.abc.AbstractConnection:
    """One attempt (no robust reconnects: the user waits), failures as :class:`SendError`."""
    from gateway.bus.connection import bus_problem
    from gateway.settings_models import amqp_url_problem, redact_url

    problem = amqp_url_problem(url)
    if problem:
        raise SendError(f"--amqp-url {redact_url(url)}: {problem}", EXIT_BAD_ARGS)
    try:
        return await aio_pika.connect(url)
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        raise SendError(
            f"{bus_problem(exc, '--amqp-url')} (at {redact_url(url)})", EXIT_BROKER
        ) from None
