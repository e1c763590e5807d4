"""The public command contract (docs/CONTRACT.md section 2): one model per command, and the result.

A command body is ``{"command": "<name>", "args": {...}}``; ``command`` selects the args model.
Everything here is vendor-neutral: connectors map these args to their PBX's API and raise
:class:`CommandFailed` with a neutral :class:`ErrorCode`. :func:`parse_command` is the only way
in, and raises nothing but :class:`CommandInvalid`, so a malformed command always gets an
``invalid`` result instead of crashing the consumer.

Naming: ``<domain>.<verb>``, exactly two dot-separated words, so a binding such as
``<tenant>.call.*`` sees every call command. The uaCSTA phone controls therefore are
``call.uacsta_accept``, ``call.uacsta_refuse`` and ``call.uacsta_hangup`` (not
``call.uacsta.accept``), like ``call.record_start``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self, Union

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

MAX_COMMAND_BYTES = 64 * 1024

# --- results -------------------------------------------------------------------------------------


class ErrorCode(StrEnum):
    INVALID = "invalid"  # the command is malformed or the PBX refused its parameters
    UNSUPPORTED = "unsupported"  # this vendor / PBX cannot do it
    NOT_FOUND = "not_found"  # the channel, call, agent ... does not exist (any more)
    FORBIDDEN = "forbidden"  # the PBX denies the gateway this operation
    UNAVAILABLE = "unavailable"  # the PBX cannot be talked to (now)
    EXPIRED = "expired"  # the command's deadline passed before it was sent
    CONFLICT = "conflict"  # the target's state does not allow it
    FAILED = "failed"  # anything else the PBX answered
    TIMEOUT = "timeout"  # sent, but no answer before the deadline: the outcome is unknown


class CommandError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: ErrorCode
    message: str
    vendor_code: str | None = Field(default=None, description="The PBX's own error code")
    retryable: bool = Field(default=False, description="The same command may succeed later")


class CommandResult(BaseModel):
    """The reply to one command; ``command_id`` is the AMQP ``message_id`` of the command."""

    model_config = ConfigDict(extra="forbid")

    command_id: str
    ok: bool
    result: dict[str, Any] | None = None
    error: CommandError | None = None


class CommandFailed(Exception):
    """Raised by a connector when the PBX did not do what the command asked."""

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        *,
        vendor_code: str | int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(f"{ErrorCode(code).value}: {message}")
        self.code = ErrorCode(code)
        self.message = message
        self.vendor_code = None if vendor_code is None else str(vendor_code)
        self.retryable = retryable

    def to_error(self) -> CommandError:
        return CommandError(
            code=self.code,
            message=self.message,
            vendor_code=self.vendor_code,
            retryable=self.retryable,
        )


class CommandInvalid(Exception):
    """The body is not a valid command; ``errors`` lists every problem found."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(_format_error(e) for e in errors) or "invalid command")

    def to_error(self) -> CommandError:
        return CommandError(code=ErrorCode.INVALID, message=str(self))


def _format_error(error: dict[str, str]) -> str:
    field = error.get("field")
    return f"{field}: {error['message']}" if field else error["message"]


# --- field types ---------------------------------------------------------------------------------

#: An extension or phone number. Strings, never numbers: leading zeros and "+" matter.
Number = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
#: A PBX channel handle such as ``PJSIP/2000-0000008a`` (from call events).
ChannelId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
#: An opaque PBX object id (call id, agent id, queue id, prompt name ...).
Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
Ids = Annotated[list[Id], Field(min_length=1, max_length=100)]
StrictBool = Annotated[bool, Field(strict=True)]


def _rfc3339(value: Any) -> Any:
    if isinstance(value, str | datetime):
        return value
    raise ValueError("must be an RFC 3339 date-time string with a UTC offset")


#: An instant: RFC 3339 text with an offset (``Z`` or ``+08:00``); naive times are refused,
#: because a PBX-local wall clock and UTC differ and guessing would move the window.
Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


