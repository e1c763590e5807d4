"""Meiqia records, webhooks, seats -> events, pure (no I/O, no clock): docs/vendors/meiqia.md."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson
from pydantic import ValidationError

from gateway.connectors.fields import canonical, first, integer, safe_text, text, unix_time
from gateway.schema.events import (
    AgentSeatData,
    CdrData,
    CloudEvent,
    NormalizeContext,
    VendorUnknownData,
    make_event,
    rejected,
)

VENDOR: Final = "meiqia"
RECORDS: Final = "records"
SIPS: Final = "sips"
#: Webhook topics whose business data is a ``Cdr``.
CDR_TOPICS: Final = frozenset({"cdr.hangup", "call_robot.hangup"})
#: Where a delivery's ``Cdr`` may be (the help page's example puts a topic's data under its
#: object's name: ``"conversation": {...}``).
CDR_KEYS: Final = ("cdr", "data", "record", "call")

DIRECTIONS: Final[dict[str, str]] = {
    "外呼": "outbound",
    "呼出": "outbound",
    "outbound": "outbound",
    "来电": "inbound",
    "呼入": "inbound",
    "inbound": "inbound",
}
#: ``states`` (the document: 外呼状态 主叫未接|被叫未接|接听; 来电状态 ivr|队列放弃|振铃未接|接听)
#: -> (disposition, reason). ``接通`` is the request filter's word for answered.
STATES: Final[dict[str, tuple[str, str | None]]] = {
    "接听": ("answered", None),
    "接通": ("answered", None),
    "主叫未接": ("no_answer", "caller_no_answer"),
    "被叫未接": ("no_answer", "callee_no_answer"),
    "振铃未接": ("no_answer", "ring_no_answer"),
    "队列放弃": ("no_answer", "abandoned_in_queue"),
    "ivr": ("no_answer", "ended_in_ivr"),
}
#: A seat row's fields never published (the SIP password).
SECRET_FIELDS: Final = frozenset({"password"})
_NAIVE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?$")


class _Invalid(Exception):
    """A message that cannot become its events (becomes ``gateway.rejected``)."""


# --- fields --------------------------------------------------------------------------------------


def parse_time(value: Any, tz: ZoneInfo) -> datetime | None:
    """The document's ``date-time`` (RFC 3339); also a time without offset (read in the PBX's
    zone) and Unix seconds. Anything else -> None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return unix_time(value)
    stamp = text(value)
    if stamp is None:
        return None
    if stamp.isdigit():
        return unix_time(stamp)
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        if not _NAIVE.match(stamp):
            return None
        parsed = parsed.replace(tzinfo=tz)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def direction_of(call_type: Any) -> str:
    return DIRECTIONS.get((text(call_type) or "").lower(), "unknown")


def disposition_of(states: Any) -> tuple[str | None, str | None]:
    return STATES.get((text(states) or "").lower(), (None, None))


def _agent_id(value: Any) -> str | None:
    number = integer(value)
    if number is not None:
        return str(number) if number > 0 else None  # 0: no agent
    return text(value)


def _unchanged(value: Any) -> str | None:
    """``user_data`` exactly as given (no stripping: a CRM matches it byte for byte)."""
    return value if isinstance(value, str) and value != "" else None


# --- one call record -----------------------------------------------------------------------------


