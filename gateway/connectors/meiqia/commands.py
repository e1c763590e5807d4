"""Meiqia commands (``call.dial``, ``cdr.search`` and one per management endpoint): what each
sends and answers is in docs/vendors/meiqia.md, "Commands". What the contract's models allow but
Meiqia cannot do is refused ``invalid`` by :func:`callout_body` / :func:`records_body`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal

from pydantic import BeforeValidator, Field, StringConstraints

from gateway.connectors.meiqia.client import MeiqiaClient
from gateway.connectors.meiqia.normalize import SECRET_FIELDS, records_events
from gateway.connectors.meiqia.pollers import RECORDS_PATH, SIPS_PATH, rfc3339, seat_rows
from gateway.schema.commands import (
    CallDialArgs,
    CdrSearchArgs,
    CommandArgs,
    CommandFailed,
    CommandModel,
    ErrorCode,
    Number,
    command_name,
)
from gateway.schema.events import NormalizeContext

CALLOUT_PATH: Final = "callout"
SIP_BIND_PATH: Final = "sip_bind_agent"
NUMBER_GROUPS_PATH: Final = "rule_outnumber_group"
ASSIGN_PATH: Final = "agent/outnumber_group"
#: "自定义数据(如BusinessID、UUID之类的,最长100字符)".
USER_DATA_MAX: Final = 100
#: ``states`` a contract disposition stands for (see :mod:`.normalize`).
DISPOSITION_STATES: Final[dict[str, list[str]]] = {
    "answered": ["接听"],
    "no_answer": ["主叫未接", "被叫未接", "振铃未接", "队列放弃", "ivr"],
}


def _int_id(value: Any) -> Any:
    """An id the document types ``integer``/``int64``: a number, or its digits as text."""
    if isinstance(value, bool):
        raise ValueError("must be an integer id, not a boolean")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


#: An agent, seat group ... id: ``int64`` in the document, given as a number or digits.
MeiqiaId = Annotated[int, Field(strict=True, ge=1, le=2**63 - 1), BeforeValidator(_int_id)]
Sip = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


# --- models ------------------------------------------------------------------------------------


class SipsListArgs(CommandArgs):
    """``GET sips``: every seat, or those of one agent / of one occupancy."""

    agent_id: MeiqiaId | None = None
    occupied: bool | None = Field(default=None, description="sent as y / n")
    include_password: bool = Field(
        default=False, description="the seats' SIP passwords are left out unless asked for"
    )


class SipBindArgs(CommandArgs):
    """``POST sip_bind_agent``: bind the seat ``sip`` to the agent ``agent_id``."""

    agent_id: MeiqiaId
    sip: Sip


class NumberGroupsListArgs(CommandArgs):
    """``GET rule_outnumber_group`` takes nothing."""


class NumberGroupsAssignArgs(CommandArgs):
    """``POST agent/outnumber_group``: give agents caller-id numbers and dynamic number groups
    (the document requires all three lists; an empty one is sent empty)."""

    agent_ids: Annotated[list[MeiqiaId], Field(min_length=1, max_length=1000)]
    group_ids: Annotated[list[MeiqiaId], Field(max_length=1000)]
    numbers: Annotated[list[Number], Field(max_length=1000)]


class MeiqiaSipsList(CommandModel):
    command: Literal["meiqia.sips.list"]
    args: SipsListArgs


class MeiqiaSipBind(CommandModel):
    command: Literal["meiqia.sip.bind"]
    args: SipBindArgs


class MeiqiaNumberGroupsList(CommandModel):
    command: Literal["meiqia.number_groups.list"]
    args: NumberGroupsListArgs


class MeiqiaNumberGroupsAssign(CommandModel):
    command: Literal["meiqia.number_groups.assign"]
    args: NumberGroupsAssignArgs


COMMAND_MODELS: Final[tuple[type[CommandModel], ...]] = (
    MeiqiaSipsList,
    MeiqiaSipBind,
    MeiqiaNumberGroupsList,
    MeiqiaNumberGroupsAssign,
)
#: The contract's commands Meiqia can do.
CONTRACT_COMMANDS: Final = frozenset({"call.dial", "cdr.search"})
COMMAND_NAMES: Final = frozenset(command_name(model) for model in COMMAND_MODELS)


# --- contract args -> request bodies -----------------------------------------------------------


def _invalid(message: str) -> CommandFailed:
    return CommandFailed(ErrorCode.INVALID, message)


def callout_body(args: CallDialArgs) -> dict[str, Any]:
    """``call.dial`` -> the ``callout`` body, or ``invalid`` for what Meiqia cannot do."""
    if args.caller is not None or args.agent_id is None:
        raise _invalid(
            "Meiqia places a call from an agent: give agent_id (the agent's id), not caller"
        )
    unsupported = [n for n in ("dial_permission", "auto_answer") if getattr(args, n) is not None]
    if unsupported:
        raise _invalid(f"Meiqia's callout takes no {', '.join(unsupported)}")
    agent = args.agent_id.strip()
    if not agent.isascii() or not agent.isdigit() or not 0 < int(agent) < 2**63:
        raise _invalid(f"agent_id must be Meiqia's integer agent id, got {agent!r}")
    body: dict[str, Any] = {"agent_id": int(agent), "callee": args.callee}
    if args.trunk_number is not None:
        body["trunk_number"] = args.trunk_number
    if args.user_data is not None:
        if len(args.user_data) > USER_DATA_MAX:
            raise _invalid(
                f"user_data has {len(args.user_data)} characters; Meiqia keeps at most"
                f" {USER_DATA_MAX}"
            )
        body["user_data"] = args.user_data
    return body


def records_body(args: CdrSearchArgs, tz: Any) -> dict[str, Any]:
    """``cdr.search`` -> the ``records`` body, or ``invalid`` for a filter Meiqia lacks.

    Meiqia filters on the customer's number: ``caller`` is the customer of an inbound call,
    ``callee`` the customer of an outbound one."""
    if args.fuzzy:
        raise _invalid("Meiqia's records match numbers exactly (no fuzzy search)")
    if args.extension_group is not None:
        raise _invalid("Meiqia's records have no extension groups")
    if args.caller is not None and args.callee is not None:
        raise _invalid("Meiqia's records filter on one customer number: give caller or callee")
    body: dict[str, Any] = {
        "start_time": rfc3339(args.start, tz),
        "end_time": rfc3339(args.end, tz),
        "page_index": args.page,
        "page_size": args.page_size,
    }
    if args.caller is not None:
        body.update(customer_phone=args.caller, call_types=["来电"])
    if args.callee is not None:
        body.update(customer_phone=args.callee, call_types=["外呼"])
    if args.disposition is not None:
        states = DISPOSITION_STATES.get(args.disposition)
        if states is None:
            raise _invalid(f"Meiqia records no {args.disposition!r} calls (answered, no_answer)")
        body["states"] = states
    return body


# --- execution -----------------------------------------------------------------------------------


class MeiqiaCommands:
    """Runs the commands of one enterprise against its client; ``ctx`` gives the normalize
    context of the live path (so ``cdr.search`` returns the live ids)."""

    def __init__(
        self,
        client: MeiqiaClient,
        ctx: Callable[[], NormalizeContext],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ctx = ctx
        self._clock = clock

    async def execute(self, command: CommandModel, timeout_s: float = 10.0) -> dict[str, Any]:
        """Run ``command``; a 429 is waited out once if that ends within ``timeout_s``."""
        deadline = self._clock() + timeout_s
        args = command.args
        if command.command == "call.dial":
            return await self._dial(args, deadline)  # type: ignore[arg-type]
        if command.command == "cdr.search":
            return await self._search(args)  # type: ignore[arg-type]
        if isinstance(args, SipsListArgs):
            return await self._sips(args)
        if isinstance(args, SipBindArgs):
            await self._client.request(
                "POST",
                SIP_BIND_PATH,
                body={"agent_id": args.agent_id, "sip": args.sip},
                write=True,
                retries=1,
                deadline=deadline,
            )
            return {"agent_id": args.agent_id, "sip": args.sip}
        if isinstance(args, NumberGroupsListArgs):
            answer = await self._client.get(NUMBER_GROUPS_PATH)
            answer = answer if isinstance(answer, dict) else {}
            return {
                "groups": _objects(answer.get("groups")),
                "numbers": _objects(answer.get("numbers")),
            }
        if isinstance(args, NumberGroupsAssignArgs):
            body = {
                "agent_ids": args.agent_ids,
                "group_ids": args.group_ids,
                "numbers": args.numbers,
            }
            await self._client.request(
                "POST", ASSIGN_PATH, body=body, write=True, retries=1, deadline=deadline
            )
            return body
        raise CommandFailed(ErrorCode.UNSUPPORTED, f"Meiqia cannot do {command.command!r}")

    async def _dial(self, args: CallDialArgs, deadline: float) -> dict[str, Any]:
        body = callout_body(args)
        answer = await self._client.request(
            "POST", CALLOUT_PATH, body=body, write=True, retries=1, deadline=deadline
        )
        uuid = answer.get("uuid") if isinstance(answer, dict) else None
        if not isinstance(uuid, str) or not uuid.strip():
            raise CommandFailed(
                ErrorCode.FAILED, "callout answered without a uuid; the call may have been placed"
            )
        return {"call_id": uuid.strip()}

    async def _search(self, args: CdrSearchArgs) -> dict[str, Any]:
        ctx = self._ctx()
        answer = await self._client.post(RECORDS_PATH, records_body(args, ctx.tz), write=False)
        answer = answer if isinstance(answer, dict) else {}
        data = answer.get("data")
        rows: list[Any] = data if isinstance(data, list) else []
        total = answer.get("total")
        total = total if isinstance(total, int) and not isinstance(total, bool) else len(rows)
        events = [event.model_dump(mode="json") for event in records_events(rows, ctx)]
        return {
            "events": events,
            "total": total,
            "page": args.page,
            "page_size": args.page_size,
            "has_more": (args.page - 1) * args.page_size + len(rows) < total,
        }

    async def _sips(self, args: SipsListArgs) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if args.agent_id is not None:
            params["agent_id"] = args.agent_id
        if args.occupied is not None:
            params["occupied"] = "y" if args.occupied else "n"
        rows = [
            row
            for row in seat_rows(await self._client.get(SIPS_PATH, params))
            if isinstance(row, dict)
        ]
        if not args.include_password:
            rows = [{k: v for k, v in row.items() if k not in SECRET_FIELDS} for row in rows]
        return {"data": rows, "total": len(rows)}


def _objects(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
