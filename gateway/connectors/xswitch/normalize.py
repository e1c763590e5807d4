"""XCC NATS messages (JSON-RPC 2.0 bodies) -> contract events. Pure: no I/O, no clock.

Sources (the public controller SDK, ``github:xswitch-cn/xctrl`` and ``xswitch-cn/proto``):

* ``ctrl/proto.go`` ``Request``: ``{"jsonrpc": "2.0", "method": ..., "id": ..., "params": ...}``.
* ``proto/xctrl/xctrl.proto`` ``message ChannelEvent``: ``node_uuid``, ``uuid``, ``peer_uuid``,
  ``direction`` (FreeSWITCH's: ``inbound`` = the leg came into the switch, ``outbound`` = the
  switch created it), ``state``, ``cid_name``, ``cid_number``, ``dest_number``,
  ``create_epoch``, ``ring_epoch``, ``answer_epoch``, ``hangup_epoch``, ``peers``, ``params``,
  ``billsec``, ``duration``, ``cause``, ``context``, ``answered``, ``held``, ``bridged``,
  ``main_uuid``; ``message DTMFEvent``: ``uuid``, ``dtmf_digit``, ``dtmf_duration``.
* ``docs/channel.md`` "Channel的生命周期": an inbound channel starts at ``START``, an outbound one
  at ``CALLING``; then ``RINGING``, ``ANSWERED``, ``MEDIA``, ``READY``, ``BRIDGE``,
  ``UNBRIDGE``; always ends with ``DESTROY``, and ``Event.CDR`` is sent before ``DESTROY``,
  "通常会在单独的Topic上发出". The same documents also write ``ANSWER``, ``ANSWERD``
  (``docs/channel.md``) and the proto comment ``ACTIVE``: every spelling is accepted.
* ``tboy/tboy.go`` ``RequestParam`` / ``CallDetailRecord``: ``Event.CDR`` params are
  ``{"uuid", "node_ip", "node_uuid", "cdr": {...}}`` with FreeSWITCH CDR variables as strings
  (``start_stamp``, ``answer_stamp``, ``end_stamp``, ``billsec``, ``duration``,
  ``hangup_cause``, ``caller_id_number``, ``destination_number``, ``leg``, ``peer_uuid``,
  ``sofia_profile_name`` (``default`` = extension, ``public`` = trunk), ``cc_agent_name`` ...).

One call is one ``call_id``: the uuid of the leg that started it. A leg created by the switch
for a call (``direction: outbound`` with a ``peer_uuid``, e.g. the callee of a bridge) joins
its peer's call. The stream's :class:`StreamMemory` keeps, per leg, its call and furthest
status and, per call, its legs and direction, so every event of a call carries the direction
established by its first leg, duplicates and stale (out-of-order) states publish nothing, and a
CDR arriving before its leg's ``DESTROY`` still finds its call.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson
from pydantic import ValidationError

from gateway.connectors.fields import canonical, first, integer, safe_text, text, token, unix_time
from gateway.connectors.xswitch.metrics import KNOWN_PASSED_OVER, STATES_PASSED_OVER
from gateway.schema.events import (
    CallData,
    CallDtmfData,
    CallFailedData,
    CdrData,
    CloudEvent,
    Member,
    NormalizeContext,
    StreamMemory,
    VendorUnknownData,
    make_event,
    rejected,
)

#: Every spelling of a channel state seen -> its canonical name (keys in ``token`` form).
#: Beyond the manuals: the SDK's own fake node ``tboy/tboy.go`` ``Bridge`` sends ``BRIDGED``;
#: ``ctrl/serve.go`` puts ``DTMF`` in the state field (``docs/dtmf.md``); FreeSWITCH names
#: hold ``CHANNEL_HOLD`` / ``CHANNEL_UNHOLD``.
STATE_ALIASES: Final[dict[str, str]] = {
    "START": "START",
    "CALLING": "CALLING",
    "RING": "RINGING",
    "RINGING": "RINGING",
    "EARLY": "MEDIA",
    "EARLYMEDIA": "MEDIA",
    "MEDIA": "MEDIA",
    "READY": "READY",
    "ANSWER": "ANSWERED",
    "ANSWERD": "ANSWERED",
    "ANSWERED": "ANSWERED",
    "ACTIVE": "ANSWERED",
    "BRIDGE": "BRIDGE",
    "BRIDGED": "BRIDGE",
    "UNBRIDGE": "UNBRIDGE",
    "UNBRIDGED": "UNBRIDGE",
    "HOLD": "HOLD",
    "HELD": "HOLD",
    "ONHOLD": "HOLD",
    "CHANNELHOLD": "HOLD",
    "UNHOLD": "UNHOLD",
    "UNHELD": "UNHOLD",
    "OFFHOLD": "UNHOLD",
    "CHANNELUNHOLD": "UNHOLD",
    "DESTROY": "DESTROY",
    "HANGUP": "DESTROY",
}

#: A leg's status only moves forward (an out-of-order RINGING after ANSWERED changes nothing).
_RANK: Final[dict[str, int]] = {
    "dialing": 0,
    "ringing": 1,
    "early_media": 2,
    "answered": 3,
    "held": 3,
    "hung_up": 9,
}

#: FreeSWITCH hangup causes -> CDR disposition (answered calls are ``answered`` whatever the
#: cause). Causes not listed are ``failed``.
_CAUSE_DISPOSITION: Final[dict[str, str]] = {
    "USERBUSY": "busy",
    "NOANSWER": "no_answer",
    "NOUSERRESPONSE": "no_answer",
    "ORIGINATORCANCEL": "no_answer",
    "ALLOTTEDTIMEOUT": "no_answer",
    "NORMALCLEARING": "no_answer",  # ended before anyone answered
    "CALLREJECTED": "busy",
    "SUBSCRIBERABSENT": "failed",
    "LOSEACE": "no_answer",
}

_EXTENSION: Final = re.compile(r"^\d{2,6}$")
#: Words that mark a dialplan context as the trunk side. Real systems name trunk contexts
#: freely (``public`` is FreeSWITCH's default, ``from-trunk``, ``MyCarrier-Inbound`` ...).
_TRUNK_WORDS: Final = frozenset({"public", "trunk", "inbound", "incoming", "pstn", "did"})
_WORDS: Final = re.compile(r"[^a-z0-9]+")
_DIRECTIONS: Final = frozenset({"inbound", "outbound", "internal"})


class _Invalid(ValueError):
    """A message the normalizer understands too little of to publish as its own type."""


def _is_extension(number: str | None) -> bool:
    return bool(number and _EXTENSION.match(number))


def _is_trunk_context(context: Any) -> bool:
    """A context named for the trunk side: one of its words is a trunk word."""
    name = (text(context) or "").lower()
    return bool(name) and not _TRUNK_WORDS.isdisjoint(_WORDS.split(name))


def _params(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _variables(params: dict[str, Any]) -> dict[str, Any]:
    """The channel variables (``ChannelEvent.params``, a ``map<string,string>``)."""
    return _params(params.get("params"))


def _talked(params: dict[str, Any]) -> bool:
    """Whether the message proves the leg was answered. XSwitch marshals ``ChannelEvent`` with
    Go's ``omitempty`` (``xswitch-cn/proto`` ``xctrl.pb.go``): ``answered: false``,
    ``answer_epoch: 0`` and ``billsec: ""`` are left out, so only presence proves anything;
    a DESTROY may carry its talk time only in its variables (``params.billsec``)."""
    variables = _variables(params)
    return (
        params.get("answered") is True
        or (integer(params.get("answer_epoch")) or 0) > 0
        or (integer(params.get("billsec")) or 0) > 0
        or (integer(params.get("billmsec")) or 0) > 0
        or (integer(variables.get("billsec")) or 0) > 0
        or (integer(variables.get("answer_epoch")) or 0) > 0
    )


def _cause(params: dict[str, Any]) -> str | None:
    return text(params.get("cause")) or text(_variables(params).get("hangup_cause"))


def _unanswered_proven(params: dict[str, Any]) -> bool:
    """A DESTROY that itself says nobody talked: a zero talk time, or a cause that is not a
    normal end (``NO_ANSWER``, ``USER_BUSY`` ...)."""
    variables = _variables(params)
    billsec = integer(params.get("billsec"))
    if billsec is None:
        billsec = integer(variables.get("billsec"))
    cause = token(_cause(params))
    return billsec == 0 or bool(cause and cause != "NORMALCLEARING")


def _state(params: dict[str, Any]) -> str | None:
    """The canonical state; None for one no document lists (it is passed over, counted)."""
    raw = token(params.get("state"))
    if not raw:
        raise _Invalid(f"missing channel 'state' {params.get('state')!r}")
    return STATE_ALIASES.get(raw)


def _pass_over(ctx: NormalizeContext, params: dict[str, Any]) -> list[CloudEvent]:
    """A well-formed message in a state that carries no progress the contract knows: no
    event, and no rejection either (nodes send more states than the manuals list)."""
    raw = token(params.get("state"))
    label = raw if raw in KNOWN_PASSED_OVER else "other"
    STATES_PASSED_OVER.labels(ctx.tenant, label).inc()
    return []


# --- calls ---------------------------------------------------------------------------------------


def _call_of(memory: StreamMemory, params: dict[str, Any], uuid: str) -> str:
    """The call a leg belongs to: remembered, else its ``main_uuid``, else (a leg the switch
    created for a peer) its peer's call, else its own uuid."""
    known = memory.get(f"leg:{uuid}")
    if known is not None:
        return str(known["call_id"])
    main = text(params.get("main_uuid"))
    if main and main != uuid:
        return _call_of_uuid(memory, main)
    peer = text(params.get("peer_uuid"))
    if peer and peer != uuid and token(params.get("direction")) == "OUTBOUND":
        return _call_of_uuid(memory, peer)
    return uuid


