"""Yeastar P-Series events -> gateway CloudEvents (pure: no I/O, no clock, never raises).

The PBX pushes WebSocket frames ``{"type": 30011, "sn": "...", "msg": "<JSON string>"}``
(manual, "API 事件" 30005-30026). The manual's own examples drift in spelling and shape, and live
PBXs send ``null`` or nothing where the manual shows a value, so every reader here is lenient
about case, blanks (``" "``), trailing spaces, field-name variants, nulls, absent fields and
wrong types. Only an event's *identity* (its call id, extension, trunk ...) is required: a frame
without one becomes ``gateway.rejected``, never an exception and never silence; any other field
the PBX left out or sent in a shape the manual does not describe is published as None / empty.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson
from pydantic import BaseModel, ValidationError

from gateway.connectors import fields as read
from gateway.connectors.yeastar import zonecheck
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
    NormalizeContext,
    TrunkStatusData,
    VendorUnknownData,
    make_event,
    rejected,
)

__all__ = [
    "agent_status_events",
    "call_id_from_recording",
    "cdr_identity",
    "normalize_call_query",
    "normalize_cdr_record",
    "normalize_frame",
]

#: vendorevent of back-filled CDR records (``cdr/list`` and ``cdr/search`` share one record shape).
CDR_VENDOREVENT: Final = "cdr/list"
#: vendorevent of call snapshots re-read with ``call/query`` after a link interruption.
CALL_QUERY_VENDOREVENT: Final = "call/query"


class _Invalid(ValueError):
    """A payload the normalizer understands too little of to publish as its own type."""


# --- low-level readers: tolerate the manual's drift ---------------------------------------------


def _required(msg: Mapping[str, Any], *keys: str) -> str:
    """Like :func:`_first`, but the event is meaningless without it."""
    found = read.first(msg, *keys)
    if found is None:
        raise _Invalid(f"missing required field {keys[0]!r}")
    return found


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
    code = read.integer(value)
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
#: Statuses only the *calling* member has (manual line 17383, 表 350: ALERT "作为主叫 ... 回铃",
#: ANSWERED "作为主叫 ... 电话被接听"); RING / ANSWER are the called member's.
_CALLER_STATUSES: Final = frozenset({"ALERT", "ANSWERED"})
_MEMBER_KINDS: Final = ("extension", "inbound", "outbound")
DIRECTIONS: Final = frozenset({"inbound", "outbound", "internal"})


def _raw_status(info: Mapping[str, Any]) -> Any:
    """Tables say ``member_status`` or ``member_statuses`` for the same thing."""
    value = info.get("member_status")
    return info.get("member_statuses") if value is None else value


def _member(kind: str, info: Mapping[str, Any], status: str) -> dict[str, Any]:
    """One party's :class:`Member` fields (validated once, with the report's model);
    ``status`` is its :func:`_raw_status` as a token. A status the manual does not list (or
    none) is None. Trunk legs keep ``number`` null: which of from/to is the outside party
    differs between the manual's examples (30011 outbound: ``to``; 30018 outbound: ``from``)."""
    get = info.get
    return {
        "kind": kind,
        "number": read.text(get("number")),
        "from": read.text(get("from")),
        "to": read.text(get("to")),
        "trunk": read.first(info, "trunk_name", "trunk"),
        "channel_id": read.text(get("channel_id")),
        "status": _MEMBER_STATUS.get(status),
        "via": read.text(get("call_path")),
    }


