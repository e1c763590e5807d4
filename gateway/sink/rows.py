"""Which table an event goes to, and its row: pure, so what is stored is testable alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from gateway.consumer.events import Event
from gateway.schema.events import CallData, CdrData, GatewayGapData

_CDR_FIELDS = (
    "call_id",
    "started_at",
    "caller",
    "callee",
    "direction",
    "leg_direction",
    "disposition",
    "duration_s",
    "talk_duration_s",
    "ring_duration_s",
    "trunk_in",
    "trunk_out",
    "trunk_name",
    "did",
    "recording",
    "agent_id",
    "agent_ring_s",
    "queue_wait_s",
    "reason",
    "customer_location",
    "user_data",
)

#: table -> its columns in insert order (``stored_at`` is the database's).
COLUMNS: dict[str, tuple[str, ...]] = {
    "cdr_legs": ("id", "tenant", "vendor", "event_time", *_CDR_FIELDS, "event"),
    "call_events": (
        "id",
        "tenant",
        "vendor",
        "type",
        "call_id",
        "event_time",
        "state",
        "direction",
        "event",
    ),
    "agent_events": ("id", "tenant", "vendor", "type", "extension", "event_time", "event"),
    "gaps": ("id", "tenant", "vendor", "gap_from", "gap_to", "recovered", "event"),
}

#: What the sink stores, as said in its refusals.
STORED = "cdr.created, call.*, agent.*, gateway.gap"


@dataclass(frozen=True, slots=True)
class Row:
    table: str
    values: tuple[Any, ...]


class Unstorable(ValueError):
    """The sink does not store this event (the reason is the message)."""


def row_of(event: Event[Any], body: Any) -> Row:
    """The row for ``event``; ``body`` is the event as published (decoded JSON), stored whole."""
    if not event.typed:
        raise Unstorable(event.problem or "untyped event")
    data = event.data
    head = (event.id, event.tenant, event.vendor)
    if event.type == "cdr.created" and isinstance(data, CdrData):
        fields = tuple(getattr(data, name) for name in _CDR_FIELDS)
        return Row("cdr_legs", (*head, event.time, *fields, Jsonb(body)))
    if event.type == "gateway.gap" and isinstance(data, GatewayGapData):
        return Row("gaps", (*head, data.from_, data.to, data.recovered, Jsonb(body)))
    if event.type.startswith("call."):  # every call.* model has call_id; call.uacsta's may be None
        call_id = getattr(data, "call_id", None)
        state = data.state if isinstance(data, CallData) else None
        direction = data.direction if isinstance(data, CallData) else None
        return Row(
            "call_events", (*head, event.type, call_id, event.time, state, direction, Jsonb(body))
        )
    if event.type.startswith("agent."):
        extension = getattr(data, "extension", None)
        if isinstance(extension, str):
            return Row("agent_events", (*head, event.type, extension, event.time, Jsonb(body)))
    raise Unstorable(f"event type {event.type!r} is not stored by this sink (it stores {STORED})")