def _call_of_uuid(memory: StreamMemory, uuid: str) -> str:
    known = memory.get(f"leg:{uuid}")
    return str(known["call_id"]) if known is not None else uuid


def _context(params: dict[str, Any]) -> str | None:
    return text(params.get("context")) or text(_variables(params).get("context"))


def _numbers(params: dict[str, Any]) -> tuple[str | None, str | None]:
    """(caller, callee): the leg's own, else the call's original ones (``xcc_origin_*``)."""
    variables = _variables(params)
    caller = text(params.get("cid_number")) or text(variables.get("xcc_origin_cid_number"))
    callee = text(params.get("dest_number")) or text(variables.get("xcc_origin_dest_number"))
    return caller, callee


def _direction(params: dict[str, Any]) -> str:
    """The call's direction, as far as one leg's message proves it, else ``unknown``.

    In order: XCC's own word (``params.xcc_direction``); a trunk context (the leg came from a
    carrier); a leg the switch placed itself with no peer (``direction: outbound``, no
    ``peer_uuid``: XNode.Dial, callback, click-to-dial ringing the agent first); the numbers
    (an outside caller is inbound, an extension calling an extension internal, an extension
    calling an outside number outbound), which hold also for a bridged callee leg heard before
    its caller's. FreeSWITCH's ``direction`` is the leg's, never the call's: a callee leg is
    ``outbound`` in an inbound call."""
    stated = (text(_variables(params).get("xcc_direction")) or "").lower()
    if stated in _DIRECTIONS:
        return stated
    if _is_trunk_context(_context(params)):
        return "inbound"
    leg_direction = token(params.get("direction"))
    if leg_direction == "OUTBOUND" and not text(params.get("peer_uuid")):
        return "outbound"
    caller, callee = _numbers(params)
    if caller and not _is_extension(caller):
        return "inbound"
    if _is_extension(caller) and callee:
        return "internal" if _is_extension(callee) else "outbound"
    return "unknown"