class CommandArgs(BaseModel):
    """Base of every args model: unknown fields are errors, and an optional absolute deadline."""

    model_config = ConfigDict(extra="forbid")

    deadline: Instant | None = Field(
        default=None,
        description="RFC 3339 with offset; not sent after it (expired), not awaited past it",
    )


def credential_field(name: str) -> bool:
    """Whether an args field of this name sets a credential (``password``, ``vm_password``,
    ``secret`` ...), as opposed to asking for one (``include_secrets``)."""
    return not name.startswith("include_") and ("password" in name or "secret" in name)


class CommandModel(BaseModel):
    """Base of every command model: ``command`` is a ``Literal`` name, ``args`` its arguments.

    A vendor plugin adds its own management commands as subclasses named ``<vendor>.<...>``
    (see ``gateway.connectors.plugin``).
    """

    model_config = ConfigDict(extra="forbid")

    command: str
    args: CommandArgs


def _one_of(model: BaseModel, *names: str, required: bool = True) -> None:
    given = [n for n in names if getattr(model, n) is not None]
    if len(given) > 1 or (required and not given):
        raise ValueError(f"give exactly one of {', '.join(names)}")


# --- call control --------------------------------------------------------------------------------


def _id_text(value: Any) -> Any:
    """An id given as a JSON integer (a call center's agent id) is kept as its digits."""
    if isinstance(value, bool):
        raise ValueError("must be an id, not a boolean")
    return str(value) if isinstance(value, int) else value


class CallDialArgs(CommandArgs):
    """Start a call from ``caller`` (extension, IVR, queue, ... or outside number) to ``callee``;
    on a call center whose calls start from an agent (Meiqia's click-to-dial), from ``agent_id``
    instead. A vendor refuses (``invalid``) what it cannot honour."""

    caller: Number | None = None
    callee: Number
    agent_id: Annotated[Id, BeforeValidator(_id_text)] | None = Field(
        default=None, description="The call center agent who places the call (instead of caller)"
    )
    trunk_number: Number | None = Field(
        default=None, description="Outside number shown to the callee (where the vendor lets it)"
    )
    user_data: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None,
        description="Text the vendor keeps with the call; data.user_data of its cdr.created",
    )
    dial_permission: Number | None = Field(
        default=None, description="Extension whose call permissions the call borrows"
    )
    auto_answer: StrictBool | None = Field(
        default=None, description="Caller's phone answers by itself (phones that support it)"
    )

    @model_validator(mode="after")
    def _from(self) -> Self:
        _one_of(self, "caller", "agent_id")
        return self


class ChannelArgs(CommandArgs):
    """Operations on one party of a live call, named by its channel id."""

    channel_id: ChannelId


class CallHangupArgs(CommandArgs):
    """Hang up one party (``channel_id``) or a whole paging / intercom group call."""

    channel_id: ChannelId | None = None
    paging_number: Number | None = None

    @model_validator(mode="after")
    def _target(self) -> Self:
        _one_of(self, "channel_id", "paging_number")
        return self


class CallParkArgs(ChannelArgs):
    """Park the party of ``channel_id``; the PBX picks a free slot unless ``slot`` is given."""

    slot: Number | None = None


class CallParkStatusArgs(CommandArgs):
    """List parked calls; the PBX takes no parameters."""


class CallTransferArgs(ChannelArgs):
    """Blind: ``channel_id`` is the party to move, ``target`` required.

    Attended: first ``target`` starts the consultation call from ``channel_id`` (the
    transferring party), then a second command with ``attended_action`` finishes it.
    """

    mode: Literal["blind", "attended"]
    target: Number | None = None
    attended_action: Literal["complete", "abort", "threeway", "swap"] | None = None
    dial_permission: Number | None = None

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.mode == "blind":
            if self.target is None or self.attended_action is not None:
                raise ValueError("a blind transfer needs target and no attended_action")
        else:
            _one_of(self, "target", "attended_action")
        return self


class CallListenArgs(ChannelArgs):
    """``listener`` (an extension) monitors the party of ``channel_id``."""

    listener: Number
    mode: Literal["listen", "whisper", "barge"] = "listen"


