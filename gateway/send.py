"""``gateway send``: publish one command, wait for its result, print it.

Exit status: 0 when the result is ok, 1 for a failed result, 2 when no result came in time.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
import orjson

EXIT_OK, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2


async def send_command(
    amqp_url: str,
    tenant: str,
    command: str,
    args: dict[str, Any],
    *,
    timeout_s: float = 30.0,
    exchange: str = "pbx.commands",
    command_id: str | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """Publish with a fresh id, ``reply_to`` and an AMQP expiration of ``timeout_s``."""
    command_id = command_id or str(uuid.uuid4())
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        target = await channel.get_exchange(exchange)
        await target.publish(
            aio_pika.Message(
                body=orjson.dumps({"command": command, "args": args}),
                content_type="application/json",
                message_id=command_id,
                correlation_id=command_id,
                reply_to=replies.name,
                expiration=timeout_s,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=f"{tenant}.{command}",
        )
        try:
            # A little longer than the expiration, so an `expired` answer still arrives.
            async with asyncio.timeout(timeout_s + 2.0):
                async with replies.iterator() as messages:
                    async for message in messages:
                        await message.ack()
                        if message.correlation_id != command_id:
                            continue
                        result = orjson.loads(message.body)
                        return (EXIT_OK if result.get("ok") else EXIT_FAILED), result
        except TimeoutError:
            return EXIT_TIMEOUT, None
    finally:
        await connection.close()
    return EXIT_TIMEOUT, None
