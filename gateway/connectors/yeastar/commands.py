"""Gateway commands -> Yeastar P-Series OpenAPI calls (manual: 呼叫操控, uaCSTA, 坐席, CDR).

One small mapping per command: the neutral args become the manual's endpoint, HTTP method and
parameter names; the answer (minus ``errcode``/``errmsg``) becomes a neutral result dict.
The PBX's error codes become :class:`~gateway.schema.commands.ErrorCode` values, always keeping
the vendor code. Only an expired token (10004) is refreshed once and the request retried once;
10002/10003 (API version not served) are ``unsupported`` and the request is never sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast
from zoneinfo import ZoneInfo

from gateway.connectors.yeastar.auth import YeastarAuth
from gateway.connectors.yeastar.client import (
    YeastarClient,
    YeastarError,
    YeastarTokenError,
    YeastarUnreachable,
    list_queues,
)
from gateway.connectors.yeastar.normalize import normalize_cdr_record
from gateway.schema.commands import (
    AgentArgs,
    AgentLoginArgs,
    AgentPauseArgs,
    CallAddMemberArgs,
    CallDialArgs,
    CallHangupArgs,
    CallListenArgs,
    CallParkArgs,
    CallPlayPromptArgs,
    CallQueryArgs,
    CallTransferArgs,
    CdrSearchArgs,
    ChannelArgs,
    CommandFailed,
    CommandModel,
    ErrorCode,
    UacstaArgs,
)
from gateway.schema.events import NormalizeContext

VENDOR: Final = "yeastar"

#: The manual's error table (line 18516, 表 388) -> neutral codes; anything else is ``failed``.
#: 10004 TOKEN EXPIRED is not here: it is refreshed and retried once, then ``unavailable``.
ERROR_CODES: Final[dict[int, ErrorCode]] = {
    10001: ErrorCode.UNSUPPORTED,  # INTERFACE NOT EXISTED: this firmware lacks the endpoint
    10002: ErrorCode.UNSUPPORTED,  # API VERSION OUT OF MAINTENANCE: v1.0 no longer served
    10003: ErrorCode.UNSUPPORTED,  # API VERSION UNSUPPORTED
    10005: ErrorCode.FORBIDDEN,  # ACCESS DENIED
    40001: ErrorCode.INVALID,  # PARAMETER SYNTAX ERROR
    40002: ErrorCode.INVALID,  # PARAMETER ERROR
    40003: ErrorCode.INVALID,  # DUPLICATE KEY VALUE
    40004: ErrorCode.INVALID,  # FILE SIZE EXCEEDED
    60001: ErrorCode.NOT_FOUND,  # DATA NOT FOUND
    70004: ErrorCode.UNAVAILABLE,  # ACCOUNT IP BLOCKED
    70084: ErrorCode.FORBIDDEN,  # ACTION FORBIDDEN
    70087: ErrorCode.FORBIDDEN,  # IP FORBIDDEN
    70123: ErrorCode.UNAVAILABLE,  # API UNAVAILABLE (disabled on the PBX)
    70130: ErrorCode.NOT_FOUND,  # CAHNNEL ID NOT FOUND (sic)
    70132: ErrorCode.UNSUPPORTED,  # OPERATION NOT SUPPORTED (on this channel)
}

_DISPOSITION: Final = {
    "answered": "ANSWERED",
    "no_answer": "NO ANSWER",
    "busy": "BUSY",
    "failed": "FAILED",
    "voicemail": "VOICEMAIL",
}
_MEMBER_STATUS: Final = {
    "ALERT": "dialing",
    "RING": "ringing",
    "ANSWERED": "answered",
    "ANSWER": "answered",
    "HOLD": "held",
    "BYE": "hung_up",
}


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    endpoint: str
    params: dict[str, Any] | None = None
    json: dict[str, Any] | None = None


def _yes_no(value: bool | None) -> str | None:
    return None if value is None else ("yes" if value else "no")


def _body(**fields: Any) -> dict[str, Any]:
    """A JSON body without the optional fields the command left out."""
    return {k: v for k, v in fields.items() if v is not None}


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    """The manual's answer fields (``call_id`` ...) are already neutral; drop the status."""
    return {k: v for k, v in body.items() if k not in ("errcode", "errmsg")}


def _numeric_id(value: str, what: str, by_number: str) -> str:
    """Agent / queue ids are the PBX's integer object ids (not extension or queue numbers)."""
    if not value.isascii() or not value.isdigit():
        raise CommandFailed(
            ErrorCode.INVALID,
            f"Yeastar needs the numeric {what} id, got {value!r}"
            f" ('{by_number}' takes numbers instead)",
        )
    return value


# --- requests: neutral args -> the manual's endpoint / method / parameters ---------------------