class CallAddMemberArgs(ChannelArgs):
    """The party of ``channel_id`` invites ``number`` into a conference call."""

    number: Number
    dial_permission: Number | None = None


class CallPlayPromptArgs(CommandArgs):
    """Call ``number`` and play PBX custom prompts (the API targets a number, not a channel)."""

    number: Number
    prompts: Annotated[list[Id], Field(min_length=1, max_length=50)]
    count: Annotated[int, Field(strict=True, ge=1, le=100)] | None = None
    volume: Annotated[int, Field(strict=True, ge=0, le=20)] | None = None
    dial_permission: Number | None = None
    auto_answer: StrictBool | None = None


class CallQueryArgs(CommandArgs):
    """Live calls: one call (``call_id``), all calls of a direction, or of one extension."""

    call_id: Id | None = None
    direction: Literal["inbound", "outbound", "internal"] | None = None
    extension: Number | None = None

    @model_validator(mode="after")
    def _filter(self) -> Self:
        _one_of(self, "call_id", "direction", "extension")
        return self


class UacstaArgs(CommandArgs):
    """Drive a uaCSTA-capable desk phone (answer / reject / hang up) from the PBX."""

    extension: Number
    call_id: Id = Field(description="The uaCSTA call id from the call.uacsta event")
    device_address: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=3, max_length=128)
    ] = Field(description="host:port of the phone's SIP endpoint, e.g. 192.168.5.2:5060")


# --- agents --------------------------------------------------------------------------------------


class AgentArgs(CommandArgs):
    """One queue agent, by the PBX's id or by extension number (as ``agent.*`` events name it);
    its queues likewise by id or by number; no queues means every queue the agent belongs to."""

    agent: Id | None = Field(
        default=None, description="The PBX's agent id (Yeastar: the extension id)"
    )
    extension: Number | None = Field(
        default=None, description="The agent's extension number, looked up on the PBX"
    )
    queues: Ids | None = Field(default=None, description="The PBX's queue ids")
    queue_numbers: Annotated[list[Number], Field(min_length=1, max_length=100)] | None = Field(
        default=None,
        description="Queue numbers (as agent.queue_status events name them), looked up on the PBX",
    )

    @model_validator(mode="after")
    def _one_agent(self) -> Self:
        if (self.agent is None) == (self.extension is None):
            raise ValueError("give exactly one of 'agent' (the PBX's id) or 'extension' (number)")
        if self.queues is not None and self.queue_numbers is not None:
            raise ValueError("give 'queues' (the PBX's ids) or 'queue_numbers', not both")
        return self


class AgentLoginArgs(AgentArgs):
    paused: StrictBool | None = Field(default=None, description="Log in paused")
    pause_reason: Id | None = Field(default=None, description="Pause reason code, e.g. *01")

    @model_validator(mode="after")
    def _reason(self) -> Self:
        if self.pause_reason is not None and self.paused is not True:
            raise ValueError("pause_reason needs paused: true")
        return self


class AgentPauseArgs(AgentArgs):
    pause_reason: Id | None = Field(default=None, description="Pause reason code, e.g. *01")


# --- CDR -----------------------------------------------------------------------------------------


class CdrSearchArgs(CommandArgs):
    """Call records in [start, end]; results are ``cdr.created`` events, paged."""

    start: Instant
    end: Instant
    caller: Number | None = None
    callee: Number | None = None
    disposition: Literal["answered", "no_answer", "busy", "failed", "voicemail"] | None = None
    fuzzy: StrictBool | None = Field(default=None, description="Match numbers partially")
    extension_group: Id | None = None
    page: Annotated[int, Field(strict=True, ge=1)] = 1
    page_size: Annotated[int, Field(strict=True, ge=1, le=10000)] = 100

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.end < self.start:
            raise ValueError("end is before start")
        return self


# --- the commands --------------------------------------------------------------------------------


class CallDial(CommandModel):
    command: Literal["call.dial"]
    args: CallDialArgs


