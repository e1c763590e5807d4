"""CDR records: the live 30012 and the back-filled ``cdr/list`` / ``cdr/search`` record of the
same leg, read alike so both get one id."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import ValidationError

from gateway.connectors import fields as read
from gateway.connectors.yeastar import zonecheck
from gateway.connectors.yeastar.normalize.envelope import (
    _Built,
    _Invalid,
    _json_safe,
    _reason,
)
from gateway.connectors.yeastar.normalize.times import (
    _EXACT_SLACK,
    _PATH_SEPARATORS,
    _pbx_offset,
    _start_evidence,
    _start_time,
)
from gateway.schema.events import (
    CdrData,
    CloudEvent,
    NormalizeContext,
    make_event,
    rejected,
)

#: vendorevent of back-filled CDR records (``cdr/list`` and ``cdr/search`` share one record shape).
CDR_VENDOREVENT: Final = "cdr/list"


_DISPOSITION: Final[dict[str, str]] = {
    "ANSWER": "answered",
    "ANSWERED": "answered",
    "NOANSWER": "no_answer",
    "BUSY": "busy",
    "FAILED": "failed",
    "FAIL": "failed",
    "VOICEMAIL": "voicemail",
}
_CDR_DIRECTION: Final = {"INBOUND": "inbound", "OUTBOUND": "outbound", "INTERNAL": "internal"}


_RECORDING_CALL_ID = re.compile(r"^\d{8,}-(\d+(?:\.\d+)?)(?=-|\.[A-Za-z0-9]+$|$)")
_NAME_NUMBER = re.compile(r"^.*<\s*([^<>]*?)\s*>$")


def _party(value: Any) -> str | None:
    """``"Kristin Hale<2005>"`` (cdr/list) -> ``"2005"``, as the live 30012 reports it."""
    text = read.text(value)
    if text is None:
        return None
    match = _NAME_NUMBER.match(text)
    return (match.group(1) or text) if match else text


def call_id_from_recording(name: str) -> str | None:
    """``20220427190445-1651057476.362-2005-2002-Internal.wav`` -> ``1651057476.362``.

    cdr/list records carry no call id, only a ``uid`` of their own; the recording file name
    is the one place the live call id survives, which lets a back-filled CDR dedupe against
    the live 30012 of the same call.
    """
    text = read.text(name) if isinstance(name, str) else None
    if text is None:
        return None
    base = _PATH_SEPARATORS.split(text)[-1]
    match = _RECORDING_CALL_ID.match(base)
    return match.group(1) if match else None


def _call_direction(
    leg: str | None,
    call_id: str,
    started_at: datetime | None,
    ctx: NormalizeContext,
    *,
    zone_free: bool = False,
) -> str:
    """A record's type is its *leg's*: an inbound call forwarded out has an ``Outbound`` leg.
    It is the call's direction only for the leg that began the call, the one starting when
    the call id says the call began (manual line 17503 / 17507: ``1651057476.362`` and
    ``2022-04-27 19:04:36`` +08:00); of any other leg it proves nothing (``unknown``).

    The start is PBX-local text and the call id UTC: the leg began the call when its wall
    clock is the call id's instant at the configured zone's offset, or at the offset the
    PBX's calls showed (``zonecheck``), or, before any was shown, at any offset a PBX can
    have. So a wrong configured zone does not change what a record proves. ``zone_free``:
    ``started_at`` is a Unix time (cdr/list ``timestamp``), compared as it is.
    """
    began = zonecheck.call_started(call_id)
    if leg is None or began is None or started_at is None:
        return "unknown"
    if zone_free:
        return leg if abs(started_at - began) <= _EXACT_SLACK else "unknown"
    offset = zonecheck.leg_offset(call_id, started_at, ctx.tz)
    if offset is None:
        return "unknown"
    confirmed = _pbx_offset(ctx)
    configured = started_at.astimezone(ctx.tz).utcoffset()
    if offset == configured or confirmed is None or offset == confirmed:
        return leg
    return "unknown"


def cdr_identity(
    call_id: str,
    started_at: datetime | None,
    caller: str | None,
    callee: str | None,
    disposition: str | None,
    leg_direction: str | None,
) -> tuple[object, ...]:
    """The identity of one CDR *record*, not of its call: a forwarded or ring-group call has
    one record per leg, all with the call's ``call_id``. The leg facts are read the same way
    from the live 30012 and from a ``cdr/list`` / ``cdr/search`` record of it (start as UTC,
    numbers without display names, disposition and type as tokens), so both give one id."""
    start = started_at.astimezone(UTC).isoformat() if started_at else ""
    return (
        "cdr",
        call_id,
        start,
        caller or "",
        callee or "",
        disposition or "",
        leg_direction or "",
    )


def _cdr(msg: dict[str, Any], ctx: NormalizeContext, display_format: str | None = None) -> _Built:
    """30012: one record of a call (a call has one per leg, manual line 17465). Its id is the
    record's (:func:`cdr_identity`), shared with the back-filled cdr/list record of the leg."""
    recording = read.first(msg, "recording")
    call_id = read.first(msg, "call_id") or (
        call_id_from_recording(recording) if recording else None
    )
    if call_id is None:
        raise _Invalid("missing required field 'call_id'")
    duration = read.integer(msg.get("call_duration"))
    evidence = _start_evidence(ctx, call_id=call_id, recording=recording, duration_s=duration)
    started_at = _start_time(msg.get("time_start"), ctx.tz, display_format, evidence)
    leg = _CDR_DIRECTION.get(read.token(msg.get("type")))
    data = CdrData(
        call_id=call_id,
        started_at=started_at,
        caller=_party(msg.get("call_from")),
        callee=_party(msg.get("call_to")),
        direction=_call_direction(leg, call_id, started_at, ctx),
        leg_direction=leg,
        disposition=_DISPOSITION.get(read.token(msg.get("status"))),
        duration_s=duration,
        talk_duration_s=read.integer(msg.get("talk_duration")),
        ring_duration_s=read.integer(msg.get("ring_duration")),
        trunk_in=read.first(msg, "src_trunk_name"),
        trunk_out=read.first(msg, "dst_trunk_name"),
        did=read.first(msg, "did_number"),
        recording=recording,
        agent_id=read.first(msg, "agent_number", "agent_id"),
        agent_ring_s=read.integer(msg.get("agent_ring_time")),
    )
    identity = cdr_identity(
        call_id, started_at, data.caller, data.callee, data.disposition, data.leg_direction
    )
    return _Built("cdr.created", data, subject=call_id, identity=identity, time=started_at)