def _channel(endpoint: str) -> Callable[[ChannelArgs], _Request]:
    def build(args: ChannelArgs) -> _Request:
        return _Request("POST", endpoint, json={"channel_id": args.channel_id})

    return build


def _dial(args: CallDialArgs) -> _Request:
    """``call/dial`` starts from a number on the PBX (manual, call/dial ``caller``): a call
    center's ``agent_id``, ``trunk_number`` or ``user_data`` cannot be honoured, so such a dial
    is refused before any request rather than placed differently than asked."""
    unusable = [name for name in ("agent_id", "trunk_number", "user_data") if getattr(args, name)]
    if args.caller is None or unusable:
        raise CommandFailed(
            ErrorCode.INVALID,
            "Yeastar dials from a caller number; it has no "
            + (", ".join(unusable) if unusable else "agent_id: give caller"),
        )
    return _Request(
        "POST",
        "call/dial",
        json=_body(
            caller=args.caller,
            callee=args.callee,
            dial_permission=args.dial_permission,
            auto_answer=_yes_no(args.auto_answer),
        ),
    )


def _hangup(args: CallHangupArgs) -> _Request:
    return _Request(
        "POST",
        "call/hangup",
        json=_body(channel_id=args.channel_id, paging_number=args.paging_number),
    )


def _park(args: CallParkArgs) -> _Request:
    return _Request(
        "POST", "call/park", json=_body(channel_id=args.channel_id, parking_slot=args.slot)
    )


def _park_status(args: Any) -> _Request:
    return _Request("GET", "call/park_status")


def _transfer(args: CallTransferArgs) -> _Request:
    return _Request(
        "POST",
        "call/transfer",
        json=_body(
            type=args.mode,
            channel_id=args.channel_id,
            number=args.target,
            dial_permission=args.dial_permission,
            attended_operate=args.attended_action,
        ),
    )


def _listen(args: CallListenArgs) -> _Request:
    return _Request(
        "POST",
        "call/listen",
        json={"monitor": args.listener, "channel_id": args.channel_id, "type": args.mode},
    )


def _add_member(args: CallAddMemberArgs) -> _Request:
    return _Request(
        "POST",
        "call/add_member",
        json=_body(
            channel_id=args.channel_id, number=args.number, dial_permission=args.dial_permission
        ),
    )


def _play_prompt(args: CallPlayPromptArgs) -> _Request:
    return _Request(
        "POST",
        "call/play_prompt",
        json=_body(
            number=args.number,
            prompts=list(args.prompts),
            count=args.count,
            dial_permission=args.dial_permission,
            auto_answer=_yes_no(args.auto_answer),
            volume=args.volume,
        ),
    )


def _query(args: CallQueryArgs) -> _Request:
    return _Request(
        "GET",
        "call/query",
        params={"call_id": args.call_id, "type": args.direction, "number": args.extension},
    )


def _uacsta(operation: str) -> Callable[[UacstaArgs], _Request]:
    def build(args: UacstaArgs) -> _Request:
        return _Request(
            "POST",
            f"uacsta_call/{operation}",
            json={
                "extension": args.extension,
                "call_id": args.call_id,
                "ip_address": args.device_address,
            },
        )

    return build


def _agent_params(args: AgentArgs, operation: str) -> dict[str, Any]:
    """``agent/login`` and ``agent/pause``: one agent, the given queues or (omitted) all."""
    queues = args.queues
    if queues is not None:
        queues = [_numeric_id(q, "queue", "queue_numbers") for q in queues]
    return {
        "ext_id": _numeric_id(args.agent or "", "agent extension", "extension"),
        "queue_ids": queues,
        "operation": operation,
    }


def _agent_login(args: AgentLoginArgs) -> _Request:
    params = _agent_params(args, "login")
    params["is_paused"] = None if args.paused is None else int(args.paused)
    params["reason"] = args.pause_reason
    return _Request("GET", "agent/login", params=params)


def _agent_logout(args: AgentArgs) -> _Request:
    return _Request("GET", "agent/login", params=_agent_params(args, "logout"))


def _agent_pause(args: AgentPauseArgs) -> _Request:
    params = _agent_params(args, "pause")
    params["reason"] = args.pause_reason
    return _Request("GET", "agent/pause", params=params)


def _agent_unpause(args: AgentArgs) -> _Request:
    return _Request("GET", "agent/pause", params=_agent_params(args, "unpause"))


