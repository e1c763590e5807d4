"""``gateway sink postgres``: the events of a durable queue written into PostgreSQL.

Loop: take a batch (up to ``batch`` events, waiting at most ``linger_s`` after the first), move
what cannot be stored to the dead-letter queue with the reason, write the rest in one
transaction, and only after the commit ack them. While PostgreSQL is unavailable the batch is
retried with backoff (one line on stderr per attempt, ``gateway_sink_database_retries_total``);
the messages stay unacked, and everything behind them waits in RabbitMQ. Nothing is acked that
is not committed, and a copy committed twice is one row (the event ``id`` is the key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg

from gateway.consumer import Consumer, ConsumerError, Delivery
from gateway.runtime.backoff import Backoff
from gateway.settings import BackoffSettings
from gateway.sink import metrics
from gateway.sink.postgres import DatabaseUnavailable, PostgresWriter, describe_dsn
from gateway.sink.rows import Row, Unstorable, row_of


@dataclass(frozen=True, slots=True)
class SinkOptions:
    amqp_url: str
    dsn: str
    bindings: list[str] = field(default_factory=lambda: ["*.cdr.created"])
    queue: str = "gateway.sink.postgres"
    schema: str = "pbx"
    batch: int = 500
    linger_s: float = 0.05
    exchange: str = "pbx.events"
    backoff: BackoffSettings = field(
        default_factory=lambda: BackoffSettings(initial_s=0.5, max_s=10.0)
    )


@dataclass
class SinkStats:
    written: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    database_retries: int = 0
    batches: int = 0


class SinkError(Exception):
    """A failure the user can fix, with its exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


#: Said by PostgreSQL at start-up, these need the user, not a retry.
_FATAL_AT_START = ("authentication failed", "does not exist", "no password supplied")


def say(text: str) -> None:
    print(f"sink: {text}", file=sys.stderr, flush=True)


class PostgresSink:
    def __init__(self, options: SinkOptions) -> None:
        self.options = options
        self.stats = SinkStats()
        self.writer = PostgresWriter(options.dsn, options.schema)
        self.consumer = Consumer(
            options.amqp_url,
            options.queue,
            options.bindings,
            exchange=options.exchange,
            prefetch=options.batch * 2,
            dedupe=None,  # the tables' primary keys are the de-duplication
        )
        # psycopg logs a warning when a refused batch ends its pipeline: the rows are retried
        # one by one and reported there.
        logging.getLogger("psycopg").setLevel(logging.ERROR)

    async def run(self, stop: asyncio.Event) -> None:
        where = describe_dsn(self.options.dsn)
        try:
            await self.writer.connect()
        except DatabaseUnavailable as exc:
            if any(text in str(exc) for text in _FATAL_AT_START):
                raise SinkError(f"PostgreSQL at {where}: {exc}", 2) from None
        except psycopg.Error as exc:  # e.g. no right to create the schema
            raise SinkError(f"PostgreSQL at {where} refused the schema: {exc}", 2) from None
        if not await self._until_written(stop, self.writer.connect, where):
            return
        try:
            await self.consumer.open()
        except ConsumerError as exc:
            await self.writer.close()
            raise SinkError(str(exc), 4) from None
        say(
            f"writing {', '.join(self.consumer.bindings)} from queue {self.options.queue}"
            f" into {where} schema {self.options.schema}"
        )
        metrics.DB_UP.set(1)
        try:
            while not stop.is_set():
                batch = await self._take(stop)
                if batch:
                    await self._store(batch, stop)
        finally:
            await self.consumer.close()  # unacked messages go back to the queue
            await self.writer.close()

    async def _take(self, stop: asyncio.Event) -> list[Delivery]:
        taking = asyncio.create_task(
            self.consumer.batch(self.options.batch, self.options.linger_s)
        )
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({taking, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not taking.done():
            taking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await taking
            return []
        return taking.result()

    async def _store(self, batch: list[Delivery], stop: asyncio.Event) -> None:
        started = time.monotonic()
        rows: list[Row] = []
        kept: list[Delivery] = []
        for delivery in batch:
            try:
                rows.append(row_of(delivery.event, orjson.loads(delivery.message.body)))
                kept.append(delivery)
            except Unstorable as exc:
                await self._dead_letter(delivery, str(exc), "not_stored")
        if not rows:
            return

        async def write() -> Any:
            return await self.writer.write(rows)

        result = await self._until_written(stop, write, describe_dsn(self.options.dsn))
        if result is None:  # stopped while PostgreSQL was away: the messages go back unacked
            return
        for index, delivery in enumerate(kept):
            reason = result.rejected.get(index)
            if reason is not None:
                why = f"PostgreSQL refused the row: {reason}"
                await self._dead_letter(delivery, why, "rejected_row")
            else:
                await delivery.ack()
        self.stats.written += result.written
        self.stats.duplicates += result.duplicates
        self.stats.batches += 1
        by_table: dict[str, int] = {}
        for index, row in enumerate(rows):
            if index not in result.rejected:
                by_table[row.table] = by_table.get(row.table, 0) + 1
        for table, count in by_table.items():
            metrics.ROWS_WRITTEN.labels(table).inc(count)
        metrics.DUPLICATES.inc(result.duplicates)
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)

    async def _dead_letter(self, delivery: Delivery, reason: str, why: str) -> None:
        await delivery.dead_letter(reason)
        self.stats.dead_lettered += 1
        metrics.DEAD_LETTERED.labels(why).inc()

    async def _until_written(self, stop: asyncio.Event, attempt: Any, where: str) -> Any:
        """``attempt()`` until PostgreSQL takes it (None when stopped meanwhile)."""
        backoff = Backoff(self.options.backoff)
        down_since: float | None = None
        while not stop.is_set():
            try:
                result = await attempt()
            except DatabaseUnavailable as exc:
                if down_since is None:
                    down_since = time.monotonic()
                metrics.DB_UP.set(0)
                metrics.DB_RETRIES.inc()
                self.stats.database_retries += 1
                delay = backoff.next_delay()
                say(
                    f"PostgreSQL unavailable at {where} ({exc}); the messages wait in RabbitMQ,"
                    f" retrying in {delay:.1f} s"
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            if down_since is not None:
                say(f"PostgreSQL back after {time.monotonic() - down_since:.1f} s; writing again")
                metrics.DB_UP.set(1)
            return result if result is not None else True
        return None