class CallHangup(CommandModel):
    command: Literal["call.hangup"]
    args: CallHangupArgs


class CallHold(CommandModel):
    command: Literal["call.hold"]
    args: ChannelArgs


class CallUnhold(CommandModel):
    command: Literal["call.unhold"]
    args: ChannelArgs


class CallMute(CommandModel):
    command: Literal["call.mute"]
    args: ChannelArgs


class CallUnmute(CommandModel):
    command: Literal["call.unmute"]
    args: ChannelArgs


class CallPark(CommandModel):
    command: Literal["call.park"]
    args: CallParkArgs


class CallParkStatus(CommandModel):
    command: Literal["call.park_status"]
    args: CallParkStatusArgs


class CallTransfer(CommandModel):
    command: Literal["call.transfer"]
    args: CallTransferArgs


class CallListen(CommandModel):
    command: Literal["call.listen"]
    args: CallListenArgs


class CallAddMember(CommandModel):
    command: Literal["call.add_member"]
    args: CallAddMemberArgs


class CallPlayPrompt(CommandModel):
    command: Literal["call.play_prompt"]
    args: CallPlayPromptArgs


class CallRecordStart(CommandModel):
    command: Literal["call.record_start"]
    args: ChannelArgs


class CallRecordPause(CommandModel):
    command: Literal["call.record_pause"]
    args: ChannelArgs


class CallRecordResume(CommandModel):
    command: Literal["call.record_resume"]
    args: ChannelArgs


class CallAcceptInbound(CommandModel):
    """Let a held-back inbound call (call.incoming) continue to its route."""

    command: Literal["call.accept_inbound"]
    args: ChannelArgs


class CallRefuseInbound(CommandModel):
    command: Literal["call.refuse_inbound"]
    args: ChannelArgs


class CallQuery(CommandModel):
    command: Literal["call.query"]
    args: CallQueryArgs


class CallUacstaAccept(CommandModel):
    command: Literal["call.uacsta_accept"]
    args: UacstaArgs


class CallUacstaRefuse(CommandModel):
    command: Literal["call.uacsta_refuse"]
    args: UacstaArgs


class CallUacstaHangup(CommandModel):
    command: Literal["call.uacsta_hangup"]
    args: UacstaArgs


class AgentLogin(CommandModel):
    command: Literal["agent.login"]
    args: AgentLoginArgs


class AgentLogout(CommandModel):
    command: Literal["agent.logout"]
    args: AgentArgs


class AgentPause(CommandModel):
    command: Literal["agent.pause"]
    args: AgentPauseArgs


class AgentUnpause(CommandModel):
    command: Literal["agent.unpause"]
    args: AgentArgs


class CdrSearch(CommandModel):
    command: Literal["cdr.search"]
    args: CdrSearchArgs


_MODELS: tuple[type[CommandModel], ...] = (
    CallDial,
    CallHangup,
    CallHold,
    CallUnhold,
    CallMute,
    CallUnmute,
    CallPark,
    CallParkStatus,
    CallTransfer,
    CallListen,
    CallAddMember,
    CallPlayPrompt,
    CallRecordStart,
    CallRecordPause,
    CallRecordResume,
    CallAcceptInbound,
    CallRefuseInbound,
    CallQuery,
    CallUacstaAccept,
    CallUacstaRefuse,
    CallUacstaHangup,
    AgentLogin,
    AgentLogout,
    AgentPause,
    AgentUnpause,
    CdrSearch,
)

Command = Annotated[
    Union[_MODELS],  # type: ignore[valid-type]  # noqa: UP007 - one list of models, above
    Field(discriminator="command"),
]


def command_name(model: type[CommandModel]) -> str:
    """The ``command`` literal of a command model; ``ValueError`` when it is not one."""
    args = getattr(model.model_fields["command"].annotation, "__args__", None)
    if not args or not isinstance(args[0], str):
        raise ValueError(f"{model.__name__}.command must be a Literal name")
    return args[0]


#: The contract's command names (vendor plugins may add their own, see :class:`CommandCatalog`).
BASE_COMMANDS: tuple[str, ...] = tuple(command_name(model) for model in _MODELS)


