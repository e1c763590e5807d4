"""The public event contract (docs/CONTRACT.md section 1): a CloudEvents 1.0 envelope and one
payload model per event type.

Every connector builds events only through :func:`make_event`, so ids, sources and routing keys
are derived the same way for every vendor.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import SchemaSerializer, core_schema

#: ``unknown``: no evidence of the call's direction yet (e.g. a call first seen mid-way after a
#: restart, through frames that list only extensions); never a guess.
Direction = Literal["inbound", "outbound", "internal", "unknown"]
MemberStatus = Literal["dialing", "ringing", "early_media", "answered", "held", "hung_up"]
CallState = Literal["ringing", "answered", "held", "ended"]
Disposition = Literal["answered", "no_answer", "busy", "failed", "voicemail"]
AgentCallState = Literal["idle", "ringing", "busy", "held"]
Presence = Literal["available", "away", "business_trip", "do_not_disturb", "lunch", "off_work"]
ConnectionState = Literal["connected", "disconnected", "auth_failed", "blocked"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")

    raw: Any = Field(default=None, description="Vendor payload, only with the PBX's include_raw")


# --- calls -------------------------------------------------------------------------------------


class Member(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: Literal["extension", "inbound", "outbound"]
    number: str | None = None
    from_: str | None = Field(default=None, alias="from", serialization_alias="from")
    to: str | None = None
    trunk: str | None = None
    channel_id: str | None = None
    status: MemberStatus | None = None  # None: the PBX sent none, or one not in the manual
    via: str | None = Field(default=None, description="IVR / queue / ring group path")


class CallData(_Data):
    call_id: str
    state: CallState
    direction: Direction
    members: list[Member]


class CallFailedData(CallData):
    reason: str | None = None


class CallDtmfData(_Data):
    call_id: str
    digit: str | None = None
    sequence: int | None = None
    digits: str | None = None
    members: list[Member] = []


class CallPromptFinishedData(_Data):
    call_id: str
    prompt: str | None = None
    members: list[Member] = []


class CallSurveyData(_Data):
    call_id: str
    result: str | None = None
    extension: str | None = None
    members: list[Member] = []


class CallUacstaData(_Data):
    call_id: str | None = None
    operation: str | None = None
    extension: str | None = None
    details: dict[str, Any] = {}


# --- CDR ---------------------------------------------------------------------------------------


class CdrData(_Data):
    call_id: str
    started_at: datetime | None
    caller: str | None
    callee: str | None
    direction: Direction | None
    disposition: Disposition | None
    duration_s: int | None
    talk_duration_s: int | None
    ring_duration_s: int | None = None
    trunk_in: str | None = None
    trunk_out: str | None = None
    did: str | None = None
    recording: str | None = None
    agent_id: str | None = None
    agent_ring_s: int | None = None
    leg_direction: Direction | None = Field(
        default=None,
        description="This record's own type; `direction` is the whole call's (legs may differ)",
    )
    reason: str | None = Field(
        default=None,
        description="Why the call ended as it did where the vendor says (e.g. abandoned_in_queue)",
    )
    trunk_name: str | None = Field(default=None, description="The trunk number's name")
    queue_wait_s: int | None = Field(default=None, description="Seconds waited in a queue")
    customer_location: str | None = Field(
        default=None, description="Where the customer's number is registered (vendor's words)"
    )
    user_data: str | None = Field(
        default=None, description="Text given with call.dial (user_data), carried unchanged"
    )


# --- agents / extensions -----------------------------------------------------------------------


class AgentRegistrationData(_Data):
    extension: str
    registered: bool | None = None
    device: str | None = None
    ip: str | None = None


class AgentCallStateData(_Data):
    extension: str
    state: AgentCallState | None = None


class AgentPresenceData(_Data):
    extension: str
    presence: Presence | None = None


class AgentQueueStatusData(_Data):
    extension: str
    queue: str | None = None
    logged_in: bool | None = None
    paused: bool | None = None
    pause_reason: str | None = None
    call_state: AgentCallState | None = None


class AgentAutoPausedData(_Data):
    extension: str
    queue: str | None = None
    missed_calls: list[dict[str, Any]] = []


class AgentRingTimeoutData(_Data):
    extension: str
    queue: str | None = None
    caller: str | None = None
    call_id: str | None = None


SeatChange = Literal["added", "removed", "occupied", "agent", "expires_at", "expired"]


class AgentSeatData(_Data):
    """A call center seat (a SIP account agents are bound to) whose occupancy, bound agent or
    expiry changed; ``extension`` is the seat's SIP number, ``changes`` says what changed."""

    extension: str
    occupied: bool | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    expires_at: datetime | None = None
    expired: bool | None = None
    changes: list[SeatChange] = []