def _leg_status(state: str, params: dict[str, Any], previous: str | None) -> str:
    if state == "DESTROY":
        return "hung_up"
    talked = _talked(params) or previous in ("answered", "held")
    if state == "HOLD" and talked:
        return "held"
    if state == "UNHOLD" and talked:
        return "answered"
    if state in ("ANSWERED", "UNBRIDGE") or talked:
        status = "answered"
    elif state == "MEDIA":
        status = "early_media"
    elif state == "RINGING":
        status = "ringing"
    elif state in ("START", "CALLING"):
        status = "ringing" if token(params.get("direction")) == "INBOUND" else "dialing"
    else:  # READY, BRIDGE: no new progress of their own
        status = previous or "dialing"
    if params.get("held") is True and status == "answered":
        status = "held"
    return status


def _member(leg: dict[str, Any], direction: str | None = None) -> Member:
    """``kind``: an extension, else the side the leg is on: its own FreeSWITCH direction when
    sent (in: the outside caller; out: the outside callee), else the call's."""
    if leg["extension"]:
        kind = "extension"
    elif leg["inbound"] is not None:
        kind = "inbound" if leg["inbound"] else "outbound"
    else:
        kind = "outbound" if direction == "outbound" else "inbound"
    return Member(
        kind=kind,
        number=leg["number"],
        from_=leg["from"],
        to=leg["to"],
        channel_id=leg["uuid"],
        status=leg["status"],
    )


