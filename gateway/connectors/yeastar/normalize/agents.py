"""Agent events (30007-30009, 30025, 30026, 30029) and the ``queue/agent_status`` answers
re-read after a gap."""

from __future__ import annotations

from typing import Any, Final

import orjson
from pydantic import ValidationError

from gateway.connectors import fields as read
from gateway.connectors.yeastar.normalize.envelope import (
    _Built,
    _lower,
    _required,
)
from gateway.schema.events import (
    AgentAutoPausedData,
    AgentCallStateData,
    AgentPresenceData,
    AgentQueueStatusData,
    AgentRegistrationData,
    AgentRingTimeoutData,
    CloudEvent,
    NormalizeContext,
    make_event,
    rejected,
)

_REGISTRATION: Final = {"REGISTERED": True, "UNREGISTERED": False}


def _registration(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30007: SIP phone / Linkus client (un)registered."""
    extension = _required(msg, "extension")
    data = AgentRegistrationData(
        extension=extension,
        registered=_REGISTRATION.get(read.token(msg.get("status"))),
        device=_lower(read.first(msg, "kind")),
        ip=read.first(msg, "registered_ip", "ip_address", "ip_addresses"),
    )
    return _Built("agent.registration", data, subject=extension)


_AGENT_CALL_STATE: Final = {
    "IDLE": "idle",
    "RINGING": "ringing",
    "RING": "ringing",
    "BUSY": "busy",
    "HOLD": "held",
    "HELD": "held",
}


def _agent_call_state(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30008: ``ringing`` in the table, ``Ringing`` in the example."""
    extension = _required(msg, "extension")
    state = _AGENT_CALL_STATE.get(read.token(msg.get("status")))
    return _Built(
        "agent.call_state", AgentCallStateData(extension=extension, state=state), subject=extension
    )


_PRESENCE: Final = {
    "AVAILABLE": "available",
    "AWAY": "away",
    "BUSINESSTRIP": "business_trip",
    "DONOTDISTURB": "do_not_disturb",
    "DND": "do_not_disturb",
    "LUNCH": "lunch",
    "OFFWORK": "off_work",
}


def _presence(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30009: presence status."""
    extension = _required(msg, "extension")
    data = AgentPresenceData(
        extension=extension, presence=_PRESENCE.get(read.token(msg.get("status")))
    )
    return _Built("agent.presence", data, subject=extension)


def _auto_paused(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30025: agent paused after too many missed calls; ``calls`` lists them."""
    extension = _required(msg, "agent_number")
    calls = msg.get("calls")
    missed = [
        {"caller": read.first(c, "caller_number"), "call_id": read.first(c, "call_id")}
        for c in (calls if isinstance(calls, list) else [])
        if isinstance(c, dict)
    ]
    data = AgentAutoPausedData(
        extension=extension, queue=read.first(msg, "queue_number"), missed_calls=missed
    )
    return _Built("agent.auto_paused", data, subject=extension)


def _ring_timeout(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30026: a queue agent let a call ring out."""
    extension = _required(msg, "agent_number")
    data = AgentRingTimeoutData(
        extension=extension,
        queue=read.first(msg, "queue_number"),
        caller=read.first(msg, "caller_number"),
        call_id=read.first(msg, "call_id"),
    )
    return _Built("agent.ring_timeout", data, subject=extension)


_AGENT_STATUS: Final = {"PAUSED": True, "PAUSE": True, "UNPAUSED": False, "UNPAUSE": False}


def _agent_status(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30029 (newer firmware): an agent's status in a queue changed. The help page's example
    names the queue ``queue-6402`` (function name and number, as Yeastar's other APIs write
    it); the number alone is published. Only ``Paused`` is documented; another status is
    published as unknown (None), the raw frame keeps it."""
    extension = _required(msg, "agent_number")
    queue = read.first(msg, "queue_number")
    if queue is not None and queue.lower().startswith("queue-") and len(queue) > 6:
        queue = queue[6:]
    paused = _AGENT_STATUS.get(read.token(msg.get("status")))
    data = AgentQueueStatusData(
        extension=extension,
        queue=queue,
        paused=paused,
        pause_reason=read.first(msg, "reason") if paused else None,
    )
    return _Built("agent.queue_status", data, subject=extension)


# --- queue/agent_status answers (re-read after a gap) --------------------------------------------

#: queue/agent_status ``call_status`` (manual): 4 = a new call while talking, 5 = held.
QUEUE_AGENT_CALL_STATE: Final[dict[int, str]] = {
    1: "idle",
    2: "busy",
    3: "ringing",
    4: "busy",
    5: "held",
}


def text_or_none(value: Any) -> str | None:
    """A value as stripped text (numbers too); None for None, booleans and blanks."""
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    return text or None


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    try:
        return bool(int(value))
    except (TypeError, ValueError):
        return None


def agent_status_events(
    queue: dict[str, Any], body: dict[str, Any], ctx: NormalizeContext
) -> list[CloudEvent]:
    """One queue/agent_status answer -> one ``agent.queue_status`` per agent (snapshot at
    ``ctx.received_at``, which is part of the id: the same state later is a new report)."""
    queue_number = text_or_none(queue.get("number")) or text_or_none(queue.get("id"))
    events = []
    for item in body.get("data") or []:
        raw = orjson.dumps(item, option=orjson.OPT_SORT_KEYS, default=str).decode()
        extension = text_or_none(item.get("number")) if isinstance(item, dict) else None
        if not isinstance(item, dict) or extension is None:
            events.append(rejected(ctx, raw, "agent without a number", "queue/agent_status"))
            continue
        try:
            data = AgentQueueStatusData(
                extension=extension,
                queue=queue_number,
                logged_in=_flag(item.get("is_login")),
                paused=_flag(item.get("is_pause")),
                pause_reason=text_or_none(item.get("pause_reason")),
                call_state=QUEUE_AGENT_CALL_STATE.get(read.integer(item.get("call_status")) or 0),
            )
        except ValidationError as exc:
            events.append(rejected(ctx, raw, str(exc)[:300], "queue/agent_status"))
            continue
        events.append(
            make_event(
                ctx,
                "agent.queue_status",
                data,
                identity=("queue/agent_status", queue_number, raw, ctx.received_at.isoformat()),
                subject=extension,
                vendorevent="queue/agent_status",
                raw=item,
            )
        )
    return events
