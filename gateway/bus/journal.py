"""The command ledger shared between instances: one RabbitMQ stream per tenant.

Each instance keeps its own SQLite ledger, which answers duplicates it has seen. Before a PBX is
called, the command id is also journaled as ``started`` on the stream
``<commands exchange>.<tenant>.ledger`` (confirmed), and its result once it is known. An instance
taking a PBX over replays that stream into its own ledger before it takes any command, so:

* an id the previous owner started or finished is answered from the record, never run again,
  also when it is published again after the takeover;
* an id the journal does not know was never sent to the PBX by anyone, so a redelivery of it
  (the previous owner died holding it) is executed instead of answered "outcome unknown".

A stream keeps its records for the ledger's retention (``x-max-age``) and can be read from the
start, or from a point in time, by any number of readers without consuming it. An instance that
owned the PBX before knows every record up to its newest one, so it reads only from there (less
:data:`REPLAY_OVERLAP_S`, for clock skew between instances and the broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, FieldValue
from aio_pika.abc import AbstractRobustConnection as Connection

from gateway.bus.topology import CommandNames
from gateway.schema.commands import CommandResult

#: Stream segments this small let ``x-max-age`` retire old records without waiting for 500 MB.
SEGMENT_BYTES = 8_000_000
REPLAY_PREFETCH = 500
#: How far before the newest record it knows an instance starts reading the stream again.
REPLAY_OVERLAP_S = 300.0


@dataclass(frozen=True, slots=True)
class JournalEntry:
    command_id: str
    command: str | None
    result: CommandResult | None  # None: started, outcome not known yet
    at: float


class JournalError(RuntimeError):
    """The journal could not be read or written; the caller must not execute."""


class CommandJournal:
    def __init__(
        self,
        connection: Connection,
        names: CommandNames,
        *,
        retention_s: float,
        replay_timeout_s: float = 30.0,
        replay_overlap_s: float = REPLAY_OVERLAP_S,
    ) -> None:
        self._connection = connection
        self._names = names
        self._arguments: dict[str, FieldValue] = {
            "x-queue-type": "stream",
            "x-max-age": f"{max(1, int(retention_s))}s",
            "x-stream-max-segment-size-bytes": SEGMENT_BYTES,
        }
        self._replay_timeout_s = replay_timeout_s
        self._replay_overlap_s = replay_overlap_s
        self._channel: AbstractChannel | None = None
        self._declared: set[str] = set()

    def queue_name(self, tenant: str) -> str:
        return f"{self._names.tenant_queue(tenant)}.ledger"

    async def _declare(self, channel: AbstractChannel, tenant: str) -> AbstractQueue:
        return await channel.declare_queue(
            self.queue_name(tenant), durable=True, arguments=self._arguments
        )

    async def _publisher(self, tenant: str) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=True)
            self._declared.clear()
        if tenant not in self._declared:
            await self._declare(self._channel, tenant)
            self._declared.add(tenant)
        return self._channel

    async def record(
        self, tenant: str, command_id: str, command: str | None, result: CommandResult | None
    ) -> None:
        """Append one record and wait for the broker's confirm."""
        body: dict[str, object] = {
            "command_id": command_id,
            "command": command,
            "result": result.model_dump(mode="json") if result else None,
            "at": time.time(),
        }
        await self._append(tenant, body)

    async def _append(self, tenant: str, body: dict[str, object]) -> None:
        try:
            channel = await self._publisher(tenant)
            await channel.default_exchange.publish(
                aio_pika.Message(
                    orjson.dumps(body), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                ),
                routing_key=self.queue_name(tenant),
            )
        except Exception as exc:
            raise JournalError(f"ledger journal write failed: {type(exc).__name__}: {exc}") from exc

    async def replay(self, tenant: str, since: float | None = None) -> list[JournalEntry]:
        """The records kept for ``tenant`` (all, or those journaled from about ``since`` less the
        overlap: the stream is read from the first chunk written at that time), oldest first,
        up to a marker appended now."""
        marker = uuid.uuid4().hex
        await self._append(tenant, {"marker": marker})
        entries: list[JournalEntry] = []
        reached = asyncio.Event()

        async def on_record(message: AbstractIncomingMessage) -> None:
            with contextlib.suppress(Exception):
                await message.ack()  # a stream consumer acks to get more credit
            if reached.is_set():
                return
            try:
                body = orjson.loads(message.body)
            except orjson.JSONDecodeError:
                return
            if body.get("marker") == marker:
                reached.set()
            elif entry := _entry(body):
                entries.append(entry)

        try:
            channel = await self._connection.channel()
        except Exception as exc:
            raise JournalError(f"ledger journal unreadable: {type(exc).__name__}: {exc}") from exc
        try:
            await channel.set_qos(prefetch_count=REPLAY_PREFETCH)
            queue = await self._declare(channel, tenant)
            offset: str | datetime = "first"
            if since is not None:
                offset = datetime.fromtimestamp(since - self._replay_overlap_s, UTC)
            tag = await queue.consume(on_record, arguments={"x-stream-offset": offset})
            async with asyncio.timeout(self._replay_timeout_s):
                await reached.wait()
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        except Exception as exc:
            raise JournalError(f"ledger journal unreadable: {type(exc).__name__}: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return entries

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()


def _entry(body: dict[str, object]) -> JournalEntry | None:
    try:
        raw = body.get("result")
        return JournalEntry(
            command_id=str(body["command_id"]),
            command=str(body["command"]) if body.get("command") else None,
            result=CommandResult.model_validate(raw) if raw else None,
            at=float(body["at"]),  # type: ignore[arg-type]
        )
    except (KeyError, TypeError, ValueError):
        return None
