"""Command intake over AMQP: deliver -> decide (:mod:`gateway.bus.processing`) -> reply -> ack,
or dead-letter.

One consumer per owned tenant, each with its own prefetch (``basic.qos`` per consumer), so a slow
or unreachable PBX never holds up another; the consumers share a few channels
(:data:`LANES_PER_CHANNEL` each) rather than one channel per tenant, which would cost the broker
a channel's processes per PBX. While a tenant's link is not connected its consumer is cancelled
and commands wait in their queue; those that expire there are dead-lettered by the broker and
answered ``expired`` from ``pbx.commands.expired``. Replies are published with confirms before
the command is acked, so a crash between the two redelivers the command and the ledger answers it
again without running it twice. With a :class:`CommandJournal`, this instance follows the shared
ledger stream, a lane first waits until the follower has caught up with everything journaled
before it, and every id is journaled before the PBX is called.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from gateway.bus.idempotency import CommandLedger
from gateway.bus.journal import CommandJournal, JournalError
from gateway.bus.policy import CommandPolicy, reply_allowed
from gateway.bus.processing import CommandProcessor, failure
from gateway.bus.publisher import EventPublisher
from gateway.bus.topology import (
    CommandNames,
    QueueType,
    declare_command_exchanges,
    declare_tenant_queue,
)
from gateway.connectors.base import Connector
from gateway.logging import get_logger
from gateway.runtime.metrics import COMMANDS
from gateway.schema.commands import (
    CONTRACT_COMMANDS,
    CommandCatalog,
    CommandResult,
    ErrorCode,
)
from gateway.schema.events import CommandResultData, NormalizeContext, make_event

RESULT_CONTENT_TYPE = "application/json"
#: How long a reply waits for its channel (restored after a reconnect) before the command is
#: left to its redelivery (which answers it from the ledger).
REPLY_WAIT_S = 30.0
#: A reply channel closed this long while the connection is up is not being restored (its
#: restore failed): a new one is opened.
REPLY_REOPEN_S = 2.0
#: Tenants' consumers sharing one channel. A channel closed by an error takes its consumers
#: with it until the robust channel reopens and restores them, so not all on one.
LANES_PER_CHANNEL = 100


class CommandConsumer:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        names: CommandNames,
        connectors: dict[str, Connector],
        ledger: CommandLedger,
        publisher: EventPublisher,
        *,
        journal: CommandJournal | None = None,
        catalog: CommandCatalog = CONTRACT_COMMANDS,
        supported: Mapping[str, frozenset[str]] | None = None,
        policies: Mapping[str, CommandPolicy] | None = None,
        require_user_id: bool = False,
        reply_prefixes: Sequence[str] = ("pbx.replies.",),
        prefetch: int = 8,
        execute_timeout_s: float = 20.0,
        drain_timeout_s: float = 10.0,
        queue_type: QueueType = "classic",
        lanes_per_channel: int = LANES_PER_CHANNEL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._connection = connection
        self._names = names
        self._connectors = connectors
        self._ledger = ledger
        self._publisher = publisher
        self._journal = journal
        self._catalog = catalog
        self.processor = CommandProcessor(
            ledger,
            journal=journal,
            catalog=catalog,
            supported=supported,
            policies=policies,
            require_user_id=require_user_id,
            reply_prefixes=reply_prefixes,
            execute_timeout_s=execute_timeout_s,
            clock=clock,
        )
        self._prefetch = prefetch
        self._drain_timeout_s = drain_timeout_s
        self._queue_type: QueueType = queue_type
        self._lanes_per_channel = lanes_per_channel
        self._clock = clock
        self._channels: list[AbstractChannel] = []
        self._lane_channels: list[AbstractChannel] = []
        self._added_channels: list[AbstractChannel] = []  # for PBXs added after the start
        self._lane_load: dict[AbstractChannel, int] = {}  # tenants' queues declared on each
        self._reply_channel: AbstractChannel | None = None
        self._reply_closed_since: float | None = None
        self._reply_lock = asyncio.Lock()
        self._queues: dict[str, AbstractQueue] = {}
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._consumers: dict[str, tuple[AbstractQueue, str]] = {}
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._log = get_logger("bus.commands")

    async def start(self) -> None:
        setup = await self._connection.channel()
        try:
            await declare_command_exchanges(setup, self._names, self._queue_type)
        finally:
            if not setup.is_closed:
                await setup.close()
        self._reply_channel = await self._connection.channel(publisher_confirms=True)
        channel = await self._open_channel()
        expired = await channel.get_queue(self._names.expired)
        # Every configured tenant's queue exists from the start, owned here or not, so commands
        # published before any instance takes the PBX wait instead of being unroutable. Declared
        # on the lane channels, one after the other on each channel (the channels side by side).
        tenants = list(self._connectors)
        groups = [
            tenants[i : i + self._lanes_per_channel]
            for i in range(0, len(tenants), self._lanes_per_channel)
        ]
        for _ in groups:
            self._lane_channels.append(await self._open_channel())
        await asyncio.gather(
            *(
                self._declare_all(ch, group)
                for ch, group in zip(self._lane_channels, groups, strict=True)
            )
        )
        if self._journal is not None:
            await self._journal.follow(self._ledger, tenants)
        self._consumers["expired"] = (expired, await expired.consume(self._on_expired))

    async def _declare_all(self, channel: AbstractChannel, tenants: list[str]) -> None:
        self._lane_load[channel] = self._lane_load.get(channel, 0) + len(tenants)
        for tenant in tenants:
            self._queues[tenant] = await declare_tenant_queue(
                channel, self._names, tenant, self._queue_type
            )

    async def declare(self, tenant: str) -> AbstractQueue:
        """The tenant's command queue, declared if it is not yet (a PBX added after the start):
        its commands wait there until an instance owns the PBX."""
        queue = self._queues.get(tenant)
        if queue is None:
            # Not configured at start: on a channel of the PBXs added since, while it has room
            # (never on one of the start's: a refused declaration closes its channel).
            channel = next(
                (
                    ch
                    for ch in self._added_channels
                    if not ch.is_closed and self._lane_load.get(ch, 0) < self._lanes_per_channel
                ),
                None,
            )
            if channel is None:
                channel = await self._open_channel()
                self._added_channels.append(channel)
            self._lane_load[channel] = self._lane_load.get(channel, 0) + 1
            queue = await declare_tenant_queue(channel, self._names, tenant, self._queue_type)
            self._queues[tenant] = queue
        return queue

    async def retire(self, tenant: str, vendor: str) -> int:
        """The PBX left the configuration (its lane removed): every command still waiting for
        it is answered ``not_found`` saying so, and its queue is deleted if empty (a command
        published for the tenant afterwards is unroutable: ``gateway send`` says no gateway
        takes it). Returns how many commands were answered."""
        queue = self._queues.pop(tenant, None)
        if queue is None:
            channel = await self._open_channel()
            queue = await channel.declare_queue(
                self._names.tenant_queue(tenant),
                passive=True,
                robust=False,  # type: ignore[call-arg]
            )
        answered = 0
        while True:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            result = failure(
                message.message_id or "",
                ErrorCode.NOT_FOUND,
                f"PBX {tenant!r} was removed from the gateway's configuration",
            )
            name = (message.routing_key or "").split(".", 1)[-1] or None
            try:
                await self._reply(tenant, vendor, message, result, name)
            except Exception:
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                raise
            await message.ack()
            answered += 1
            COMMANDS.labels(
                tenant, vendor, name if name in self._catalog.names else "unknown", "not_found"
            ).inc()
        with contextlib.suppress(Exception):  # a command arrived meanwhile: the queue stays
            await queue.delete(if_unused=False, if_empty=True)
        self._log.info("commands_retired", tenant=tenant, answered=answered)
        return answered

    def forget(self, tenant: str) -> None:
        """The PBX left this instance's configuration (not owned here): its queue stays for
        the instances that still list it."""
        self._queues.pop(tenant, None)

    async def add_tenant(self, tenant: str) -> None:
        """Take this tenant's commands (while its link is up): this instance owns the PBX."""
        if tenant in self._lanes:
            return
        queue = await self.declare(tenant)
        self._lanes[tenant] = asyncio.create_task(
            self._lane(tenant, self._connectors[tenant], queue), name=f"commands-{tenant}"
        )

    async def remove_tenant(self, tenant: str) -> None:
        """Stop taking this tenant's commands; the ones already taken still finish."""
        task = self._lanes.pop(tenant, None)
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self._drain()  # answer what was taken before another instance may take over

    async def stop(self) -> None:
        """Stop taking commands, let in-flight ones finish (bounded), close the channels."""
        lanes = list(self._lanes.values())
        self._lanes.clear()
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        for queue, tag in list(self._consumers.values()):
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        self._consumers.clear()
        await self._drain()
        await self.processor.stop()  # past the drain: what is left is interrupted
        if self._journal is not None:
            await self._journal.close()
        for channel in [*self._channels, self._reply_channel]:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
        self._channels.clear()
        self._lane_channels.clear()
        self._added_channels.clear()
        self._lane_load.clear()
        self._queues.clear()

    async def _drain(self) -> None:
        """Wait (bounded) for the commands taken, those whose delivery is gone included."""
        try:
            async with asyncio.timeout(self._drain_timeout_s):
                await self._idle.wait()
                await self.processor.settle()
        except TimeoutError:
            self._log.warning(
                "commands_still_running", count=max(self._in_flight, self.processor.running)
            )

    async def _open_channel(self) -> AbstractChannel:
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        self._channels.append(channel)
        return channel

    async def _lane(self, tenant: str, connector: Connector, queue: AbstractQueue) -> None:
        """Consume while the tenant's PBX link is up; leave commands queued while it is not."""
        log = self._log.bind(tenant=tenant)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._on_message(tenant, connector, message)

        caught_up = self._journal is None
        while True:
            await connector.link.wait_for(lambda state: state == "connected")
            if not caught_up:
                caught_up = await self._catch_up(tenant)
                if not caught_up:
                    await asyncio.sleep(1.0)
                continue  # the link may have gone down during the replay
            tag = await queue.consume(on_message)
            self._consumers[tenant] = (queue, tag)
            log.info("commands_consuming")
            try:
                state = await connector.link.wait_for(lambda state: state != "connected")
            finally:
                del self._consumers[tenant]
                with contextlib.suppress(Exception):
                    await asyncio.shield(queue.cancel(tag))
            log.warning("commands_paused", link=state)

    async def _catch_up(self, tenant: str) -> bool:
        """Know what earlier owners of this PBX executed; no command is taken before that."""
        assert self._journal is not None
        try:
            await self._journal.caught_up()
        except JournalError as exc:
            self._log.warning("ledger_replay_failed", tenant=tenant, error=str(exc))
            return False
        self._log.debug("ledger_caught_up", tenant=tenant)
        return True

    # --- one command -------------------------------------------------------------------------

    async def _on_message(
        self, tenant: str, connector: Connector, message: AbstractIncomingMessage
    ) -> None:
        if connector.link.value != "connected":
            # Delivered just as the link went down, before the lane stopped consuming: put it
            # back to wait for the PBX (and remember it was never started here).
            if not message.redelivered:  # (a redelivered one may have run elsewhere)
                self.processor.put_back(tenant, message.message_id or "")
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return
        self._in_flight += 1
        self._idle.clear()
        try:
            result, name, dead = await self.processor.process(tenant, connector, message)
            await self._reply(tenant, connector.vendor, message, result, name)
            COMMANDS.labels(tenant, connector.vendor, name or "invalid", _outcome(result)).inc()
            if dead:
                await message.reject(requeue=False)
            else:
                await message.ack()
        except (JournalError, ReplyNotSent) as exc:
            # Not journaled (so not executed), or no reply channel in time: leave the command
            # to be redelivered; the ledger answers it then without executing it again.
            self._log.warning(
                "command_not_answered_yet",
                tenant=tenant,
                command_id=message.message_id,
                error=str(exc)[:300],
            )
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        except Exception:
            self._log.exception(
                "command_not_answered", tenant=tenant, command_id=message.message_id
            )
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    # --- expired while queued ----------------------------------------------------------------

    async def _on_expired(self, message: AbstractIncomingMessage) -> None:
        """The broker dropped a command whose AMQP expiration passed while it waited."""
        tenant = (message.routing_key or "").split(".", 1)[0]
        name = (message.routing_key or "").split(".", 1)[-1] or None
        connector = self._connectors.get(tenant)
        result = failure(
            message.message_id or "",
            ErrorCode.EXPIRED,
            "expired in the queue before the PBX could take it (AMQP expiration)",
        )
        try:
            await self._reply(
                tenant, connector.vendor if connector else "unknown", message, result, name
            )
            # the routing key is whatever the publisher chose: only known values become labels
            COMMANDS.labels(
                tenant if connector else "unknown",
                connector.vendor if connector else "unknown",
                name if name in self._catalog.names else "unknown",
                "expired",
            ).inc()
            await message.ack()
        except Exception:
            self._log.exception("expired_reply_failed", command_id=message.message_id)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)

    # --- replies -----------------------------------------------------------------------------

    async def _reply(
        self,
        tenant: str,
        vendor: str,
        message: AbstractIncomingMessage,
        result: CommandResult,
        name: str | None,
    ) -> None:
        if message.reply_to and reply_allowed(message.reply_to, self.processor.reply_prefixes):
            await self._send_reply(
                aio_pika.Message(
                    body=orjson.dumps(result.model_dump(mode="json")),
                    content_type=RESULT_CONTENT_TYPE,
                    correlation_id=message.correlation_id or result.command_id,
                    message_id=f"result-{result.command_id}",
                    type="command.result",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                message.reply_to,
            )
            return
        ctx = NormalizeContext(tenant, vendor, ZoneInfo("UTC"), self._clock())
        data = CommandResultData(
            command_id=result.command_id,
            command=name,
            ok=result.ok,
            result=result.result,
            error=result.error.model_dump(mode="json") if result.error else None,
            user_id=message.user_id or None,
            app_id=message.app_id or None,
        )
        type_ = "command.succeeded" if result.ok else "command.failed"
        await self._publisher.submit(
            make_event(
                ctx,
                type_,
                data,
                identity=("command", result.command_id, result.ok),
                subject=result.command_id or None,
            )
        )

    async def _send_reply(self, reply: aio_pika.Message, routing_key: str) -> None:
        """Publish with a confirm; while the reply channel is being restored (a reconnect, a
        channel error), wait for it rather than fail: up to :data:`REPLY_WAIT_S`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPLY_WAIT_S
        delay = 0.05
        while True:
            channel = await self._usable_reply_channel()
            try:
                if channel.is_closed:
                    raise aio_pika.exceptions.ChannelInvalidStateError("reply channel closed")
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    await channel.default_exchange.publish(reply, routing_key=routing_key)
                return
            except Exception as exc:
                if loop.time() >= deadline:
                    raise ReplyNotSent(f"{type(exc).__name__}: {exc}") from exc
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(1.0, delay * 2)

    async def _usable_reply_channel(self) -> AbstractChannel:
        """The reply channel; a new one if it stayed closed while the connection is up (its
        robust restore failed and will not be tried again before the next reconnect)."""
        async with self._reply_lock:
            channel = self._reply_channel
            assert channel is not None
            if not channel.is_closed:
                self._reply_closed_since = None
                return channel
            now = asyncio.get_running_loop().time()
            if self._reply_closed_since is None:
                self._reply_closed_since = now
            connected = getattr(self._connection, "connected", None)
            up = not self._connection.is_closed and (
                not isinstance(connected, asyncio.Event) or connected.is_set()
            )
            if up and now - self._reply_closed_since >= REPLY_REOPEN_S:
                with contextlib.suppress(Exception):
                    await channel.close()
                channel = await self._connection.channel(publisher_confirms=True)
                self._reply_channel = channel
                self._reply_closed_since = None
                self._log.info("reply_channel_reopened")
            return channel


class ReplyNotSent(RuntimeError):
    """No reply channel took the reply in time; the command's redelivery answers it."""


def _outcome(result: CommandResult) -> str:
    return "ok" if result.ok else str(result.error.code if result.error else "failed")
