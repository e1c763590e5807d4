"""Pure normalizers of the fake PBX: call frames -> ``call.*``, polled records -> ``cdr.created``.

Never raise: what cannot be read becomes ``gateway.rejected``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.sdk import (
    CallData,
    CdrData,
    CloudEvent,
    Member,
    NormalizeContext,
    make_event,
    rejected,
)

#: call state -> (caller's member status, callee's member status)
_STATUS = {
    "ringing": ("dialing", "ringing"),
    "answered": ("answered", "answered"),
    "ended": ("hung_up", "hung_up"),
}


class _Bad(ValueError):
    pass


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise _Bad(f"{key!r} must be a non-empty string")
    return value


def _instant(body: dict[str, Any], key: str) -> datetime:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"{key!r} must be unix seconds")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise _Bad(f"{key!r} is out of range") from exc


def normalize(line: str, ctx: NormalizeContext) -> list[CloudEvent]:
    """One WebSocket (or webhook) frame -> one ``call.<state>`` event."""
    try:
        body = orjson.loads(line)
    except orjson.JSONDecodeError:
        return [rejected(ctx, line, "not JSON")]
    if not isinstance(body, dict):
        return [rejected(ctx, line, "not a JSON object")]
    try:
        if body.get("kind") != "call":
            raise _Bad(f"unknown kind {body.get('kind')!r}")
        call_id = _text(body, "id")
        state = _text(body, "state")
        if state not in _STATUS:
            raise _Bad(f"unknown call state {state!r}")
        caller, callee = _text(body, "from"), _text(body, "to")
        at = _instant(body, "at")
        caller_status, callee_status = _STATUS[state]
        data = CallData(
            call_id=call_id,
            state=state,  # type: ignore[arg-type]
            direction="internal",
            members=[
                Member(kind="extension", number=caller, status=caller_status),  # type: ignore[arg-type]
                Member(kind="extension", number=callee, status=callee_status),  # type: ignore[arg-type]
            ],
        )
        return [
            make_event(
                ctx,
                f"call.{state}",
                data,
                identity=(call_id, state),
                time=at,
                subject=call_id,
                vendorevent="call",
                raw=body,
            )
        ]
    except _Bad as exc:
        return [rejected(ctx, line, str(exc), vendorevent="call")]
    except Exception as exc:  # the safety net: a normalizer never raises
        return [rejected(ctx, line, f"normalizer error: {type(exc).__name__}: {exc}")]


def record_events(record: Any, ctx: NormalizeContext) -> list[CloudEvent]:
    """One polled call record -> one ``cdr.created`` event."""
    text = orjson.dumps(record, default=str).decode()
    try:
        if not isinstance(record, dict):
            raise _Bad("a record must be a JSON object")
        call_id = _text(record, "call_id")
        talk = record.get("talk")
        if isinstance(talk, bool) or not isinstance(talk, int) or talk < 0:
            raise _Bad("'talk' must be a whole number of seconds")
        data = CdrData(
            call_id=call_id,
            started_at=_instant(record, "started"),
            caller=record.get("caller") if isinstance(record.get("caller"), str) else None,
            callee=record.get("callee") if isinstance(record.get("callee"), str) else None,
            direction="internal",
            disposition="answered" if talk > 0 else "no_answer",
            duration_s=talk,
            talk_duration_s=talk,
        )
        return [
            make_event(
                ctx,
                "cdr.created",
                data,
                identity=(call_id,),
                time=data.started_at,
                subject=call_id,
                vendorevent="record",
                raw=record,
            )
        ]
    except _Bad as exc:
        return [rejected(ctx, text, str(exc), vendorevent="record")]
    except Exception as exc:
        return [rejected(ctx, text, f"normalizer error: {type(exc).__name__}: {exc}")]