_REQUESTS: Final[dict[str, Callable[[Any], _Request]]] = {
    "call.dial": _dial,
    "call.hangup": _hangup,
    "call.hold": _channel("call/hold"),
    "call.unhold": _channel("call/unhold"),
    "call.mute": _channel("call/mute"),
    "call.unmute": _channel("call/unmute"),
    "call.park": _park,
    "call.park_status": _park_status,
    "call.transfer": _transfer,
    "call.listen": _listen,
    "call.add_member": _add_member,
    "call.play_prompt": _play_prompt,
    "call.record_start": _channel("call/record_start"),
    "call.record_pause": _channel("call/record_pause"),
    "call.record_resume": _channel("call/record_unpause"),
    "call.accept_inbound": _channel("call/accept_inbound"),
    "call.refuse_inbound": _channel("call/refuse_inbound"),
    "call.query": _query,
    "call.uacsta_accept": _uacsta("accept"),
    "call.uacsta_refuse": _uacsta("refuse"),
    "call.uacsta_hangup": _uacsta("hangup"),
    "agent.login": _agent_login,
    "agent.logout": _agent_logout,
    "agent.pause": _agent_pause,
    "agent.unpause": _agent_unpause,
}

#: Every command this connector can execute (``cdr.search`` has its own path).
SUPPORTED: Final = frozenset({*_REQUESTS, "cdr.search"})


# --- results: the manual's answer -> neutral dict -----------------------------------------------


def _park_result(body: dict[str, Any]) -> dict[str, Any]:
    return {"call_id": body.get("call_id"), "slot": body.get("parking_slot")}


def _park_status_result(body: dict[str, Any]) -> dict[str, Any]:
    parked = []
    for item in body.get("data") or []:
        if isinstance(item, dict):
            parked.append(
                {
                    "slot": item.get("parking_slot"),
                    "parker": item.get("parker"),
                    "parked_party": item.get("parked_party"),
                    "channel_id": item.get("channel_id"),
                    "park_time_s": item.get("park_time"),
                }
            )
    return {"parked": parked}


def _member(kind: str, info: dict[str, Any]) -> dict[str, Any]:
    status = str(info.get("member_status") or "").strip().upper()
    return {
        "kind": kind,
        "number": info.get("number"),
        "from": info.get("from"),
        "to": info.get("to"),
        "trunk": info.get("trunk_name"),
        "channel_id": info.get("channel_id"),
        "status": _MEMBER_STATUS.get(status, status.lower() or None),
        "via": info.get("call_path") or None,
    }


def _query_result(body: dict[str, Any]) -> dict[str, Any]:
    calls = []
    for call in body.get("data") or []:
        if not isinstance(call, dict):
            continue
        members = [
            _member(kind, item[kind])
            for item in call.get("members") or []
            if isinstance(item, dict)
            for kind in ("extension", "inbound", "outbound")
            if isinstance(item.get(kind), dict)
        ]
        calls.append({"call_id": call.get("call_id"), "members": members})
    return {"calls": calls}


