"""The Yeastar P-Series simulator on real loopback sockets, checked against the manual's rules."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import pytest_asyncio

from gateway.sim.yeastar import EVENT_IDS, YeastarSimulator, add_arguments, serve

API = "/openapi/v1.0"
SimFactory = Callable[..., Awaitable[YeastarSimulator]]


@pytest_asyncio.fixture
async def make_sim() -> AsyncIterator[SimFactory]:
    sims: list[YeastarSimulator] = []

    async def factory(**kwargs: Any) -> YeastarSimulator:
        kwargs.setdefault("step_delay", 0.0)
        kwargs.setdefault("seed", 1)
        sim = YeastarSimulator(**kwargs)
        await sim.start()
        sims.append(sim)
        return sim

    yield factory
    for sim in sims:
        await sim.stop()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"User-Agent": "OpenAPI"}) as session:
        yield session


async def get_token(
    http: aiohttp.ClientSession,
    sim: YeastarSimulator,
    username: str = "sim-client",
    password: str = "sim-secret",
) -> dict[str, Any]:
    async with http.post(
        f"{sim.base_url}{API}/get_token", json={"username": username, "password": password}
    ) as resp:
        assert resp.status == 200
        return await resp.json()


async def api_get(
    http: aiohttp.ClientSession, sim: YeastarSimulator, endpoint: str, **params: str
) -> dict[str, Any]:
    async with http.get(f"{sim.base_url}{API}/{endpoint}", params=params) as resp:
        assert resp.status == 200
        return await resp.json()


async def eventually(predicate: Callable[[], bool], limit: float = 3.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def subscribe(
    http: aiohttp.ClientSession, sim: YeastarSimulator, token: str, topics: list[Any]
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(f"{sim.ws_url}?access_token={token}", autoping=True)
    await ws.send_str(json.dumps({"topic_list": topics}))
    reply = await ws.receive(timeout=3)
    assert json.loads(reply.data) == {"errcode": 0, "errmsg": "SUCCESS"}
    return ws


def frame_msg(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(frame, msg object) whatever the msg encoding."""
    frame = json.loads(text)
    msg = frame["msg"]
    return frame, json.loads(msg) if isinstance(msg, str) else msg


