"""XSwitch management commands: one model per REST endpoint of the XCC document (seed 002).

Names are ``xswitch.<resource>.<verb>`` with one verb per REST action, the same everywhere:

=========  ===========  ==========================================================
verb       REST action  answer
=========  ===========  ==========================================================
list       ``list``     ``{"data": [...], "row_count": n}`` (every page), or one page
get        ``get``      the record (an IVR with its sub-menus in ``ivrs``)
create     ``add``      ``{"id": "<new id>"}``
update     ``set``      ``{"id": "<id>", ...}``
delete     ``del``      ``{"id": "<id>", ...}``
=========  ===========  ==========================================================

Arguments are checked by pydantic when the command is parsed, so nothing reaches the PBX
before they are valid; unknown fields are errors. Field names are the document's. Where the
document disagrees with itself the client sends one form, said at the field; the simulator
(``gateway.sim.xswitch.rest``) accepts every form the document shows:

* ids: the examples send ``"id":"236"`` (lines 147, 185, 242, 379, 517, 816, 1058, 1149) except
  ``ivrs/set`` (``"id":1``, line 975). They are accepted as a string of digits or an integer and
  always sent as the string, the majority form, which a server reading ``"1"`` or ``1`` takes.
* ``page``/``page_size`` are sent as strings, as every example does (lines 75, 269, 764, 1007).
* time definitions: ``work_time`` and ``offday`` are two resources sharing ``/api/xcc/timeDef/*``
  with a fixed ``type``; they take different fields, so they are two sets of commands with their
  own checks. The delete section says ``offwork`` (line 684) while its example, the list, add
  and set say ``offday`` (lines 603, 633, 658, 691): the client sends ``offday``.
* hotlines: some examples post to ``/api/xcc/hostlines/...`` (lines 1060, 1098, 1128, 1150),
  every heading says ``/api/xcc/hotlines/...`` (lines 992, 1048, 1081, 1110, 1138): the client
  sends ``hotlines``. Likewise ``/api/xcc/ivrs/list`` (line 749), not the example's ``ivr/list``.
* flags: each endpoint's own documented form: queues ``true/false`` (line 321), IVRs ``1``/``0``
  numbers (lines 733, 975), hotlines ``"1"``/``"0"`` (line 1087; the ``set`` example's
  ``"true"``, line 1127, contradicts its own parameter list).
* number lists go as one comma-separated string, as the records show them (line 1019).

List commands read every page (``page``/``page_size``/``page_count``, lines 65-71) unless the
command names a ``page``: then that page alone, with the server's counts.

The agent-status section is ``TODO`` in the document (line 1158): there is no command for it.
"""

from __future__ import annotations

import calendar
from typing import Annotated, Any, ClassVar, Final, Literal, Self

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)

from gateway.connectors.xswitch.client import XccClient, as_int, records
from gateway.schema.commands import (
    CommandArgs,
    CommandFailed,
    CommandModel,
    ErrorCode,
    Number,
    command_name,
)

# --- field types ---------------------------------------------------------------------------------


def _id_text(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be an id (digits), not a boolean")
    return str(value) if isinstance(value, int) else value


def _flag(value: Any) -> Any:
    """true/false as JSON, 1/0 (lines 733, 1087) or their text forms (line 1127)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "0", "true", "false"):
        return value.strip().lower() in ("1", "true")
    raise ValueError("must be true/false or 1/0")


def _number_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _month_day(value: str) -> str:
    """``03-03 00:00:00`` (line 635): a real month and day, any year's (29 February too)."""
    month, day = int(value[0:2]), int(value[3:5])
    if day > calendar.monthrange(2000, month)[1]:
        raise ValueError(f"{value[:5]} is not a day of the year")
    return value


#: An object id of the PBX: digits, given as a string or an integer, sent as the string.
XccId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{1,18}$"),
    BeforeValidator(_id_text),
]
Flag = Annotated[bool, BeforeValidator(_flag)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
#: Free text that may be emptied (descriptions, caller id names: ``""`` in the records).
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1024)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Context = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Domain = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
]
Host = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.:-]{1,253}$")]
Media = Annotated[str, StringConstraints(strip_whitespace=True, max_length=512)]
SortField = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
Seconds = Annotated[int, Field(strict=True, ge=0, le=86_400)]
Count = Annotated[int, Field(strict=True, ge=0, le=100_000)]
NumberList = Annotated[list[Number], Field(max_length=200), BeforeValidator(_number_list)]
#: A function key of an IVR menu (``digits``, line 727).
Digits = Annotated[str, StringConstraints(pattern=r"^[0-9*#]{1,16}$")]
#: ``08:00:00`` (line 486; line 485's ``08:00:0`` is a typo).
Clock = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$")]
#: ``03-03 00:00:00`` (lines 635-636): month-day and time, no year.
MonthDay = Annotated[
    str,
    StringConstraints(
        pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
        r" ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$"
    ),
    AfterValidator(_month_day),
]
#: 1-7, Monday to Sunday (line 484); sent as the example's string ``"5"`` (line 492).
Weekday = Annotated[str, StringConstraints(pattern=r"^[1-7]$"), BeforeValidator(_id_text)]
SortOrder = Literal["ascend", "descend"]  # lines 265, 758, 1001