def _members(msg: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """``members`` is ``[{"extension": {...}}, {"inbound": {...}}, ...]``; anything else in it
    (null, an item of an unknown kind) carries no member. Also what the members prove about the
    call's direction (:func:`_direction_evidence`)."""
    items = msg.get("members")
    members: list[dict[str, Any]] = []
    kinds: set[str] = set()
    extensions = callers = 0
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        for kind in _MEMBER_KINDS:
            if kind not in item:
                continue
            info = item[kind] if isinstance(item[kind], dict) else {}
            status = read.token(_raw_status(info))
            members.append(_member(kind, info, status))
            kinds.add(kind)
            if kind == "extension":
                extensions += 1
                callers += status in _CALLER_STATUSES
    return members, _direction_evidence(kinds, extensions, callers)


def _direction_evidence(kinds: set[str], extensions: int, callers: int) -> str | None:
    """What one report proves about the call's direction, or None when it proves nothing.

    A trunk member decides it (``inbound`` wins over ``outbound``: an inbound call forwarded
    out is still inbound). Extensions alone prove ``internal`` only when one of them is the
    *caller* and another extension is in the call: an outbound call's first report lists only
    its dialing extension, an inbound call's last report and its 30015 often list only the
    extension leg, and trunk legs are reported at all only where the trunk's call status
    monitoring is on (manual line 17352).
    """
    if "inbound" in kinds:
        return "inbound"
    if "outbound" in kinds:
        return "outbound"
    if callers and extensions >= 2:
        return "internal"
    return None


def _call_state(members: list[dict[str, Any]]) -> str:
    """Ended only when everyone hung up; a hold anywhere beats an answer; otherwise (also when
    no member status could be read) ringing, i.e. in progress."""
    statuses = {m["status"] for m in members if m["status"] is not None}
    if statuses == {"hung_up"}:
        return "ended"
    if "held" in statuses:
        return "held"
    if "answered" in statuses:
        return "answered"
    return "ringing"


def _call_data(msg: Mapping[str, Any], direction: str | None = None) -> dict[str, Any]:
    """A call report's fields; ``direction`` is a hint used when the members prove nothing."""
    call_id = _required(msg, "call_id")
    members, evidence = _members(msg)
    return {
        "call_id": call_id,
        "state": _call_state(members),
        "direction": evidence or direction or "unknown",
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

#: Date orders and clocks the PBX's "系统 > 日期和时间 > 显示格式" setting can produce (manual
#: line 13814, cdr/search ``start_time``: 月/日/年 or 年/月/日, 24-hour or 12-hour AM/PM).
_DATE_ORDERS: Final = ("%Y-%m-%d", "%Y/%m/%d", "%m/%d/%Y", "%d/%m/%Y", "%m-%d-%Y", "%d-%m-%Y")
_CLOCKS: Final = ("%H:%M:%S", "%I:%M:%S %p", "%H:%M", "%I:%M %p")
_LOCAL_TIME_FORMATS: Final = (
    *(f"{date} {clock}" for date in _DATE_ORDERS for clock in _CLOCKS),
    "%Y-%m-%dT%H:%M:%S",
)


def _time_shape(text: str) -> tuple[object, ...]:
    """What of a time text no directive of :data:`_LOCAL_TIME_FORMATS` can match or change:
    how many ``-`` ``/`` ``:`` it has (%Y %m %d %H %I %M %S read digits or a space, %p the C
    locale's AM/PM: the gateway never sets LC_TIME), whether it starts with a 4-digit year,
    whether it ends in a digit (not AM/PM) and whether it has the ISO format's ``T`` (which
    strptime, like every literal, reads case-insensitively)."""
    return (
        text.count("-"),
        text.count("/"),
        text.count(":"),
        text[:4].isdecimal(),
        text[-1:].isdecimal(),
        "T" in text or "t" in text,
    )


#: shape -> the formats of :data:`_LOCAL_TIME_FORMATS` that can read a text of that shape (the
#: shape of what each writes), in their order. Why: ``strptime`` keeps only five compiled
#: formats, so trying all 25 on every record compiled each again every time (most of a CDR's
#: cost); a format of another shape would fail anyway.
_FORMATS_BY_SHAPE: Final[dict[tuple[object, ...], tuple[str, ...]]] = {}
for _fmt in _LOCAL_TIME_FORMATS:
    _shape = _time_shape(datetime(2022, 12, 28, 13, 45, 56).strftime(_fmt))
    _FORMATS_BY_SHAPE[_shape] = (*_FORMATS_BY_SHAPE.get(_shape, ()), _fmt)
del _fmt, _shape


#: ``uid`` and recording file names start with the PBX-local ``YYYYMMDDHHMMSS`` (manual line
#: 13728: uid ``20220614111928CC54A`` for ``time`` 06/14/2022 11:19:28; line 13735: the file of
#: that call ``20220614111933-1655176768.0-...``, written from the answer on).
_LOCAL_STAMP = re.compile(r"^(\d{14})")
#: A live call id is ``<unix start of the call>.<sequence>`` (manual line 17503 vs 17507).
_EXACT_SLACK: Final = timedelta(seconds=2)
_CALL_SLACK: Final = timedelta(seconds=60)
_LONGEST_CALL: Final = timedelta(days=1)

_PATH_SEPARATORS = re.compile(r"[/\\]")
_RECORDING_CALL_ID = re.compile(r"^\d{8,}-(\d+(?:\.\d+)?)(?=-|\.[A-Za-z0-9]+$|$)")
_NAME_NUMBER = re.compile(r"^.*<\s*([^<>]*?)\s*>$")


@dataclass(frozen=True, slots=True)
class _StartEvidence:
    """What else says when a CDR started: the ``uid``'s stamp (exact), a window from the
    recording (started within the call), and the call id (a leg starts at or after its call,
    within a day). The call id is UTC where the rest is PBX-local, so it is compared with the
    start's wall clock at any offset the PBX can have (the one its calls showed, once known):
    a wrong configured zone must not change which reading a record admits."""

    exact: datetime | None = None
    low: datetime | None = None
    high: datetime | None = None
    call_start: datetime | None = None
    tz: ZoneInfo | None = None
    pbx_offset: timedelta | None = None

    @property
    def any(self) -> bool:
        return (
            self.exact is not None
            or self.low is not None
            or self.high is not None
            or self.call_start is not None
        )

    def admits(self, start: datetime) -> bool:
        if self.exact is not None and abs(start - self.exact) > _EXACT_SLACK:
            return False
        if self.low is not None and start < self.low:
            return False
        if self.high is not None and start > self.high:
            return False
        if self.call_start is None or self.tz is None:
            return True
        seen = zonecheck.wall_offset(start.astimezone(self.tz), self.call_start)
        earliest, latest = (
            (self.pbx_offset, self.pbx_offset)
            if self.pbx_offset is not None
            else (zonecheck.EARLIEST, zonecheck.LATEST)
        )
        return earliest - _CALL_SLACK <= seen <= latest + _LONGEST_CALL


def _local_stamp(value: str | None, tz: ZoneInfo) -> datetime | None:
    """``20220614111928...`` (PBX-local) -> aware UTC, or None.

    Read by slicing where ``strptime(stamp, "%Y%m%d%H%M%S")`` (a tenth as fast) would read the
    same: on 14 ASCII digits it reads each field as two digits (a shorter reading never spans
    them all) and datetime() rejects what it would; other digits it reads in some places only.
    """
    match = _LOCAL_STAMP.match(_PATH_SEPARATORS.split(value)[-1]) if value else None
    if match is None:
        return None
    stamp = match.group(1)
    try:
        if not stamp.isascii():
            local = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=tz)
            return local.astimezone(UTC)
        local = datetime(
            int(stamp[:4]),
            int(stamp[4:6]),
            int(stamp[6:8]),
            int(stamp[8:10]),
            int(stamp[10:12]),
            int(stamp[12:14]),
            tzinfo=tz,
        )
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _start_evidence(
    ctx: NormalizeContext,
    *,
    uid: str | None = None,
    call_id: str | None = None,
    recording: str | None = None,
    duration_s: int | None = None,
) -> _StartEvidence:
    tz = ctx.tz
    recorded = _local_stamp(recording, tz)
    low = high = None
    if recorded is not None:
        lasted = timedelta(seconds=duration_s) if duration_s and duration_s > 0 else _LONGEST_CALL
        low = recorded - lasted - _CALL_SLACK
        high = recorded + _CALL_SLACK
    return _StartEvidence(
        exact=_local_stamp(uid, tz),
        low=low,
        high=high,
        call_start=zonecheck.call_started(call_id),
        tz=tz,
        pbx_offset=_pbx_offset(ctx),
    )


def _pbx_offset(ctx: NormalizeContext) -> timedelta | None:
    """The PBX's UTC offset its link confirmed from earlier calls (``zonecheck``), if any."""
    found = ctx.memory.get(zonecheck.MEMORY_KEY)
    return found if isinstance(found, timedelta) else None


def _readings(text: str, tz: ZoneInfo, display_format: str | None) -> dict[datetime, str]:
    """Every instant ``text`` can mean in a display format the PBX offers (the configured
    one first), with the first format that gave it."""
    found: dict[datetime, str] = {}
    formats = _FORMATS_BY_SHAPE.get(_time_shape(text), ())
    if display_format:
        formats = (display_format, *formats)
    for fmt in formats:
        try:
            instant = datetime.strptime(text, fmt).replace(tzinfo=tz).astimezone(UTC)
        except (ValueError, OverflowError):
            continue
        found.setdefault(instant, fmt)
    return found


def _start_time(
    value: Any, tz: ZoneInfo, display_format: str | None, evidence: _StartEvidence
) -> datetime | None:
    """PBX-local wall-clock text in the display format (no zone) -> aware UTC.

    Never a silent guess: a text only one format reads is that instant; otherwise the
    configured display format decides unless the ``uid`` / call id / recording contradict it,
    and the reading they admit wins; with no format configured, they pick the one reading they
    admit, or give the start themselves (the ``uid``). A text that stays ambiguous raises
    :class:`_Invalid` with the readings; a missing or unreadable one is None (or the ``uid``'s).
    """
    text = " ".join(value.split()) if isinstance(value, str) else ""
    readings = _readings(text, tz, display_format) if text else {}
    if len(readings) == 1:
        return next(iter(readings))
    if not readings:
        return evidence.exact
    configured = next((at for at, fmt in readings.items() if fmt == display_format), None)
    fits = [at for at in readings if evidence.admits(at)] if evidence.any else []
    if configured is not None and (configured in fits or not fits):
        return configured
    if len(fits) == 1:
        return fits[0]
    if evidence.exact is not None:
        return evidence.exact
    local = ", ".join(at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") for at in readings)
    raise _Invalid(
        f"time {text!r} is ambiguous (could be {local}) and nothing in the record decides:"
        " set the PBX's display format (pbxs[].cdr_time_format)"
    )


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


def _lower(value: str | None) -> str | None:
    return value.lower() if value else None


def _ids(value: Any) -> list[str]:
    """A list of ids (numbers or text); anything else is no ids."""
    return [s for s in map(read.text, value) if s is not None] if isinstance(value, list) else []


def _org_status(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30005: the department feature was switched on/off (show_root_org stays in raw)."""
    status = read.integer(msg.get("org_status"))
    action = _ORG_ACTION.get(status) if status is not None else None
    return _Built("config.changed", ConfigChangedData(object="organization", action=action))


def _org_config(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30006: departments created/updated/deleted/reordered or their extensions changed."""
    data = ConfigChangedData(
        object="organization",
        action=_lower(read.first(msg, "action")),
        ids=_ids(msg.get("id_list")),
    )
    return _Built("config.changed", data)


def _config_change(object_: str, key: str) -> _Handler:
    """30022 (extension) / 30023 (trunk): ``option`` CREATE|UPDATE|DELETE."""

    def handle(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
        ident = _required(msg, key)
        action = _lower(read.first(msg, "option", "action"))
        return _Built(
            "config.changed", ConfigChangedData(object=object_, action=action, ids=[ident])
        )

    return handle


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
    code = read.integer(msg.get("status"))
    data = TrunkStatusData(
        trunk=trunk,
        state=TRUNK_STATES.get(code, "unknown") if code is not None else "unknown",
        code=code,
        kind=read.first(msg, "kind"),
        ip=read.first(msg, "registered_ip", "ip_address", "ip_addresses"),
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
    data = CallFailedData(**fields, reason=read.first(msg, "reason"))
    return _Built(
        "call.failed", data, subject=fields["call_id"], identity=("failed", fields["call_id"])
    )


def _dtmf(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30017: ``info`` one key, ``flag`` its 0-based position, ``infos`` the string so far."""
    call_id = _required(msg, "call_id")
    data = CallDtmfData(
        call_id=call_id,
        digit=read.first(msg, "info"),
        sequence=read.integer(msg.get("flag")),
        digits=read.first(msg, "infos"),
        members=_members(msg)[0],
    )
    return _Built("call.dtmf", data, subject=call_id)


def _prompt_finished(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30018: the example's prompt name carries a trailing space (``"Test "``)."""
    call_id = _required(msg, "call_id")
    data = CallPromptFinishedData(
        call_id=call_id, prompt=read.first(msg, "prompt"), members=_members(msg)[0]
    )
    return _Built("call.prompt_finished", data, subject=call_id)


def _survey(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30019: satisfaction survey key result."""
    call_id = _required(msg, "call_id")
    data = CallSurveyData(
        call_id=call_id,
        result=read.first(msg, "survey_result", "result"),
        extension=read.first(msg, "extension"),
        members=_members(msg)[0],
    )
    return _Built("call.survey", data, subject=call_id)


def _uacsta(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30020: its ``call_id`` is the uaCSTA call id, not the PBX call id; every field is
    optional (the event is about a phone, whichever of them the PBX sent)."""
    call_id = read.first(msg, "call_id")
    ip = read.first(msg, "ip_addresses", "ip_address", "registered_ip")
    data = CallUacstaData(
        call_id=call_id,
        operation=read.first(msg, "operation"),
        extension=read.first(msg, "extension"),
        details={"ip": ip} if ip else {},
    )
    return _Built("call.uacsta", data, subject=call_id)


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


def _host_left(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30024: the conference lost its host."""
    conference = _required(msg, "conference_id")
    data = ConferenceHostLeftData(conference=conference, host=read.first(msg, "host_num"))
    return _Built("conference.host_left", data, subject=conference)


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
        identity=(code, read.canonical(body), ctx.received_at.isoformat()),
        vendorevent=code,
        raw=raw,
    )
    event.data.setdefault("raw", raw)
    return event


def _normalize(text: str, ctx: NormalizeContext, display_format: str | None) -> CloudEvent:
    frame = _parse_json(text, "frame")
    if not isinstance(frame, dict):
        raise _Invalid(f"frame is not a JSON object (got {type(frame).__name__})")
    code = _event_code(frame)
    handler = HANDLERS.get(code)
    if handler is None:
        return _unknown(ctx, code, frame)
    try:
        msg = _decode_msg(frame.get("msg"))
        built = _cdr(msg, ctx, display_format) if handler is _cdr else handler(msg, ctx)
    except (_Invalid, ValidationError) as exc:
        raise _Invalid(f"{code}: {_reason(exc)}") from None
    identity = built.identity or (code, read.canonical(msg), ctx.received_at.isoformat())
    return make_event(
        ctx,
        built.type_,
        built.data,
        identity=identity,
        time=built.time,
        subject=built.subject,
        vendorevent=code,
        raw={**frame, "msg": msg} if ctx.include_raw else None,
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


def normalize_frame(
    text: str | bytes, ctx: NormalizeContext, *, display_format: str | None = None
) -> list[CloudEvent]:
    """One WebSocket event frame -> events. Pure (no I/O, no clock: use ctx.received_at), total.

    ``display_format``: the PBX's date display format (strftime), to read CDR times that more
    than one format could read; None reads only what is unambiguous or proven otherwise.
    A call's ``direction`` here is what this one frame proves (``unknown`` when it proves
    nothing); a stream keeps it per call (``calls.CallDirections``).
    """
    safe = read.safe_text(text)
    try:
        return [_normalize(safe, ctx, display_format)]
    except _Invalid as exc:
        return [rejected(ctx, safe, read.safe_text(str(exc)), _frame_code(safe))]
    except Exception as exc:  # a bug here must not cost the event: publish it as rejected
        error = read.safe_text(f"normalizer error: {type(exc).__name__}: {exc}")
        return [rejected(ctx, safe, error, _frame_code(safe))]


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


def normalize_call_query(
    call: dict, ctx: NormalizeContext, *, direction: str | None = None
) -> list[CloudEvent]:
    """One ``call/query`` Call_Info -> the call.* event a 30011 with these members would give.

    Why: after a link interruption the live 30011 reports are gone; the snapshot says where
    each call is now. Its id is new per snapshot time (``ctx.received_at``), like a 30011's.
    ``direction`` is the communication type the call was listed under (manual line 15630,
    表 330: inbound / outbound / internal), the PBX's own word when the members prove nothing.
    """
    if not isinstance(call, dict):
        return [
            rejected(
                ctx,
                read.safe_text(repr(call)),
                "Call_Info is not an object",
                CALL_QUERY_VENDOREVENT,
            )
        ]
    text = read.safe_text(read.canonical(call))
    try:
        hint = direction if direction in DIRECTIONS else None
        fields = _call_data(call, hint)
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
        error = read.safe_text(f"{CALL_QUERY_VENDOREVENT}: {_reason(exc)}")
        return [rejected(ctx, text, error, CALL_QUERY_VENDOREVENT)]
    except Exception as exc:  # total, like normalize_frame
        error = read.safe_text(
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
