"""Publishes events to RabbitMQ from the durable outbox, with publisher confirms, pipelined,
retried until confirmed.

Connectors hand events to :meth:`EventPublisher.submit`, which appends them to the
:class:`~gateway.bus.outbox.Outbox` (on disk when it returns) and wakes the pump; it never waits for
the broker. The pump reads the spool in ``seq`` order and keeps up to ``window`` publishes awaiting
their confirm at once, so throughput does not hinge on the broker's round trip. A confirmed event is
removed from the spool; a publish that fails (nack, lost connection, closed channel, a broker
memory alarm blocking the connection) stays spooled and is retried every ``retry_interval_s`` until
RabbitMQ confirms it; the robust connection reopens the channel and re-declares the exchange after a
reconnect. Whatever is unconfirmed at :meth:`EventPublisher.stop` (or a crash) stays in the spool
file and is published first by the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from gateway.bus.outbox import Outbox
from gateway.bus.topology import declare_events_exchange
from gateway.logging import get_logger
from gateway.runtime.metrics import (
    EVENTS_PUBLISHED,
    PUBLISH_BACKLOG,
    PUBLISH_LATENCY,
    PUBLISH_RETRIES,
)
from gateway.schema.events import CloudEvent

CONTENT_TYPE = "application/cloudevents+json"


def to_message(event: CloudEvent) -> aio_pika.Message:
    """Structured-mode CloudEvent, attributes mirrored as in the CloudEvents AMQP binding."""
    headers: dict[str, str] = {
        f"cloudEvents:{name}": value
        for name, value in (
            ("specversion", event.specversion),
            ("id", event.id),
            ("source", event.source),
            ("type", event.type),
            ("time", event.time.isoformat()),
            ("subject", event.subject),
            ("tenant", event.tenant),
            ("vendor", event.vendor),
            ("vendorevent", event.vendorevent),
        )
        if value is not None
    }
    return aio_pika.Message(
        body=event.to_json(),
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=event.id,
        type=event.type,
        timestamp=event.time,
        app_id="pbx-gateway",
        headers=headers,  # type: ignore[arg-type]
    )


class EventPublisher:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        exchange_name: str,
        *,
        outbox: Outbox,
        window: int = 64,
        retry_interval_s: float = 1.0,
    ) -> None:
        self._connection = connection
        self._exchange_name = exchange_name
        self._outbox = outbox
        self._window_size = window
        self._window = asyncio.Semaphore(window)
        self._retry_interval_s = retry_interval_s
        self._in_flight: set[asyncio.Task[None]] = set()
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._pump: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # something was appended
        self._idle = asyncio.Event()  # the spool is empty
        self._confirmed: list[int] = []  # seqs confirmed, removed from the spool in batches
        self._removal_scheduled = False
        self._log = get_logger("bus.publisher")
        self._failing = False  # between the first failed publish and the next success
        self._set_backlog()

    async def start(self) -> None:
        """Open the channel and start the pump; events left in the spool go out first."""
        if self._pump is not None:
            return
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await declare_events_exchange(self._channel, self._exchange_name)
        if len(self._outbox):
            self._log.info("publisher_resuming_spool", backlog=len(self._outbox))
        self._wake.set()
        self._pump = asyncio.create_task(self._run(), name="publisher-pump")

    async def submit(self, event: CloudEvent) -> None:
        """Spool the event (on disk when this returns), wake the pump; never waits for RabbitMQ."""
        self._outbox.append(event)
        self._idle.clear()
        self._set_backlog()
        self._wake.set()

    @property
    def backlog(self) -> int:
        """Events in the spool: not yet confirmed by RabbitMQ."""
        return len(self._outbox)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until the spool is empty (all confirmed); False if the timeout came first."""
        try:
            async with asyncio.timeout(timeout):
                while self.backlog:
                    self._idle.clear()
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout: float = 10.0) -> None:
        """Flush (bounded), then stop; what is unconfirmed stays spooled for the next start.
        The connection and the outbox belong to the caller."""
        if self._pump is None:
            return
        flushed = await self.flush(timeout)
        if not flushed:
            self._log.warning("publisher_stop_unflushed", backlog=self.backlog)
        self._pump.cancel()
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(self._pump, *self._in_flight, return_exceptions=True)
        self._pump = None
        self._remove_confirmed()
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()

    def _set_backlog(self) -> None:
        PUBLISH_BACKLOG.set(len(self._outbox))

    async def _run(self) -> None:
        taken = 0  # highest seq handed to a publish task
        while True:
            self._wake.clear()
            batch = self._outbox.pending(taken, self._window_size)
            if not batch:
                if not len(self._outbox):
                    self._idle.set()
                await self._wake.wait()
                continue
            for seq, event in batch:
                await self._window.acquire()
                task = asyncio.create_task(
                    self._publish(seq, event, time.monotonic()), name=f"publish-{seq}"
                )
                self._in_flight.add(task)
                task.add_done_callback(self._done)
                taken = seq

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._window.release()

    def _remove_confirmed(self) -> None:
        """Batch the deletes of everything confirmed since the last call (one per loop turn)."""
        self._removal_scheduled = False
        if not self._confirmed:
            return
        seqs, self._confirmed = self._confirmed, []
        try:
            self._outbox.remove(seqs)
        except Exception as exc:  # the spool is closed or failing: they are published again later
            self._log.error("outbox_remove_failed", error=str(exc), events=len(seqs))
            return
        self._set_backlog()
        if not len(self._outbox):
            self._idle.set()

    async def _publish(self, seq: int, event: CloudEvent, taken_at: float) -> None:
        message = to_message(event)
        while True:
            try:
                assert self._exchange is not None
                await self._exchange.publish(message, routing_key=event.routing_key, timeout=30)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # nack, channel closed, connection lost, blocked: retry
                PUBLISH_RETRIES.inc()
                if not self._failing:  # one line per outage, not one per event
                    self._failing = True
                    self._log.warning(
                        "publish_failing_will_retry",
                        event_id=event.id,
                        error=type(exc).__name__,
                        detail=str(exc),
                        backlog=self.backlog,
                    )
                await asyncio.sleep(self._retry_interval_s)  # the robust channel reopens itself
                continue
            if self._failing:
                self._failing = False
                self._log.info("publish_recovered", backlog=self.backlog)
            EVENTS_PUBLISHED.labels(event.tenant, event.vendor, event.type).inc()
            PUBLISH_LATENCY.observe(time.monotonic() - taken_at)
            self._confirmed.append(seq)
            if not self._removal_scheduled:
                self._removal_scheduled = True
                asyncio.get_running_loop().call_soon(self._remove_confirmed)
            return