def _call_state(legs: list[dict[str, Any]]) -> str:
    statuses = [leg["status"] for leg in legs]
    if all(s == "hung_up" for s in statuses):
        return "ended"
    live = [s for s in statuses if s != "hung_up"]
    if any(s == "held" for s in live) and not any(s == "answered" for s in live):
        return "held"
    if any(s in ("answered", "held") for s in live):
        return "answered"
    return "ringing"


def _channel(
    msg: dict[str, Any], ctx: NormalizeContext, position: str | None = None
) -> list[CloudEvent]:
    params = _params(msg.get("params"))
    uuid = text(params.get("uuid"))
    if uuid is None:
        raise _Invalid("Event.Channel without 'uuid'")
    state = _state(params)
    if state is None:
        return _pass_over(ctx, params)
    memory = ctx.memory
    if memory.get(f"ended:{uuid}") is not None:
        return []  # a late or repeated message of a leg whose call has ended
    leg = memory.get(f"leg:{uuid}")
    call_id = _call_of(memory, params, uuid)
    if call_id != uuid and memory.get(f"ended:{call_id}") is not None:
        # A leg first heard of after its call ended (a redelivery overtaken by newer
        # messages): its story is over; its CDR still comes.
        memory.set(f"ended:{uuid}", call_id)
        return []
    call = memory.get(f"call:{call_id}") or {
        "direction": _direction(params),
        "legs": [],
        "answered": False,
        "ended": False,
    }
    if call["direction"] == "unknown":  # a later message may prove what the first did not
        call["direction"] = _direction(params)
    if leg is None:
        leg_direction = token(params.get("direction"))
        inbound = None if not leg_direction else leg_direction != "OUTBOUND"
        caller, callee = text(params.get("cid_number")), text(params.get("dest_number"))
        number = callee if inbound is False else caller
        leg = {
            "uuid": uuid,
            "call_id": call_id,
            "status": None,
            "number": number,
            "from": caller,
            "to": callee,
            "inbound": inbound,
            "extension": _is_extension(number) and not _is_trunk_context(_context(params)),
            "node": text(params.get("node_uuid")),
        }
        call["legs"].append(uuid)
    previous = leg["status"]
    if previous == "hung_up":
        return []  # a late message of a destroyed leg (out of order or duplicate)
    status = _leg_status(state, params, previous)
    if previous is not None and status != "hung_up" and _RANK[status] < _RANK[previous]:
        status = previous
    if status == previous:
        memory.set(f"leg:{uuid}", leg)
        memory.set(f"call:{call_id}", call)
        return []  # a duplicate, or a state that adds nothing (READY, BRIDGE ...)
    leg["status"] = status
    if status in ("answered", "held") or _talked(params):
        call["answered"] = True
    if previous is not None:
        call["followed"] = True  # the call was heard before this leg ended
    memory.set(f"leg:{uuid}", leg)
    legs = [memory.get(f"leg:{u}") for u in call["legs"]]
    known = [entry for entry in legs if entry is not None]
    state_now = _call_state(known)
    members = [_member(entry, call["direction"]) for entry in known]
    when = _when(state, params) or ctx.received_at
    events: list[CloudEvent] = []
    if state_now == "ended":
        call["ended"] = True
        data = CallData(
            call_id=call_id, state="ended", direction=call["direction"], members=members
        )
        events.append(_event(ctx, "call.ended", data, (call_id, "ended"), when, msg))
        # Failed only when proven: the call was followed and nobody answered, or the last
        # DESTROY says so itself. A call first heard at its DESTROY (omitempty left out
        # ``answered``) is not a failure for want of evidence.
        if not call["answered"] and (call.get("followed") or _unanswered_proven(params)):
            failed = CallFailedData(
                call_id=call_id,
                state="ended",
                direction=call["direction"],
                members=members,
                reason=_cause(params),
            )
            events.append(_event(ctx, "call.failed", failed, (call_id, "failed"), when, msg))
        memory.pop(f"call:{call_id}")
        memory.set(f"direction:{call_id}", call["direction"])  # for CDRs after DESTROY
        memory.set(f"ended:{call_id}", call_id)  # also when its first leg was never heard
        for entry in call["legs"]:
            memory.pop(f"leg:{entry}")
            memory.set(f"ended:{entry}", call_id)
    else:
        memory.set(f"call:{call_id}", call)
        data = CallData(
            call_id=call_id, state=state_now, direction=call["direction"], members=members
        )
        # A status a leg comes back to (answered, held, answered again) is a new event.
        seen = leg.setdefault("seen", {})
        times = seen.get(status, 0)
        seen[status] = times + 1
        memory.set(f"leg:{uuid}", leg)
        identity = (call_id, uuid, status) if not times else (call_id, uuid, status, times)
        events.append(_event(ctx, f"call.{state_now}", data, identity, when, msg))
    return events