#: The nine agent strategies of lines 302-310 (repeated at 394-402).
QueueStrategy = Literal[
    "ring-all",
    "longest-idle-agent",
    "round-robin",
    "top-down",
    "agent-with-least-talk-time",
    "agent-with-fewest-calls",
    "sequentially-by-agent-order",
    "random",
    "ring-progressively",
]
QUEUE_STRATEGIES: Final[tuple[str, ...]] = QueueStrategy.__args__  # type: ignore[attr-defined]


class QueueAction(BaseModel):
    """What a queue does on overflow or timeout (lines 329-351): hang up, or transfer to a
    ``queue``, ``number`` or ``voicemail`` given in ``data``."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["hangup", "transfer"]
    type: Literal["queue", "number", "voicemail"] | None = None
    data: Number | None = None

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.action == "transfer" and (self.type is None or self.data is None):
            raise ValueError("a transfer needs 'type' and 'data'")
        if self.action == "hangup" and (self.type is not None or self.data is not None):
            raise ValueError("a hangup takes no 'type' or 'data'")
        return self


# --- args ----------------------------------------------------------------------------------------

#: Args fields that are not request body fields.
_NOT_SENT: Final = frozenset({"deadline", "page", "page_size", "include_secrets"})
#: What an extension record holds that lets anyone register as it (``ha1`` = MD5 of
#: user:realm:password, lines 84-85) or read its voicemail: left out of results unless asked.
EXTENSION_SECRETS: Final = ("ha1", "ha1b", "password", "vm_password")


class XccArgs(CommandArgs):
    """Args sent as the request body: fields left out stay out (the PBX keeps its value)."""

    #: How this endpoint writes a boolean: JSON ``true``, number ``1`` or text ``"1"``.
    flags: ClassVar[Literal["json", "number", "text"]] = "json"

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in self:
            if name not in _NOT_SENT and value is not None:
                out[name] = self._wire(value)
        return out

    def _wire(self, value: Any) -> Any:
        if isinstance(value, bool):
            if self.flags == "number":
                return int(value)
            return ("1" if value else "0") if self.flags == "text" else value
        if isinstance(value, list):
            return ",".join(value)
        if isinstance(value, QueueAction):
            # "格式为 json" (line 329): the value is JSON text, which is only worth saying of a
            # string inside a JSON body. The simulator also takes the object itself.
            return orjson.dumps(value.model_dump(exclude_none=True)).decode()
        return value


def _changes(args: BaseModel, *fixed: str) -> None:
    """An update must change something besides its ``fixed`` key fields."""
    if not any(
        getattr(args, name) is not None
        for name in type(args).model_fields
        if name not in (*fixed, "deadline")
    ):
        raise ValueError("nothing to change: give at least one field besides " + ", ".join(fixed))


class ById(XccArgs):
    """``get`` / ``del``: one object by its id."""

    id: XccId


class ListArgs(XccArgs):
    """``list``: every page, or only ``page`` when given; ``page_size`` rows per request."""

    page: Annotated[int, Field(strict=True, ge=1)] | None = Field(
        default=None, description="Only this page (and the server's counts); default: all pages"
    )
    page_size: Annotated[int, Field(strict=True, ge=1, le=1000)] = 100
    sort_field: SortField | None = None
    sort_order: SortOrder | None = None


class NoArgs(XccArgs):
    """The endpoint takes nothing but the token."""


# extensions (lines 53-247) ------------------------------------------------------------------------


class ExtensionListArgs(ListArgs):
    """``search_key`` in the field ``search_field`` (lines 67-68)."""

    include_secrets: StrictBool = Field(
        default=False, description="keep ha1/ha1b/vm_password in the records (SIP credentials)"
    )

    search_field: SortField | None = None
    search_key: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None

    @model_validator(mode="after")
    def _search(self) -> Self:
        if (self.search_field is None) != (self.search_key is None):
            raise ValueError("give search_field and search_key together")
        return self


class _ExtensionFields(XccArgs):
    name: Name | None = None
    password: Password | None = Field(default=None, repr=False)
    type: Literal["SIP", "VERTO", "TEL"] | None = Field(default=None, description="default SIP")
    cid_number: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = (
        None
    )
    cid_name: Text | None = None
    context: Context | None = Field(default=None, description="default 'default'")
    domain: Domain | None = Field(default=None, description="default xswitch.cn")


class ExtensionCreateArgs(_ExtensionFields):
    """``extensions/add`` (lines 196-215); the number and its password are needed."""

    extn: Number
    password: Password = Field(repr=False)


class ExtensionUpdateArgs(_ExtensionFields):
    """``extensions/set`` (lines 225-243): the number itself cannot change (not a parameter)."""

    id: XccId

    @model_validator(mode="after")
    def _some(self) -> Self:
        _changes(self, "id")
        return self


# queues (lines 249-445) ---------------------------------------------------------------------------


class QueueListArgs(ListArgs):
    name: Name | None = Field(default=None, description="part of the queue name (line 262)")


class _QueueFields(XccArgs):
    description: Text | None = None
    moh_sound: Media | None = None
    greeting: Media | None = None
    strategy: QueueStrategy | None = None
    notify_position: bool | None = None
    notify_position_interval: Seconds | None = None
    notify_agent_answer: bool | None = None
    retain_agent: Count | None = None
    agent_timeout: Seconds | None = None
    wait_timeout: Seconds | None = None
    wait_timeout_without_agent: Seconds | None = None
    capacity: Count | None = None
    overflow_capacity_action: QueueAction | None = None
    wait_timeout_action: QueueAction | None = None
    wait_timeout_without_agent_action: QueueAction | None = None


class QueueCreateArgs(_QueueFields):
    """``queues/add`` (lines 298-358); ``name`` must be unique."""

    name: Name
    server_ip: Host | None = None


class QueueUpdateArgs(_QueueFields):
    """``queues/set`` (lines 390-441): name and server are not parameters there."""

    id: XccId

    @model_validator(mode="after")
    def _some(self) -> Self:
        _changes(self, "id")
        return self


# time definitions (lines 472-696) -----------------------------------------------------------------


class WorkTimeCreateArgs(XccArgs):
    """``timeDef/add`` with ``type: work_time`` (lines 478-493)."""

    weekday: Weekday
    start_time: Clock
    end_time: Clock

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.end_time <= self.start_time:
            raise ValueError("end_time must be after start_time")
        return self


class WorkTimeUpdateArgs(XccArgs):
    """``timeDef/set`` with ``type: work_time`` (lines 503-518): the weekday stays."""

    id: XccId
    start_time: Clock | None = None
    end_time: Clock | None = None

    @model_validator(mode="after")
    def _order(self) -> Self:
        _changes(self, "id")
        if self.start_time and self.end_time and self.end_time <= self.start_time:
            raise ValueError("end_time must be after start_time")
        return self


class OffdayCreateArgs(XccArgs):
    """``timeDef/add`` with ``type: offday`` (lines 628-643). A day off may run over New Year,
    so the end is not required to come after the start."""

    name: Name
    start_date: MonthDay
    end_date: MonthDay


class OffdayUpdateArgs(XccArgs):
    """``timeDef/set`` with ``type: offday`` (lines 653-669)."""

    id: XccId
    name: Name | None = None
    start_date: MonthDay | None = None
    end_date: MonthDay | None = None

    @model_validator(mode="after")
    def _some(self) -> Self:
        _changes(self, "id")
        return self


# IVRs (lines 698-980) -----------------------------------------------------------------------------


class IvrListArgs(ListArgs):
    """The top-level (``level`` 0) IVRs only (line 745)."""

    name: Name | None = Field(default=None, description="part of the IVR name (line 754)")


class _IvrFields(XccArgs):
    flags: ClassVar[Literal["json", "number", "text"]] = "number"  # "call_extn_allowed":1

    nbr: Number | None = None
    type: Literal["transfer", "next", "prev", "top"] | None = None
    voice_type: Literal["file"] | None = Field(default=None, description="only 'file' (line 716)")
    media_file: Media | None = None
    repeat_timeout: Seconds | None = None
    repeat_prompts: Count | None = None
    call_extn_allowed: Flag | None = None
    record: Literal["close", "miss", "all"] | None = None
    transfer_time: Seconds | None = None
    timeout_enable: Flag | None = None
    timeout: Seconds | None = None
    business_type: Literal["order", "memory", "ringall", "queue"] | None = None
    numbers: NumberList | None = None
    digits: Digits | None = None


class IvrCreateArgs(_IvrFields):
    """``ivrs/add`` (lines 706-735): a menu at ``level`` 0, or below ``parent_id``."""

    name: Name
    level: Annotated[int, Field(strict=True, ge=0, le=32)] | None = None
    parent_id: XccId | None = None

    @model_validator(mode="after")
    def _place(self) -> Self:
        if self.parent_id is not None and not self.level:
            raise ValueError("a sub-menu (parent_id) needs its level, 1 or more")
        if self.level and self.parent_id is None:
            raise ValueError(f"a menu at level {self.level} needs its parent_id")
        return self


class IvrUpdateArgs(_IvrFields):
    """``ivrs/set`` (lines 949-976): level and parent are not parameters there."""

    id: XccId
    name: Name | None = None

    @model_validator(mode="after")
    def _some(self) -> Self:
        _changes(self, "id")
        return self


# hotlines (lines 982-1154) ------------------------------------------------------------------------


class HotlineListArgs(ListArgs):
    nbr: Number | None = Field(default=None, description="part of the number (line 997)")


class _HotlineFields(XccArgs):
    flags: ClassVar[Literal["json", "number", "text"]] = "text"  # "period_enable":"1"

    period_enable: Flag | None = None
    period_type: Literal["work", "holiday", "off"] | None = None
    numbers: NumberList | None = None
    description: Text | None = None


class HotlineCreateArgs(_HotlineFields):
    """``hotlines/add`` (lines 1081-1098)."""

    nbr: Number
    type: Literal["only", "ringall", "ivr", "queue"]


class HotlineUpdateArgs(_HotlineFields):
    """``hotlines/set`` (lines 1110-1128)."""

    id: XccId
    nbr: Number | None = None
    type: Literal["only", "ringall", "ivr", "queue"] | None = None

    @model_validator(mode="after")
    def _some(self) -> Self:
        _changes(self, "id")
        return self


# --- the commands --------------------------------------------------------------------------------

#: How an endpoint answers: ``page`` a paged list, ``rows`` a bare array, ``record`` one object,
#: ``tree`` an array holding one IVR and its sub-menus, ``write`` an id (or ``{}``).
Answer = Literal["page", "rows", "record", "tree", "write"]


class XccCommand(CommandModel):
    """A command that is one XCC REST call: ``path``, fields the endpoint fixes, answer kind."""

    path: ClassVar[str]
    answer: ClassVar[Answer]
    fixed: ClassVar[dict[str, str]] = {}

    args: XccArgs


class ExtensionList(XccCommand):
    path = "/api/xcc/extensions/list"
    answer = "page"
    command: Literal["xswitch.extension.list"]
    args: ExtensionListArgs


class ExtensionGetArgs(ById):
    include_secrets: StrictBool = Field(
        default=False, description="keep ha1/ha1b/vm_password in the record (SIP credentials)"
    )


class ExtensionGet(XccCommand):
    path = "/api/xcc/extensions/get"
    answer = "record"
    command: Literal["xswitch.extension.get"]
    args: ExtensionGetArgs


class ExtensionCreate(XccCommand):
    path = "/api/xcc/extensions/add"
    answer = "write"
    command: Literal["xswitch.extension.create"]
    args: ExtensionCreateArgs


class ExtensionUpdate(XccCommand):
    path = "/api/xcc/extensions/set"
    answer = "write"
    command: Literal["xswitch.extension.update"]
    args: ExtensionUpdateArgs


class ExtensionDelete(XccCommand):
    path = "/api/xcc/extensions/del"
    answer = "write"
    command: Literal["xswitch.extension.delete"]
    args: ById


class QueueList(XccCommand):
    path = "/api/xcc/queues/list"
    answer = "page"
    command: Literal["xswitch.queue.list"]
    args: QueueListArgs


class QueueCreate(XccCommand):
    path = "/api/xcc/queues/add"
    answer = "write"
    command: Literal["xswitch.queue.create"]
    args: QueueCreateArgs


class QueueUpdate(XccCommand):
    path = "/api/xcc/queues/set"
    answer = "write"
    command: Literal["xswitch.queue.update"]
    args: QueueUpdateArgs


class QueueDelete(XccCommand):
    path = "/api/xcc/queues/del"
    answer = "write"
    command: Literal["xswitch.queue.delete"]
    args: ById


class NodeList(XccCommand):
    """The XSwitch nodes of a cluster (lines 447-470)."""

    path = "/api/xcc/freeswitch/list"
    answer = "rows"
    command: Literal["xswitch.node.list"]
    args: NoArgs


_WORK_TIME: Final = {"type": "work_time"}
_OFFDAY: Final = {"type": "offday"}


class WorkTimeList(XccCommand):
    path = "/api/xcc/timeDef/list"
    answer = "rows"
    fixed = _WORK_TIME
    command: Literal["xswitch.work_time.list"]
    args: NoArgs


class WorkTimeCreate(XccCommand):
    path = "/api/xcc/timeDef/add"
    answer = "write"
    fixed = _WORK_TIME
    command: Literal["xswitch.work_time.create"]
    args: WorkTimeCreateArgs


class WorkTimeUpdate(XccCommand):
    path = "/api/xcc/timeDef/set"
    answer = "write"
    fixed = _WORK_TIME
    command: Literal["xswitch.work_time.update"]
    args: WorkTimeUpdateArgs


class WorkTimeDelete(XccCommand):
    path = "/api/xcc/timeDef/del"
    answer = "write"
    fixed = _WORK_TIME
    command: Literal["xswitch.work_time.delete"]
    args: ById


class OffdayList(XccCommand):
    path = "/api/xcc/timeDef/list"
    answer = "rows"
    fixed = _OFFDAY
    command: Literal["xswitch.offday.list"]
    args: NoArgs


class OffdayCreate(XccCommand):
    path = "/api/xcc/timeDef/add"
    answer = "write"
    fixed = _OFFDAY
    command: Literal["xswitch.offday.create"]
    args: OffdayCreateArgs


class OffdayUpdate(XccCommand):
    path = "/api/xcc/timeDef/set"
    answer = "write"
    fixed = _OFFDAY
    command: Literal["xswitch.offday.update"]
    args: OffdayUpdateArgs


class OffdayDelete(XccCommand):
    path = "/api/xcc/timeDef/del"
    answer = "write"
    fixed = _OFFDAY  # not line 684's "offwork": see the module docstring
    command: Literal["xswitch.offday.delete"]
    args: ById


class IvrList(XccCommand):
    path = "/api/xcc/ivrs/list"
    answer = "page"
    command: Literal["xswitch.ivr.list"]
    args: IvrListArgs


class IvrGet(XccCommand):
    """One IVR with every menu below it, nested in ``ivrs`` (lines 802-921)."""

    path = "/api/xcc/ivrs/get"
    answer = "tree"
    command: Literal["xswitch.ivr.get"]
    args: ById


class IvrCreate(XccCommand):
    path = "/api/xcc/ivrs/add"
    answer = "write"
    command: Literal["xswitch.ivr.create"]
    args: IvrCreateArgs


class IvrUpdate(XccCommand):
    path = "/api/xcc/ivrs/set"
    answer = "write"
    command: Literal["xswitch.ivr.update"]
    args: IvrUpdateArgs


class IvrDelete(XccCommand):
    path = "/api/xcc/ivrs/del"
    answer = "write"
    command: Literal["xswitch.ivr.delete"]
    args: ById


class HotlineList(XccCommand):
    path = "/api/xcc/hotlines/list"
    answer = "page"
    command: Literal["xswitch.hotline.list"]
    args: HotlineListArgs


class HotlineGet(XccCommand):
    path = "/api/xcc/hotlines/get"
    answer = "record"
    command: Literal["xswitch.hotline.get"]
    args: ById


class HotlineCreate(XccCommand):
    path = "/api/xcc/hotlines/add"
    answer = "write"
    command: Literal["xswitch.hotline.create"]
    args: HotlineCreateArgs


class HotlineUpdate(XccCommand):
    path = "/api/xcc/hotlines/set"
    answer = "write"
    command: Literal["xswitch.hotline.update"]
    args: HotlineUpdateArgs


class HotlineDelete(XccCommand):
    path = "/api/xcc/hotlines/del"
    answer = "write"
    command: Literal["xswitch.hotline.delete"]
    args: ById


#: Every management command, for ``VendorPlugin(command_models=...)``.
COMMAND_MODELS: Final[tuple[type[XccCommand], ...]] = (
    ExtensionList,
    ExtensionGet,
    ExtensionCreate,
    ExtensionUpdate,
    ExtensionDelete,
    QueueList,
    QueueCreate,
    QueueUpdate,
    QueueDelete,
    NodeList,
    WorkTimeList,
    WorkTimeCreate,
    WorkTimeUpdate,
    WorkTimeDelete,
    OffdayList,
    OffdayCreate,
    OffdayUpdate,
    OffdayDelete,
    IvrList,
    IvrGet,
    IvrCreate,
    IvrUpdate,
    IvrDelete,
    HotlineList,
    HotlineGet,
    HotlineCreate,
    HotlineUpdate,
    HotlineDelete,
)

#: command name -> REST path (the documentation's command table).
ENDPOINTS: Final[dict[str, str]] = {command_name(m): m.path for m in COMMAND_MODELS}
#: The names, for ``VendorPlugin(commands=...)``.
COMMAND_NAMES: Final = frozenset(ENDPOINTS)


# --- execution ---------------------------------------------------------------------------------


async def execute_rest(client: XccClient, command: CommandModel) -> dict[str, Any]:
    """Run one management command: its request, its answer as a result dict (extension
    credentials left out unless ``include_secrets``: results travel on the bus)."""
    result = await _execute(client, command)
    if command.command.startswith("xswitch.extension.") and not getattr(
        command.args, "include_secrets", False
    ):
        for record in [result, *(result.get("data") or [])]:
            if isinstance(record, dict):
                for secret in EXTENSION_SECRETS:
                    record.pop(secret, None)
    return result


async def _execute(client: XccClient, command: CommandModel) -> dict[str, Any]:
    if not isinstance(command, XccCommand):
        raise CommandFailed(ErrorCode.UNSUPPORTED, f"not an XCC REST command: {command.command!r}")
    args = command.args
    path = command.path
    body = {**args.body(), **command.fixed}
    if command.answer == "page" and isinstance(args, ListArgs):
        if args.page is None:
            rows = await client.list_all(path, body, page_size=args.page_size)
            return {"data": rows, "row_count": len(rows)}
        answer = await client.call(
            path, {**body, "page": str(args.page), "page_size": str(args.page_size)}
        )
        return {
            "data": records(answer),
            "page": as_int(answer.get("page")) or args.page,
            "page_size": args.page_size,
            "row_count": as_int(answer.get("row_count")),
            "page_count": as_int(answer.get("page_count")),
        }
    answer = await client.call(path, body)
    if command.answer == "rows":
        return {"data": records(answer)}
    if command.answer == "record":
        if not answer:
            raise CommandFailed(ErrorCode.NOT_FOUND, f"{path}: no {command.command} answer")
        return answer
    if command.answer == "tree":
        return _tree_root(path, answer, getattr(args, "id", ""))
    # A write: the command's own id wins over the answer's, which the document's examples
    # sometimes get wrong (timeDef/set and del answer "6" for 5 and 4: lines 522, 592, 696).
    ident = getattr(args, "id", None)
    return answer if ident is None else {**answer, "id": ident}


def _tree_root(path: str, answer: dict[str, Any], ident: str) -> dict[str, Any]:
    """``ivrs/get`` answers an array holding the IVR (line 822); the result is that record."""
    rows = records(answer)
    if not rows:
        raise CommandFailed(ErrorCode.NOT_FOUND, f"{path}: no IVR {ident}")
    for row in rows:
        if str(row.get("id")) == ident:
            return row
    return rows[0]