# --- account (cloud account and billing state, e.g. UUCall) ------------------------------------

#: A decimal number as text: ``"123.45"``, ``"-0.05"``, ``"7"``.
_DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"


class Money(BaseModel):
    """An amount: the integer exactly as the vendor sent it (in its minor unit), and that
    integer divided by the event's ``minor_unit`` as a decimal string. Never a float."""

    model_config = ConfigDict(extra="forbid")

    value: int = Field(description="The integer as the vendor sent it (e.g. fen)")
    amount: str = Field(pattern=_DECIMAL, description="value / minor_unit, e.g. '123.45'")


class DecimalMoney(BaseModel):
    """An amount the vendor sends as a decimal number: the number as sent, as exact text
    (never read as a float), and scaled by the event's ``minor_unit``."""

    model_config = ConfigDict(extra="forbid")

    value: str = Field(pattern=_DECIMAL, description="The number as the vendor sent it, as text")
    amount: str = Field(pattern=_DECIMAL, description="value / minor_unit")


class AccountBalanceChangedData(_Data):
    enterprise: str = Field(description="The vendor's enterprise (account owner) id")
    billing_account: str | None = None
    name: str | None = None
    minor_unit: int = Field(description="How many `value` units make one currency unit")
    balance: Money
    overdraft: Money | None = None
    advance: Money | None = None
    consume: Money | None = None
    state: int | None = Field(default=None, description="The account's state code, as sent")
    previous_balance: Money | None = Field(default=None, description="None: first seen")
    change: Money | None = Field(default=None, description="balance - previous_balance")
    changed: list[str] = Field(
        default=[], description="Which of balance/overdraft/advance/consume/state changed"
    )


class AccountLowBalanceData(_Data):
    enterprise: str
    billing_account: str | None = None
    minor_unit: int
    balance: Money
    threshold: Money
    previous_balance: Money | None = None


class AccountRechargedData(_Data):
    enterprise: str
    entry_id: str = Field(description="The cash log entry's id")
    minor_unit: int
    money: Money
    kind: int | None = Field(default=None, description="The entry's type code, as sent")
    booked_at: datetime | None = None
    serial_number: str | None = None
    note: str | None = None


class AccountBillData(_Data):
    enterprise: str
    month: str = Field(description="yyyy-MM")
    sub_user: str | None = Field(default=None, description="The sub-account billed")
    action: Literal["created", "changed"]
    minor_unit: int
    total: DecimalMoney | None = None
    basic: DecimalMoney | None = None
    function: DecimalMoney | None = None
    previous_total: DecimalMoney | None = None


class AccountAuditData(_Data):
    enterprise: str
    entry_id: str = Field(description="The operation log entry's id")
    at: datetime | None = None
    who: str | None = Field(default=None, description="The sub-account that acted")
    what: str | None = Field(default=None, description="What it did, as the vendor wrote it")


class AccountNoticeData(_Data):
    enterprise: str
    notice_id: str
    action: Literal["created", "changed", "removed"]
    title: str | None = None
    content: str | None = None
    targets: list[str] = Field(default=[], description="Sub-account ids it is addressed to")
    created_at: datetime | None = None


# --- other -------------------------------------------------------------------------------------


class TrunkStatusData(_Data):
    trunk: str
    state: str
    code: int | str | None = None
    kind: str | None = None
    ip: str | None = None


class ConfigChangedData(_Data):
    object: str
    action: str | None = None
    ids: list[str] = []


