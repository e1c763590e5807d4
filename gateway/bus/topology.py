"""Every exchange, queue and binding the gateway owns, declared in one place.

Commands: ``pbx.commands`` (topic) -> one durable queue per tenant ``pbx.commands.<tenant>``
(binding ``<tenant>.#``, single active consumer). Its dead letters go to the headers exchange
``pbx.commands.dlx``, which sorts them by the broker's ``x-first-death-reason``: commands that
expired while waiting go to ``pbx.commands.expired`` (the gateway answers them ``expired``),
everything else (rejected as malformed, over a limit) to ``pbx.commands.dead`` for people.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, FieldValue

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

    def tenant_queue(self, tenant: str) -> str:
        return f"{self.exchange}.{tenant}"


async def declare_command_exchanges(
    channel: AbstractChannel, names: CommandNames
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
    dead = await channel.declare_queue(names.dead, durable=True, arguments=bounded)
    await dead.bind(dlx, arguments={"x-match": "any-with-x", "x-first-death-reason": "rejected"})
    await dead.bind(dlx, arguments={"x-match": "any-with-x", "x-first-death-reason": "maxlen"})
    await dead.bind(
        dlx, arguments={"x-match": "any-with-x", "x-first-death-reason": "delivery_limit"}
    )
    expired = await channel.declare_queue(names.expired, durable=True, arguments=bounded)
    await expired.bind(dlx, arguments={"x-match": "all-with-x", "x-first-death-reason": "expired"})
    return exchange


async def declare_tenant_queue(
    channel: AbstractChannel, names: CommandNames, tenant: str
) -> AbstractQueue:
    queue = await channel.declare_queue(
        names.tenant_queue(tenant),
        durable=True,
        arguments={
            "x-dead-letter-exchange": names.dead_letter_exchange,
            "x-single-active-consumer": True,
        },
    )
    await queue.bind(names.exchange, routing_key=f"{tenant}.#")
    return queue
