"""Call reports (30011 and the calls under another name: 30013-30020) and ``call/query``
snapshots: the members, what they prove about the direction, the call's state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from gateway.connectors import fields as read
from gateway.connectors.yeastar.normalize.envelope import (
    _Built,
    _Handler,
    _Invalid,
    _json_safe,
    _reason,
    _required,
)
from gateway.schema.events import (
    CallData,
    CallDtmfData,
    CallFailedData,
    CallPromptFinishedData,
    CallSurveyData,
    CallUacstaData,
    CloudEvent,
    NormalizeContext,
    make_event,
    rejected,
)

#: vendorevent of call snapshots re-read with ``call/query`` after a link interruption.
CALL_QUERY_VENDOREVENT: Final = "call/query"


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
    # read.text's usual cases inline (a plain string, or nothing): this runs for every member
    # of every call report, and the calls cost more than the reading.
    get, text = info.get, read.text
    number, from_, to, channel_id, via = (
        get("number"),
        get("from"),
        get("to"),
        get("channel_id"),
        get("call_path"),
    )
    return {
        "kind": kind,
        "number": None if number is None else text(number),
        "from": None if from_ is None else text(from_),
        "to": None if to is None else text(to),
        "trunk": read.first(info, "trunk_name", "trunk"),
        "channel_id": None if channel_id is None else text(channel_id),
        "status": _MEMBER_STATUS.get(status),
        "via": None if via is None else text(via),
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


def _call_status(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30011: one report per member change; the call's state is derived from all members.

    The payload is :func:`_call_data`'s dict as it is: it is :class:`CallData`'s JSON dump by
    construction (every field read as text or None, the state, direction and member statuses
    from fixed sets, keys by alias in the model's order; a test holds it to the model), and
    validating it into models to dump them again was a third of the frame's normalizing."""
    fields = _call_data(msg)
    return _Built(f"call.{fields['state']}", fields, subject=fields["call_id"])


def _call_kind(type_: str, identity_tag: str | None = None) -> _Handler:
    """30013 transferred / 30014 forwarded / 30016 incoming: a call snapshot under another name
    (its payload as in :func:`_call_status`)."""

    def handle(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
        fields = _call_data(msg)
        identity = (identity_tag, fields["call_id"]) if identity_tag else None
        return _Built(type_, fields, subject=fields["call_id"], identity=identity)

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