class ConferenceHostLeftData(_Data):
    conference: str
    host: str | None = None


class VendorUnknownData(_Data):
    event: str | None = None


class GatewayConnectionData(_Data):
    state: ConnectionState
    reason: str | None = None


class GatewayGapData(_Data):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: datetime = Field(alias="from", serialization_alias="from")
    to: datetime
    recovered: int = 0


class GatewayRejectedData(_Data):
    error: str
    text: str


class CommandResultData(_Data):
    """A command's outcome, when it was sent without ``reply_to``."""

    command_id: str
    command: str | None = None
    ok: bool
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    user_id: str | None = Field(
        default=None,
        description="The command's AMQP user_id: the sender's broker login, checked by RabbitMQ",
    )
    app_id: str | None = Field(
        default=None, description="The command's AMQP app_id, as the sender gave it (unchecked)"
    )


#: event type -> payload model; the JSON Schema export and the event catalogue read this.
EVENT_TYPES: dict[str, type[BaseModel]] = {
    "call.ringing": CallData,
    "call.answered": CallData,
    "call.held": CallData,
    "call.ended": CallData,
    "call.incoming": CallData,
    "call.failed": CallFailedData,
    "call.transferred": CallData,
    "call.forwarded": CallData,
    "call.dtmf": CallDtmfData,
    "call.prompt_finished": CallPromptFinishedData,
    "call.survey": CallSurveyData,
    "call.uacsta": CallUacstaData,
    "cdr.created": CdrData,
    "agent.registration": AgentRegistrationData,
    "agent.call_state": AgentCallStateData,
    "agent.presence": AgentPresenceData,
    "agent.queue_status": AgentQueueStatusData,
    "agent.auto_paused": AgentAutoPausedData,
    "agent.ring_timeout": AgentRingTimeoutData,
    "agent.seat": AgentSeatData,
    "trunk.status": TrunkStatusData,
    "config.changed": ConfigChangedData,
    "conference.host_left": ConferenceHostLeftData,
    "account.balance_changed": AccountBalanceChangedData,
    "account.low_balance": AccountLowBalanceData,
    "account.recharged": AccountRechargedData,
    "account.bill": AccountBillData,
    "account.audit": AccountAuditData,
    "account.notice": AccountNoticeData,
    "vendor.unknown": VendorUnknownData,
    "gateway.connection": GatewayConnectionData,
    "gateway.gap": GatewayGapData,
    "gateway.rejected": GatewayRejectedData,
    "command.succeeded": CommandResultData,
    "command.failed": CommandResultData,
}


#: How pydantic renders a ``datetime`` field in JSON mode (``CloudEvent.to_json``).
_DATETIME_JSON: Final = SchemaSerializer(core_schema.datetime_schema())
#: orjson options under which it writes only what pydantic's JSON mode writes the same way.
_ORJSON_NATIVE_ONLY: Final = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


