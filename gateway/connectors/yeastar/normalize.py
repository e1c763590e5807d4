"""Yeastar P-Series events -> gateway CloudEvents (pure: no I/O, no clock, never raises).

The PBX pushes WebSocket frames ``{"type": 30011, "sn": "...", "msg": "<JSON string>"}``
(manual, "API 事件" 30005-30026). The manual's own examples drift in spelling and shape, so
every reader here is lenient about case, blanks (``" "``), trailing spaces and field-name
variants, and strict only about the fields an event cannot exist without; a frame missing
one of those becomes ``gateway.rejected``, never an exception and never silence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson
from pydantic import BaseModel, ValidationError

from gateway.schema.events import (
    AgentAutoPausedData,
    AgentCallStateData,
    AgentPresenceData,
    AgentQueueStatusData,
    AgentRegistrationData,
    AgentRingTimeoutData,
    CallData,
    CallDtmfData,
    CallFailedData,
    CallPromptFinishedData,
    CallSurveyData,
    CallUacstaData,
    CdrData,
    CloudEvent,
    ConferenceHostLeftData,
    ConfigChangedData,
    Member,
    NormalizeContext,
    TrunkStatusData,
    VendorUnknownData,
    make_event,
    rejected,
)

__all__ = [
    "agent_status_events",
    "call_id_from_recording",
    "normalize_call_query",
    "normalize_cdr_record",
    "normalize_frame",
]

#: vendorevent of back-filled CDR records (``cdr/list`` and ``cdr/search`` share one record shape).
CDR_VENDOREVENT: Final = "cdr/list"
#: vendorevent of call snapshots re-read with ``call/query`` after a link interruption.
CALL_QUERY_VENDOREVENT: Final = "call/query"

_MAX_INT: Final = 2**63 - 1  # beyond this orjson cannot serialize the event


class _Invalid(ValueError):
    """A payload the normalizer understands too little of to publish as its own type."""


# --- low-level readers: tolerate the manual's drift ---------------------------------------------


def _str(value: Any) -> str | None:
    """Strip trailing/leading blanks; ``" "`` (the PBX's "empty") and non-scalars -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def _int(value: Any) -> int | None:
    """Integers arrive as numbers or numeric strings; anything else (or absurd) -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip()) if "." in value else int(value.strip())
        except ValueError:
            return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, int) and abs(value) <= _MAX_INT:
        return value
    return None


def _first(msg: Mapping[str, Any], *keys: str) -> str | None:
    """First non-blank value among field-name variants (``ip_address`` / ``ip_addresses`` ...)."""
    for key in keys:
        found = _str(msg.get(key))
        if found is not None:
            return found
    return None


def _required(msg: Mapping[str, Any], *keys: str) -> str:
    """Like :func:`_first`, but the event is meaningless without it."""
    found = _first(msg, *keys)
    if found is None:
        raise _Invalid(f"missing required field {keys[0]!r}")
    return found


def _token(value: Any) -> str:
    """Case/separator-insensitive key for vendor enums (``NO ANSWER`` == ``no_answer``)."""
    text = _str(value) or ""
    return re.sub(r"[\s_\-]+", "", text).upper()


def _canonical(value: Any) -> str:
    """Key-sorted JSON of a vendor object, so the same fact hashes to the same event id."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # e.g. huge ints in a record handed over by the connector
        return repr(value)


def _json_safe(value: Any) -> Any:
    """Records handed over by the connector may hold what JSON cannot (huge ints, inf)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


def _safe_text(text: str | bytes) -> str:
    """The text to quote in ``gateway.rejected``: always valid UTF-8."""
    if isinstance(text, bytes | bytearray):
        return bytes(text).decode("utf-8", "replace")
    if isinstance(text, str):
        return text.encode("utf-8", "replace").decode("utf-8")
    return repr(text)


# --- frame envelope ------------------------------------------------------------------------------


def _parse_json(text: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _Invalid(f"{what} is not valid JSON: {exc}") from None


def _event_code(frame: Mapping[str, Any]) -> str:
    """``type`` may be an int or a string; it is the only way to know what the frame is."""
    value = frame.get("type")
    if value is None:
        raise _Invalid("frame has no 'type' (event id)")
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | str)
        or not str(value).strip()
    ):
        raise _Invalid(f"frame 'type' is not an event id: {value!r}")
    code = _int(value)
    return str(code) if code is not None else str(value).strip()


def _decode_msg(value: Any) -> dict[str, Any]:
    """``msg`` is usually a JSON string (double-encoded), sometimes already an object."""
    if value is None:
        raise _Invalid("frame has no 'msg'")
    for _ in range(3):  # tolerate one extra level of encoding
        if isinstance(value, dict):
            return value
        if not isinstance(value, str):
            break
        value = _parse_json(value, "msg")
    raise _Invalid(f"msg is not a JSON object (got {type(value).__name__})")


# --- calls ---------------------------------------------------------------------------------------

_MEMBER_STATUS: Final[dict[str, str]] = {
    "ALERT": "dialing",
    "RING": "ringing",
    "RINGING": "ringing",
    "EARLYMEDIA": "early_media",
    "ANSWERED": "answered",
    "ANSWER": "answered",
    "HOLD": "held",
    "HELD": "held",
    "BYE": "hung_up",
}


def _member_status(info: Mapping[str, Any], index: int) -> str:
    """Tables say ``member_status`` or ``member_statuses`` for the same thing."""
    raw = info.get("member_status", info.get("member_statuses"))
    status = _MEMBER_STATUS.get(_token(raw))
    if status is None:
        raise _Invalid(f"members[{index}]: unknown or missing member_status {raw!r}")
    return status


def _member(kind: str, info: Any, index: int) -> Member:
    """One party. Trunk legs keep ``number`` null: which of from/to is the outside party
    differs between the manual's examples (30011 outbound: ``to``; 30018 outbound: ``from``).
    """
    if not isinstance(info, dict):
        raise _Invalid(f"members[{index}].{kind} is not an object")
    return Member.model_validate(
        {
            "kind": kind,
            "number": _str(info.get("number")),
            "from": _str(info.get("from")),
            "to": _str(info.get("to")),
            "trunk": _first(info, "trunk_name", "trunk"),
            "channel_id": _str(info.get("channel_id")),
            "status": _member_status(info, index),
            "via": _str(info.get("call_path")),
        }
    )


def _members(msg: Mapping[str, Any], *, required: bool) -> list[Member]:
    """``members`` is ``[{"extension": {...}}, {"inbound": {...}}, ...]``."""
    items = msg.get("members")
    if items is None and not required:
        return []
    if not isinstance(items, list):
        raise _Invalid("missing required field 'members' (a list)")
    members: list[Member] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _Invalid(f"members[{index}] is not an object")
        kinds = [k for k in ("extension", "inbound", "outbound") if k in item]
        if not kinds:
            raise _Invalid(f"members[{index}] has none of extension/inbound/outbound")
        members.extend(_member(kind, item[kind], index) for kind in kinds)
    return members


def _call_state(members: list[Member]) -> str:
    """Ended only when everyone hung up; a hold anywhere beats an answer; otherwise ringing."""
    statuses = {m.status for m in members}
    if statuses == {"hung_up"}:
        return "ended"
    if "held" in statuses:
        return "held"
    if "answered" in statuses:
        return "answered"
    return "ringing"


def _direction(members: list[Member]) -> str:
    kinds = {m.kind for m in members}
    if "inbound" in kinds:
        return "inbound"
    if "outbound" in kinds:
        return "outbound"
    return "internal"


def _call_data(msg: Mapping[str, Any]) -> dict[str, Any]:
    members = _members(msg, required=True)
    return {
        "call_id": _required(msg, "call_id"),
        "state": _call_state(members),
        "direction": _direction(members),
        "members": members,
    }


# --- CDR -----------------------------------------------------------------------------------------

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

#: Formats the PBX's "Date and Time > Display Format" settings can produce (cdr/search notes).
#: Month-first is tried before day-first: it is the manual's default and its only example.
_LOCAL_TIME_FORMATS: Final = (
    *(
        f"{date} {clock}"
        for date in ("%Y-%m-%d", "%m/%d/%Y", "%d/%m/%Y", "%Y/%m/%d", "%m-%d-%Y", "%d-%m-%Y")
        for clock in ("%H:%M:%S", "%I:%M:%S %p", "%H:%M", "%I:%M %p")
    ),
    "%Y-%m-%dT%H:%M:%S",
)

_RECORDING_CALL_ID = re.compile(r"^\d{8,}-(\d+(?:\.\d+)?)(?=-|\.[A-Za-z0-9]+$|$)")
_NAME_NUMBER = re.compile(r"^.*<\s*([^<>]*?)\s*>$")


def _local_time(value: Any, tz: ZoneInfo) -> datetime | None:
    """PBX-local wall-clock text (no zone) -> aware UTC, or None if no known format fits."""
    text = " ".join(value.split()) if isinstance(value, str) else ""
    for fmt in _LOCAL_TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=tz).astimezone(UTC)
        except (ValueError, OverflowError):
            continue
    return None


def _unix_time(value: Any) -> datetime | None:
    seconds = _int(value)
    if seconds is None or seconds <= 0:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _party(value: Any) -> str | None:
    """``"Kristin Hale<2005>"`` (cdr/list) -> ``"2005"``, as the live 30012 reports it."""
    text = _str(value)
    if text is None:
        return None
    match = _NAME_NUMBER.match(text)
    return (match.group(1) or text) if match else text


def _disposition(value: Any) -> str:
    disposition = _DISPOSITION.get(_token(value))
    if disposition is None:
        raise _Invalid(f"unknown or missing CDR status {value!r}")
    return disposition


def call_id_from_recording(name: str) -> str | None:
    """``20220427190445-1651057476.362-2005-2002-Internal.wav`` -> ``1651057476.362``.

    cdr/list records carry no call id, only a ``uid`` of their own; the recording file name
    is the one place the live call id survives, which lets a back-filled CDR dedupe against
    the live 30012 of the same call.
    """
    text = _str(name) if isinstance(name, str) else None
    if text is None:
        return None
    base = re.split(r"[/\\]", text)[-1]
    match = _RECORDING_CALL_ID.match(base)
    return match.group(1) if match else None


# --- one handler per event id: msg -> (type, data, identity, subject, time) ----------------------


@dataclass(slots=True)
class _Built:
    """What a handler decided; :func:`normalize_frame` turns it into the event."""

    type_: str
    data: BaseModel
    subject: str | None = None
    identity: tuple[object, ...] | None = None  # None: the generic (event, msg, received_at)
    time: datetime | None = None  # None: ctx.received_at


_Handler = Callable[[dict[str, Any], NormalizeContext], _Built]

_ORG_ACTION: Final = {1: "enable", 0: "disable"}


def _org_status(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30005: the department feature was switched on/off (show_root_org stays in raw)."""
    status = _int(msg.get("org_status"))
    action = _ORG_ACTION.get(status) if status is not None else None
    if action is None:
        raise _Invalid(f"missing or unknown 'org_status' {msg.get('org_status')!r}")
    return _Built("config.changed", ConfigChangedData(object="organization", action=action))


def _org_config(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30006: departments created/updated/deleted/reordered or their extensions changed."""
    ids = msg.get("id_list")
    if ids is None:
        ids = []
    if not isinstance(ids, list):
        raise _Invalid("'id_list' is not a list")
    action = _required(msg, "action").lower()
    data = ConfigChangedData(
        object="organization", action=action, ids=[s for s in map(_str, ids) if s is not None]
    )
    return _Built("config.changed", data)


def _config_change(object_: str, key: str) -> _Handler:
    """30022 (extension) / 30023 (trunk): ``option`` CREATE|UPDATE|DELETE."""

    def handle(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
        ident = _required(msg, key)
        action = _required(msg, "option", "action").lower()
        return _Built(
            "config.changed", ConfigChangedData(object=object_, action=action, ids=[ident])
        )

    return handle


_REGISTRATION: Final = {"REGISTERED": True, "UNREGISTERED": False}


def _registration(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30007: SIP phone / Linkus client (un)registered."""
    extension = _required(msg, "extension")
    registered = _REGISTRATION.get(_token(msg.get("status")))
    if registered is None:
        raise _Invalid(f"unknown or missing registration status {msg.get('status')!r}")
    device = _first(msg, "kind")
    data = AgentRegistrationData(
        extension=extension,
        registered=registered,
        device=device.lower() if device else None,
        ip=_first(msg, "registered_ip", "ip_address", "ip_addresses"),
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
    state = _AGENT_CALL_STATE.get(_token(msg.get("status")))
    if state is None:
        raise _Invalid(f"unknown or missing extension call status {msg.get('status')!r}")
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
    presence = _PRESENCE.get(_token(msg.get("status")))
    if presence is None:
        raise _Invalid(f"unknown or missing presence status {msg.get('status')!r}")
    data = AgentPresenceData(extension=extension, presence=presence)
    return _Built("agent.presence", data, subject=extension)


#: The manual's "Trunk status" table (30010).
TRUNK_STATES: Final[dict[int, str]] = {
    0: "unknown",
    1: "idle",
    2: "busy",
    3: "idle_unmonitored",
    4: "registering",
    41: "registration_failed",
    42: "unreachable",
    43: "unavailable",
    44: "disabled",
}


def _trunk_status(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30010: numeric status -> the table's name, the code kept for consumers."""
    trunk = _required(msg, "trunk_name")
    raw = msg.get("status")
    code = _int(raw)
    if code is None:
        raise _Invalid(f"missing or non-numeric trunk 'status' {raw!r}")
    data = TrunkStatusData(
        trunk=trunk,
        state=TRUNK_STATES.get(code, "unknown"),
        code=code,
        kind=_first(msg, "kind"),
        ip=_first(msg, "registered_ip", "ip_address", "ip_addresses"),
    )
    return _Built("trunk.status", data, subject=trunk)


def _call_status(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30011: one report per member change; the call's state is derived from all members."""
    fields = _call_data(msg)
    return _Built(f"call.{fields['state']}", CallData(**fields), subject=fields["call_id"])


def _call_kind(type_: str, identity_tag: str | None = None) -> _Handler:
    """30013 transferred / 30014 forwarded / 30016 incoming: a call snapshot under another name."""

    def handle(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
        fields = _call_data(msg)
        identity = (identity_tag, fields["call_id"]) if identity_tag else None
        return _Built(type_, CallData(**fields), subject=fields["call_id"], identity=identity)

    return handle


def _call_failed(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30015: a failed call is over, whatever its members last reported."""
    fields = {**_call_data(msg), "state": "ended"}
    data = CallFailedData(**fields, reason=_first(msg, "reason"))
    return _Built(
        "call.failed", data, subject=fields["call_id"], identity=("failed", fields["call_id"])
    )


def _dtmf(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30017: ``info`` one key, ``flag`` its 0-based position, ``infos`` the string so far."""
    call_id = _required(msg, "call_id")
    data = CallDtmfData(
        call_id=call_id,
        digit=_required(msg, "info"),
        sequence=_int(msg.get("flag")),
        digits=_first(msg, "infos"),
        members=_members(msg, required=False),
    )
    return _Built("call.dtmf", data, subject=call_id)


def _prompt_finished(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30018: the example's prompt name carries a trailing space (``"Test "``)."""
    call_id = _required(msg, "call_id")
    data = CallPromptFinishedData(
        call_id=call_id, prompt=_first(msg, "prompt"), members=_members(msg, required=False)
    )
    return _Built("call.prompt_finished", data, subject=call_id)


def _survey(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30019: satisfaction survey key result."""
    call_id = _required(msg, "call_id")
    data = CallSurveyData(
        call_id=call_id,
        result=_first(msg, "survey_result", "result"),
        extension=_first(msg, "extension"),
        members=_members(msg, required=False),
    )
    return _Built("call.survey", data, subject=call_id)


def _uacsta(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30020: its ``call_id`` is the uaCSTA call id, not the PBX call id."""
    call_id = _first(msg, "call_id")
    ip = _first(msg, "ip_addresses", "ip_address", "registered_ip")
    data = CallUacstaData(
        call_id=call_id,
        operation=_required(msg, "operation"),
        extension=_first(msg, "extension"),
        details={"ip": ip} if ip else {},
    )
    return _Built("call.uacsta", data, subject=call_id)


def _cdr(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30012: live CDR; its id is shared with the back-filled cdr/list record of the call."""
    recording = msg.get("recording")
    call_id = _first(msg, "call_id") or (
        call_id_from_recording(recording) if isinstance(recording, str) else None
    )
    if call_id is None:
        raise _Invalid("missing required field 'call_id'")
    started_at = _local_time(msg.get("time_start"), ctx.tz)
    data = CdrData(
        call_id=call_id,
        started_at=started_at,
        caller=_party(msg.get("call_from")),
        callee=_party(msg.get("call_to")),
        direction=_CDR_DIRECTION.get(_token(msg.get("type"))),
        disposition=_disposition(msg.get("status")),
        duration_s=_int(msg.get("call_duration")),
        talk_duration_s=_int(msg.get("talk_duration")),
        ring_duration_s=_int(msg.get("ring_duration")),
        trunk_in=_first(msg, "src_trunk_name"),
        trunk_out=_first(msg, "dst_trunk_name"),
        did=_first(msg, "did_number"),
        recording=_first(msg, "recording"),
        agent_id=_first(msg, "agent_number", "agent_id"),
        agent_ring_s=_int(msg.get("agent_ring_time")),
    )
    return _Built("cdr.created", data, subject=call_id, identity=("cdr", call_id), time=started_at)


def _host_left(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30024: the conference lost its host."""
    conference = _required(msg, "conference_id")
    data = ConferenceHostLeftData(conference=conference, host=_first(msg, "host_num"))
    return _Built("conference.host_left", data, subject=conference)


def _auto_paused(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30025: agent paused after too many missed calls; ``calls`` lists them."""
    extension = _required(msg, "agent_number")
    calls = msg.get("calls") or []
    if not isinstance(calls, list):
        raise _Invalid("'calls' is not a list")
    missed = [
        {"caller": _first(c, "caller_number"), "call_id": _first(c, "call_id")}
        for c in calls
        if isinstance(c, dict)
    ]
    data = AgentAutoPausedData(
        extension=extension, queue=_first(msg, "queue_number"), missed_calls=missed
    )
    return _Built("agent.auto_paused", data, subject=extension)


def _ring_timeout(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30026: a queue agent let a call ring out."""
    extension = _required(msg, "agent_number")
    data = AgentRingTimeoutData(
        extension=extension,
        queue=_first(msg, "queue_number"),
        caller=_first(msg, "caller_number"),
        call_id=_first(msg, "call_id"),
    )
    return _Built("agent.ring_timeout", data, subject=extension)


#: Every event id of the manual (30021 does not exist there; it falls to vendor.unknown).
HANDLERS: Final[dict[str, _Handler]] = {
    "30005": _org_status,
    "30006": _org_config,
    "30007": _registration,
    "30008": _agent_call_state,
    "30009": _presence,
    "30010": _trunk_status,
    "30011": _call_status,
    "30012": _cdr,
    "30013": _call_kind("call.transferred"),
    "30014": _call_kind("call.forwarded"),
    "30015": _call_failed,
    "30016": _call_kind("call.incoming", "incoming"),
    "30017": _dtmf,
    "30018": _prompt_finished,
    "30019": _survey,
    "30020": _uacsta,
    "30022": _config_change("extension", "ext_number"),
    "30023": _config_change("trunk", "trunk_name"),
    "30024": _host_left,
    "30025": _auto_paused,
    "30026": _ring_timeout,
}


# --- public API ----------------------------------------------------------------------------------


def _unknown(ctx: NormalizeContext, code: str, frame: dict[str, Any]) -> CloudEvent:
    """Never drop what we do not know: the raw frame always travels with vendor.unknown."""
    raw = dict(frame)
    try:
        raw["msg"] = _decode_msg(frame.get("msg"))
    except _Invalid:
        pass
    body = raw["msg"] if isinstance(raw.get("msg"), dict) else raw
    event = make_event(
        ctx,
        "vendor.unknown",
        VendorUnknownData(event=code),
        identity=(code, _canonical(body), ctx.received_at.isoformat()),
        vendorevent=code,
        raw=raw,
    )
    event.data.setdefault("raw", raw)
    return event


def _normalize(text: str, ctx: NormalizeContext) -> CloudEvent:
    frame = _parse_json(text, "frame")
    if not isinstance(frame, dict):
        raise _Invalid(f"frame is not a JSON object (got {type(frame).__name__})")
    code = _event_code(frame)
    handler = HANDLERS.get(code)
    if handler is None:
        return _unknown(ctx, code, frame)
    try:
        msg = _decode_msg(frame.get("msg"))
        built = handler(msg, ctx)
    except (_Invalid, ValidationError) as exc:
        raise _Invalid(f"{code}: {_reason(exc)}") from None
    identity = built.identity or (code, _canonical(msg), ctx.received_at.isoformat())
    return make_event(
        ctx,
        built.type_,
        built.data,
        identity=identity,
        time=built.time,
        subject=built.subject,
        vendorevent=code,
        raw={**frame, "msg": msg},
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False)
        return "invalid payload: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:3]
        )
    return str(exc)


def _frame_code(text: str) -> str | None:
    """Best-effort event id for a rejected frame, so consumers can tell what failed."""
    try:
        frame = orjson.loads(text)
        return _event_code(frame) if isinstance(frame, dict) else None
    except (orjson.JSONDecodeError, _Invalid):
        return None


def normalize_frame(text: str | bytes, ctx: NormalizeContext) -> list[CloudEvent]:
    """One WebSocket event frame -> events. Pure (no I/O, no clock: use ctx.received_at), total."""
    safe = _safe_text(text)
    try:
        return [_normalize(safe, ctx)]
    except _Invalid as exc:
        return [rejected(ctx, safe, _safe_text(str(exc)), _frame_code(safe))]
    except Exception as exc:  # a bug here must not cost the event: publish it as rejected
        error = _safe_text(f"normalizer error: {type(exc).__name__}: {exc}")
        return [rejected(ctx, safe, error, _frame_code(safe))]


def record_call_id(record: dict[str, Any]) -> str | None:
    """The live call id of a cdr/list or cdr/search record, when it carries one."""
    recording = _first(record, "record_file", "recording")
    return _first(record, "call_id") or (call_id_from_recording(recording) if recording else None)


def _cdr_record(record: dict[str, Any], ctx: NormalizeContext) -> CloudEvent:
    recording = _first(record, "record_file", "recording")
    call_id = record_call_id(record)
    uid = _first(record, "uid")
    if call_id is None and uid is None:
        raise _Invalid("record has neither a call id (call_id / record_file) nor a 'uid'")
    started_at = _unix_time(record.get("timestamp")) or _local_time(record.get("time"), ctx.tz)
    data = CdrData(
        call_id=call_id or uid,
        started_at=started_at,
        caller=_party(record.get("call_from")),
        callee=_party(record.get("call_to")),
        direction=_CDR_DIRECTION.get(_token(record.get("call_type", record.get("type")))),
        disposition=_disposition(record.get("disposition", record.get("status"))),
        duration_s=_int(record.get("duration")),
        talk_duration_s=_int(record.get("talk_duration")),
        ring_duration_s=_int(record.get("ring_duration")),
        trunk_in=_first(record, "src_trunk", "src_trunk_name"),
        trunk_out=_first(record, "dst_trunk", "dst_trunk_name"),
        did=_first(record, "did_number"),
        recording=recording,
        agent_id=_first(record, "agent_number", "agent_id"),
        agent_ring_s=_int(record.get("agent_ring_time")),
    )
    identity = ("cdr", call_id) if call_id else ("cdr-uid", uid)
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


def normalize_cdr_record(record: dict, ctx: NormalizeContext) -> list[CloudEvent]:
    """One cdr/list or cdr/search record -> one cdr.created with the id the live 30012 gets."""
    if not isinstance(record, dict):
        return [
            rejected(ctx, _safe_text(repr(record)), "CDR record is not an object", CDR_VENDOREVENT)
        ]
    text = _safe_text(_canonical(record))
    try:
        return [_cdr_record(record, ctx)]
    except (_Invalid, ValidationError) as exc:
        error = _safe_text(f"{CDR_VENDOREVENT}: {_reason(exc)}")
        return [rejected(ctx, text, error, CDR_VENDOREVENT)]
    except Exception as exc:  # total, like normalize_frame
        error = _safe_text(f"{CDR_VENDOREVENT}: normalizer error: {type(exc).__name__}: {exc}")
        return [rejected(ctx, text, error, CDR_VENDOREVENT)]


def normalize_call_query(call: dict, ctx: NormalizeContext) -> list[CloudEvent]:
    """One ``call/query`` Call_Info -> the call.* event a 30011 with these members would give.

    Why: after a link interruption the live 30011 reports are gone; the snapshot says where
    each call is now. Its id is new per snapshot time (``ctx.received_at``), like a 30011's.
    """
    if not isinstance(call, dict):
        return [
            rejected(
                ctx, _safe_text(repr(call)), "Call_Info is not an object", CALL_QUERY_VENDOREVENT
            )
        ]
    text = _safe_text(_canonical(call))
    try:
        fields = _call_data(call)
        return [
            make_event(
                ctx,
                f"call.{fields['state']}",
                CallData(**fields),
                identity=(CALL_QUERY_VENDOREVENT, text, ctx.received_at.isoformat()),
                subject=fields["call_id"],
                vendorevent=CALL_QUERY_VENDOREVENT,
                raw=_json_safe(call),
            )
        ]
    except (_Invalid, ValidationError) as exc:
        error = _safe_text(f"{CALL_QUERY_VENDOREVENT}: {_reason(exc)}")
        return [rejected(ctx, text, error, CALL_QUERY_VENDOREVENT)]
    except Exception as exc:  # total, like normalize_frame
        error = _safe_text(
            f"{CALL_QUERY_VENDOREVENT}: normalizer error: {type(exc).__name__}: {exc}"
        )
        return [rejected(ctx, text, error, CALL_QUERY_VENDOREVENT)]


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
                call_state=QUEUE_AGENT_CALL_STATE.get(_int(item.get("call_status")) or 0),
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
