"""Events as the gateway builds them (``make_event``), for the consumer and sink tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from gateway.schema.events import (
    CallData,
    CdrData,
    CloudEvent,
    NormalizeContext,
    gap_event,
    make_event,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def context(tenant: str) -> NormalizeContext:
    return NormalizeContext(tenant, "yeastar", ZoneInfo("UTC"), T0)


def cdr(tenant: str, call_id: str, leg: int = 0, **fields: Any) -> CloudEvent:
    """One leg of a call: ``leg`` makes its identity (and so its id) its own."""
    values: dict[str, Any] = {
        "call_id": call_id,
        "started_at": T0 + timedelta(seconds=leg),
        "caller": "2001",
        "callee": f"20{leg:02d}",
        "direction": "inbound",
        "disposition": "answered",
        "duration_s": 30 + leg,
        "talk_duration_s": 20 + leg,
        "leg_direction": "inbound",
    }
    values.update(fields)
    data = CdrData.model_validate(values)
    return make_event(
        context(tenant), "cdr.created", data, identity=(call_id, leg), subject=call_id
    )


def call_event(tenant: str, call_id: str, state: str = "ringing") -> CloudEvent:
    data = CallData(call_id=call_id, state=state, direction="inbound", members=[])  # type: ignore[arg-type]
    return make_event(
        context(tenant), f"call.{state}", data, identity=(call_id, state), subject=call_id
    )


def gap(tenant: str) -> CloudEvent:
    return gap_event(context(tenant), T0, T0 + timedelta(minutes=1), recovered=2)


async def publish(
    connection: AbstractRobustConnection,
    events: list[CloudEvent] | list[bytes],
    routing_key: str | None = None,
    exchange: str = "pbx.events",
) -> None:
    """Publish as the gateway does (persistent, ``message_id`` = id), with confirms."""
    channel = await connection.channel()
    try:
        target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        for item in events:
            if isinstance(item, CloudEvent):
                body, key, message_id = item.to_json(), item.routing_key, item.id
            else:
                body, key, message_id = item, routing_key or "x.unknown", None
            await target.publish(
                aio_pika.Message(
                    body,
                    message_id=message_id,
                    content_type="application/cloudevents+json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key or key,
            )
    finally:
        await channel.close()
