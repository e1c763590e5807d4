"""Yeastar command mapping against a tiny fake PBX on 127.0.0.1: what goes on the wire, what
comes back, how errors and expired tokens are handled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import orjson
import pytest
import websockets
from aiohttp import web
from websockets.datastructures import Headers
from websockets.http11 import Response

from gateway.connectors.yeastar.auth import Token, YeastarAuth
from gateway.connectors.yeastar.client import (
    ERR_IP_BLOCKED,
    TOKEN_EXPIRED,
    UNSUPPORTED_ERRCODES,
    YeastarAuthRejected,
    YeastarBlocked,
    YeastarClient,
    YeastarError,
    YeastarTokenError,
    YeastarUnsupported,
)
from gateway.connectors.yeastar.commands import ERROR_CODES, SUPPORTED, YeastarCommands
from gateway.connectors.yeastar.connector import SubscribeRefused, _is_auth_refusal
from gateway.connectors.yeastar.recovery import NOT_FOUND
from gateway.runtime.backoff import Backoff
from gateway.schema.commands import (
    COMMANDS,
    CommandFailed,
    CommandInvalid,
    ErrorCode,
    parse_command,
)
from gateway.settings import BackoffSettings
from gateway.sim.yeastar.frames import ERRORS as MANUAL_ERRORS
from tests.yeastar.test_recovery import MANUAL_CALL_QUERY

SHANGHAI = ZoneInfo("Asia/Shanghai")
OK = {"errcode": 0, "errmsg": "SUCCESS"}


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    json: Any
    token: str | None


@dataclass
class FakePbx:
    """Records every request; answers from per-endpoint scripts, then from ``default``."""

    seen: list[Seen] = field(default_factory=list)
    script: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    default: dict[str, Any] = field(default_factory=lambda: dict(OK))
    tokens: int = 0
    delay_s: float = 0.0
    token_script: list[dict[str, Any]] = field(default_factory=list)  # get/refresh_token answers

    async def handle(self, request: web.Request) -> web.Response:
        endpoint = request.path.removeprefix("/openapi/v1.0/")
        body = await request.json() if request.can_read_body else None
        query = dict(request.query)
        token = query.pop("access_token", None)
        if endpoint in ("get_token", "refresh_token"):
            self.tokens += 1
            self.seen.append(Seen(request.method, endpoint, query, body, token))
            if self.token_script:
                return web.json_response(self.token_script.pop(0))
            return web.json_response(
                {
                    **OK,
                    "access_token": f"access-{self.tokens}",
                    "access_token_expire_time": 1800,
                    "refresh_token": f"refresh-{self.tokens}",
                    "refresh_token_expire_time": 86400,
                }
            )
        self.seen.append(Seen(request.method, endpoint, query, body, token))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        queue = self.script.get(endpoint)
        return web.json_response(queue.pop(0) if queue else self.default)

    @property
    def calls(self) -> list[Seen]:
        return [s for s in self.seen if s.path not in ("get_token", "refresh_token")]


class StubAuth:
    """``wait_token`` / ``force_refresh`` like YeastarAuth, counting refreshes."""

    # The real one-refresh-one-retry rule, on top of this stub's tokens.
    with_token = YeastarAuth.with_token
    _within = staticmethod(YeastarAuth._within)

    def __init__(self) -> None:
        self.version = 1
        self.refreshed: list[str] = []

    def _token(self) -> Token:
        return Token(f"tok-{self.version}", 0.0, 1e12, "refresh", 1e12, self.version)

    async def wait_token(self, newer_than: int = 0) -> Token:
        return self._token()

    async def force_refresh(self, stale: str) -> Token:
        self.refreshed.append(stale)
        self.version += 1
        return self._token()


@dataclass
class Env:
    pbx: FakePbx
    client: YeastarClient
    auth: StubAuth
    commands: YeastarCommands


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    pbx = FakePbx()
    app = web.Application()
    app.router.add_route("*", "/openapi/v1.0/{endpoint:.+}", pbx.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        client = YeastarClient(
            session, f"http://127.0.0.1:{port}", user_agent="gateway-test", timeout_s=2
        )
        auth = StubAuth()
        commands = YeastarCommands(
            client,
            auth,  # type: ignore[arg-type]
            tz=SHANGHAI,
            tenant="acme",
            token_timeout_s=1,
        )
        yield Env(pbx, client, auth, commands)
    await runner.cleanup()


def cmd(command: str, **args: Any) -> Any:
    return parse_command(orjson.dumps({"command": command, "args": args}))


CALL_ID = {**OK, "call_id": "1650095575.872"}
CH = "PJSIP/2000-0000008a"

# command, args, method, endpoint, query (without access_token), json body, answer, result
CASES: list[tuple[str, dict[str, Any], str, str, dict, Any, dict, dict]] = [
    (
        "call.dial",
        {"caller": "1005", "callee": "5503301", "dial_permission": "2002", "auto_answer": True},
        "POST",
        "call/dial",
        {},
        {"caller": "1005", "callee": "5503301", "dial_permission": "2002", "auto_answer": "yes"},
        CALL_ID,
        {"call_id": "1650095575.872"},
    ),
    (
        "call.dial",
        {"caller": " 1005 ", "callee": "2000"},
        "POST",
        "call/dial",
        {},
        {"caller": "1005", "callee": "2000"},
        CALL_ID,
        {"call_id": "1650095575.872"},
    ),
    (
        "call.hangup",
        {"channel_id": CH},
        "POST",
        "call/hangup",
        {},
        {"channel_id": CH},
        CALL_ID,
        {"call_id": "1650095575.872"},
    ),
    (
        "call.hangup",
        {"paging_number": "6300"},
        "POST",
        "call/hangup",
        {},
        {"paging_number": "6300"},
        OK,
        {},
    ),
    *(
        (
            name,
            {"channel_id": CH},
            "POST",
            endpoint,
            {},
            {"channel_id": CH},
            CALL_ID,
            {"call_id": "1650095575.872"},
        )
        for name, endpoint in [
            ("call.hold", "call/hold"),
            ("call.unhold", "call/unhold"),
            ("call.mute", "call/mute"),
            ("call.unmute", "call/unmute"),
            ("call.record_start", "call/record_start"),
            ("call.record_pause", "call/record_pause"),
            ("call.record_resume", "call/record_unpause"),
            ("call.accept_inbound", "call/accept_inbound"),
            ("call.refuse_inbound", "call/refuse_inbound"),
        ]
    ),
    (
        "call.park",
        {"channel_id": "PJSIP/2005-00000081", "slot": "6000"},
        "POST",
        "call/park",
        {},
        {"channel_id": "PJSIP/2005-00000081", "parking_slot": "6000"},
        {**OK, "call_id": "1651497945.90", "parking_slot": "6000"},
        {"call_id": "1651497945.90", "slot": "6000"},
    ),
    (
        "call.park",
        {"channel_id": "PJSIP/2005-00000081"},
        "POST",
        "call/park",
        {},
        {"channel_id": "PJSIP/2005-00000081"},
        {**OK, "call_id": "1651497945.90", "parking_slot": "6001"},
        {"call_id": "1651497945.90", "slot": "6001"},
    ),
    (
        "call.park_status",
        {},
        "GET",
        "call/park_status",
        {},
        None,
        {
            **OK,
            "data": [
                {
                    "parker": "2008",
                    "parked_party": "2010",
                    "parking_slot": "6000",
                    "park_time": 60,
                    "channel_id": "PJSIP/2010-000000a4",
                }
            ],
        },
        {
            "parked": [
                {
                    "slot": "6000",
                    "parker": "2008",
                    "parked_party": "2010",
                    "channel_id": "PJSIP/2010-000000a4",
                    "park_time_s": 60,
                }
            ]
        },
    ),
    (
        "call.transfer",
        {"channel_id": "PJSIP/2000-000000ae", "mode": "blind", "target": "2008"},
        "POST",
        "call/transfer",
        {},
        {"type": "blind", "channel_id": "PJSIP/2000-000000ae", "number": "2008"},
        CALL_ID,
        {"call_id": "1650095575.872"},
    ),
    (
        "call.transfer",
        {
            "channel_id": "PJSIP/2005-000000a6",
            "mode": "attended",
            "target": "5503301",
            "dial_permission": "2005",
        },
        "POST",
        "call/transfer",
        {},
        {
            "type": "attended",
            "channel_id": "PJSIP/2005-000000a6",
            "number": "5503301",
            "dial_permission": "2005",
        },
        CALL_ID,
        {"call_id": "1650095575.872"},
    ),
    (
        "call.transfer",
        {"channel_id": "PJSIP/2005-000000a6", "mode": "attended", "attended_action": "complete"},
        "POST",
        "call/transfer",
        {},
        {"type": "attended", "channel_id": "PJSIP/2005-000000a6", "attended_operate": "complete"},
        CALL_ID,
        {"call_id": "1650095575.872"},
    ),
    (
        "call.listen",
        {"listener": "2008", "channel_id": "PJSIP/2000-00000114", "mode": "whisper"},
        "POST",
        "call/listen",
        {},
        {"monitor": "2008", "channel_id": "PJSIP/2000-00000114", "type": "whisper"},
        CALL_ID,
        {"call_id": "1650095575.872"},
    ),
    (
        "call.add_member",
        {"channel_id": "PJSIP/2005-0000007c", "number": "13900000002", "dial_permission": "2002"},
        "POST",
        "call/add_member",
        {},
        {"channel_id": "PJSIP/2005-0000007c", "number": "13900000002", "dial_permission": "2002"},
        CALL_ID,
        {"call_id": "1650095575.872"},
    ),
    (
        "call.play_prompt",
        {
            "number": "2000",
            "prompts": ["test_prompt1", "test_prompt2"],
            "count": 1,
            "auto_answer": True,
            "volume": 20,
        },
        "POST",
        "call/play_prompt",
        {},
        {
            "number": "2000",
            "prompts": ["test_prompt1", "test_prompt2"],
            "count": 1,
            "auto_answer": "yes",
            "volume": 20,
        },
        OK,
        {},
    ),
    (
        "call.query",
        {"call_id": "1650012665.266"},
        "GET",
        "call/query",
        {"call_id": "1650012665.266"},
        None,
        MANUAL_CALL_QUERY,
        {
            "calls": [
                {
                    "call_id": "1650012665.266",
                    "members": [
                        {
                            "kind": "extension",
                            "number": "2000",
                            "from": None,
                            "to": None,
                            "trunk": None,
                            "channel_id": "PJSIP/2000-0000008a",
                            "status": "answered",
                            "via": None,
                        },
                        {
                            "kind": "outbound",
                            "number": None,
                            "from": "2000",
                            "to": "1003",
                            "trunk": "test-peer-trunking",
                            "channel_id": "PJSIP/trunk-test-peer-trunking-endpoint-0000008b",
                            "status": "answered",
                            "via": None,
                        },
                    ],
                }
            ]
        },
    ),
    (
        "call.query",
        {"direction": "inbound"},
        "GET",
        "call/query",
        {"type": "inbound"},
        None,
        {**OK, "data": []},
        {"calls": []},
    ),
    (
        "call.query",
        {"extension": "2000"},
        "GET",
        "call/query",
        {"number": "2000"},
        None,
        {**OK, "data": []},
        {"calls": []},
    ),
    *(
        (
            name,
            {"extension": "2000", "call_id": "32787", "device_address": "192.168.5.2:5060"},
            "POST",
            endpoint,
            {},
            {"extension": "2000", "call_id": "32787", "ip_address": "192.168.5.2:5060"},
            OK,
            {},
        )
        for name, endpoint in [
            ("call.uacsta_accept", "uacsta_call/accept"),
            ("call.uacsta_refuse", "uacsta_call/refuse"),
            ("call.uacsta_hangup", "uacsta_call/hangup"),
        ]
    ),
    (
        "agent.login",
        {"agent": "85", "paused": True, "pause_reason": "*01"},
        "GET",
        "agent/login",
        {"ext_id": "85", "operation": "login", "is_paused": "1", "reason": "*01"},
        None,
        OK,
        {},
    ),
    (
        "agent.login",
        {"agent": "85", "queues": ["2", "3"]},
        "GET",
        "agent/login",
        {"ext_id": "85", "queue_ids": "2,3", "operation": "login"},
        None,
        OK,
        {},
    ),
    (
        "agent.logout",
        {"agent": "85"},
        "GET",
        "agent/login",
        {"ext_id": "85", "operation": "logout"},
        None,
        OK,
        {},
    ),
    (
        "agent.pause",
        {"agent": "85", "pause_reason": "*01"},
        "GET",
        "agent/pause",
        {"ext_id": "85", "operation": "pause", "reason": "*01"},
        None,
        OK,
        {},
    ),
    (
        "agent.unpause",
        {"agent": "85", "queues": ["2"]},
        "GET",
        "agent/pause",
        {"ext_id": "85", "queue_ids": "2", "operation": "unpause"},
        None,
        OK,
        {},
    ),
]


def test_every_command_has_a_mapping_and_a_wire_case() -> None:
    assert set(COMMANDS) == SUPPORTED
    assert {c[0] for c in CASES} | {"cdr.search"} == set(COMMANDS)


@pytest.mark.parametrize(
    ("name", "args", "method", "endpoint", "query", "body", "answer", "result"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
async def test_wire_mapping(
    env: Env,
    name: str,
    args: dict[str, Any],
    method: str,
    endpoint: str,
    query: dict,
    body: Any,
    answer: dict,
    result: dict,
) -> None:
    env.pbx.default = answer
    got = await env.commands.execute(cmd(name, **args))
    [seen] = env.pbx.calls
    assert (seen.method, seen.path) == (method, endpoint)
    assert seen.query == query
    assert seen.json == body
    assert seen.token == "tok-1"
    assert got == result


CDR_ANSWER = {
    **OK,
    "total_number": 3,
    "data": [
        {
            "id": 2710,
            "time": "05/30/2022 14:53:41",
            "call_from": "Kristin Hale<2005>",
            "call_to": "1000",
            "timestamp": 1653893621,
            "uid": "202205301453416CEAB",
            "dst_trunk": "peer-to-34",
            "duration": 7,
            "talk_duration": 7,
            "disposition": "ANSWERED",
            "call_type": "Outbound",
        },
        {
            "id": 2711,
            "time": "05/30/2022 14:55:00",
            "call_from": "Kristin Hale<2005>",
            "call_to": "21000",
            "timestamp": 1653893700,
            "uid": "2022053014550020730",
            "disposition": "NO ANSWER",
            "call_type": "Outbound",
        },
        {
            "id": 2712,
            "time": "05/30/2022 14:55:49",
            "call_from": "Kristin Hale<2005>",
            "call_to": "21000",
            "timestamp": 1653893749,
            "uid": "202205301455494E686",
            "disposition": "ANSWERED",
            "call_type": "Outbound",
            "record_file": "20220530145555-1653893749.6-2005-21000-Outbound.wav",
        },
    ],
}


async def test_cdr_search_sends_pbx_local_time_and_returns_events(env: Env) -> None:
    env.pbx.default = CDR_ANSWER
    got = await env.commands.execute(
        cmd(
            "cdr.search",
            start="2022-05-29T16:00:00Z",  # 05/30/2022 00:00:00 in Shanghai
            end="2022-05-30T23:59:59+08:00",
            caller="2005",
            disposition="no_answer",
            fuzzy=True,
            page=1,
            page_size=2,
        )
    )
    [seen] = env.pbx.calls
    assert (seen.method, seen.path) == ("GET", "cdr/search")
    assert seen.query == {
        "start_time": "05/30/2022 00:00:00",
        "end_time": "05/30/2022 23:59:59",
        "call_from": "2005",
        "status": "NO ANSWER",
        "enable_fuzzy_search": "1",
    }
    assert seen.json is None
    assert got["total_number"] == 3
    assert (got["page"], got["page_size"], got["has_more"], got["complete"]) == (1, 2, True, True)
    events = got["events"]
    assert [e["type"] for e in events] == ["cdr.created", "cdr.created"]
    assert events[0]["data"]["caller"] == "2005"
    assert events[0]["data"]["call_id"] == "202205301453416CEAB"
    assert events[0]["tenant"] == "acme" and events[0]["vendor"] == "yeastar"
    assert events[0]["time"].startswith("2022-05-30T06:53:41")  # timestamp 1653893621 in UTC
    assert events[1]["data"]["disposition"] == "no_answer"


async def test_cdr_search_second_page_and_custom_format(env: Env) -> None:
    env.pbx.default = CDR_ANSWER
    commands = YeastarCommands(
        env.client,
        env.auth,  # type: ignore[arg-type]
        tz=SHANGHAI,
        cdr_time_format="%Y/%m/%d %I:%M:%S %p",
        tenant="acme",
    )
    got = await commands.execute(
        cmd(
            "cdr.search",
            start="2022-05-30T05:00:00Z",
            end="2022-05-30T07:00:00Z",
            page=2,
            page_size=2,
        )
    )
    [seen] = env.pbx.calls
    assert seen.query == {
        "start_time": "2022/05/30 01:00:00 PM",
        "end_time": "2022/05/30 03:00:00 PM",
    }
    assert [e["data"]["call_id"] for e in got["events"]] == ["1653893749.6"]
    assert got["has_more"] is False


async def test_cdr_search_bad_record_becomes_rejected_event(env: Env) -> None:
    data = [{"uid": "x"}, {"disposition": "BUSY"}, "junk"]
    env.pbx.default = {**OK, "total_number": 3, "data": data}
    got = await env.commands.execute(
        cmd("cdr.search", start="2022-05-30T05:00:00Z", end="2022-05-30T07:00:00Z")
    )
    # a record with its uid is published whatever else it lacks; without any id it cannot be
    assert [e["type"] for e in got["events"]] == [
        "cdr.created",
        "gateway.rejected",
        "gateway.rejected",
    ]
    assert got["events"][0]["data"]["disposition"] is None


@pytest.mark.parametrize(
    ("errcode", "code"),
    [
        (70130, ErrorCode.NOT_FOUND),
        (60001, ErrorCode.NOT_FOUND),
        (10005, ErrorCode.FORBIDDEN),
        (70084, ErrorCode.FORBIDDEN),
        (70087, ErrorCode.FORBIDDEN),
        (40001, ErrorCode.INVALID),
        (40002, ErrorCode.INVALID),
        (40003, ErrorCode.INVALID),
        (70132, ErrorCode.UNSUPPORTED),
        (10001, ErrorCode.UNSUPPORTED),
        (10002, ErrorCode.UNSUPPORTED),
        (10003, ErrorCode.UNSUPPORTED),
        (40004, ErrorCode.INVALID),
        (70004, ErrorCode.UNAVAILABLE),
        (70123, ErrorCode.UNAVAILABLE),
        (-1, ErrorCode.FAILED),
        (70510, ErrorCode.FAILED),
    ],
)
async def test_error_mapping(env: Env, errcode: int, code: ErrorCode) -> None:
    env.pbx.default = {"errcode": errcode, "errmsg": "CAHNNEL ID NOT FOUND"}
    with pytest.raises(CommandFailed) as info:
        await env.commands.execute(cmd("call.hold", channel_id=CH))
    error = info.value.to_error()
    assert error.code == code
    assert error.vendor_code == str(errcode)
    assert "CAHNNEL ID NOT FOUND" in error.message
    assert error.retryable is False
    assert ERROR_CODES.get(errcode, ErrorCode.FAILED) == code


async def test_unreachable_pbx_is_retryable_unavailable(env: Env) -> None:
    client = YeastarClient(env.client._session, "http://127.0.0.1:9", user_agent="t", timeout_s=1)
    commands = YeastarCommands(client, env.auth, tz=SHANGHAI)  # type: ignore[arg-type]
    with pytest.raises(CommandFailed) as info:
        await commands.execute(cmd("call.hold", channel_id=CH))
    assert info.value.code == ErrorCode.UNAVAILABLE
    assert info.value.retryable is True


async def test_non_json_answer_is_unavailable(env: Env) -> None:
    env.pbx.default = {"no": "errcode"}
    with pytest.raises(CommandFailed) as info:
        await env.commands.execute(cmd("call.hold", channel_id=CH))
    assert (info.value.code, info.value.retryable) == (ErrorCode.UNAVAILABLE, True)


async def test_expired_token_is_refreshed_once_and_retried(env: Env) -> None:
    env.pbx.script["call/hold"] = [{"errcode": 10004, "errmsg": "TOKEN EXPIRED"}]
    env.pbx.default = CALL_ID
    got = await env.commands.execute(cmd("call.hold", channel_id=CH))
    assert got == {"call_id": "1650095575.872"}
    assert env.auth.refreshed == ["tok-1"]
    assert [(s.path, s.token) for s in env.pbx.calls] == [
        ("call/hold", "tok-1"),
        ("call/hold", "tok-2"),
    ]


async def test_token_refused_twice_is_retryable_unavailable(env: Env) -> None:
    env.pbx.default = {"errcode": 10004, "errmsg": "TOKEN EXPIRED"}
    with pytest.raises(CommandFailed) as info:
        await env.commands.execute(cmd("call.hold", channel_id=CH))
    assert info.value.code == ErrorCode.UNAVAILABLE
    assert info.value.retryable is True
    assert info.value.vendor_code == "10004"
    assert env.auth.refreshed == ["tok-1"]
    assert len(env.pbx.calls) == 2


async def test_token_refresh_with_the_real_auth(env: Env) -> None:
    """The real YeastarAuth: get_token, then one refresh_token after the PBX says 10004."""

    async def on_state(state: str, reason: str | None) -> None:
        return None

    auth = YeastarAuth(
        env.client,
        tenant="acme",
        client_id="id",
        secret=lambda: "secret",
        backoff=Backoff(BackoffSettings(initial_s=0.01, max_s=0.05, jitter=0)),
        on_state=on_state,
    )
    runner = asyncio.create_task(auth.run())
    try:
        commands = YeastarCommands(env.client, auth, tz=SHANGHAI)
        env.pbx.script["call/dial"] = [{"errcode": 10004, "errmsg": "TOKEN EXPIRED"}]
        env.pbx.default = CALL_ID
        got = await asyncio.wait_for(
            commands.execute(cmd("call.dial", caller="2000", callee="2001")), 5
        )
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert got == {"call_id": "1650095575.872"}
    assert [(s.path, s.token) for s in env.pbx.seen] == [
        ("get_token", None),
        ("call/dial", "access-1"),
        ("refresh_token", None),
        ("call/dial", "access-2"),
    ]


async def test_no_token_in_time_is_retryable_unavailable(env: Env) -> None:
    class NeverAuth(StubAuth):
        async def wait_token(self, newer_than: int = 0) -> Token:
            await asyncio.Event().wait()
            raise AssertionError

    commands = YeastarCommands(
        env.client,
        NeverAuth(),  # type: ignore[arg-type]
        tz=SHANGHAI,
        token_timeout_s=0.05,
    )
    with pytest.raises(CommandFailed) as info:
        await commands.execute(cmd("call.hold", channel_id=CH))
    assert (info.value.code, info.value.retryable) == (ErrorCode.UNAVAILABLE, True)
    assert env.pbx.calls == []


async def test_past_deadline_is_expired_and_not_sent(env: Env) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    with pytest.raises(CommandFailed) as info:
        await env.commands.execute(cmd("call.dial", caller="1", callee="2", deadline=past))
    assert info.value.code == ErrorCode.EXPIRED
    assert env.pbx.calls == []


async def test_slow_answer_past_deadline_is_timeout(env: Env) -> None:
    env.pbx.delay_s = 0.5
    soon = (datetime.now(UTC) + timedelta(seconds=0.1)).isoformat()
    with pytest.raises(CommandFailed) as info:
        await env.commands.execute(cmd("call.dial", caller="1", callee="2", deadline=soon))
    assert info.value.code == ErrorCode.TIMEOUT
    assert len(env.pbx.calls) == 1


async def test_agent_ids_must_be_numeric_for_yeastar(env: Env) -> None:
    with pytest.raises(CommandFailed) as info:
        await env.commands.execute(cmd("agent.login", agent="alice"))
    assert info.value.code == ErrorCode.INVALID
    with pytest.raises(CommandFailed) as info:
        await env.commands.execute(cmd("agent.pause", agent="85", queues=["sales"]))
    assert info.value.code == ErrorCode.INVALID
    assert env.pbx.calls == []


async def test_agents_by_extension_number_are_looked_up_exactly(env: Env) -> None:
    """extension/search matches parts of numbers (manual): only the exact number counts."""
    found = {
        **OK,
        "total_number": 2,
        "data": [{"id": 238, "number": "20001"}, {"id": 85, "number": "2000"}],
    }
    env.pbx.script["extension/search"] = [found, found]
    await env.commands.execute(cmd("agent.pause", extension="2000", queues=["3"]))
    search, pause = env.pbx.calls
    assert (search.path, search.query["search_value"]) == ("extension/search", "2000")
    assert (pause.path, pause.query["ext_id"], pause.query["operation"]) == (
        "agent/pause",
        "85",
        "pause",
    )
    with pytest.raises(CommandFailed) as info:
        await env.commands.execute(cmd("agent.login", extension="200"))
    assert info.value.code == ErrorCode.NOT_FOUND
    assert [c.path for c in env.pbx.calls][2:] == ["extension/search"]  # nothing logged in


async def test_queues_by_number_are_looked_up_over_every_page(env: Env) -> None:
    """agent.queue_status events name queues by number; agent/login wants their ids."""
    first = {**OK, "total_number": 101, "queue_list": [{"id": 2, "number": "6401"}] * 100}
    last = {**OK, "total_number": 101, "queue_list": [{"id": 7, "number": "6402"}]}
    env.pbx.script["queue/list"] = [first, last, first, last]
    await env.commands.execute(cmd("agent.login", agent="85", queue_numbers=["6402", "6401"]))
    page1, page2, login = env.pbx.calls
    assert [page1.query["page"], page2.query["page"]] == ["1", "2"]
    assert (login.path, login.query["queue_ids"]) == ("agent/login", "7,2")
    with pytest.raises(CommandFailed) as info:
        await env.commands.execute(cmd("agent.logout", agent="85", queue_numbers=["6409"]))
    assert info.value.code == ErrorCode.NOT_FOUND and "6409" in info.value.message
    assert [c.path for c in env.pbx.calls][3:] == ["queue/list", "queue/list"]  # no logout


def test_queues_are_given_by_id_or_by_number_not_both() -> None:
    with pytest.raises(CommandInvalid):
        cmd("agent.login", agent="85", queues=["7"], queue_numbers=["6402"])


async def test_commands_it_cannot_do_are_unsupported(env: Env) -> None:
    @dataclass
    class Foreign:
        command: str = "xswitch.extension.create"
        args: Any = None

    with pytest.raises(CommandFailed) as info:
        await env.commands.execute(Foreign())  # type: ignore[arg-type]
    assert info.value.code == ErrorCode.UNSUPPORTED
    assert env.pbx.calls == []


def _handshake(status: int, body: bytes) -> BaseException:
    """A refused WebSocket handshake, as ``websockets`` raises it."""
    return websockets.InvalidStatus(Response(status, "refused", Headers(), body))


# --- error codes of the manual's table (line 18516, 表 388): only 10004 is a token error ----------


@pytest.mark.parametrize("errcode", [10002, 10003])
async def test_api_version_errors_are_unsupported_and_sent_once(env: Env, errcode: int) -> None:
    """10002 API VERSION OUT OF MAINTENANCE / 10003 API VERSION UNSUPPORTED: no token refresh,
    no second request (a dial sent twice is the worst thing the gateway can do)."""
    env.pbx.default = {"errcode": errcode, "errmsg": "API VERSION UNSUPPORTED"}
    with pytest.raises(CommandFailed) as info:
        await env.commands.execute(cmd("call.dial", caller="2001", callee="2002"))
    error = info.value.to_error()
    assert (error.code, error.retryable, error.vendor_code) == (
        ErrorCode.UNSUPPORTED,
        False,
        str(errcode),
    )
    assert env.auth.refreshed == []
    assert [s.path for s in env.pbx.calls] == ["call/dial"]


@pytest.mark.parametrize("errcode", [10002, 10003])
async def test_a_dial_refused_for_its_api_version_is_sent_once_with_the_real_auth(
    env: Env, errcode: int
) -> None:
    async def on_state(state: str, reason: str | None) -> None:
        return None

    auth = YeastarAuth(
        env.client,
        tenant="acme",
        client_id="id",
        secret=lambda: "secret",
        backoff=Backoff(BackoffSettings(initial_s=0.01, max_s=0.05, jitter=0)),
        on_state=on_state,
    )
    runner = asyncio.create_task(auth.run())
    try:
        commands = YeastarCommands(env.client, auth, tz=SHANGHAI)
        env.pbx.script["call/dial"] = [{"errcode": errcode, "errmsg": "API VERSION"}]
        with pytest.raises(CommandFailed) as info:
            await asyncio.wait_for(
                commands.execute(cmd("call.dial", caller="2000", callee="2001")), 5
            )
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert (info.value.code, info.value.retryable) == (ErrorCode.UNSUPPORTED, False)
    assert [s.path for s in env.pbx.seen] == ["get_token", "call/dial"]


@pytest.mark.parametrize(
    ("endpoint", "errcode", "kind"),
    [
        ("call/hold", 10004, YeastarTokenError),
        ("call/hold", 10001, YeastarUnsupported),
        ("call/hold", 10002, YeastarUnsupported),
        ("call/hold", 10003, YeastarUnsupported),
        ("call/hold", 70004, YeastarBlocked),
        ("call/hold", 60001, YeastarError),
        ("get_token", 10002, YeastarUnsupported),  # not a credential refusal: no ban counted
        ("get_token", 10003, YeastarUnsupported),
        ("get_token", 70004, YeastarBlocked),
        ("get_token", -1, YeastarAuthRejected),
        ("refresh_token", 10004, YeastarTokenError),
    ],
)
async def test_client_errcode_kinds(env: Env, endpoint: str, errcode: int, kind: type) -> None:
    answer = {"errcode": errcode, "errmsg": "X"}
    env.pbx.token_script.append(answer)
    env.pbx.default = answer
    with pytest.raises(YeastarError) as info:
        if endpoint == "get_token":
            await env.client.get_token("id", "secret")
        elif endpoint == "refresh_token":
            await env.client.refresh_token("refresh")
        else:
            await env.client.request("POST", endpoint, "tok", json={"channel_id": CH})
    assert type(info.value) is kind and info.value.errcode == errcode


async def test_an_api_version_answer_to_get_token_is_never_a_credential_refusal(
    env: Env,
) -> None:
    """The PBX bans an address after 5 credential refusals; 10003 is not one: the link says
    why it is down and keeps trying, it never gives up as if the secret were wrong."""
    states: list[tuple[str, str | None]] = []

    async def on_state(state: str, reason: str | None) -> None:
        states.append((state, reason))

    env.pbx.token_script.extend([{"errcode": 10003, "errmsg": "API VERSION UNSUPPORTED"}] * 5)
    auth = YeastarAuth(
        env.client,
        tenant="acme",
        client_id="id",
        secret=lambda: "secret",
        backoff=Backoff(BackoffSettings(initial_s=0.01, max_s=0.02, jitter=0)),
        on_state=on_state,
        max_auth_failures=3,
    )
    runner = asyncio.create_task(auth.run())
    try:
        token = await asyncio.wait_for(auth.wait_token(), 5)  # the 6th try gets one
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert token.access_token == "access-6"
    assert {state for state, _ in states} == {"disconnected"}
    assert all("10003" in (reason or "") for _, reason in states)


@pytest.mark.parametrize(
    ("refusal", "is_token"),
    [
        (SubscribeRefused(10004, "TOKEN EXPIRED"), True),
        (SubscribeRefused("10004", "TOKEN EXPIRED"), True),
        (SubscribeRefused(10002, "API VERSION OUT OF MAINTENANCE"), False),
        (SubscribeRefused(10003, "API VERSION UNSUPPORTED"), False),
        (SubscribeRefused(10001, "INTERFACE NOT EXISTED"), False),
        (SubscribeRefused(40002, "PARAMETER ERROR 10004"), False),  # the code, not the text
        (_handshake(401, b'{"errcode": 10004, "errmsg": "TOKEN EXPIRED"}'), True),
        (_handshake(200, b'{"errcode": 10003, "errmsg": "API VERSION UNSUPPORTED"}'), False),
        (_handshake(403, b'{"errcode": 10005, "errmsg": "ACCESS DENIED"}'), False),
        (_handshake(401, b""), True),  # no body: the status says it
        (_handshake(500, b""), False),
    ],
)
def test_subscribe_refusals_force_a_token_refresh_only_for_10004(
    refusal: BaseException, is_token: bool
) -> None:
    assert _is_auth_refusal(refusal) is is_token


def test_every_errcode_treated_specially_is_in_the_manuals_table() -> None:
    """REST client, command mapping and recovery name only codes of 表 388 (mirrored by the
    simulator's table), with the meaning the table gives them."""
    special = {
        *ERROR_CODES,
        TOKEN_EXPIRED,
        ERR_IP_BLOCKED,
        *UNSUPPORTED_ERRCODES,
        NOT_FOUND,
    }
    assert special <= set(MANUAL_ERRORS)
    assert MANUAL_ERRORS[TOKEN_EXPIRED] == "TOKEN EXPIRED"
    assert {MANUAL_ERRORS[c] for c in UNSUPPORTED_ERRCODES} == {
        "INTERFACE NOT EXISTED",
        "API VERSION OUT OF MAINTENANCE",
        "API VERSION UNSUPPORTED",
    }
    assert MANUAL_ERRORS[ERR_IP_BLOCKED] == "ACCOUNT IP BLOCKED"
    assert MANUAL_ERRORS[NOT_FOUND] == "DATA NOT FOUND"
    assert TOKEN_EXPIRED not in ERROR_CODES  # refreshed and retried once, not mapped


@pytest.mark.parametrize(
    "args",
    [
        {"agent_id": 1, "callee": "13800000000"},
        {"caller": "2001", "callee": "2002", "trunk_number": "88880000"},
        {"caller": "2001", "callee": "2002", "user_data": "crm-42"},
    ],
)
async def test_a_call_center_dial_is_refused_before_any_request(
    env: Env, args: dict[str, Any]
) -> None:
    """``call.dial`` may name a call center's agent (Meiqia); a Yeastar PBX dials from a
    number and keeps no user data: refused ``invalid``, nothing sent."""
    with pytest.raises(CommandFailed) as info:
        await env.commands.execute(cmd("call.dial", **args))
    assert (info.value.code, info.value.retryable) == (ErrorCode.INVALID, False)
    assert env.pbx.calls == []
