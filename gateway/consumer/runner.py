"""Consume the gateway's events from a durable queue: typed events, ack after handling, bounded
retries, a dead-letter queue with the reason, de-duplication on ``id``.

Topology (declared on open, idempotent): the topic exchange ``pbx.events`` as the gateway declares
it; a durable quorum queue ``<queue>`` bound with the given routing keys; ``<queue>.dead``, where
messages go that cannot be handled, each with the reason in its ``x-gateway-reason`` header.
A quorum queue counts redeliveries (``x-delivery-count``), so the retry bound holds across
consumer restarts. ``gateway.gap`` of every bound tenant is bound too (unless told not to): a
consumer of CDRs alone still learns when events may be missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from gateway.consumer.dedupe import DedupeStore, MemoryDedupe
from gateway.consumer.events import Event, NotAnEvent, parse_event

log = logging.getLogger("gateway.consumer")

Handler = Callable[[Event[Any]], Awaitable[None]]
#: Header of a dead-lettered message: why it could not be handled.
REASON_HEADER = "x-gateway-reason"
_MAX_RETRY_DELAY_S = 30.0


class ConsumerError(Exception):
    """The consumer cannot start: RabbitMQ unreachable, or a queue of that name set up otherwise."""


def topic_matches(pattern: str, key: str) -> bool:
    """Whether a topic binding ``pattern`` (``*`` one word, ``#`` zero or more) matches ``key``."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] in ("*", k[0])) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


def with_gap_bindings(bindings: Sequence[str]) -> list[str]:
    """``bindings`` plus ``<tenant>.gateway.gap`` for each tenant they name (``*``: all)."""
    keys = list(dict.fromkeys(bindings))
    for key in list(keys):
        tenant = key.split(".", 1)[0]
        tenant = "*" if tenant == "#" else tenant
        gap = f"{tenant}.gateway.gap"
        probe = f"{'any' if tenant == '*' else tenant}.gateway.gap"
        if not any(topic_matches(k, probe) for k in keys):
            keys.append(gap)
    return keys


@dataclass
class ConsumerStats:
    handled: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0


class Delivery:
    """One event taken from the queue; settle it exactly once (ack, retry or dead-letter)."""

    def __init__(self, consumer: Consumer, event: Event[Any], message: AbstractIncomingMessage):
        self.event = event
        self.message = message
        self._consumer = consumer

    @property
    def attempt(self) -> int:
        """1 for the first delivery; the queue's count of earlier failed deliveries + 1."""
        return self._consumer._attempt(self.message)

    async def ack(self) -> None:
        """Done: the message leaves the queue. (The connection lost meanwhile: the broker
        delivers it again, and de-duplication recognizes it.)"""
        await self._consumer._settle(self.message.ack())

    async def dead_letter(self, reason: str) -> None:
        """Never to be handled: move it to ``<queue>.dead`` with ``reason``, then ack."""
        await self._consumer._dead_letter(self.message, reason)

    async def retry(self, error: BaseException | str) -> None:
        """Handling failed: deliver it again after a delay, or dead-letter it once it has
        failed ``max_attempts`` times."""
        await self._consumer._retry(self.message, error)

    @contextlib.asynccontextmanager
    async def process(self) -> AsyncIterator[Event[Any]]:
        """``async with delivery.process() as event:``: ack when the block ends (the id is
        remembered first), retry when it raises. The exception is logged, not re-raised: the
        loop goes on."""
        try:
            yield self.event
        except Exception as exc:
            log.warning("handler failed on %s %s: %r", self.event.type, self.event.id, exc)
            await self.retry(exc)
            return
        await self._consumer._remember(self.event.id)
        await self.ack()
        self._consumer.stats.handled += 1


class Consumer:
    """``async with Consumer(url, "crm-cdrs", ["*.cdr.created"]) as consumer:`` then either
    ``await consumer.run(handler)`` or ``async for delivery in consumer:``."""

    def __init__(
        self,
        url: str,
        queue: str,
        bindings: Sequence[str],
        *,
        exchange: str = "pbx.events",
        prefetch: int = 100,
        max_attempts: int = 5,
        retry_delay_s: float = 1.0,
        dedupe: DedupeStore | Literal["memory"] | None = "memory",
        surface_gaps: bool = True,
    ) -> None:
        if not bindings:
            raise ValueError("at least one binding, e.g. '*.cdr.created'")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.url = url
        self.queue_name = queue
        self.dead_queue_name = f"{queue}.dead"
        self.bindings = with_gap_bindings(bindings) if surface_gaps else list(bindings)
        self.exchange_name = exchange
        self.prefetch = prefetch
        self.max_attempts = max_attempts
        self.retry_delay_s = retry_delay_s
        self.dedupe: DedupeStore | None = MemoryDedupe() if dedupe == "memory" else dedupe
        self.stats = ConsumerStats()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._failures: dict[str, int] = {}  # classic queues count no redeliveries: we do

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._connection = await aio_pika.connect_robust(self.url, timeout=10)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            raise ConsumerError(f"RabbitMQ unreachable: {exc or type(exc).__name__}") from None
        try:
            self._channel = await self._connection.channel()
            await self._channel.set_qos(prefetch_count=self.prefetch)
            exchange = await self._channel.declare_exchange(
                self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            await self._channel.declare_queue(self.dead_queue_name, durable=True)
            self._queue = await self._channel.declare_queue(
                self.queue_name,
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.dead_queue_name,
                },
            )
            for key in self.bindings:
                await self._queue.bind(exchange, routing_key=key)
            await self._queue.consume(self._inbox.put)
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            await self.close()
            raise ConsumerError(
                f"queue {self.queue_name!r} exists with other settings ({exc}); delete it or"
                " choose another name"
            ) from None

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = self._channel = self._queue = None

    async def __aenter__(self) -> Consumer:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- taking events ---------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            delivery = await self._accept(await self._inbox.get())
            if delivery is not None:
                return delivery

    async def get(self, timeout: float | None = None) -> Delivery | None:
        """The next event, or None after ``timeout`` seconds without one."""
        try:
            async with asyncio.timeout(timeout):
                return await self.__anext__()
        except TimeoutError:
            return None

    async def batch(self, max_size: int, linger_s: float) -> list[Delivery]:
        """Up to ``max_size`` events: waits for the first, then at most ``linger_s`` more."""
        first = await self.__anext__()
        taken = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + linger_s
        while len(taken) < max_size:
            left = deadline - loop.time()
            if left <= 0 and self._inbox.empty():
                break
            delivery = await self.get(max(left, 0.0))
            if delivery is None:
                break
            taken.append(delivery)
        return taken

    async def run(self, handler: Handler, stop: asyncio.Event | None = None) -> None:
        """Hand every event (``gateway.gap`` included) to ``handler``, one at a time, until
        ``stop`` is set; ack after it returns, retry or dead-letter when it raises."""
        stop = stop or asyncio.Event()
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                taking = asyncio.create_task(self.__anext__())
                await asyncio.wait({taking, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not taking.done():
                    taking.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await taking
                    break
                delivery = taking.result()
                async with delivery.process() as event:
                    await handler(event)
        finally:
            stopping.cancel()

    async def _accept(self, message: AbstractIncomingMessage) -> Delivery | None:
        try:
            event = parse_event(message.body)
        except NotAnEvent as exc:
            await self._dead_letter(message, f"not a gateway event: {exc}")
            return None
        if self.dedupe is not None and await self.dedupe.seen(event.id):
            self.stats.duplicates += 1
            await self._settle(message.ack())
            return None
        return Delivery(self, event, message)

    # --- settling --------------------------------------------------------------------------

    def _attempt(self, message: AbstractIncomingMessage) -> int:
        count = (message.headers or {}).get("x-delivery-count")
        if isinstance(count, int):
            return count + 1
        return self._failures.get(self._key(message), 0) + 1

    @staticmethod
    def _key(message: AbstractIncomingMessage) -> str:
        return message.message_id or str(hash(message.body))

    async def _remember(self, event_id: str) -> None:
        if self.dedupe is not None:
            await self.dedupe.remember(event_id)

    async def _settle(self, action: Awaitable[None]) -> None:
        try:
            await action
        except (aio_pika.exceptions.AMQPError, RuntimeError, ConnectionError) as exc:
            # The channel it came on is gone: the broker delivers it again.
            log.warning("could not settle a message (%r); it will be delivered again", exc)

    async def _retry(self, message: AbstractIncomingMessage, error: BaseException | str) -> None:
        attempt = self._attempt(message)
        if attempt >= self.max_attempts:
            self._failures.pop(self._key(message), None)
            await self._dead_letter(
                message, f"handler failed {attempt} times, last: {_describe(error)}"
            )
            return
        self._failures[self._key(message)] = attempt
        self.stats.retried += 1
        await asyncio.sleep(min(self.retry_delay_s * 2 ** (attempt - 1), _MAX_RETRY_DELAY_S))
        await self._settle(message.nack(requeue=True))

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        assert self._channel is not None, "the consumer is not open"
        headers = dict(message.headers or {})
        headers.update(
            {
                REASON_HEADER: reason[:1000],
                "x-gateway-queue": self.queue_name,
                "x-gateway-routing-key": message.routing_key or "",
            }
        )
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            message_id=message.message_id,
            type=message.type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:  # confirmed before the original is acked: never lost in between
            await self._channel.default_exchange.publish(copy, routing_key=self.dead_queue_name)
        except (aio_pika.exceptions.AMQPError, RuntimeError, ConnectionError) as exc:
            log.warning("could not dead-letter a message (%r); it will be delivered again", exc)
            return
        log.warning("dead-lettered to %s: %s", self.dead_queue_name, reason)
        self.stats.dead_lettered += 1
        await self._settle(message.ack())


def _describe(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    return f"{type(error).__name__}: {error}"[:500]