def _when(state: str, params: dict[str, Any]) -> datetime | None:
    key = {
        "START": "create_epoch",
        "CALLING": "create_epoch",
        "RINGING": "ring_epoch",
        "ANSWERED": "answer_epoch",
        "DESTROY": "hangup_epoch",
    }.get(state)
    return unix_time(params.get(key)) if key else None


def _event(
    ctx: NormalizeContext,
    type_: str,
    data: Any,
    identity: tuple[object, ...],
    when: datetime,
    msg: dict[str, Any],
) -> CloudEvent:
    return make_event(
        ctx,
        type_,
        data,
        identity=identity,
        time=when,
        subject=getattr(data, "call_id", None),
        vendorevent=str(msg.get("method")),
        raw=msg,
    )


# --- DTMF ----------------------------------------------------------------------------------------


def _dtmf(
    msg: dict[str, Any], ctx: NormalizeContext, position: str | None = None
) -> list[CloudEvent]:
    """``DTMFEvent``: one key; ``sequence``/``digits`` count the keys of the leg in this stream.

    A key carries no time or number of its own, so a repeated message cannot be told from a
    repeated key by its content. Where the message has a place in a stream (``position``: the
    JetStream sequence), that place is its identity and a redelivery publishes nothing; on core
    NATS the key's count on its leg is."""
    params = _params(msg.get("params"))
    uuid = text(params.get("uuid"))
    digit = text(params.get("dtmf_digit"))
    if uuid is None or digit is None:
        raise _Invalid("Event.DTMF needs 'uuid' and 'dtmf_digit'")
    memory = ctx.memory
    if position is not None:
        if memory.get(f"dtmf-at:{position}"):
            return []
        memory.set(f"dtmf-at:{position}", True)
    call_id = memory.get(f"ended:{uuid}") or _call_of(memory, params, uuid)
    so_far = memory.get(f"dtmf:{uuid}") or ""
    digits = so_far + digit
    memory.set(f"dtmf:{uuid}", digits)
    leg = memory.get(f"leg:{uuid}")
    data = CallDtmfData(
        call_id=call_id,
        digit=digit,
        sequence=len(so_far),
        digits=digits,
        members=[_member(leg, (memory.get(f"call:{call_id}") or {}).get("direction"))]
        if leg and leg.get("status")
        else [],
    )
    identity = (uuid, position) if position is not None else (uuid, len(so_far))
    return [_event(ctx, "call.dtmf", data, identity, ctx.received_at, msg)]


