"""A PBX's small state (watermarks) kept in RabbitMQ, so whichever instance owns the PBX next
continues where the last owner stopped.

One durable last-value queue per tenant, ``pbx.state.<tenant>`` (max length 1, drop-head, of
the type ``bus.queue_type``): the owner publishes its snapshot with confirms; a new owner reads it
without consuming it. Each queue is declared once per channel (not at every push: a robust
channel keeps every declared queue object to re-declare it after a reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection
from pamqp.commands import Basic

from gateway.bus.topology import QueueType, declare_durable_queue

STATE_PREFIX = "pbx.state."
_PERSISTENT = Basic.Properties(delivery_mode=2)
_PUSHES_AT_ONCE = 256  # snapshots awaiting their confirm at once


class SharedState:
    def __init__(
        self, connection: AbstractRobustConnection, queue_type: QueueType = "classic"
    ) -> None:
        self._connection = connection
        self._queue_type: QueueType = queue_type
        self._channel: AbstractChannel | None = None
        self._queues: dict[str, AbstractQueue] = {}
        self._opening = asyncio.Lock()
        self._pushes = asyncio.Semaphore(_PUSHES_AT_ONCE)
        self._bounded = True
        self._waiting = 0  # pushes waiting for a slot

    async def _queue(self, tenant: str) -> AbstractQueue:
        if self._channel is None or self._channel.is_closed:
            async with self._opening:  # several PBXs start at once: one channel for them all
                if self._channel is None or self._channel.is_closed:
                    self._channel = await self._connection.channel(publisher_confirms=True)
                    self._queues.clear()
        queue = self._queues.get(tenant)
        if queue is None:
            queue = await declare_durable_queue(
                self._channel,
                f"{STATE_PREFIX}{tenant}",
                self._queue_type,
                {"x-max-length": 1, "x-overflow": "drop-head"},
            )
            self._queues[tenant] = queue
        return queue

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
        queue = await self._queue(tenant)
        assert self._channel is not None
        body = orjson.dumps({"written_at": time.time(), "values": values})
        underlay: Any = await self._channel.get_underlay_channel()  # (`wait` is not in its ABC)
        confirmation = await underlay.basic_publish(
            body,
            routing_key=queue.name,
            properties=_PERSISTENT,
            wait=False,
        )
        if confirmation is not None and not isinstance(confirmation, Basic.Ack):
            raise aio_pika.exceptions.DeliveryError(None, confirmation)

    async def pull(self, tenant: str) -> tuple[dict[str, str], float] | None:
        queue = await self._queue(tenant)
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
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()