# ------------------------------------------------------------------------- auth
async def test_get_token_success_and_failure_bodies(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(access_ttl=1800, refresh_ttl=86400)
    ok = await get_token(http, sim)
    assert ok["errcode"] == 0 and ok["errmsg"] == "SUCCESS"
    assert ok["access_token_expire_time"] == 1800 and ok["refresh_token_expire_time"] == 86400
    assert len(ok["access_token"]) == 32 and len(ok["refresh_token"]) == 32
    bad = await get_token(http, sim, password="nope")
    assert bad == {
        "errcode": -1,
        "errmsg": "FAILURE",
        "invalid_param_list": [{"field": "username or password", "value": "error"}],
    }
    assert sim.auth_failures["127.0.0.1"] == 1
    assert sim.token_requests == 2


async def test_missing_user_agent_is_rejected(make_sim: SimFactory) -> None:
    sim = await make_sim()
    async with aiohttp.ClientSession(skip_auto_headers=["User-Agent"]) as bare:
        async with bare.post(
            f"{sim.base_url}{API}/get_token",
            json={"username": "sim-client", "password": "sim-secret"},
        ) as resp:
            assert await resp.json() == {"errcode": 10005, "errmsg": "ACCESS DENIED"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await bare.ws_connect(f"{sim.ws_url}?access_token=x")
        assert info.value.status == 403
    assert sim.token_requests == 0


async def test_five_failures_block_ip_until_unblock(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim()
    for _ in range(5):
        assert (await get_token(http, sim, password="wrong"))["errcode"] == -1
    assert "127.0.0.1" in sim.blocked
    blocked = await get_token(http, sim)
    assert blocked == {"errcode": 70004, "errmsg": "ACCOUNT IP BLOCKED"}
    async with http.post(f"{sim.base_url}{API}/refresh_token", json={"refresh_token": "x"}) as resp:
        assert (await resp.json())["errcode"] == 70004
    sim.unblock("127.0.0.1")
    assert (await get_token(http, sim))["errcode"] == 0


async def test_success_resets_failure_counter(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim()
    for _ in range(4):
        await get_token(http, sim, password="wrong")
    assert (await get_token(http, sim))["errcode"] == 0
    for _ in range(4):
        await get_token(http, sim, password="wrong")
    assert not sim.blocked
    assert (await get_token(http, sim))["errcode"] == 0


async def test_access_token_expiry_and_missing_token(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(access_ttl=1)
    tok = await get_token(http, sim)
    assert tok["access_token_expire_time"] == 1
    assert (await api_get(http, sim, "cdr/list", access_token=tok["access_token"]))["errcode"] == 0
    assert await api_get(http, sim, "cdr/list") == {"errcode": 10005, "errmsg": "ACCESS DENIED"}
    assert (await api_get(http, sim, "cdr/list", access_token="unknown"))["errcode"] == 10004
    deadline = time.monotonic() + 3
    while True:
        body = await api_get(http, sim, "cdr/list", access_token=tok["access_token"])
        if body["errcode"] != 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert body == {"errcode": 10004, "errmsg": "TOKEN EXPIRED"}


async def test_expire_tokens_control(make_sim: SimFactory, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    tok = await get_token(http, sim)
    sim.expire_tokens()
    body = await api_get(http, sim, "cdr/list", access_token=tok["access_token"])
    assert body["errcode"] == 10004


async def test_refresh_and_delete_token(make_sim: SimFactory, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    first = await get_token(http, sim)
    async with http.post(
        f"{sim.base_url}{API}/refresh_token", json={"refresh_token": first["refresh_token"]}
    ) as resp:
        second = await resp.json()
    assert second["errcode"] == 0 and second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert sim.token_requests == 1 and sim.stats()["refresh_requests"] == 1
    async with http.post(
        f"{sim.base_url}{API}/refresh_token", json={"refresh_token": first["refresh_token"]}
    ) as resp:
        assert await resp.json() == {"errcode": 10004, "errmsg": "TOKEN EXPIRED"}
    # the old access token lives until its own expiry
    for token in (first["access_token"], second["access_token"]):
        assert (await api_get(http, sim, "cdr/list", access_token=token))["errcode"] == 0
    assert await api_get(http, sim, "del_token", access_token=second["access_token"]) == {
        "errcode": 0,
        "errmsg": "SUCCESS",
    }
    body = await api_get(http, sim, "cdr/list", access_token=second["access_token"])
    assert body["errcode"] == 10004
    async with http.post(
        f"{sim.base_url}{API}/refresh_token", json={"refresh_token": second["refresh_token"]}
    ) as resp:
        assert (await resp.json())["errcode"] == 10004


async def test_unknown_endpoint_and_version(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim()
    tok = (await get_token(http, sim))["access_token"]
    body = await api_get(http, sim, "no/such", access_token=tok)
    assert body == {"errcode": 10001, "errmsg": "INTERFACE NOT EXISTED"}
    async with http.get(
        f"{sim.base_url}/openapi/v9.9/cdr/list", params={"access_token": tok}
    ) as resp:
        assert await resp.json() == {"errcode": 10003, "errmsg": "API VERSION UNSUPPORTED"}


# -------------------------------------------------------------------- websocket
async def test_subscribe_heartbeat_and_bad_requests(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim()
    tok = (await get_token(http, sim))["access_token"]
    ws = await subscribe(http, sim, tok, [30011, 30012])
    await ws.send_str("heartbeat")
    assert (await ws.receive(timeout=3)).data == "heartbeat response"
    await ws.send_str("{not json")
    assert json.loads((await ws.receive(timeout=3)).data)["errcode"] == 40001
    await ws.send_str(json.dumps({"topic_list": [30011, 39999]}))
    reply = json.loads((await ws.receive(timeout=3)).data)
    assert reply["errcode"] == 40002 and reply["errmsg"] == "PARAMETER ERROR"
    assert reply["invalid_param_list"] == [{"field": "topic_list", "value": "39999"}]
    await ws.close()


async def test_subscribe_refused_without_valid_token(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"{sim.ws_url}?access_token=bogus")
    assert info.value.status == 401


async def test_idle_connection_closed_unless_heartbeat(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(idle_timeout=0.5)
    tok = (await get_token(http, sim))["access_token"]
    alive = await subscribe(http, sim, tok, [30011])
    idle = await subscribe(http, sim, tok, [30011])
    started = time.monotonic()
    closed_at = None
    while time.monotonic() - started < 1.5:
        await alive.send_str("heartbeat")
        assert (await alive.receive(timeout=1)).data == "heartbeat response"
        if closed_at is None:
            with contextlib.suppress(TimeoutError):
                msg = await idle.receive(timeout=0.2)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                closed_at = time.monotonic() - started
        else:
            await asyncio.sleep(0.2)
    assert closed_at is not None and 0.3 < closed_at < 1.5
    assert idle.close_code == 1001
    assert not alive.closed
    await alive.close()


async def test_connection_closed_when_token_expires(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(access_ttl=1, idle_timeout=60)
    tok = (await get_token(http, sim))["access_token"]
    ws = await subscribe(http, sim, tok, [30011])
    msg = await ws.receive(timeout=3)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 1008


async def test_connection_closed_when_token_deleted(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim()
    tok = (await get_token(http, sim))["access_token"]
    ws = await subscribe(http, sim, tok, [30011])
    await api_get(http, sim, "del_token", access_token=tok)
    msg = await ws.receive(timeout=3)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_frames_reach_only_subscribed_topics(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim()
    tok = (await get_token(http, sim))["access_token"]
    cdr_ws = await subscribe(http, sim, tok, [30012])
    status_ws = await subscribe(http, sim, tok, ["30011"])
    call_id = await sim.run_call("internal")
    cdr = json.loads((await cdr_ws.receive(timeout=3)).data)
    assert cdr["type"] == 30012
    assert frame_msg(json.dumps(cdr))[1]["call_id"] == call_id
    expected_status = [f.text for f in sim.sent if f.event == 30011]
    got = [(await status_ws.receive(timeout=3)).data for _ in expected_status]
    assert got == expected_status
    for ws in (cdr_ws, status_ws):  # nothing else arrives
        await ws.send_str("heartbeat")
        assert (await ws.receive(timeout=3)).data == "heartbeat response"
    assert all(f.subscribers == 1 for f in sim.sent if f.event in (30011, 30012))
    assert all(f.subscribers == 0 for f in sim.sent if f.event not in (30011, 30012))
    await cdr_ws.close()
    await status_ws.close()


async def test_drop_connections(make_sim: SimFactory, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    tok = (await get_token(http, sim))["access_token"]
    ws = await subscribe(http, sim, tok, [30011])
    assert await sim.drop_connections() == 1
    msg = await ws.receive(timeout=3)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    await eventually(lambda: sim.stats()["connections"] == 0)


# ---------------------------------------------------------------------- traffic
async def test_run_traffic_produces_every_event_and_one_cdr_per_call(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(seed=7, trap_rate=0.3)
    tok = (await get_token(http, sim))["access_token"]
    ws = await subscribe(http, sim, tok, list(EVENT_IDS))
    await sim.run_traffic(30, concurrency=4)
    assert {f.event for f in sim.sent} == set(EVENT_IDS)
    assert 30021 not in EVENT_IDS
    call_ids = {f.payload["call_id"] for f in sim.sent if f.event == 30011}
    cdrs = Counter(f.payload["call_id"] for f in sim.sent if f.event == 30012)
    assert set(cdrs) == call_ids and set(cdrs.values()) == {1}
    assert len(cdrs) == len(sim.cdrs.records)
    for frame in sim.sent:
        if frame.event == 30012 and frame.payload["recording"].strip():
            assert frame.payload["call_id"] in frame.payload["recording"]
            assert frame.payload["talk_duration"] <= frame.payload["call_duration"]
    # 30011 and 30012 agree on parties and every call ends with a BYE report
    last_status: dict[str, dict[str, Any]] = {}
    for frame in sim.sent:
        if frame.event == 30011:
            last_status[frame.payload["call_id"]] = frame.payload
    for call_id, msg in last_status.items():
        statuses = [next(iter(m.values()))["member_status"] for m in msg["members"]]
        assert statuses == ["BYE"], (call_id, statuses)
    received = 0
    while received < len(sim.sent):  # everything reached the socket, in order
        msg = await ws.receive(timeout=3)
        assert msg.data == sim.sent[received].text
        received += 1
    await ws.close()


async def test_30008_follows_member_status(make_sim: SimFactory) -> None:
    sim = await make_sim(trap_rate=0.0)
    await sim.run_call("internal")
    states = [f.payload["status"] for f in sim.sent if f.event == 30008]
    assert states[:2] == ["busy", "ringing"]
    assert states[-2:] == ["idle", "idle"]
    assert set(sim.traffic.ext_state.values()) == {"idle"}


async def test_no_identical_consecutive_frames_per_entity(make_sim: SimFactory) -> None:
    sim = await make_sim(seed=3)
    await sim.run_traffic(20)
    last: dict[tuple[int, str], str] = {}
    for frame in sim.sent:
        key = (frame.event, frame.entity)
        assert last.get(key) != frame.text
        last[key] = frame.text


async def test_traps_and_default_encoding(make_sim: SimFactory) -> None:
    clean = await make_sim(seed=5, trap_rate=0.0)
    await clean.run_traffic(10)
    for frame in clean.sent:
        assert frame.trap is None
        assert isinstance(frame.msg, dict) == (frame.event in (30025, 30026))
    trapped = await make_sim(seed=5, trap_rate=1.0)
    await trapped.run_traffic(20)
    kinds = {f.trap for f in trapped.sent}
    assert {"msg_form", "case_drift", "member_statuses", "missing_sn", "blank"} <= kinds
    for frame in trapped.sent:
        outer, msg = frame_msg(frame.text)
        if frame.trap == "missing_sn":
            assert "sn" not in outer
        if frame.trap == "member_statuses":
            assert "member_statuses" in json.dumps(msg)
        if frame.trap == "case_drift" and frame.event == 30008:
            assert msg["status"][0].isupper()


async def test_run_call_rejects_unknown_flow(make_sim: SimFactory) -> None:
    sim = await make_sim()
    with pytest.raises(ValueError, match="unknown flow"):
        await sim.run_call("teleport")


async def test_background_traffic_runs_and_stops(make_sim: SimFactory) -> None:
    sim = await make_sim(calls_per_second=50.0)
    await eventually(lambda: sim.stats()["events"][30012] >= 3)
    await sim.stop()
    count = len(sim.sent)
    await asyncio.sleep(0.1)
    assert len(sim.sent) == count
    await sim.stop()  # idempotent


# -------------------------------------------------------------------------- CDR
async def test_cdr_list_and_search(make_sim: SimFactory, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(seed=11, tz="Asia/Shanghai")
    call_ids = [await sim.run_call(flow) for flow in ("internal", "outbound", "inbound_ivr")]
    tok = (await get_token(http, sim))["access_token"]
    listing = await api_get(http, sim, "cdr/list", access_token=tok)
    assert listing["errcode"] == 0 and listing["total_number"] == 3
    by_call = {r.call_id: r for r in sim.cdrs.records}
    assert set(by_call) == set(call_ids)
    tz = ZoneInfo("Asia/Shanghai")
    for item in listing["data"]:
        assert item["uid"] not in by_call
        assert (
            datetime.strptime(item["time"], "%m/%d/%Y %H:%M:%S").replace(tzinfo=tz).timestamp()
            == item["timestamp"]
        )
        if "record_file" in item:
            assert any(cid in item["record_file"] for cid in call_ids)
        assert item["call_type"] in ("Inbound", "Outbound", "Internal")
    desc = await api_get(
        http,
        sim,
        "cdr/list",
        access_token=tok,
        sort_by="id",
        order_by="desc",
        page="2",
        page_size="2",
    )
    assert desc["total_number"] == 3 and [i["id"] for i in desc["data"]] == [1]
    bad = await api_get(http, sim, "cdr/list", access_token=tok, sort_by="colour")
    assert bad["errcode"] == 40002
    first = sim.cdrs.records[0]
    t0 = datetime.fromtimestamp(first.timestamp - 60, tz).strftime("%m/%d/%Y %H:%M:%S")
    t1 = datetime.fromtimestamp(first.timestamp + 60, tz).strftime("%m/%d/%Y %H:%M:%S")
    found = await api_get(
        http,
        sim,
        "cdr/search",
        access_token=tok,
        start_time=t0,
        end_time=t1,
        call_from=first.caller,
    )
    assert found["errcode"] == 0 and found["total_number"] >= 1
    assert all(first.caller in i["call_from"] for i in found["data"])
    iso = await api_get(http, sim, "cdr/search", access_token=tok, start_time="2020-01-01 00:00:00")
    assert iso["total_number"] == 0  # wrong display format: no records, per the manual
    fuzzy = await api_get(
        http,
        sim,
        "cdr/search",
        access_token=tok,
        call_from=first.caller[:2],
        enable_fuzzy_search="1",
    )
    assert fuzzy["total_number"] >= 1
    answered = await api_get(http, sim, "cdr/search", access_token=tok, status="ANSWERED")
    assert all(i["disposition"] == "ANSWERED" for i in answered["data"])


# -------------------------------------------------------------------------- CLI
async def test_cli_serve_prints_and_stops(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--port", "0", "--seed", "1"])
    assert args.host == "127.0.0.1" and args.calls_per_second == 1.0
    task = asyncio.create_task(serve(args))
    deadline = time.monotonic() + 3
    while "http://127.0.0.1:" not in capsys.readouterr().out:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