# --- CDR -----------------------------------------------------------------------------------------


def _local(value: Any, tz: ZoneInfo) -> datetime | None:
    """``start_stamp`` etc.: ``YYYY-MM-DD HH:MM:SS`` in the switch's local time."""
    stamp = text(value)
    if stamp is None:
        return None
    try:
        return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _disposition(cdr: dict[str, Any], talk: int | None) -> str:
    if (talk or 0) > 0 or text(cdr.get("answer_stamp")) or integer(cdr.get("answer_epoch")):
        return "answered"
    return _CAUSE_DISPOSITION.get(token(cdr.get("hangup_cause")), "failed")


def _cdr(
    msg: dict[str, Any], ctx: NormalizeContext, position: str | None = None
) -> list[CloudEvent]:
    """One CDR per leg (``leg`` a/b): a bridged call has two, under one ``call_id``; its id
    is the leg's uuid, so legs never collide. ``direction`` is the call's, ``leg_direction``
    the leg's own (the caller's leg from a trunk inbound, a leg to an extension internal, a
    leg to a number outbound)."""
    params = _params(msg.get("params"))
    cdr = _params(params.get("cdr"))
    uuid = text(cdr.get("uuid")) or text(params.get("uuid"))
    if uuid is None:
        raise _Invalid("Event.CDR without 'uuid'")
    memory = ctx.memory
    if memory.get(f"cdr:{uuid}"):
        return []  # the same leg's CDR again (a redelivery): same id, nothing new
    memory.set(f"cdr:{uuid}", True)
    call_id = memory.get(f"ended:{uuid}")
    if call_id is None:
        known = memory.get(f"leg:{uuid}")
        if known is not None:
            call_id = known["call_id"]
        elif token(cdr.get("leg")) == "B" and text(cdr.get("peer_uuid")):
            call_id = _call_of_uuid(memory, str(text(cdr.get("peer_uuid"))))
        else:
            call_id = uuid
    call = memory.get(f"call:{call_id}")
    # Epochs are absolute; the stamps are the node's wall clock (read in the PBX's zone).
    started = unix_time(cdr.get("start_epoch")) or _local(cdr.get("start_stamp"), ctx.tz)
    answered = unix_time(cdr.get("answer_epoch")) or _local(cdr.get("answer_stamp"), ctx.tz)
    talk = integer(cdr.get("billsec"))
    caller = first(cdr, "caller_id_number", "xcc_origin_cid_number")
    callee = first(cdr, "destination_number", "xcc_origin_dest_number")
    direction = call["direction"] if call else memory.get(f"direction:{call_id}")
    if direction in (None, "unknown"):
        b_leg = token(cdr.get("leg")) == "B"
        direction = _direction(
            {
                "context": cdr.get("context") or cdr.get("sofia_profile_name"),
                "cid_number": caller,
                "dest_number": callee,
                # a b-leg is a leg the switch created for its a-leg: a peer, named or not
                "direction": "outbound" if b_leg else "",
                "peer_uuid": text(cdr.get("peer_uuid")) or ("a-leg" if b_leg else ""),
                "params": {"xcc_direction": cdr.get("xcc_direction")},
            }
        )
    own_context = (text(cdr.get("context")) or text(cdr.get("sofia_profile_name")) or "").lower()
    if token(cdr.get("leg")) != "B" and _is_trunk_context(own_context):
        leg_direction = "inbound"  # the caller's leg, from a trunk
    else:  # a leg ringing an extension, or going out to a number
        leg_direction = "internal" if _is_extension(callee) else "outbound"
    trunk = first(cdr, "sip_gateway_name", "xcc_gateway")
    public = _is_trunk_context(cdr.get("sofia_profile_name"))
    data = CdrData(
        call_id=call_id,
        started_at=started,
        caller=caller,
        callee=callee,
        direction=direction,
        disposition=_disposition(cdr, talk),
        duration_s=integer(cdr.get("duration")),
        talk_duration_s=talk,
        ring_duration_s=(
            int((answered - started).total_seconds()) if answered and started else None
        ),
        trunk_in=trunk if public and direction == "inbound" else None,
        trunk_out=trunk if direction == "outbound" else None,
        did=first(cdr, "xcc_origin_dest_number") if direction == "inbound" else None,
        recording=first(cdr, "record_file", "xcc_record_file", "record_path"),
        agent_id=first(cdr, "cc_agent_name", "cc_agent"),
        leg_direction=leg_direction,
    )
    return [_event(ctx, "cdr.created", data, ("cdr", uuid), started or ctx.received_at, msg)]