def record_call_id(record: dict[str, Any]) -> str | None:
    """The live call id of a cdr/list or cdr/search record, when it carries one."""
    recording = read.first(record, "record_file", "recording")
    return read.first(record, "call_id") or (
        call_id_from_recording(recording) if recording else None
    )


def _cdr_record(
    record: dict[str, Any], ctx: NormalizeContext, display_format: str | None
) -> CloudEvent:
    """Read like its live 30012 (field names of manual line 13684, 表 274): ``timestamp`` when
    present, else ``time`` in the display format checked against ``uid`` and ``record_file``."""
    recording = read.first(record, "record_file", "recording")
    call_id = record_call_id(record)
    uid = read.first(record, "uid")
    if call_id is None and uid is None:
        raise _Invalid("record has neither a call id (call_id / record_file) nor a 'uid'")
    duration = read.integer(record.get("duration"))
    started_at = read.unix_time(record.get("timestamp"))
    zone_free = started_at is not None
    if started_at is None:
        evidence = _start_evidence(
            ctx, uid=uid, call_id=call_id, recording=recording, duration_s=duration
        )
        started_at = _start_time(record.get("time"), ctx.tz, display_format, evidence)
    leg = _CDR_DIRECTION.get(read.token(record.get("call_type", record.get("type"))))
    data = CdrData(
        call_id=call_id or uid,
        started_at=started_at,
        caller=_party(record.get("call_from")),
        callee=_party(record.get("call_to")),
        # without a call id the record is published as a call of its own: its type is its own
        direction=(
            _call_direction(leg, call_id, started_at, ctx, zone_free=zone_free)
            if call_id
            else leg or "unknown"
        ),
        leg_direction=leg,
        disposition=_DISPOSITION.get(read.token(record.get("disposition", record.get("status")))),
        duration_s=duration,
        talk_duration_s=read.integer(record.get("talk_duration")),
        ring_duration_s=read.integer(record.get("ring_duration")),
        trunk_in=read.first(record, "src_trunk", "src_trunk_name"),
        trunk_out=read.first(record, "dst_trunk", "dst_trunk_name"),
        did=read.first(record, "did_number"),
        recording=recording,
        agent_id=read.first(record, "agent_number", "agent_id"),
        agent_ring_s=read.integer(record.get("agent_ring_time")),
    )
    if call_id is not None:
        identity = cdr_identity(
            call_id, started_at, data.caller, data.callee, data.disposition, data.leg_direction
        )
    else:  # no call id: an id of its own; recovery matches it to a live twin by its facts
        identity = ("cdr-uid", uid)
    return make_event(
        ctx,
        "cdr.created",
        data,
        identity=identity,
        time=started_at,
        subject=data.call_id,
        vendorevent=CDR_VENDOREVENT,
        raw=_json_safe(record),
    )


def normalize_cdr_record(
    record: dict, ctx: NormalizeContext, *, display_format: str | None = None
) -> list[CloudEvent]:
    """One cdr/list or cdr/search record -> one cdr.created with the id the live 30012 of the
    same leg gets (``display_format`` as in :func:`normalize_frame`)."""
    if not isinstance(record, dict):
        return [
            rejected(
                ctx, read.safe_text(repr(record)), "CDR record is not an object", CDR_VENDOREVENT
            )
        ]
    text = read.safe_text(read.canonical(record))
    try:
        return [_cdr_record(record, ctx, display_format)]
    except (_Invalid, ValidationError) as exc:
        error = read.safe_text(f"{CDR_VENDOREVENT}: {_reason(exc)}")
        return [rejected(ctx, text, error, CDR_VENDOREVENT)]
    except Exception as exc:  # total, like normalize_frame
        error = read.safe_text(f"{CDR_VENDOREVENT}: normalizer error: {type(exc).__name__}: {exc}")
        return [rejected(ctx, text, error, CDR_VENDOREVENT)]