class CloudEvent(BaseModel):
    """CloudEvents 1.0 structured-mode envelope with the gateway's extension attributes."""

    model_config = ConfigDict(extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    time: datetime
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    tenant: str
    vendor: str
    vendorevent: str | None = None
    data: dict[str, Any]

    @property
    def routing_key(self) -> str:
        return f"{self.tenant}.{self.type}"

    def to_json(self) -> bytes:
        """The event's JSON, exactly as ``orjson.dumps(self.model_dump(mode="json"))`` gives it.

        Why not that: pydantic's JSON-mode dump walks the whole payload again to infer the type
        of every ``Any`` value, though ``make_event`` filled ``data`` from a JSON-mode dump
        already. Here orjson writes the fields as they are; only ``time`` needs pydantic's
        rendering (``Z`` for UTC). Whatever orjson would write differently from pydantic
        (datetimes, dataclasses, subclasses of str/int/dict/list: passed through to no
        ``default``; Decimal, bytes, sets, non-str keys ...) makes it fail, and then the exact
        pydantic dump is used. Not cached: connectors amend ``data`` after building the event.
        """
        values = self.__dict__
        fields = {name: values[name] for name in _CLOUD_EVENT_FIELDS}
        fields["time"] = _DATETIME_JSON.to_python(self.time, mode="json")
        try:
            return orjson.dumps(fields, option=_ORJSON_NATIVE_ONLY)
        except orjson.JSONEncodeError:
            return orjson.dumps(self.model_dump(mode="json"))


#: The envelope's fields in declaration order: what ``model_dump`` writes, nothing else.
_CLOUD_EVENT_FIELDS: Final = tuple(CloudEvent.model_fields)


class StreamMemory:
    """What a normalizer remembers between the messages of one stream (one PBX link, or one
    ``gateway normalize`` run): e.g. a call's direction or a channel's state, keyed by the
    vendor's call or channel id.

    Bounded (least recently used entries go first) so a call whose end was never seen cannot
    grow it for ever. The normalizer stays a function of (messages so far, context): feeding the
    same stream in the same order gives the same events.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._limit = limit

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return default

    def set(self, key: str, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def pop(self, key: str, default: Any = None) -> Any:
        return self._items.pop(key, default)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True, slots=True)
class NormalizeContext:
    """What a pure normalizer may know besides the payload: who the PBX is, when it arrived and
    what the earlier messages of the same stream said (``memory``; a fresh one by default)."""

    tenant: str
    vendor: str
    tz: ZoneInfo
    received_at: datetime  # aware, UTC; stands in for facts that carry no time of their own
    include_raw: bool = False
    memory: StreamMemory = field(default_factory=StreamMemory)


def event_id(tenant: str, vendor: str, *identity: object) -> str:
    """Same tenant + vendor identity of a fact -> same id, so consumers can de-duplicate."""
    digest = hashlib.sha256(orjson.dumps([tenant, vendor, *map(str, identity)])).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def make_event(
    ctx: NormalizeContext,
    type_: str,
    data: BaseModel | dict[str, Any],
    *,
    identity: tuple[object, ...],
    time: datetime | None = None,
    subject: str | None = None,
    vendorevent: str | None = None,
    raw: Any = None,
) -> CloudEvent:
    """Build an event; ``identity`` is the vendor's identity of the fact (see docs/CONTRACT.md).

    ``data`` is the payload's model, or already its JSON-mode dump (by alias, without ``raw``)
    when the normalizer builds it valid by construction: validating and dumping a call report's
    members is a third of a Yeastar frame's normalizing. Such a dict is used as it is (not
    copied)."""
    if isinstance(data, dict):
        payload = data
    else:
        payload = data.model_dump(mode="json", by_alias=True, exclude={"raw"})
    if ctx.include_raw and raw is not None:
        payload["raw"] = raw
    return CloudEvent(
        id=event_id(ctx.tenant, ctx.vendor, type_, *identity),
        source=f"pbx://{ctx.tenant}",
        type=type_,
        time=time or ctx.received_at,
        subject=subject,
        tenant=ctx.tenant,
        vendor=ctx.vendor,
        vendorevent=vendorevent,
        data=payload,
    )


def rejected(
    ctx: NormalizeContext, text: str, error: str, vendorevent: str | None = None
) -> CloudEvent:
    """A payload that could not be understood: published, never dropped."""
    return make_event(
        ctx,
        "gateway.rejected",
        GatewayRejectedData(error=error, text=text),
        identity=(text, ctx.received_at.isoformat()),
        vendorevent=vendorevent,
    )


def connection_event(
    ctx: NormalizeContext, state: ConnectionState, reason: str | None
) -> CloudEvent:
    """The link to a PBX changed state; consumers learn when events may be missing."""
    return make_event(
        ctx,
        "gateway.connection",
        GatewayConnectionData(state=state, reason=reason),
        identity=(state, ctx.received_at.isoformat()),
    )


def gap_event(ctx: NormalizeContext, start: datetime, end: datetime, recovered: int) -> CloudEvent:
    """Events between ``start`` and ``end`` may be missing; ``recovered`` were back-filled."""
    return make_event(
        ctx,
        "gateway.gap",
        GatewayGapData(from_=start, to=end, recovered=recovered),
        identity=(start.isoformat(), end.isoformat()),
    )