# --- parsing -------------------------------------------------------------------------------------


def _invalid(message: str, field: str = "") -> CommandInvalid:
    return CommandInvalid([{"field": field, "message": message}])


def _field(loc: tuple[int | str, ...], command: str) -> str:
    parts = list(loc)
    if parts and parts[0] == command:  # the discriminated union puts the tag first
        parts = parts[1:]
    return ".".join(str(p) for p in parts)


def _json_object(body: bytes | str) -> dict[str, Any]:
    if isinstance(body, str):
        try:
            raw = body.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _invalid(f"body is not valid UTF-8 text: {exc.reason}") from None
    elif isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
    else:
        raise _invalid(f"body must be bytes or str, not {type(body).__name__}")
    if len(raw) > MAX_COMMAND_BYTES:
        raise _invalid(f"body is {len(raw)} bytes, more than the {MAX_COMMAND_BYTES} allowed")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _invalid(f"body must be a JSON object, not {type(obj).__name__}")
    return obj


class CommandCatalog:
    """Every command the gateway can parse: the contract's, plus vendor plugins' own models."""

    def __init__(self, extra: Iterable[type[CommandModel]] = ()) -> None:
        self.models: tuple[type[CommandModel], ...] = (*_MODELS, *extra)
        self.names = {command_name(model): model for model in self.models}
        # a value built at run time (not a type alias): the annotation tells mypy so
        union: Any = Annotated[Union[self.models], Field(discriminator="command")]  # noqa: UP007
        self._adapter: TypeAdapter[Any] = TypeAdapter(union)

    def _parse(self, body: bytes | str) -> CommandModel:
        obj = _json_object(body)
        command = obj.get("command")
        if "command" not in obj:
            raise _invalid("field required", "command")
        if not isinstance(command, str):
            raise _invalid(f"must be a string, not {type(command).__name__}", "command")
        if command not in self.names:
            raise _invalid(f"unknown command {command[:100]!r}", "command")
        try:
            parsed: CommandModel = self._adapter.validate_python(obj)
        except ValidationError as exc:
            errors = [
                {"field": _field(error["loc"], command), "message": error["msg"]}
                for error in exc.errors(include_url=False, include_input=False)
            ]
            raise CommandInvalid(errors) from None
        return parsed

    def parse(self, body: bytes | str) -> CommandModel:
        """Size limit, JSON, object, known command, args; raises only :class:`CommandInvalid`."""
        try:
            return self._parse(body)
        except CommandInvalid:
            raise
        except Exception as exc:  # a validator bug must still end as an ``invalid`` result
            raise _invalid(f"command could not be read: {type(exc).__name__}: {exc}") from None

    def json_schema(self) -> dict[str, Any]:
        """JSON Schema (2020-12) of a command body (``Command``) and of its result."""
        template = "#/$defs/{model}"
        command = self._adapter.json_schema(ref_template=template)
        result = CommandResult.model_json_schema(ref_template=template)
        defs: dict[str, Any] = {**command.pop("$defs", {}), **result.pop("$defs", {})}
        defs["Command"] = command
        defs["CommandResult"] = result
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "PBX gateway commands",
            "description": "Body of a message on pbx.commands (Command) and its reply"
            " (CommandResult)",
            "$defs": dict(sorted(defs.items())),
            "anyOf": [{"$ref": "#/$defs/Command"}, {"$ref": "#/$defs/CommandResult"}],
        }


#: The contract's commands alone (what a gateway without plugin commands parses).
CONTRACT_COMMANDS = CommandCatalog()
#: command name -> model, of the contract's commands
COMMANDS: dict[str, type[CommandModel]] = CONTRACT_COMMANDS.names


def parse_command(body: bytes | str) -> CommandModel:
    """:meth:`CommandCatalog.parse` over the contract's commands."""
    return CONTRACT_COMMANDS.parse(body)


def command_json_schema() -> dict[str, Any]:
    return CONTRACT_COMMANDS.json_schema()
