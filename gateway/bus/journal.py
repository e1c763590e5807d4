"""The command ledger shared between instances: one RabbitMQ stream for every tenant.

Each instance keeps its own SQLite ledger, which answers duplicates it has seen. Before a PBX is
called, the command id is also journaled as ``started`` on the stream ``<commands exchange>.ledger``
(confirmed, with the tenant in the record), and its result once it is known.

Every instance *follows* that stream while it runs (one consumer, whatever the number of PBXs) and
merges the records of every PBX it is configured for into its own ledger, owned or not. Before it
takes a PBX's commands, it appends a marker and waits until its follower has read it
(:meth:`CommandJournal.caught_up`): everything journaled before the PBX was taken is then known,
so

* an id the previous owner started or finished is answered from the record, never run again,
  also when it is published again after the takeover;
* an id the journal does not know was never sent to the PBX by anyone, so a redelivery of it
  (the previous owner died holding it) is executed instead of answered "outcome unknown".

A stream keeps its records for the ledger's retention (``x-max-age``). The follower starts where
this instance last knew it was caught up (less :data:`REPLAY_OVERLAP_S`, for clock skew between
instances and the broker), or at the start of the stream for an instance without a ledger yet;
a marker every :data:`FOLLOW_MARK_INTERVAL_S` keeps that point recent.

The journal has a connection of its own (see ``GatewayApp``): a stream whose leader moves (a
node died) answers with errors that make RabbitMQ close the whole connection, and that must never
stop event publishing. Every stream operation (declaring it, appending, subscribing) is retried
through such a change for :data:`STREAM_RETRY_S`, on a fresh channel each time; declaring the
stream is idempotent, also when instances starting together on a fresh cluster race to create it.

One stream instead of one per tenant keeps the broker's cost flat in the number of PBXs (a stream
is a set of Erlang processes, a replica and files of its own: a thousand of them exhausted a
broker; docs/decisions/0004).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TypeVar

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, FieldValue
from aio_pika.abc import AbstractRobustConnection as Connection

from gateway.bus.ledger_entry import NO_SENDER, FollowingLedger, JournalEntry, Sender
from gateway.bus.topology import CommandNames, TopologyMismatch, mismatch
from gateway.logging import get_logger
from gateway.schema.commands import CommandResult

#: Stream segments this small let ``x-max-age`` retire old records without waiting for 500 MB.
SEGMENT_BYTES = 8_000_000
REPLAY_PREFETCH = 500
#: How far before the point it knows it was caught up an instance starts reading again.
REPLAY_OVERLAP_S = 300.0
#: How often the follower checks (and records) that it is caught up while nothing happens.
FOLLOW_MARK_INTERVAL_S = 60.0
#: How often ids older than ``commands.result_ttl_s`` are dropped from the ledger.
EXPIRE_INTERVAL_S = 3600.0
#: Records merged into the ledger in one transaction at most.
MERGE_BATCH = 500
#: How long a stream operation is retried (a leader change, a reconnect, a declaration race).
STREAM_RETRY_S = 15.0
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 1.0

T = TypeVar("T")


class JournalError(RuntimeError):
    """The journal could not be read or written; the caller must not execute."""


StreamOffset = str | datetime | int


class CommandJournal:
    def __init__(
        self,
        connection: Connection,
        names: CommandNames,
        *,
        retention_s: float,
        replay_timeout_s: float = 30.0,
        replay_overlap_s: float = REPLAY_OVERLAP_S,
        mark_interval_s: float = FOLLOW_MARK_INTERVAL_S,
        retry_s: float = STREAM_RETRY_S,
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
        self._mark_interval_s = mark_interval_s
        self._retry_s = retry_s
        self._channel: AbstractChannel | None = None
        self._declared = False
        # the follower
        self._ledger: FollowingLedger | None = None
        self._tenants: frozenset[str] = frozenset()
        self._follow_channel: AbstractChannel | None = None
        self._follow_queue: AbstractQueue | None = None
        self._follow_tag: str | None = None
        self._next_offset: StreamOffset = "first"
        #: raised when the stream is read again from its start (tenants added): a delivery to
        #: the consumer before that must not move the follow point past the replay
        self._replay = 0
        self._markers: dict[str, tuple[asyncio.Future[None], float]] = {}
        self._pending: dict[str, list[JournalEntry]] = defaultdict(list)
        self._flush_scheduled = False
        self._marking: asyncio.Task[None] | None = None
        self._next_marker: asyncio.Future[None] | None = None  # callers may still join it
        self._marker_writing = asyncio.Lock()
        self._marker_tasks: set[asyncio.Task[None]] = set()
        self._resubscribing: asyncio.Task[None] | None = None
        self._cancel_watched: object | None = None  # the channel whose consumer cancels we see
        self._closing = False
        self._log = get_logger("bus.ledger")

    @property
    def queue_name(self) -> str:
        return self._names.ledger

    async def _declare(self, channel: AbstractChannel) -> AbstractQueue:
        """Declare the stream (idempotent). Not robust: a reconnect restores no declaration of
        it (one failing during a leader change would fail the whole reconnect); the callers
        declare again, retried."""
        try:
            return await channel.declare_queue(
                self.queue_name,
                durable=True,
                arguments=self._arguments,
                robust=False,  # type: ignore[call-arg]
            )
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            raise mismatch(self.queue_name, "stream", exc) from exc

    async def _retrying(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation`` until it works, for up to ``retry_s``: the stream's leader moving, the
        connection reconnecting, another instance creating the stream at the same moment."""
        deadline = time.monotonic() + self._retry_s
        delay = _RETRY_FIRST_S
        failures = 0
        while True:
            try:
                result = await operation()
            except (TopologyMismatch, asyncio.CancelledError):
                raise
            except Exception as exc:
                failures += 1
                if self._closing or time.monotonic() + delay > deadline:
                    raise
                if failures == 1:
                    self._log.info("ledger_stream_retrying", operation=what, error=_describe(exc))
                await asyncio.sleep(delay)
                delay = min(_RETRY_MAX_S, delay * 2)
                await self._until_connected(deadline)
                continue
            if failures:
                self._log.info("ledger_stream_recovered", operation=what, retries=failures)
            return result

    async def _until_connected(self, deadline: float) -> None:
        """Wait (up to ``deadline``) while the connection reconnects."""
        connected = getattr(self._connection, "connected", None)
        if not isinstance(connected, asyncio.Event) or connected.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await connected.wait()

    async def _publisher(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=True)
            self._declared = False
        if not self._declared:
            await self._declare(self._channel)
            self._declared = True
        return self._channel

    async def _drop_publisher(self) -> None:
        """A failed write: the next attempt opens a fresh channel (this one may be closed, or
        half restored, by the error)."""
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()

    async def record(
        self,
        tenant: str,
        command_id: str,
        command: str | None,
        result: CommandResult | None,
        sender: Sender = NO_SENDER,
        fingerprint: str | None = None,
    ) -> None:
        """Append one record (with who sent what) and wait for the broker's confirm."""
        body: dict[str, object] = {
            "tenant": tenant,
            "command_id": command_id,
            "command": command,
            "result": result.model_dump(mode="json") if result else None,
            "at": time.time(),
            "user_id": sender.user_id,
            "app_id": sender.app_id,
            "fingerprint": fingerprint,
        }
        await self._append(body)

    async def _append(self, body: dict[str, object]) -> None:
        """Append, retried through a leader change (a record written twice is merged once)."""
        message = aio_pika.Message(
            orjson.dumps(body), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )

        async def once() -> None:
            try:
                channel = await self._publisher()
                await channel.default_exchange.publish(message, routing_key=self.queue_name)
            except Exception:
                await self._drop_publisher()
                raise

        try:
            await self._retrying("append", once)
        except TopologyMismatch:
            raise
        except Exception as exc:
            raise JournalError(f"ledger journal write failed: {_describe(exc)}") from exc

    # --- the follower --------------------------------------------------------------------------

    async def follow(self, ledger: FollowingLedger, tenants: Iterable[str]) -> None:
        """Read the stream from where ``ledger`` was last caught up (or its start) and keep
        merging the records of ``tenants`` into it until :meth:`close`."""
        self._ledger = ledger
        self._tenants = frozenset(tenants)
        since = ledger.followed()
        if since is not None:
            self._next_offset = datetime.fromtimestamp(since - self._replay_overlap_s, UTC)
        await self._retrying("follow", self._subscribe)
        self._connection.reconnect_callbacks.add(self._on_reconnect)
        self._marking = asyncio.create_task(self._mark_periodically(), name="ledger-marks")
        self._log.info(
            "ledger_following",
            stream=self.queue_name,
            since=None if since is None else round(since - self._replay_overlap_s, 3),
        )

    async def add_tenants(self, tenants: Iterable[str]) -> None:
        """Follow more tenants (PBXs added to the configuration): the stream is read again
        from its start so what earlier owners of these PBXs executed is known before any of
        their commands is taken here (records merged twice change nothing)."""
        new = frozenset(tenants) - self._tenants
        if not new or self._ledger is None:
            self._tenants |= new
            return
        self._tenants |= new
        self._replay += 1
        self._next_offset = "first"
        await self._retrying("follow", self._subscribe)

    async def _subscribe(self) -> None:
        """(Re)start the follower's consumer at the next record it has not seen, on a fresh
        channel when the last one is closed."""
        if self._follow_tag is not None and self._follow_queue is not None:
            with contextlib.suppress(Exception):
                await self._follow_queue.cancel(self._follow_tag)
        self._follow_tag = None
        if self._follow_channel is None or self._follow_channel.is_closed:
            self._follow_channel = await self._connection.channel()
            await self._follow_channel.set_qos(prefetch_count=REPLAY_PREFETCH)
            self._follow_queue = None
        if self._follow_queue is None:
            self._follow_queue = await self._declare(self._follow_channel)
        try:
            # Not robust: after a reconnect it resumes from the next unseen offset (below), not
            # from the offset it first started at.
            self._follow_tag = await self._follow_queue.consume(
                functools.partial(self._on_follow, replay=self._replay),
                arguments={"x-stream-offset": self._next_offset},
                robust=False,  # type: ignore[call-arg]
            )
        except Exception:
            channel, self._follow_channel, self._follow_queue = self._follow_channel, None, None
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
            raise
        await self._watch_cancels()

    async def _watch_cancels(self) -> None:
        """The broker cancels a stream consumer whose replica goes away: follow again."""
        assert self._follow_channel is not None
        with contextlib.suppress(Exception):
            underlay = await self._follow_channel.get_underlay_channel()
            if underlay is not self._cancel_watched:
                self._cancel_watched = underlay
                underlay.on_consumer_cancel_callbacks.add(self._on_cancel)

    def _on_cancel(self, frame: object) -> None:
        if getattr(frame, "consumer_tag", None) == self._follow_tag:
            self._follow_tag = None
            self._resubscribe()

    def _resubscribe(self) -> None:
        if self._closing:
            return
        if self._resubscribing is None or self._resubscribing.done():
            self._resubscribing = asyncio.create_task(
                self._on_reconnect(), name="ledger-resubscribe"
            )

    async def _on_reconnect(self, *_: object) -> None:
        self._follow_tag = None  # the consumer went with the old connection
        try:
            await self._retrying("follow", self._subscribe)
        except Exception as exc:  # the next caught_up() timing out subscribes again
            self._log.warning("ledger_follow_failed", error=_describe(exc))

    async def _on_follow(self, message: AbstractIncomingMessage, replay: int = 0) -> None:
        if replay != self._replay:  # a consumer replaced by a replay from the start
            with contextlib.suppress(Exception):
                await message.ack()
            return
        # Everything up to the first await runs in delivery order.
        offset = (message.headers or {}).get("x-stream-offset")
        if isinstance(offset, int):
            if isinstance(self._next_offset, int) and offset < self._next_offset:
                offset = None  # seen already (a resubscription overlaps)
            else:
                self._next_offset = offset + 1
                self._take(message.body)
        else:
            self._take(message.body)
        with contextlib.suppress(Exception):
            await message.ack()  # a stream consumer acks to get more credit

    def _take(self, raw: bytes) -> None:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(body, dict):
            return
        marker = body.get("marker")
        if marker is not None:
            waiting = self._markers.get(str(marker))
            if waiting is not None and not waiting[0].done():
                if not self._flush():
                    return  # not all merged: caught_up() times out, nothing is taken
                if self._ledger is not None:
                    self._ledger.mark_followed(waiting[1])
                waiting[0].set_result(None)
            return
        tenant = body.get("tenant")
        if tenant not in self._tenants:
            return
        entry = _entry(body)
        if entry is None:
            return
        pending = self._pending[str(tenant)]
        pending.append(entry)
        if len(pending) >= MERGE_BATCH:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> bool:
        """Merge what is pending into the ledger; False when some of it could not be (it stays
        pending for the next flush, and the follow point does not move past it)."""
        self._flush_scheduled = False
        if not self._pending or self._ledger is None:
            return True
        pending, self._pending = self._pending, defaultdict(list)
        merged = True
        for tenant, entries in pending.items():
            try:
                self._ledger.merge(tenant, entries)
            except Exception:
                self._log.exception("ledger_merge_failed", tenant=tenant, records=len(entries))
                self._pending[tenant].extend(entries)
                merged = False
        return merged

    async def caught_up(self) -> None:
        """Return once every record appended before this call is merged into the ledger.
        :class:`JournalError` if that cannot be known in time (then nothing may be taken).

        Callers at the same time share a marker: one appended after all of their calls
        answers each of them. (Thousands of PBXs starting at once each waited for a marker of
        their own: a confirmed stream write per PBX.) One marker is written at a time; the
        callers that come meanwhile wait for the next one."""
        if self._ledger is None:
            raise JournalError("ledger journal not followed")
        shared = self._next_marker
        if shared is None or shared.done():
            shared = self._next_marker = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._mark(shared), name="ledger-marker")
            self._marker_tasks.add(task)
            task.add_done_callback(self._marker_tasks.discard)
        await asyncio.shield(shared)

    async def _mark(self, shared: asyncio.Future[None]) -> None:
        """Append one marker for every caller that joined ``shared`` before it is written, and
        wait until the follower has read it."""
        try:
            async with self._marker_writing:
                if self._next_marker is shared:
                    self._next_marker = None  # callers from now on need a later marker
                marker = uuid.uuid4().hex
                seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._markers[marker] = (seen, time.time())
                await self._append({"marker": marker})
            try:
                async with asyncio.timeout(self._replay_timeout_s):
                    await seen
            except TimeoutError:
                self._resubscribe()  # the follower may have lost its consumer unnoticed
                raise JournalError(
                    f"ledger journal not read back within {self._replay_timeout_s:.0f} s"
                ) from None
            finally:
                self._markers.pop(marker, None)
        except BaseException as exc:
            if self._next_marker is shared:
                self._next_marker = None
            if not shared.done():
                shared.set_exception(
                    exc if isinstance(exc, Exception) else JournalError("ledger journal closed")
                )
                shared.exception()  # (retrieved: nobody may be waiting any more)
            if not isinstance(exc, Exception):
                raise
        else:
            shared.set_result(None)

    async def _mark_periodically(self) -> None:
        """Keep the follow point recent, and drop ids older than the result retention (the
        ledger holds every configured tenant's commands: it must not grow for ever)."""
        expired_at = time.monotonic()
        while True:
            await asyncio.sleep(self._mark_interval_s)
            with contextlib.suppress(JournalError):
                await self.caught_up()
            if self._ledger is not None and time.monotonic() - expired_at >= EXPIRE_INTERVAL_S:
                expired_at = time.monotonic()
                try:
                    removed = self._ledger.expire()
                except Exception as exc:
                    self._log.warning("ledger_expire_failed", error=f"{type(exc).__name__}: {exc}")
                else:
                    self._log.debug("ledger_expired", removed=removed)

    # --- reading one tenant's records ------------------------------------------------------

    async def replay(self, tenant: str, since: float | None = None) -> list[JournalEntry]:
        """The records kept for ``tenant`` (all, or those journaled from about ``since`` less the
        overlap: the stream is read from the first chunk written at that time), oldest first,
        up to a marker appended now. (The follower does this for every tenant at once.)"""
        marker = uuid.uuid4().hex
        await self._append({"marker": marker})
        entries: list[JournalEntry] = []
        reached = asyncio.Event()

        async def on_record(message: AbstractIncomingMessage) -> None:
            with contextlib.suppress(Exception):
                await message.ack()
            if reached.is_set():
                return
            try:
                body = orjson.loads(message.body)
            except orjson.JSONDecodeError:
                return
            if body.get("marker") == marker:
                reached.set()
            elif body.get("tenant") == tenant and (entry := _entry(body)):
                entries.append(entry)

        try:
            channel = await self._connection.channel()
        except Exception as exc:
            raise JournalError(f"ledger journal unreadable: {type(exc).__name__}: {exc}") from exc
        try:
            await channel.set_qos(prefetch_count=REPLAY_PREFETCH)
            queue = await self._declare(channel)
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
        self._closing = True
        for task in (self._marking, self._resubscribing, *self._marker_tasks):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._connection.reconnect_callbacks.discard(self._on_reconnect)
        self._flush()
        for channel in (self._follow_channel, self._channel):
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()


def _entry(body: dict[str, object]) -> JournalEntry | None:
    try:
        raw = body.get("result")
        return JournalEntry(
            command_id=str(body["command_id"]),
            command=str(body["command"]) if body.get("command") else None,
            result=CommandResult.model_validate(raw) if raw else None,
            at=float(body["at"]),  # type: ignore[arg-type]
            sender=Sender(_text(body.get("user_id")), _text(body.get("app_id"))),
            fingerprint=_text(body.get("fingerprint")),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