def record_event(
    record: Mapping[str, Any], ctx: NormalizeContext, vendorevent: str = RECORDS
) -> CloudEvent:
    """One ``records`` record (or a delivery's ``Cdr``) -> its ``cdr.created``."""
    call_id = text(record.get("call_uuid"))
    if call_id is None:
        raise _Invalid(f"{vendorevent}: a call record without 'call_uuid'")
    direction = direction_of(record.get("call_type"))
    disposition, reason = disposition_of(record.get("states"))
    agent_side = text(record.get("agent_phone"))
    customer = text(record.get("customer_phone"))
    trunk = text(record.get("trunk_number"))
    if direction == "inbound":
        caller, callee = customer, agent_side or trunk
    else:
        caller, callee = agent_side, customer
    started = parse_time(record.get("start_time"), ctx.tz)
    ended = parse_time(record.get("end_time"), ctx.tz)
    data = CdrData(
        call_id=call_id,
        started_at=started,
        caller=caller,
        callee=callee,
        direction=direction,
        leg_direction=direction,
        disposition=disposition,
        reason=reason,
        duration_s=integer(record.get("duration")),
        talk_duration_s=integer(record.get("customer_duration")),
        ring_duration_s=integer(record.get("wait_time")),
        queue_wait_s=integer(record.get("queue_wait_time")),
        trunk_in=trunk if direction == "inbound" else None,
        trunk_out=trunk if direction == "outbound" else None,
        trunk_name=text(record.get("trunk_number_name")),
        did=trunk if direction == "inbound" else None,
        recording=text(record.get("record_path")),
        agent_id=_agent_id(record.get("agent_id")),
        customer_location=text(record.get("customer_attribution")),
        user_data=_unchanged(record.get("user_data")),
    )
    return make_event(
        ctx,
        "cdr.created",
        data,
        identity=("cdr", call_id),
        time=started or ended or ctx.received_at,
        subject=call_id,
        vendorevent=vendorevent,
        raw=dict(record),
    )


def records_events(rows: Iterable[Any], ctx: NormalizeContext) -> list[CloudEvent]:
    """A page of ``records`` -> events; a record that cannot be read is ``gateway.rejected``."""
    out: list[CloudEvent] = []
    for row in rows:
        try:
            if not isinstance(row, dict):
                raise _Invalid(f"records: a record is a {type(row).__name__}, not an object")
            out.append(record_event(row, ctx))
        except (_Invalid, ValidationError) as exc:
            out.append(rejected(ctx, safe_text(canonical(row)), _reason(exc), RECORDS))
    return out


# --- one webhook delivery ------------------------------------------------------------------------


def delivery_cdr(envelope: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``Cdr`` of a ``cdr.hangup`` / ``call_robot.hangup`` delivery."""
    for key in CDR_KEYS:
        value = envelope.get(key)
        if isinstance(value, dict):
            return value
    return None


#: vendorevent of a signed delivery that names no topic (e.g. an SDK chat push).
NO_TOPIC: Final = "webhook"


def delivery_events(
    envelope: Mapping[str, Any], ctx: NormalizeContext, delivery: str | None = None
) -> list[CloudEvent]:
    """A webhook delivery -> its events: a ``cdr.created`` for a call topic,
    ``vendor.unknown`` (with the delivery) for any other topic and for a body without
    ``event`` (``delivery``: its id when it carries none, see ``webhook.delivery_key``)."""
    topic = text(envelope.get("event")) or NO_TOPIC
    delivery = text(envelope.get("id")) or delivery
    if delivery is None:
        raise _Invalid("webhook delivery without 'id'")
    if topic in CDR_TOPICS:
        cdr = delivery_cdr(envelope)
        if cdr is None:
            raise _Invalid(f"{topic} delivery {delivery} without its Cdr object")
        return [record_event(cdr, ctx, vendorevent=topic)]
    raw = without_token(envelope)
    event = make_event(
        ctx,
        "vendor.unknown",
        VendorUnknownData(event=topic),
        identity=("webhook", delivery),
        time=unix_time(envelope.get("created_at")) or ctx.received_at,
        vendorevent=topic,
        raw=raw,
    )
    event.data.setdefault("raw", raw)
    return [event]


# --- seats ---------------------------------------------------------------------------------------


def seat_state(row: Mapping[str, Any], now: datetime, tz: ZoneInfo) -> dict[str, Any]:
    """What is compared of one ``sips`` row (JSON-ready, so it can be saved)."""
    occupied = (text(row.get("occupied")) or "").lower()
    expires = parse_time(row.get("expiration_at"), tz)
    return {
        "occupied": True if occupied == "y" else False if occupied == "n" else None,
        "agent_id": _agent_id(row.get("agent_id")),
        "agent_name": text(row.get("agent_name")),
        "expires_at": expires.isoformat() if expires else None,
        "expired": None if expires is None else expires <= now,
    }


def seat_snapshot(rows: Iterable[Any], now: datetime, tz: ZoneInfo) -> dict[str, dict[str, Any]]:
    """``sips`` answer -> seat (SIP number) -> state; rows without a ``sip`` are left out."""
    snapshot: dict[str, dict[str, Any]] = {}
    for row in rows:
        if isinstance(row, dict) and (sip := first(row, "sip")) is not None:
            snapshot[sip] = seat_state(row, now, tz)
    return snapshot


_COMPARED: Final = (
    ("occupied", "occupied"),
    ("agent_id", "agent"),
    ("expires_at", "expires_at"),
    ("expired", "expired"),
)


def seat_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What changed between two states of one seat (an agent's name alone is no change)."""
    return [change for key, change in _COMPARED if before.get(key) != after.get(key)]


def seat_events(
    before: Mapping[str, Mapping[str, Any]],
    after: Mapping[str, Mapping[str, Any]],
    sequences: dict[str, int],
    ctx: NormalizeContext,
) -> list[CloudEvent]:
    """One ``agent.seat`` per seat whose occupancy, bound agent or expiry changed (also one
    that appeared or went). ``sequences`` counts each seat's changes (updated here): with it,
    a seat going back and forth gets a new id each time, and the same change recomputed
    after a crash gets the same one."""
    out: list[CloudEvent] = []
    for sip in sorted(before.keys() | after.keys()):
        old, new = before.get(sip), after.get(sip)
        if old is None:
            changes = ["added"]
        elif new is None:
            changes = ["removed"]
        else:
            changes = seat_changes(old, new)
        if not changes:
            continue
        sequences[sip] = sequence = sequences.get(sip, 0) + 1
        state = new if new is not None else old
        assert state is not None
        data = AgentSeatData(
            extension=sip,
            occupied=state.get("occupied") if new is not None else None,
            agent_id=state.get("agent_id") if new is not None else None,
            agent_name=state.get("agent_name") if new is not None else None,
            expires_at=state.get("expires_at") if new is not None else None,
            expired=state.get("expired") if new is not None else None,
            changes=changes,
        )
        out.append(
            make_event(
                ctx,
                "agent.seat",
                data,
                identity=("seat", sip, sequence, canonical(new)),
                subject=sip,
                vendorevent=SIPS,
                raw={"before": old, "after": new},
            )
        )
    return out


# --- the line normalizer -------------------------------------------------------------------------


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False)
        return "invalid record: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:3]
        )
    return str(exc)


