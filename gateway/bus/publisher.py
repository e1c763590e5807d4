"""Publishes events to RabbitMQ from the durable outbox, with publisher confirms, pipelined,
retried until confirmed.

Connectors hand events to :meth:`EventPublisher.submit`, which appends them to the
:class:`~gateway.bus.outbox.Outbox` (on disk when it returns) and wakes the pump; it never waits for
the broker. A push link's live messages take :meth:`EventPublisher.spool` instead (group commit):
events are committed at most once per ``coalesce_s`` (2 ms by default): the first one after a
quiet spell at the end of its turn of the event loop, those that follow within the window
together at its end, in one transaction, before the pump reads them, and before
:meth:`EventPublisher.sync` returns (a link syncs before it persists its watermark or acks its
source); the pump then writes them to RabbitMQ together. At ordinary rates each frame arrives
alone in its turn of the event loop: without the window each one would pay its own commit, socket
write and confirm round (``coalesce_s`` = 0: the end of each turn), which is most of the
gateway's CPU per event at a thousand frames a second. A window's worth of staged events
(``window``) is written at once.

The pump reads the spool in ``seq`` order and keeps up to ``window`` publishes awaiting their
confirm at once, so throughput does not hinge on the broker's round trip. A confirmed event is
removed from the spool; a publish that fails (nack, lost connection, closed channel, a broker
memory alarm blocking the connection) stays spooled and is retried every ``retry_interval_s``
until RabbitMQ confirms it; the robust connection reopens the channel and re-declares the
exchange after a reconnect. Whatever is unconfirmed at :meth:`EventPublisher.stop` (or a crash)
stays in the spool file and is published first by the next start.

The hot path (see bench/README.md): the pump takes up to the free part of the window from
the spool at once, as stored bytes (no model is built, nothing is serialized again), encodes each
publish's frames directly (:mod:`gateway.bus.wire`, byte for byte what pamqp would write), and
writes the whole batch to the channel as ONE socket write, each publish with its own delivery tag
and confirm future registered on the aiormq channel exactly as ``basic_publish`` does; confirms are
handled by callbacks, not one task per event. A failed confirm (nack, lost channel, none within
``confirm_timeout_s``) makes the pump wait for what is in flight, then publish again from the
oldest unconfirmed event, in ``seq`` order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiormq.abc import ChannelFrame
from pamqp.commands import Basic

from gateway.bus.outbox import Outbox
from gateway.bus.topology import declare_events_exchange
from gateway.bus.wire import publish_frames
from gateway.logging import get_logger
from gateway.runtime.metrics import (
    EVENTS_PUBLISHED,
    PUBLISH_BACKLOG,
    PUBLISH_LATENCY,
    PUBLISH_RETRIES,
)
from gateway.schema.events import CloudEvent

#: Confirmed events are removed from the spool in batches, at most this long after their confirm
#: (a crash in between publishes them again, with the same ids, as for any unremoved event).
_REMOVE_DELAY_S = 0.05


class _Batch:
    """Publishes written together; done when every confirm came back (or one failed)."""

    __slots__ = ("failed", "left", "seqs", "timer")

    def __init__(self, seqs: list[int]) -> None:
        self.seqs = seqs
        self.left = len(seqs)
        self.failed: BaseException | None = None
        self.timer: asyncio.TimerHandle | None = None


class EventPublisher:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        exchange_name: str,
        *,
        outbox: Outbox,
        window: int = 256,
        retry_interval_s: float = 1.0,
        confirm_timeout_s: float = 30.0,
        coalesce_s: float = 0.002,
    ) -> None:
        self._connection = connection
        self._exchange_name = exchange_name
        self._outbox = outbox
        self._window_size = window
        self._retry_interval_s = retry_interval_s
        self._confirm_timeout_s = confirm_timeout_s
        if coalesce_s < 0:
            raise ValueError("coalesce_s >= 0 required")
        self._coalesce_s = coalesce_s
        self._in_flight = 0  # publishes written, confirm not yet back
        self._batches: set[_Batch] = set()
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._pump: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # something was appended, or a slot of the window freed
        self._idle = asyncio.Event()  # the spool is empty
        self._confirmed: list[int] = []  # seqs confirmed, removed from the spool in batches
        self._removal: asyncio.TimerHandle | None = None  # the next batch of deletes
        self._published: dict[tuple[str, str, str], Any] = {}  # the counter of each label set
        self._commit_timer: asyncio.TimerHandle | asyncio.Handle | None = None  # spool's commit
        self._last_commit = -float("inf")  # time.monotonic() of the last commit of spooled events
        self._commit_retry: asyncio.TimerHandle | None = None  # while the disk refuses
        self._commit_failing = False  # logged once per outage
        self._failure: BaseException | None = None  # a confirm failed: publish again from there
        self._log = get_logger("bus.publisher")
        PUBLISH_BACKLOG.set_function(outbox.__len__)  # read at scrape time
        self._failing = False  # between the first failed publish and the next success

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
        """Spool the event (on disk when this returns, with everything :meth:`spool` staged
        before it), wake the pump; never waits for RabbitMQ. If the disk refuses, this raises
        and the event stays staged (written by a later commit: a caller that hands it over
        again publishes it twice, under the same id)."""
        self._outbox.append(event)
        self._woken()

    def spool(self, event: CloudEvent) -> None:
        """Spool the event in order without waiting for the disk: it is committed with every
        event staged with it, at most ``coalesce_s`` after the last commit (group commit), before
        the pump publishes it and before :meth:`sync` returns. For a push link that relies on
        nothing until it persists its watermark (which calls :meth:`sync` first). While the disk
        refuses, events stay staged up to ``outbox.max_events``; past that this raises (the
        link drops, and re-reads the gap once it is back)."""
        outbox = self._outbox
        if outbox.staged >= outbox.max_events:
            outbox.commit()  # raises while the disk still refuses
        outbox.stage(event)
        self._idle.clear()
        if outbox.staged >= self._window_size:  # a window's worth: no reason to wait
            self._commit_now()
        elif self._commit_timer is None:
            # At most one commit per window: the first event after a quiet spell goes at the
            # end of this turn (no wait where there is nothing to share the commit with), those
            # that follow within the window wait for its end and go together.
            loop = asyncio.get_running_loop()
            wait = self._last_commit + self._coalesce_s - time.monotonic()
            if wait > 0:
                self._commit_timer = loop.call_later(wait, self._commit_now)
            else:
                self._commit_timer = loop.call_soon(self._commit_now)

    def sync(self) -> None:
        """Everything spooled so far is on disk when this returns (raises if it cannot be)."""
        self._outbox.commit()
        self._last_commit = time.monotonic()
        self._woken()  # what waited for the window goes out now

    def _woken(self) -> None:
        self._idle.clear()
        self._wake.set()

    def _commit_now(self) -> None:
        """Write what :meth:`spool` staged, then let the pump publish it."""
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        self._last_commit = time.monotonic()
        if self._try_commit():
            self._woken()

    def _try_commit(self) -> bool:
        """Commit what is staged. If the disk refuses: False, logged once per outage; the events
        stay staged and one retry runs ``retry_interval_s`` later (not one per event)."""
        if self._commit_retry is not None:  # the disk refused: the retry is due later
            return False
        try:
            self._outbox.commit()
        except Exception as exc:
            if not self._commit_failing:
                self._commit_failing = True
                self._log.error(
                    "outbox_commit_failed", error=str(exc), staged=self._outbox.staged
                )
            self._commit_retry = asyncio.get_running_loop().call_later(
                self._retry_interval_s, self._retry_commit
            )
            return False
        if self._commit_failing:
            self._commit_failing = False
            self._log.info("outbox_commit_recovered")
        return True

    def _retry_commit(self) -> None:
        self._commit_retry = None
        if self._try_commit():
            self._wake.set()  # what waited for the disk can go out now

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
        await asyncio.gather(self._pump, return_exceptions=True)
        self._pump = None
        for batch in list(self._batches):  # their confirms no longer matter: spooled still
            if batch.timer is not None:
                batch.timer.cancel()
        self._batches.clear()
        for timer in (self._commit_retry, self._commit_timer):  # close writes what is staged
            if timer is not None:
                timer.cancel()
        self._commit_retry = self._commit_timer = None
        self._remove_confirmed()
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()

    # --- the pump ------------------------------------------------------------------------------

    async def _run(self) -> None:
        taken = 0  # highest seq written to the channel
        while True:
            self._wake.clear()
            if self._failure is not None:
                taken = await self._recover()
                continue
            free = self._window_size - self._in_flight
            if free <= 0:
                await self._wake.wait()
                continue
            # Only what is on disk is read: staged events wait for their commit, which wakes
            # the pump (if the disk refuses, what is on it goes out still).
            rows = self._outbox.pending_bodies(taken, free)
            if not rows:
                if not len(self._outbox):
                    self._idle.set()
                await self._wake.wait()
                continue
            try:
                await self._write(rows)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # channel closed, connection lost: retry from the spool
                self._failed(exc, rows[0][0])
                continue
            taken = rows[-1][0]

    async def _write(self, rows: list[tuple[int, bytes]]) -> None:
        """Write the batch to the channel in one go; confirms come back to ``_on_confirm``."""
        if self._channel is None or self._channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("channel closed")
        channel: Any = await self._channel.get_underlay_channel()
        encoded: list[tuple[int, bytes, bytes, tuple[str, str, str]]] = []
        for seq, body in rows:  # all of it first: a tag is taken only for what is written
            try:
                frames, label = publish_frames(
                    channel.number, self._exchange_name, body, channel.max_content_size
                )
            except Exception as exc:
                self._set_aside(seq, body, exc)
                continue
            encoded.append((seq, body, frames, label))
        if not encoded:
            return
        futures: list[asyncio.Future[Any]] = []
        async with channel.lock:  # nothing else interleaves its frames with the batch
            for _ in encoded:
                channel.delivery_tag += 1
                confirmation = channel.create_future()
                channel.confirmations[channel.delivery_tag] = confirmation
                futures.append(confirmation)
            payload = b"".join(frames for _, _, frames, _ in encoded)
            await channel.write_queue.put(ChannelFrame(payload, should_close=False))
        rows = [(seq, body) for seq, body, _, _ in encoded]
        labels = [label for _, _, _, label in encoded]
        batch = _Batch([seq for seq, _ in rows])
        self._in_flight += len(rows)
        self._batches.add(batch)
        started = time.monotonic()
        for (seq, body), confirmation, label in zip(rows, futures, labels, strict=True):
            confirmation.add_done_callback(self._on_confirm(batch, seq, body, label, started))
        batch.timer = asyncio.get_running_loop().call_later(
            self._confirm_timeout_s, self._expire, futures
        )

    def _set_aside(self, seq: int, body: bytes, exc: Exception) -> None:
        """An event AMQP cannot carry (e.g. a time before 1970 for the ``timestamp`` property):
        retrying it would hold up every event behind it for good. It leaves the spool, whole
        in the error log."""
        self._log.error(
            "event_not_publishable",
            error=f"{type(exc).__name__}: {exc}"[:300],
            body=body.decode(errors="replace"),
        )
        self._outbox.remove([seq])

    def _on_confirm(
        self, batch: _Batch, seq: int, body: bytes, label: tuple[str, str, str], started: float
    ) -> Callable[[asyncio.Future[Any]], None]:
        def done(confirmation: asyncio.Future[Any]) -> None:
            if batch not in self._batches:  # stopped meanwhile
                return
            batch.left -= 1
            self._in_flight -= 1
            failure = _failure_of(confirmation)
            if failure is None:
                self._confirmed.append(seq)
                published = self._published.get(label)
                if published is None:
                    published = self._published[label] = EVENTS_PUBLISHED.labels(*label)
                published.inc()
                PUBLISH_LATENCY.observe(time.monotonic() - started)
                if len(self._confirmed) >= self._window_size // 2:
                    self._remove_confirmed()  # a window's worth: make room at once
                elif self._removal is None:
                    self._removal = asyncio.get_running_loop().call_later(
                        _REMOVE_DELAY_S, self._remove_confirmed
                    )
            elif batch.failed is None:
                batch.failed = failure
                self._failed(failure, seq, body)
            if batch.left == 0:
                self._batches.discard(batch)
                if batch.timer is not None:
                    batch.timer.cancel()
            if self._failure is not None or self._in_flight + 1 >= self._window_size:
                self._wake.set()  # the pump waits for a free slot, or for what is in flight

        return done

    def _expire(self, futures: list[asyncio.Future[Any]]) -> None:
        """No confirm within ``confirm_timeout_s`` (a blocked connection, say): publish again."""
        for confirmation in futures:
            if not confirmation.done():
                confirmation.set_exception(TimeoutError("no publisher confirm in time"))

    def _failed(self, exc: BaseException, seq: int, body: bytes | None = None) -> None:
        PUBLISH_RETRIES.inc()
        if self._failure is None:
            self._failure = exc
        if not self._failing:  # one line per outage, not one per event
            self._failing = True
            self._log.warning(
                "publish_failing_will_retry",
                event_id=orjson.loads(body)["id"] if body else None,
                error=type(exc).__name__,
                detail=str(exc),
                backlog=self.backlog,
            )
        self._wake.set()

    async def _recover(self) -> int:
        """After a failure: let what is in flight settle, wait, then start again from the oldest
        unconfirmed event (``taken`` = 0: the spool holds only unconfirmed ones)."""
        while self._in_flight:
            self._wake.clear()
            await self._wake.wait()
        self._remove_confirmed()
        await asyncio.sleep(self._retry_interval_s)  # the robust channel reopens itself
        self._failure = None
        return 0

    def _remove_confirmed(self) -> None:
        """Delete everything confirmed since the last call, in one statement."""
        if self._removal is not None:
            self._removal.cancel()
            self._removal = None
        if not self._confirmed:
            return
        seqs, self._confirmed = self._confirmed, []
        try:
            self._outbox.remove(seqs)
        except Exception as exc:  # the spool is closed or failing: they are published again later
            self._log.error("outbox_remove_failed", error=str(exc), events=len(seqs))
            return
        if self._failing and self._failure is None:
            self._failing = False
            self._log.info("publish_recovered", backlog=self.backlog)
        if not len(self._outbox):
            self._idle.set()


def _failure_of(confirmation: asyncio.Future[Any]) -> BaseException | None:
    if confirmation.cancelled():
        return asyncio.CancelledError("publish cancelled (channel closed)")
    exc = confirmation.exception()
    if exc is not None:
        return exc
    result = confirmation.result()
    if isinstance(result, Basic.Ack):
        return None
    return aio_pika.exceptions.DeliveryError(None, result)