# --- entry point ---------------------------------------------------------------------------------


_HANDLERS: Final = {"Event.Channel": _channel, "Event.DTMF": _dtmf, "Event.CDR": _cdr}


def _unknown(msg: dict[str, Any], ctx: NormalizeContext) -> list[CloudEvent]:
    method = text(msg.get("method"))
    event = make_event(
        ctx,
        "vendor.unknown",
        VendorUnknownData(event=method),
        identity=(method, canonical(msg), ctx.received_at.isoformat()),
        vendorevent=method,
        raw=msg,
    )
    event.data.setdefault("raw", msg)
    return [event]


def is_result(msg: Any) -> bool:
    """A JSON-RPC answer (``Event.Result`` or a bare ``result``/``error``): a reply to a
    controller's request, not an event (``ctrl/proto.go`` ``Result``)."""
    return isinstance(msg, dict) and (
        msg.get("method") == "Event.Result"
        or (not msg.get("method") and ("result" in msg or "error" in msg))
    )


def _normalize(body: str, ctx: NormalizeContext, position: str | None) -> list[CloudEvent]:
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Invalid(f"message is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise _Invalid(f"message is not a JSON object (got {type(msg).__name__})")
    if is_result(msg):
        return []
    method = str(msg.get("method"))
    handler = _HANDLERS.get(method)
    if handler is None:
        return _unknown(msg, ctx)
    try:
        return handler(msg, ctx, position)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:3])
        raise _Invalid(f"{msg.get('method')}: invalid payload: {reason}") from None


def _method(body: str) -> str | None:
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return text(msg.get("method")) if isinstance(msg, dict) else None


def normalize_message(
    body: str | bytes, ctx: NormalizeContext, *, position: str | None = None
) -> list[CloudEvent]:
    """One NATS message body -> events (none for a duplicate, a stale state or a JSON-RPC
    result). Total: what it cannot read becomes ``gateway.rejected``. ``position``: the
    message's place in a stream (JetStream), where it has one."""
    safe = safe_text(body)
    try:
        return _normalize(safe, ctx, position)
    except _Invalid as exc:
        return [rejected(ctx, safe, str(exc), _method(safe))]
    except Exception as exc:  # a bug here must not cost the message: publish it as rejected
        error = safe_text(f"normalizer error: {type(exc).__name__}: {exc}")
        return [rejected(ctx, safe, error, _method(safe))]