_RESULTS: Final[dict[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "call.park": _park_result,
    "call.park_status": _park_status_result,
    "call.query": _query_result,
}


# --- execution -----------------------------------------------------------------------------------


def _failure(exc: YeastarError, endpoint: str) -> CommandFailed:
    code = ERROR_CODES.get(exc.errcode, ErrorCode.FAILED)
    return CommandFailed(
        code,
        f"{endpoint}: {exc.errcode} {exc.errmsg}".strip(),
        vendor_code=str(exc.errcode),
    )


class YeastarCommands:
    def __init__(
        self,
        client: YeastarClient,
        auth: YeastarAuth,
        *,
        tz: ZoneInfo,
        cdr_time_format: str = "%m/%d/%Y %H:%M:%S",
        tenant: str | None = None,
        include_raw: bool = False,
        token_timeout_s: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._auth = auth
        self._tz = tz
        self._cdr_time_format = cdr_time_format
        self._tenant = tenant or str(getattr(auth, "_tenant", "") or "unknown")
        self._include_raw = include_raw
        self._token_timeout_s = token_timeout_s
        self._clock = clock

    async def execute(self, command: CommandModel) -> dict[str, Any]:
        """Run one command on the PBX; the neutral result, or :class:`CommandFailed`."""
        name = getattr(command, "command", None)
        if name not in SUPPORTED:
            raise CommandFailed(ErrorCode.UNSUPPORTED, f"Yeastar P-Series cannot do {name!r}")
        args = command.args
        if isinstance(args, AgentArgs):
            args = await self._agent_by_ids(args)
        if name == "cdr.search":
            # the catalog parses a "cdr.search" body into CdrSearchArgs (discriminated union)
            request = self._cdr_request(cast(CdrSearchArgs, args))
        else:
            request = _REQUESTS[name](args)
        body = await self._send(request, args.deadline)
        if name == "cdr.search":
            return self._cdr_result(body, cast(CdrSearchArgs, args))
        return _RESULTS.get(name, _answer)(body)

    # --- transport: token, one refresh + retry, deadline, error mapping ------------------------

    async def _send(self, request: _Request, deadline: datetime | None) -> dict[str, Any]:
        remaining = None
        if deadline is not None:
            remaining = (deadline - self._clock()).total_seconds()
            if remaining <= 0:
                raise CommandFailed(
                    ErrorCode.EXPIRED, f"deadline {deadline.isoformat()} passed before sending"
                )
        sent = False

        async def attempt(access_token: str) -> dict[str, Any]:
            nonlocal sent
            sent = True
            return await self._client.request(
                request.method,
                request.endpoint,
                access_token,
                params=request.params,
                json=request.json,
            )

        try:
            async with asyncio.timeout(remaining):
                return await self._auth.with_token(attempt, token_timeout_s=self._token_timeout_s)
        except TimeoutError:
            if not sent:
                raise CommandFailed(
                    ErrorCode.EXPIRED, f"{request.endpoint}: deadline passed before sending"
                ) from None
            raise CommandFailed(
                ErrorCode.TIMEOUT, f"{request.endpoint}: no answer before the deadline"
            ) from None
        except YeastarTokenError as exc:
            raise CommandFailed(
                ErrorCode.UNAVAILABLE,
                f"{request.endpoint}: token refused again after a refresh:"
                f" {exc.errcode} {exc.errmsg}",
                vendor_code=str(exc.errcode),
                retryable=True,
            ) from exc
        except YeastarError as exc:
            raise _failure(exc, request.endpoint) from exc
        except YeastarUnreachable as exc:
            raise CommandFailed(ErrorCode.UNAVAILABLE, str(exc), retryable=True) from exc

    async def _agent_by_ids(self, args: AgentArgs) -> AgentArgs:
        """agent/login and agent/pause take ids only: look up the numbers the command gave."""
        if args.extension is not None:
            ext_id = await self._extension_id(args.extension, args.deadline)
            args = args.model_copy(update={"agent": ext_id, "extension": None})
        if args.queue_numbers is not None:
            queue_ids = await self._queue_ids(args.queue_numbers, args.deadline)
            args = args.model_copy(update={"queues": queue_ids, "queue_numbers": None})
        return args

    async def _queue_ids(self, numbers: list[str], deadline: datetime | None) -> list[str]:
        async def get(endpoint: str, params: dict[str, Any]) -> dict[str, Any]:
            return await self._send(_Request("GET", endpoint, params=params), deadline)

        ids = {
            str(q.get("number", "")).strip(): str(q.get("id"))
            for q in await list_queues(get)
            if q.get("id") is not None
        }
        missing = [n for n in numbers if n not in ids]
        if missing:
            raise CommandFailed(ErrorCode.NOT_FOUND, f"queue/list: no queue {', '.join(missing)}")
        return [ids[n] for n in numbers]

    async def _extension_id(self, number: str, deadline: datetime | None) -> str:
        """The extension id agent/login and agent/pause need (manual: "use extension/search").
        The search matches parts of numbers and names, so only the exact number counts."""
        body = await self._send(
            _Request("GET", "extension/search", params={"search_value": number}), deadline
        )
        for item in body.get("data") or []:
            if isinstance(item, dict) and str(item.get("number", "")).strip() == number:
                return str(item.get("id"))
        raise CommandFailed(ErrorCode.NOT_FOUND, f"extension/search: no extension {number!r}")

    def _pbx_time(self, instant: datetime) -> str:
        """The PBX filters on its own wall clock, in its display format (manual, cdr/search)."""
        return instant.astimezone(self._tz).strftime(self._cdr_time_format)

    def _cdr_request(self, args: CdrSearchArgs) -> _Request:
        return _Request(
            "GET",
            "cdr/search",
            params={
                "start_time": self._pbx_time(args.start),
                "end_time": self._pbx_time(args.end),
                "call_from": args.caller,
                "call_to": args.callee,
                "extension_group": args.extension_group,
                "status": None if args.disposition is None else _DISPOSITION[args.disposition],
                "enable_fuzzy_search": args.fuzzy,  # the client sends bools as 1 / 0
            },
        )

    def _cdr_result(self, body: dict[str, Any], args: CdrSearchArgs) -> dict[str, Any]:
        """cdr/search has no paging parameters: the PBX answers every match, we slice."""
        records = body.get("data")
        records = records if isinstance(records, list) else []
        total = body.get("total_number")
        total = total if isinstance(total, int) and not isinstance(total, bool) else len(records)
        first = (args.page - 1) * args.page_size
        page = records[first : first + args.page_size]
        ctx = NormalizeContext(
            tenant=self._tenant,
            vendor=VENDOR,
            tz=self._tz,
            received_at=self._clock(),
            include_raw=self._include_raw,
        )
        events = [
            event.model_dump(mode="json")
            for record in page
            for event in normalize_cdr_record(record, ctx, display_format=self._cdr_time_format)
        ]
        return {
            "events": events,
            "total_number": total,
            "page": args.page,
            "page_size": args.page_size,
            "has_more": first + args.page_size < len(records),
            "complete": len(records) >= total,
        }
