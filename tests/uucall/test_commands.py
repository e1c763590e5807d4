"""Every ``uucall.*`` command: the request it makes (method, path, query, body) against the
document's operation, its result from the simulator, and arguments refused before any request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.connectors import registry
from gateway.connectors.uucall.client import UucallClient
from gateway.connectors.uucall.commands import (
    COMMAND_MODELS,
    COMMAND_NAMES,
    ENDPOINTS,
    UucallCommand,
    execute_rest,
    request_of,
)
from gateway.connectors.uucall.downloads import Downloads
from gateway.schema.commands import CommandFailed, CommandInvalid, ErrorCode
from gateway.sim.uucall.rest import UucallSimulator
from tests.uucall.document import operations
from tests.uucall.helpers import pbx_for

#: (command, args, path as sent, query sent besides page/pageSize, body sent)
CASES: list[tuple[str, dict[str, Any], str, dict[str, str], Any]] = [
    ("uucall.cashlog.list", {}, "/account/cashlog", {"uid": "10001"}, None),
    (
        "uucall.cashlog.list",
        {"page": 2, "page_size": 3},
        "/account/cashlog",
        {"uid": "10001"},
        None,
    ),
    (
        "uucall.chargebill.list",
        {"account": "agent02"},
        "/account/chargebill",
        {"uidName": "uucall-demo", "account": "agent02"},
        None,
    ),
    (
        "uucall.basicbill.list",
        {"subUserName": "agent01"},
        "/account/chargebill/basicbill",
        {"uidName": "uucall-demo", "subUserName": "agent01"},
        None,
    ),
    (
        "uucall.funbill.list",
        {"subUserName": "agent01"},
        "/account/chargebill/funbill",
        {"uidName": "uucall-demo", "subUserName": "agent01"},
        None,
    ),
    (
        "uucall.chargebill.download",
        {},
        "/account/file/chargebill",
        {"uidName": "uucall-demo"},
        None,
    ),
    (
        "uucall.basicbill.download",
        {"subUserName": "agent02", "file_name": "agent02-basic.csv"},
        "/account/file/chargebill/basicbill",
        {"uidName": "uucall-demo", "subUserName": "agent02"},
        None,
    ),
    (
        "uucall.funbill.download",
        {"subUserName": "agent03"},
        "/account/file/chargebill/funbill",
        {"uidName": "uucall-demo", "subUserName": "agent03"},
        None,
    ),
    ("uucall.account.get", {}, "/account/10001", {}, None),
    ("uucall.baserate.get", {}, "/account/10001/baserate", {"uid": "10001"}, None),
    ("uucall.funrate.get", {}, "/account/10001/funrate", {"uid": "10001"}, None),
    ("uucall.giftrate.list", {}, "/account/10001/giftrate", {}, None),
    ("uucall.hirerate.get", {}, "/account/10001/hirerate", {"uid": "10001"}, None),
    (
        "uucall.notice.list",
        {"title": "账单"},
        "/power/notice",
        {"uid": "10001", "title": "账单"},
        None,
    ),
    (
        "uucall.notice.create",
        {
            "title": "停机通知",
            "content": "余额不足将停机。",
            "targets": [101, "102"],
            "createtime": 1714550400000,
        },
        "/power/notice",
        {},
        {
            "uid": 10001,
            "title": "停机通知",
            "content": "余额不足将停机。",
            "targets": "101,102",
            "createtime": 1714550400000,
        },
    ),
    ("uucall.notice.get", {"noticeId": "2"}, "/power/notice/2", {"uid": "10001"}, None),
    (
        "uucall.notice.update",
        {"noticeId": 2, "content": "请于 10 日前查看。", "targets": "101,103"},
        "/power/notice/2",
        {"uid": "10001"},
        {"uid": 10001, "id": 2, "content": "请于 10 日前查看。", "targets": "101,103"},
    ),
    ("uucall.notice.delete", {"noticeId": 1}, "/power/notice/1", {"uid": "10001"}, None),
    (
        "uucall.oplog.list",
        {"subUserName": "agent04", "startTime": "2020-01-01 00:00:00"},
        "/power/oplog",
        {"uid": "10001", "subUserName": "agent04", "startTime": "2020-01-01 00:00:00"},
        None,
    ),
    ("uucall.role.list", {}, "/power/role", {"uid": "10001"}, None),
    (
        "uucall.role.create",
        {"name": "财务", "level": 2},
        "/power/role",
        {"uid": "10001", "name": "财务"},
        {"uid": 10001, "name": "财务", "level": 2},
    ),
    ("uucall.role_auth.get", {"roleId": 3}, "/power/role/auth/3", {"uid": "10001"}, None),
    (
        "uucall.role_auth.update",
        {"roleId": 3, "authAppIds": [5, 6], "unAuthAppIds": "4"},
        "/power/role/auth/3",
        {"authAppIds": "5,6", "unAuthAppIds": "4"},
        None,
    ),
    (
        "uucall.role.update",
        {"roleId": 4, "level": 1},
        "/power/role/4",
        {},
        {"uid": 10001, "id": 4, "level": 1},
    ),
    ("uucall.role.delete", {"roleId": 4}, "/power/role/4", {}, None),
    (
        "uucall.roleuser.list",
        {"roleName": "坐席", "state": 1},
        "/power/roleuser",
        {"uid": "10001", "roleName": "坐席", "state": "1"},
        None,
    ),
    (
        "uucall.roleuser.create",
        {
            "account": "agent07",
            "name": "坐席07",
            "password": "pw-7",
            "jobnumber": "A007",
            "roleId": 2,
            "roleEnble": True,
        },
        "/power/roleuser",
        {
            "account": "agent07",
            "name": "坐席07",
            "password": "pw-7",
            "jobnumber": "A007",
            "roleId": "2",
            "roleEnble": "1",
        },
        {"account": "agent07", "name": "坐席07", "jobnumber": "A007"},
    ),
    ("uucall.roleuser.get", {"subUserId": 103}, "/power/roleuser/103", {}, None),
    (
        "uucall.roleuser.update",
        {"subUserId": 103, "roleName": "班长"},
        "/power/roleuser/103",
        {},
        {"id": 103, "roleName": "班长"},
    ),
    ("uucall.subuser.list", {"state": 1}, "/power/subuser", {"uid": "10001", "state": "1"}, None),
    (
        "uucall.subuser_auth.get",
        {"subUserId": 102, "pid": 1},
        "/power/subuser/auth/102",
        {"pid": "1"},
        None,
    ),
    (
        "uucall.subuser_auth.update",
        {"subUserId": 102, "unAuthAppIds": [3]},
        "/power/subuser/auth/102",
        {"unAuthAppIds": "3"},
        None,
    ),
    ("uucall.subuser.get", {"subUserId": 104}, "/power/subuser/104", {}, None),
    (
        "uucall.subuser.update",
        {"subUserId": 104, "dept": "客服部", "bind_ext": "8014", "email": "a@b.cn"},
        "/power/subuser/104",
        {},
        {"uid": 10001, "id": 104, "dept": "客服部", "bind_ext": 8014, "email": "a@b.cn"},
    ),
    ("uucall.subuser.delete", {"subUserId": 106}, "/power/subuser/106", {}, None),
]

#: (command, args, the field named in the error): refused when parsed, before any request.
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("uucall.basicbill.download", {"subUserName": "../../etc"}, "subUserName"),
    ("uucall.chargebill.download", {"file_name": "../x.csv"}, "file_name"),
    ("uucall.chargebill.download", {"file_name": "a/b.csv"}, "file_name"),
    ("uucall.chargebill.download", {"file_name": ".hidden"}, "file_name"),
    ("uucall.chargebill.download", {"account": "a\\b"}, "account"),
    ("uucall.funbill.download", {"subUserName": "agent01", "time": "2024-13"}, "time"),
    ("uucall.chargebill.list", {"time": "2024-5"}, "time"),
    ("uucall.notice.get", {"noticeId": "../1"}, "noticeId"),
    ("uucall.notice.get", {"noticeId": True}, "noticeId"),
    ("uucall.notice.update", {"noticeId": 2}, ""),
    ("uucall.notice.create", {"title": "t", "content": "c", "targets": []}, "targets"),
    ("uucall.oplog.list", {"startTime": "2024-02-30 00:00:00"}, "startTime"),
    (
        "uucall.roleuser.create",
        {"account": "a", "name": "n", "password": "密码密码密码"},
        "password",
    ),
    ("uucall.role_auth.update", {"roleId": 3}, ""),
    ("uucall.role_auth.update", {"roleId": 3, "authAppIds": [1], "unAuthAppIds": [1]}, ""),
    ("uucall.subuser.list", {"state": 9}, "state"),
    ("uucall.subuser.update", {"subUserId": 101, "uid": 99999}, "uid"),
    ("uucall.cashlog.list", {"page": 0}, "page"),
    ("uucall.account.get", {"uid": "99999"}, "uid"),
]


def parse(command: str, args: dict[str, Any]) -> UucallCommand:
    parsed = registry.command_catalog().parse(json.dumps({"command": command, "args": args}))
    assert isinstance(parsed, UucallCommand)
    return parsed


def test_one_command_per_operation_of_the_document() -> None:
    documented = sorted(f"{op.method} {op.path}" for op in operations())
    assert sorted(ENDPOINTS.values()) == documented
    assert len(COMMAND_MODELS) == len(COMMAND_NAMES) == 34
    assert {c[0] for c in CASES} == set(COMMAND_NAMES)


@pytest.mark.parametrize(("command", "args", "path", "query", "body"), CASES)
def test_requests_follow_the_document(
    command: str, args: dict[str, Any], path: str, query: dict[str, str], body: Any
) -> None:
    """The query and body of each command, and every parameter sent is one the document lists
    for the operation (with its required ones)."""
    parsed = parse(command, args)
    settings = pbx_for(UucallSimulator(), "acme", base_url="http://uucall.test/rest")
    sent_path, sent_query, sent_body = request_of(parsed, settings)
    assert (sent_path, sent_query, sent_body) == (path, query, body)
    op = next(o for o in operations() if f"{o.method} {o.path}" == ENDPOINTS[command])
    paged = {"page", "pageSize"} if type(parsed).answer == "page" else set()
    assert set(sent_query) <= op.names("query")
    required = {p.name for p in op.params if p.location == "query" and p.required}
    if "{uid}" in op.path:
        required -= {"uid"}  # the document lists it as a query parameter of a path holding it
    assert required <= set(sent_query) | paged
    assert (sent_body is not None) == bool(op.names("body"))


@pytest.mark.parametrize(("command", "args", "field"), INVALID)
def test_invalid_args_are_refused_when_parsed(
    command: str, args: dict[str, Any], field: str
) -> None:
    with pytest.raises(CommandInvalid) as invalid:
        parse(command, args)
    assert invalid.value.to_error().code is ErrorCode.INVALID
    fields = [e["field"] for e in invalid.value.errors]
    assert any(f == f"args.{field}".rstrip(".") or f.startswith(f"args.{field}") for f in fields), (
        invalid.value.errors
    )


async def run(
    sim: UucallSimulator,
    http: aiohttp.ClientSession,
    command: str,
    args: dict[str, Any],
    folder: Path,
) -> dict[str, Any]:
    settings = pbx_for(sim)
    client = UucallClient(http, settings)
    return await execute_rest(client, settings, parse(command, args), Downloads(folder, 1 << 20))


@pytest.mark.parametrize(("command", "args", "path", "query", "body"), CASES)
async def test_every_command_against_the_simulator(
    command: str,
    args: dict[str, Any],
    path: str,
    query: dict[str, str],
    body: Any,
    uusim: UucallSimulator,
    http_session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    result = await run(uusim, http_session, command, args, tmp_path)
    method = ENDPOINTS[command].split()[0]
    sent = uusim.calls(method, path)
    assert sent and all(r.status in (200, 201) for r in sent), sent
    assert {k: v for k, v in sent[-1].query.items() if k not in ("page", "pageSize")} == query
    assert sent[-1].body == body
    kind = type(parse(command, args)).answer
    if kind in ("page", "rows"):
        assert result["data"], result
    if kind == "write":
        assert result["status"] == (201 if method == "POST" else 200)


async def test_list_results(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    every = await run(uusim, http_session, "uucall.cashlog.list", {"page_size": 2}, tmp_path)
    assert every["row_count"] == 7 and [r["id"] for r in every["data"]] == [7, 6, 5, 4, 3, 2, 1]
    assert len(uusim.calls("GET", "/account/cashlog")) == 4
    page = await run(
        uusim, http_session, "uucall.cashlog.list", {"page": 2, "page_size": 3}, tmp_path
    )
    assert page == {
        "data": [uusim.cashlog[i] for i in (4, 3, 2)],
        "page": 2,
        "page_size": 3,
    }
    bills = await run(
        uusim, http_session, "uucall.chargebill.list", {"account": "agent01"}, tmp_path
    )
    (bill,) = bills["data"]
    assert bill["subUserName"] == "agent01" and isinstance(bill["total"], str)
    assert "." in bill["basicBill"], "a double's exact text"
    users = await run(uusim, http_session, "uucall.subuser.list", {}, tmp_path)
    assert [u["account"] for u in users["data"]] == [f"agent{n:02d}" for n in range(1, 7)]
    assert users["row_count"] == 6


async def test_records_and_writes_change_the_service(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    account = await run(uusim, http_session, "uucall.account.get", {}, tmp_path)
    assert account == uusim.account
    await run(uusim, http_session, "uucall.role.create", {"name": "财务", "level": 2}, tmp_path)
    assert any(r["name"] == "财务" and r["level"] == 2 for r in uusim.roles.values())
    await run(
        uusim,
        http_session,
        "uucall.roleuser.create",
        {"account": "agent07", "name": "坐席07", "password": "pw", "roleId": 3},
        tmp_path,
    )
    created = next(u for u in uusim.subusers.values() if u["account"] == "agent07")
    assert uusim.user_role[created["id"]] == 3
    assert uusim.user_apps[created["id"]] == uusim.role_apps[3], "the role's template"
    result = await run(
        uusim,
        http_session,
        "uucall.subuser.update",
        {"subUserId": created["id"], "state": 4},
        tmp_path,
    )
    assert result == {"status": 200, "subUserId": str(created["id"])}
    assert created["state"] == 4
    auth = await run(
        uusim, http_session, "uucall.subuser_auth.get", {"subUserId": created["id"]}, tmp_path
    )
    assert sorted(a["id"] for a in auth["data"]) == sorted(uusim.role_apps[3])


async def test_vendor_errors_of_commands(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    with pytest.raises(CommandFailed) as missing:
        await run(uusim, http_session, "uucall.notice.get", {"noticeId": 99}, tmp_path)
    assert missing.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(CommandFailed) as assigned:
        await run(uusim, http_session, "uucall.role.delete", {"roleId": 2}, tmp_path)
    assert assigned.value.code is ErrorCode.FAILED and assigned.value.vendor_code == "424"
    assert "assigned" in assigned.value.message
    uusim.script("PUT", "/power/subuser/101", status=500)
    with pytest.raises(CommandFailed) as server:
        await run(
            uusim, http_session, "uucall.subuser.update", {"subUserId": 101, "dept": "x"}, tmp_path
        )
    assert server.value.code is ErrorCode.FAILED and not server.value.retryable
    assert len(uusim.calls("PUT", "/power/subuser/101")) == 1


async def test_downloads_without_a_folder_are_unsupported(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    settings = pbx_for(uusim)
    client = UucallClient(http_session, settings)
    with pytest.raises(CommandFailed) as failed:
        await execute_rest(client, settings, parse("uucall.chargebill.download", {}), None)
    assert failed.value.code is ErrorCode.UNSUPPORTED
    assert not uusim.received
