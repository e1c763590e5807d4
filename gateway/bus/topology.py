"""Every exchange, queue and binding the gateway owns, declared in one place.

Commands: ``pbx.commands`` (topic) -> one durable queue per tenant ``pbx.commands.<tenant>``
(binding ``<tenant>.#``, single active consumer): the queue is where a PBX's commands wait while
it is down, in order. Its dead letters go to the headers exchange ``pbx.commands.dlx``, which
sorts them by the broker's ``x-first-death-reason``: commands that expired while waiting go to
``pbx.commands.expired`` (the gateway answers them ``expired``), everything else (rejected as
malformed, over a limit) to ``pbx.commands.dead`` for people. The command ledger is one stream
for every tenant, ``pbx.commands.ledger`` (see :mod:`gateway.bus.journal`).

Durable queues are of the type ``bus.queue_type`` (``classic`` or ``quorum``). Declaring a queue
that exists with the other type is reported as a :class:`TopologyMismatch` that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, FieldValue

QueueType = Literal["classic", "quorum"]

DEAD_LETTER_TTL_MS = 14 * 86400 * 1000
DEAD_LETTER_MAX = 100_000


async def declare_events_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    """``pbx.events``: durable topic exchange, routing key ``<tenant>.<type>``."""
    return await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)


@dataclass(frozen=True, slots=True)
class CommandNames:
    exchange: str = "pbx.commands"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.exchange}.dlx"

    @property
    def dead(self) -> str:
        return f"{self.exchange}.dead"

    @property
    def expired(self) -> str:
        return f"{self.exchange}.expired"

    @property
    def ledger(self) -> str:
        """The one stream journaling every tenant's command ids."""
        return f"{self.exchange}.ledger"

    def tenant_queue(self, tenant: str) -> str:
        return f"{self.exchange}.{tenant}"


class TopologyMismatch(RuntimeError):
    """A queue exists with other arguments (typically another ``x-queue-type``) than declared."""


async def declare_durable_queue(
    channel: AbstractChannel,
    name: str,
    queue_type: QueueType,
    arguments: dict[str, FieldValue] | None = None,
    *,
    robust: bool = True,
) -> AbstractQueue:
    """A durable queue of ``queue_type``; a clear :class:`TopologyMismatch` when the queue
    already exists with another type or other arguments (the channel is closed by then)."""
    try:
        return await channel.declare_queue(
            name,
            durable=True,
            arguments={"x-queue-type": queue_type, **(arguments or {})},
            robust=robust,  # type: ignore[call-arg]
        )
    except aio_pika.exceptions.ChannelPreconditionFailed as exc:
        raise mismatch(name, queue_type, exc) from exc


def mismatch(name: str, queue_type: str, exc: BaseException) -> TopologyMismatch:
    detail = str(exc)
    if "x-queue-type" in detail:
        hint = (
            f"the queue {name!r} exists in RabbitMQ with another type than bus.queue_type"
            f" ({queue_type!r}). Either set bus.queue_type to the existing type, or move to"
            f" {queue_type!r}: stop every gateway instance, let the queue drain (or move its"
            f" messages, e.g. with a shovel), delete it (rabbitmqctl delete_queue {name}) and"
            " start again"
        )
    else:
        hint = (
            f"the queue {name!r} exists in RabbitMQ with other arguments than this gateway"
            f" declares: most likely another queue type than bus.queue_type ({queue_type!r}),"
            " or an older gateway version. Set bus.queue_type to the existing type, or stop"
            f" every instance, drain and delete the queue (rabbitmqctl delete_queue {name}) and"
            " start again"
        )
    return TopologyMismatch(f"{hint}. Broker said: {detail}")


async def declare_command_exchanges(
    channel: AbstractChannel, names: CommandNames, queue_type: QueueType = "classic"
) -> AbstractExchange:
    """The command exchange and the dead-letter side; returns the command exchange."""
    exchange = await channel.declare_exchange(
        names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    dlx = await channel.declare_exchange(
        names.dead_letter_exchange, aio_pika.ExchangeType.HEADERS, durable=True
    )
    bounded: dict[str, FieldValue] = {
        "x-message-ttl": DEAD_LETTER_TTL_MS,
        "x-max-length": DEAD_LETTER_MAX,
    }
    dead = await declare_durable_queue(channel, names.dead, queue_type, bounded)
    await dead.bind(dlx, arguments={"x-match": "any-with-x", "x-first-death-reason": "rejected"})
    await dead.bind(dlx, arguments={"x-match": "any-with-x", "x-first-death-reason": "maxlen"})
    await dead.bind(
        dlx, arguments={"x-match": "any-with-x", "x-first-death-reason": "delivery_limit"}
    )
    expired = await declare_durable_queue(channel, names.expired, queue_type, bounded)
    await expired.bind(dlx, arguments={"x-match": "all-with-x", "x-first-death-reason": "expired"})
    return exchange


async def declare_tenant_queue(
    channel: AbstractChannel, names: CommandNames, tenant: str, queue_type: QueueType = "classic"
) -> AbstractQueue:
    queue = await declare_durable_queue(
        channel,
        names.tenant_queue(tenant),
        queue_type,
        {
            "x-dead-letter-exchange": names.dead_letter_exchange,
            "x-single-active-consumer": True,
        },
    )
    await queue.bind(names.exchange, routing_key=f"{tenant}.#")
    return queue