def _normalize(line: str, ctx: NormalizeContext) -> list[CloudEvent]:
    try:
        msg = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise _Invalid(f"message is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise _Invalid(f"message is not a JSON object (got {type(msg).__name__})")
    if "event" in msg and "id" in msg:
        return delivery_events(msg, ctx)
    if "call_uuid" in msg:
        return [record_event(msg, ctx)]
    raise _Invalid("neither a call record (call_uuid) nor a webhook delivery (id, event)")


def _vendorevent(line: str) -> str | None:
    try:
        msg = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict):
        return None
    return text(msg.get("event")) or (RECORDS if "call_uuid" in msg else None)


#: The webhook's shared secret, sent in every delivery: never published.
_TOKEN = "enterprise_token"
_TOKEN_TEXT = re.compile(r'("enterprise_token"\s*:\s*)("(?:[^"\\]|\\.)*"|[^,}\s]+)')


def without_token(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """A delivery as published: without its ``enterprise_token``."""
    return {k: v for k, v in envelope.items() if k != _TOKEN}


def _redact_token(line: str) -> str:
    """The raw text of a message that is published (as ``gateway.rejected``) with its token
    replaced, whether it parses or not."""
    return _TOKEN_TEXT.sub(r'\1"***"', line) if _TOKEN in line else line


def normalize_message(line: str | bytes, ctx: NormalizeContext) -> list[CloudEvent]:
    """One raw message (a ``records`` record or a webhook delivery body) -> events. Total:
    what it cannot read becomes ``gateway.rejected`` (its token redacted)."""
    safe = safe_text(line)
    try:
        return _normalize(safe, ctx)
    except (_Invalid, ValidationError) as exc:
        return [rejected(ctx, _redact_token(safe), _reason(exc), _vendorevent(safe))]
    except Exception as exc:  # a bug here must not cost the message: publish it as rejected
        error = safe_text(f"normalizer error: {type(exc).__name__}: {exc}")
        return [rejected(ctx, _redact_token(safe), error, _vendorevent(safe))]
