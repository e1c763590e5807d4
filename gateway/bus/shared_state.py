"""A PBX's small state (watermarks) kept in RabbitMQ, so whichever instance owns the PBX next
continues where the last owner stopped.

One durable last-value queue per tenant, ``pbx.state.<tenant>`` (max length 1, drop-head, of
the type ``bus.queue_type``): the owner publishes its snapshot with confirms; a new owner reads it
without consuming it. Each queue is declared once per channel (not at every push: a robust
channel keeps every declared queue object to re-declare it after a reconnect).

The PBXs are spread over a few channels (:data:`_CHANNELS`, by a hash of the tenant): a
channel answers one declaration or ``basic.get`` at a time, so with one channel thousands of
PBXs starting at once read their states one after the other. A read whose declaration just said
the queue is empty (a PBX never owned before) takes no ``basic.get``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection
from pamqp.commands import Basic

from gateway.bus.topology import QueueType, declare_durable_queue

STATE_PREFIX = "pbx.state."
_PERSISTENT = Basic.Properties(delivery_mode=2)
_PUSHES_AT_ONCE = 256  # snapshots awaiting their confirm at once
#: Channels the PBXs' state queues are spread over (reads on one channel wait for each other).
_CHANNELS = 8


class SharedState:
    def __init__(
        self, connection: AbstractRobustConnection, queue_type: QueueType = "classic"
    ) -> None:
        self._connection = connection
        self._queue_type: QueueType = queue_type
        self._channels: list[AbstractChannel | None] = [None] * _CHANNELS
        self._queues: list[dict[str, AbstractQueue]] = [{} for _ in range(_CHANNELS)]
        self._opening = [asyncio.Lock() for _ in range(_CHANNELS)]
        self._pushes = asyncio.Semaphore(_PUSHES_AT_ONCE)
        self._bounded = True
        self._waiting = 0  # pushes waiting for a slot

    async def _queue(self, tenant: str) -> tuple[AbstractChannel, AbstractQueue, bool]:
        """The tenant's channel and queue, and whether the queue was declared just now."""
        slot = zlib.crc32(tenant.encode()) % _CHANNELS
        channel = self._channels[slot]
        if channel is None or channel.is_closed:
            async with self._opening[slot]:  # several PBXs start at once: one channel for them
                channel = self._channels[slot]
                if channel is None or channel.is_closed:
                    channel = await self._connection.channel(publisher_confirms=True)
                    self._channels[slot] = channel
                    self._queues[slot].clear()
        queues = self._queues[slot]
        queue = queues.get(tenant)
        if queue is not None:
            return channel, queue, False
        queue = await declare_durable_queue(
            channel,
            f"{STATE_PREFIX}{tenant}",
            self._queue_type,
            {"x-max-length": 1, "x-overflow": "drop-head"},
        )
        queues[tenant] = queue
        return channel, queue, True

    async def push(
        self, tenant: str, values: dict[str, str], *, timeout: float | None = None
    ) -> None:
        """Publish the snapshot and wait for its confirm (raises on a nack, a lost channel, or
        ``timeout`` s after the push started).

        A clean stop pushes every PBX's state at once: at most ``_PUSHES_AT_ONCE`` are in flight,
        each one's timeout counted from its own start (the broker writes each snapshot to a
        queue of its own, and confirms thousands of them over several seconds: with one timeout
        for all, the last ones ran out although they arrived). Pipelined: the publish is written
        without waiting for the socket to drain, so the channel is held only while its frames
        are queued."""
        if not self._bounded:
            async with asyncio.timeout(timeout):
                await self._push(tenant, values)
            return
        self._waiting += 1
        try:
            await self._pushes.acquire()
        finally:
            self._waiting -= 1
        try:
            async with asyncio.timeout(timeout):
                await self._push(tenant, values)
        except TimeoutError:
            self._unbounded()
            raise
        finally:
            self._pushes.release()

    def _unbounded(self) -> None:
        """A push ran out of time (the broker is away, or swamped): the ones still waiting for a
        slot go at once, so a stop waits about one timeout more, not one per slotful."""
        if self._bounded:
            self._bounded = False
            for _ in range(self._waiting):
                self._pushes.release()

    async def _push(self, tenant: str, values: dict[str, str]) -> None:
        channel, queue, _ = await self._queue(tenant)
        body = orjson.dumps({"written_at": time.time(), "values": values})
        underlay: Any = await channel.get_underlay_channel()  # (`wait` is not in its ABC)
        confirmation = await underlay.basic_publish(
            body,
            routing_key=queue.name,
            properties=_PERSISTENT,
            wait=False,
        )
        if confirmation is not None and not isinstance(confirmation, Basic.Ack):
            raise aio_pika.exceptions.DeliveryError(None, confirmation)

    async def pull(self, tenant: str) -> tuple[dict[str, str], float] | None:
        _, queue, declared = await self._queue(tenant)
        if declared and _empty(queue):
            return None  # (nothing to read: spares a round trip per PBX never owned before)
        message = await queue.get(fail=False)
        if message is None:
            return None
        try:
            body = orjson.loads(message.body)
            return {str(k): str(v) for k, v in body["values"].items()}, float(body["written_at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        finally:
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)  # leave it for the next owner too

    async def close(self) -> None:
        for channel in self._channels:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()


def _empty(queue: AbstractQueue) -> bool:
    """Whether the queue's declaration said it holds no message."""
    declared = getattr(queue, "declaration_result", None)
    return getattr(declared, "message_count", None) == 0
