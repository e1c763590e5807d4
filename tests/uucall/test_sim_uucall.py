"""The simulator against the document: every operation answers with its documented success
code and model, other methods 405, and the auth, uid, rate limit and pagination rules; its data
changes over time."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import aiohttp
import pytest

from gateway.connectors.uucall.models import MODELS
from gateway.sim.uucall.rest import UucallSimulator
from tests.uucall.document import Operation, operations
from tests.uucall.helpers import TOKEN, make_sim

#: A valid value for each documented parameter (the simulator's seed data).
VALUES = {
    "uid": "10001",
    "uidName": "uucall-demo",
    "subUserName": "agent01",
    "noticeId": "2",
    "roleId": "4",  # the one role no sub-account has: it can be deleted
    "subUserId": "104",
    "name": "新角色",
    "account": "agent09",
    "password": "s3cret",
}
BODIES = {
    "POST /power/notice": {
        "uid": 10001,
        "createtime": 1714550400000,
        "content": "内容",
        "title": "标题",
        "targets": "101",
    },
    "PUT /power/notice/{noticeId}": {"id": 2, "content": "新内容"},
    "POST /power/role": {"uid": 10001, "name": "新角色", "level": 2},
    "PUT /power/role/{roleId}": {"id": 4, "level": 3},
    "POST /power/roleuser": {"account": "agent09", "name": "新坐席"},
    "PUT /power/roleuser/{subUserId}": {"id": 104, "jobnumber": "B004"},
    "PUT /power/subuser/{subUserId}": {"id": 104, "dept": "客服部"},
}


def request_of(op: Operation) -> tuple[str, dict[str, str], Any]:
    path = op.path
    for name in op.names("path") | {"uid"}:
        path = path.replace("{" + name + "}", VALUES[name])
    query = {p.name: VALUES[p.name] for p in op.params if p.location == "query" and p.required}
    body = BODIES.get(f"{op.method} {op.path}") if op.names("body") else None
    return path, query, body


async def send(
    http: aiohttp.ClientSession,
    sim: UucallSimulator,
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.request(
        method,
        sim.base_url + path,
        params=query or {},
        json=body,
        headers={"Authorization": TOKEN} if headers is None else headers,
    ) as response:
        raw = await response.read()
        try:
            decoded = json.loads(raw) if raw.strip() else None
        except ValueError:
            decoded = raw
        return response.status, decoded, response


@pytest.mark.parametrize("op", operations(), ids=lambda op: f"{op.method} {op.path}")
async def test_every_documented_operation(
    op: Operation, uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    """Its success code (200, or 201 for a POST), the documented model's fields for a JSON
    answer, and every documented code among what it can answer."""
    path, query, body = request_of(op)
    status, answer, response = await send(http_session, uusim, op.method, path, query, body)
    success = 201 if op.method == "POST" else 200
    assert status == success, (status, answer)
    assert success in op.codes
    assert set(op.codes) == {429, 405, success, 401, 403, 500, 424}
    if op.model is not None:
        rows = answer if isinstance(answer, list) else [answer]
        assert rows, "some data to show"
        documented = set(MODELS[op.model].model_fields)
        for row in rows:
            assert set(row) == documented, (op.path, set(row) ^ documented)
    elif op.method != "GET":
        assert answer is None, "No Content"
    else:
        assert response.content_type == "text/csv" and answer.startswith("\ufeff".encode())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/power/subuser"),  # sub-accounts are created through /power/roleuser
        ("DELETE", "/power/roleuser/101"),
        ("POST", "/account/cashlog"),
        ("GET", "/power/role/3"),
        ("DELETE", "/power/notice"),
    ],
)
async def test_undocumented_methods_are_405(
    method: str, path: str, uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    status, answer, _ = await send(http_session, uusim, method, path, {"uid": "10001"})
    assert status == 405 and answer["code"] == 405


async def test_unknown_path_is_404(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    status, _, _ = await send(http_session, uusim, "GET", "/power/nothing", {"uid": "10001"})
    assert status == 404


@pytest.mark.parametrize("headers", [{}, {"Authorization": "wrong"}, {"X-Token": TOKEN}])
async def test_header_auth(
    headers: dict[str, str], uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    status, answer, _ = await send(
        http_session, uusim, "GET", "/account/10001", headers=headers or {"X": "y"}
    )
    assert (status, answer["code"]) == (401, 401)


async def test_basic_auth_and_none(http_session: aiohttp.ClientSession) -> None:
    basic = make_sim(auth="basic", username="fin", password="pw-1")
    none = make_sim(auth="none")
    await basic.start()
    await none.start()
    try:
        good = "Basic " + base64.b64encode(b"fin:pw-1").decode()
        bad = "Basic " + base64.b64encode(b"fin:pw-2").decode()
        assert (
            await send(
                http_session, basic, "GET", "/account/10001", headers={"Authorization": good}
            )
        )[0] == 200
        assert (
            await send(http_session, basic, "GET", "/account/10001", headers={"Authorization": bad})
        )[0] == 401
        assert (await send(http_session, none, "GET", "/account/10001", headers={}))[0] == 200
    finally:
        await basic.stop()
        await none.stop()


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/account/99999", {}),
        ("/account/cashlog", {"uid": "99999"}),
        ("/account/chargebill", {"uidName": "someone-else"}),
        ("/power/notice", {"uid": "99999"}),
    ],
)
async def test_another_enterprise_is_403(
    path: str, query: dict[str, str], uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    status, _, _ = await send(http_session, uusim, "GET", path, query)
    assert status == 403


async def test_424_when_a_dependency_refuses(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    status, answer, _ = await send(http_session, uusim, "DELETE", "/power/role/2")
    assert status == 424 and "assigned" in answer["message"]
    status, answer, _ = await send(
        http_session, uusim, "POST", "/power/roleuser", {**VALUES, "account": "agent01"}, {}
    )
    assert status == 424 and "exists" in answer["message"]


async def test_pagination(uusim: UucallSimulator, http_session: aiohttp.ClientSession) -> None:
    pages = []
    for page in (1, 2, 3):
        _, answer, _ = await send(
            http_session,
            uusim,
            "GET",
            "/account/cashlog",
            {"uid": "10001", "page": str(page), "pageSize": "3"},
        )
        pages.append([row["id"] for row in answer])
    assert pages == [[7, 6, 5], [4, 3, 2], [1]], "newest first, 3 a page"
    status, _, _ = await send(
        http_session, uusim, "GET", "/account/cashlog", {"uid": "10001", "pageSize": "x"}
    )
    assert status == 400


async def test_data_envelope_and_string_numbers(http_session: aiohttp.ClientSession) -> None:
    sim = make_sim(envelope="data", string_numbers=True)
    await sim.start()
    try:
        _, answer, _ = await send(
            http_session, sim, "GET", "/account/cashlog", {"uid": "10001", "pageSize": "2"}
        )
        assert answer["total"] == "7" and answer["pageSize"] == "2"  # every integer
        assert answer["data"][0]["id"] == "7" and isinstance(answer["data"][0]["money"], str)
        _, account, _ = await send(http_session, sim, "GET", "/account/10001")
        assert account["data"]["balance"] == "26000"
    finally:
        await sim.stop()


async def test_rate_limit_answers_429_with_retry_after(http_session: aiohttp.ClientSession) -> None:
    sim = make_sim(rate_limit=1.0, burst=2)
    await sim.start()
    try:
        statuses = []
        for _ in range(3):
            status, _, response = await send(http_session, sim, "GET", "/account/10001")
            statuses.append((status, response.headers.get("Retry-After")))
        assert statuses[:2] == [(200, None), (200, None)]
        assert statuses[2] == (429, "1")
        sim.storm(2, retry_after="3")
        assert (await send(http_session, sim, "GET", "/account/10001"))[2].headers[
            "Retry-After"
        ] == "3"
    finally:
        await sim.stop()


async def test_data_changes_over_time(uusim: UucallSimulator) -> None:
    """Bills grow and the balance falls; below ``recharge_below`` a recharge comes (so the
    balance crosses ``low_mark`` downwards, then recovers); oplog entries and notices appear."""
    balances = [uusim.account["balance"]]
    cash = len(uusim.cashlog)
    oplog = len(uusim.oplog)
    month = uusim.month()
    before = sum(b["basicBill"] + b["functionBill"] for b in uusim.bills[month].values())
    for _ in range(60):
        uusim.tick()
        balances.append(uusim.account["balance"])
    after = sum(b["basicBill"] + b["functionBill"] for b in uusim.bills[month].values())
    assert after > before
    assert len(uusim.cashlog) > cash and len(uusim.oplog) >= oplog + 10
    low = uusim.low_mark
    downs = sum(1 for a, b in itertools.pairwise(balances) if a >= low > b)
    ups = sum(1 for a, b in itertools.pairwise(balances) if a < low <= b)
    assert downs >= 2 and ups >= 1, balances
    assert any("更新" in n["content"] for n in uusim.notices.values())
    assert len(uusim.notices) >= 4


async def test_writes_show_in_the_operation_log(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    await send(http_session, uusim, "DELETE", "/power/notice/1", {"uid": "10001"})
    _, entries, _ = await send(http_session, uusim, "GET", "/power/oplog", {"uid": "10001"})
    assert entries[0]["subUserName"] == "api" and entries[0]["opdescribe"] == "删除公告 1"
    _, filtered, _ = await send(
        http_session,
        uusim,
        "GET",
        "/power/oplog",
        {"uid": "10001", "startTime": "2999-01-01 00:00:00"},
    )
    assert filtered == []


async def test_a_flaky_service_answers_500(http_session: aiohttp.ClientSession) -> None:
    sim = make_sim(error_rate=1.0)
    await sim.start()
    try:
        status, answer, _ = await send(http_session, sim, "GET", "/account/10001")
        assert (status, answer["code"]) == (500, 500)
        status, _, _ = await send(http_session, sim, "GET", "/account/10001", headers={})
        assert status == 401, "credentials are checked first"
    finally:
        await sim.stop()
