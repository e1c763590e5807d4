"""Call control and queue agents of the Yeastar simulator over real loopback HTTP + WebSocket.

Each command is checked for its state change (call_state / query endpoints), the reports it
produced on a subscribed socket, and its main errors (70130 unknown channel, 40002 parameters).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest_asyncio

from gateway.sim.yeastar import YeastarSimulator

API = "/openapi/v1.0"
TOPICS = [30008, 30011, 30012, 30013, 30015, 30016, 30018, 30020]
Frame = tuple[int, dict[str, Any]]


class Events:
    """Every report a subscribed socket received, parsed, in arrival order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[Frame] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            frame = json.loads(message.data)
            msg = frame["msg"]
            self.frames.append((frame["type"], json.loads(msg) if isinstance(msg, str) else msg))

    async def wait(self, predicate: Callable[[list[Frame]], bool], limit: float = 3.0) -> None:
        deadline = time.monotonic() + limit
        while not predicate(self.frames):
            assert time.monotonic() < deadline, f"not reached; got {self.frames}"
            await asyncio.sleep(0.01)

    def of(self, event: int, call_id: str | None = None) -> list[dict[str, Any]]:
        return [
            m for e, m in self.frames if e == event and (call_id is None or m["call_id"] == call_id)
        ]

    def statuses(self, call_id: str) -> list[list[tuple[str, str]]]:
        """Per 30011 of the call: (number or to/from, member_status) of every member."""
        out = []
        for msg in self.of(30011, call_id):
            row = []
            for member in msg["members"]:
                ((kind, info),) = member.items()
                who = info.get("number") or (info["to"] if kind == "outbound" else info["from"])
                row.append((who, info["member_status"]))
            out.append(row)
        return out


class Client:
    """A test's sim, HTTP session, token and subscribed event socket."""

    def __init__(self, sim: YeastarSimulator, http: aiohttp.ClientSession, token: str) -> None:
        self.sim, self.http, self.token = sim, http, token
        self.events: Events

    async def post(self, endpoint: str, body: Any) -> dict[str, Any]:
        url = f"{self.sim.base_url}{API}/{endpoint}?access_token={self.token}"
        async with self.http.post(url, json=body) as resp:
            assert resp.status == 200
            return await resp.json()

    async def get(self, endpoint: str, **params: Any) -> dict[str, Any]:
        query = {"access_token": self.token, **{k: str(v) for k, v in params.items()}}
        async with self.http.get(f"{self.sim.base_url}{API}/{endpoint}", params=query) as resp:
            assert resp.status == 200
            return await resp.json()

    async def dial(self, caller: str = "2000", callee: str = "2001") -> str:
        body = await self.post("call/dial", {"caller": caller, "callee": callee})
        assert body["errcode"] == 0, body
        return body["call_id"]

    async def talking(self, call_id: str) -> dict[str, Any]:
        """Wait until every member of the call talks; returns number -> channel id too."""
        await eventually(lambda: _all_talk(self.sim.call_state(call_id)))
        state = self.sim.call_state(call_id)
        assert state is not None
        return state

    def channel(self, call_id: str, who: str) -> str:
        state = self.sim.call_state(call_id)
        assert state is not None
        for m in state["members"]:
            if who in (m.get("number"), m.get("to"), m.get("from")):
                return m["channel_id"]
        raise AssertionError(f"{who} not in {state}")


def _all_talk(state: dict[str, Any] | None) -> bool:
    return (
        bool(state)
        and all(m["status"] in ("ANSWER", "ANSWERED") for m in state["members"])
        and len(state["members"]) >= 2
    )


async def eventually(predicate: Callable[[], bool], limit: float = 3.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def required(name: str) -> dict[str, Any]:
    return {
        "errcode": 40002,
        "errmsg": "PARAMETER ERROR",
        "invalid_param_list": [{"field": name, "validation_type": "required"}],
    }


NOT_FOUND = {"errcode": 70130, "errmsg": "CAHNNEL ID NOT FOUND"}
NOT_SUPPORTED = {"errcode": 70132, "errmsg": "OPERATION NOT SUPPORTED"}
Factory = Callable[..., Awaitable[Client]]


@pytest_asyncio.fixture
async def make_client() -> AsyncIterator[Factory]:
    sims: list[YeastarSimulator] = []
    clients: list[Client] = []
    async with aiohttp.ClientSession(headers={"User-Agent": "OpenAPI"}) as http:

        async def factory(**kwargs: Any) -> Client:
            kwargs.setdefault("step_delay", 0.0)
            kwargs.setdefault("seed", 7)
            kwargs.setdefault("trap_rate", 0.0)
            sim = YeastarSimulator(**kwargs)
            await sim.start()
            sims.append(sim)
            async with http.post(
                f"{sim.base_url}{API}/get_token",
                json={"username": "sim-client", "password": "sim-secret"},
            ) as resp:
                token = (await resp.json())["access_token"]
            client = Client(sim, http, token)
            ws = await http.ws_connect(f"{sim.ws_url}?access_token={token}")
            await ws.send_str(json.dumps({"topic_list": TOPICS}))
            assert json.loads((await ws.receive(timeout=3)).data)["errcode"] == 0
            client.events = Events(ws)
            clients.append(client)
            return client

        yield factory
        for client in clients:
            await client.events.ws.close()
            client.events.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client.events.task
        for sim in sims:
            await sim.stop()


# ---------------------------------------------------------------------------- dial
async def test_dial_hold_unhold_hangup_reports_in_order(make_client: Factory) -> None:
    c = await make_client()
    call_id = await c.dial("2000", "2001")
    await c.talking(call_id)
    a, b = c.channel(call_id, "2000"), c.channel(call_id, "2001")
    assert a.startswith("PJSIP/2000-") and b.startswith("PJSIP/2001-")
    assert await c.post("call/hold", {"channel_id": b}) == {
        "errcode": 0,
        "errmsg": "SUCCESS",
        "call_id": call_id,
    }
    assert (await c.post("call/unhold", {"channel_id": b}))["call_id"] == call_id
    assert (await c.post("call/hangup", {"channel_id": a}))["call_id"] == call_id
    await c.events.wait(lambda f: len(c.events.of(30012, call_id)) == 1)
    assert c.events.statuses(call_id) == [
        [("2000", "ALERT")],
        [("2000", "ALERT"), ("2001", "RING")],
        [("2000", "ALERT"), ("2001", "ANSWER")],
        [("2000", "ANSWERED"), ("2001", "ANSWER")],
        [("2000", "ANSWERED"), ("2001", "HOLD")],
        [("2000", "ANSWERED"), ("2001", "ANSWER")],
        [("2000", "BYE"), ("2001", "ANSWER")],
        [("2001", "BYE")],
    ]
    (cdr,) = c.events.of(30012, call_id)
    assert cdr["status"] == "ANSWER" and cdr["type"] == "internal"
    assert (cdr["call_from"], cdr["call_to"], cdr["recording"]) == ("2000", "2001", " ")
    await asyncio.sleep(0.05)
    assert len(c.events.of(30012, call_id)) == 1
    assert [r.call_id for r in c.sim.cdrs.records] == [call_id]
    assert c.sim.cdrs.records[0].reason.strip() == "src hangup"
    assert c.sim.call_state(call_id) is None and c.sim.live_calls() == []
    states = [(m["extension"], m["status"]) for m in c.events.of(30008)]
    assert states[-2:] == [("2000", "idle"), ("2001", "idle")]
    assert c.sim.control_calls["call/dial"] == 1 and c.sim.control_calls["call/hold"] == 1


async def test_dial_validates_parameters(make_client: Factory) -> None:
    c = await make_client()
    assert await c.post("call/dial", {"caller": "2000"}) == required("callee")
    bad = await c.post("call/dial", {"caller": "9999", "callee": "2001", "auto_answer": "maybe"})
    assert bad["errcode"] == 40002 and bad["invalid_param_list"] == [
        {"field": "caller", "value": "9999"},
        {"field": "auto_answer", "value": "maybe"},
    ]
    same = await c.post("call/dial", {"caller": "2000", "callee": "2000"})
    assert same["invalid_param_list"] == [{"field": "callee", "value": "2000"}]
    typed = await c.post("call/dial", {"caller": 2000, "callee": "2001"})
    assert typed["invalid_param_list"] == [{"field": "caller", "value": "2000"}]
    url = f"{c.sim.base_url}{API}/call/dial?access_token={c.token}"
    async with c.http.post(url, data=b"{nope") as resp:
        assert await resp.json() == {"errcode": 40001, "errmsg": "PARAMETER SYNTAX ERROR"}
    c.sim.expire_tokens()
    assert (await c.post("call/dial", {"caller": "2000", "callee": "2001"}))["errcode"] == 10004
    assert c.sim.control_calls["call/dial"] == 5  # the expired-token request never ran
    assert c.sim.live_calls() == []


async def test_dial_external_is_outbound_and_auto_hangs_up(make_client: Factory) -> None:
    c = await make_client(auto_hangup_s=0.5)
    call_id = await c.dial("2003", "5503301")
    state = await c.talking(call_id)
    outbound = next(m for m in state["members"] if m["kind"] == "outbound")
    assert outbound["to"] == "5503301" and outbound["trunk_name"] == "test-peer-trunking"
    assert outbound["channel_id"].startswith("PJSIP/trunk-test-peer-trunking-endpoint-")
    await c.events.wait(lambda f: len(c.events.of(30012, call_id)) == 1)
    (cdr,) = c.events.of(30012, call_id)
    assert cdr["type"] == "outbound" and cdr["dst_trunk_name"] == "test-peer-trunking"
    assert c.sim.live_calls() == [] and not c.sim.traffic._busy


async def test_hangup_while_ringing_is_busy_and_errors(make_client: Factory) -> None:
    c = await make_client()
    c.sim.no_answer.add("2001")
    call_id = await c.dial("2000", "2001")
    await eventually(lambda: len((c.sim.call_state(call_id) or {"members": []})["members"]) == 2)
    ringing = c.channel(call_id, "2001")
    assert await c.post("call/hold", {"channel_id": ringing}) == NOT_SUPPORTED
    assert await c.post("call/mute", {"channel_id": ringing}) == NOT_SUPPORTED
    assert await c.post("call/hangup", {}) == required("channel_id")
    assert await c.post("call/hangup", {"channel_id": "PJSIP/2000-deadbeef"}) == NOT_FOUND
    assert (await c.post("call/hangup", {"channel_id": ringing}))["errcode"] == 0
    await c.events.wait(lambda f: len(c.events.of(30012, call_id)) == 1)
    assert c.events.of(30012, call_id)[0]["status"] == "BUSY"
    assert await c.post("call/hangup", {"channel_id": ringing}) == NOT_FOUND


# ------------------------------------------------------------ channel commands
async def test_hold_unhold_mute_errors(make_client: Factory) -> None:
    c = await make_client()
    for endpoint in ("call/hold", "call/unhold", "call/mute", "call/unmute"):
        assert await c.post(endpoint, {}) == required("channel_id")
        assert await c.post(endpoint, {"channel_id": "PJSIP/2000-00000001"}) == NOT_FOUND
    call_id = await c.dial()
    await c.talking(call_id)
    a = c.channel(call_id, "2000")
    assert await c.post("call/unhold", {"channel_id": a}) == NOT_SUPPORTED
    assert (await c.post("call/hold", {"channel_id": a}))["errcode"] == 0
    assert await c.post("call/hold", {"channel_id": a}) == NOT_SUPPORTED


async def test_mute_and_unmute_are_recorded(make_client: Factory) -> None:
    c = await make_client()
    call_id = await c.dial()
    await c.talking(call_id)
    b = c.channel(call_id, "2001")
    before = len(c.events.frames)
    assert (await c.post("call/mute", {"channel_id": b}))["call_id"] == call_id

    def muted() -> dict[str, bool]:
        state = c.sim.call_state(call_id)
        assert state is not None
        return {m["number"]: m["muted"] for m in state["members"]}

    assert muted() == {"2000": False, "2001": True}
    assert (await c.post("call/unmute", {"channel_id": b}))["call_id"] == call_id
    assert muted() == {"2000": False, "2001": False}
    assert len(c.events.frames) == before  # the manual defines no report for mute


async def test_recording_state_and_cdr_file(make_client: Factory) -> None:
    c = await make_client()
    call_id = await c.dial("2004", "2005")
    await c.talking(call_id)
    a = c.channel(call_id, "2004")
    assert await c.post("call/record_pause", {"channel_id": a}) == NOT_SUPPORTED
    assert await c.post("call/record_start", {}) == required("channel_id")
    assert await c.post("call/record_start", {"channel_id": "PJSIP/x-1"}) == NOT_FOUND
    assert (await c.post("call/record_start", {"channel_id": a}))["call_id"] == call_id
    assert await c.post("call/record_start", {"channel_id": a}) == NOT_SUPPORTED
    assert (await c.post("call/record_pause", {"channel_id": a}))["errcode"] == 0
    assert c.sim.call_state(call_id)["recording"] == "paused"  # type: ignore[index]
    assert (await c.post("call/record_unpause", {"channel_id": a}))["errcode"] == 0
    assert c.sim.call_state(call_id)["recording"] == "recording"  # type: ignore[index]
    await c.post("call/hangup", {"channel_id": a})
    await c.events.wait(lambda f: len(c.events.of(30012, call_id)) == 1)
    cdr = c.events.of(30012, call_id)[0]
    assert cdr["recording"].endswith(f"-{call_id}-2004-2005-Internal.wav")
    assert c.sim.cdrs.records[0].record_file == cdr["recording"]


# ------------------------------------------------------------------------- park
async def test_park_status_and_retrieve(make_client: Factory) -> None:
    c = await make_client(park_time_s=60)
    call_id = await c.dial("2005", "2008")
    await c.talking(call_id)
    parked = c.channel(call_id, "2005")
    assert await c.post("call/park", {"channel_id": "PJSIP/2005-1"}) == NOT_FOUND
    assert await c.post("call/park", {}) == required("channel_id")
    bad = await c.post("call/park", {"channel_id": parked, "parking_slot": "7000"})
    assert bad["invalid_param_list"] == [{"field": "parking_slot", "value": "7000"}]
    body = await c.post("call/park", {"channel_id": parked, "parking_slot": "6000"})
    assert body == {"errcode": 0, "errmsg": "SUCCESS", "call_id": call_id, "parking_slot": "6000"}
    status = await c.get("call/park_status")
    assert status["errcode"] == 0 and status["data"] == [
        {
            "parker": "2008",
            "parked_party": "2005",
            "parking_slot": "6000",
            "park_time": 60,
            "channel_id": parked,
        }
    ]
    assert c.events.statuses(call_id)[-2:] == [
        [("2005", "HOLD"), ("2008", "ANSWER")],
        [("2005", "HOLD"), ("2008", "BYE")],
    ]
    assert await c.post("call/unhold", {"channel_id": parked}) == NOT_SUPPORTED
    assert await c.dial("2009", "6000") == call_id  # picking the parked call up
    assert (await c.get("call/park_status"))["data"] == []
    assert c.events.statuses(call_id)[-1] == [("2005", "ANSWERED"), ("2009", "ANSWERED")]


# --------------------------------------------------------------------- transfer
async def test_blind_transfer(make_client: Factory) -> None:
    c = await make_client()
    call_id = await c.dial("2000", "2005")
    await c.talking(call_id)
    a = c.channel(call_id, "2000")
    assert await c.post("call/transfer", {"type": "blind", "channel_id": a}) == required("number")
    assert await c.post("call/transfer", {"channel_id": a, "number": "2008"}) == required("type")
    gone = await c.post("call/transfer", {"type": "blind", "channel_id": "X-1", "number": "2008"})
    assert gone == NOT_FOUND
    body = await c.post("call/transfer", {"type": "blind", "channel_id": a, "number": "2008"})
    assert body["call_id"] == call_id
    (transfer,) = c.events.of(30013, call_id)
    assert [next(iter(m.values()))["number"] for m in transfer["members"]] == ["2000", "2005"]
    assert c.events.statuses(call_id)[-3:] == [
        [("2000", "ANSWERED"), ("2005", "BYE")],
        [("2000", "ANSWERED"), ("2008", "RING")],
        [("2000", "ANSWERED"), ("2008", "ANSWER")],
    ]


async def test_attended_transfer_swap_and_complete(make_client: Factory) -> None:
    c = await make_client()
    call_id = await c.dial("2000", "2005")
    await c.talking(call_id)
    b = c.channel(call_id, "2005")
    op = {"type": "attended", "channel_id": b, "attended_operate": "complete"}
    assert await c.post("call/transfer", op) == NOT_SUPPORTED  # nothing consulted yet
    start = {"type": "attended", "channel_id": b, "number": "5503301"}
    assert (await c.post("call/transfer", start))["call_id"] == call_id
    assert c.events.statuses(call_id)[-3:] == [
        [("2000", "HOLD"), ("2005", "ANSWER")],
        [("2000", "HOLD"), ("2005", "ANSWER"), ("5503301", "RING")],
        [("2000", "HOLD"), ("2005", "ANSWER"), ("5503301", "ANSWER")],
    ]
    assert (await c.post("call/transfer", {**op, "attended_operate": "swap"}))["errcode"] == 0
    assert c.events.statuses(call_id)[-1] == [
        ("2000", "ANSWERED"),
        ("2005", "ANSWER"),
        ("5503301", "HOLD"),
    ]
    assert (await c.post("call/transfer", op))["call_id"] == call_id
    assert len(c.events.of(30013, call_id)) == 1
    assert c.events.statuses(call_id)[-1] == [("2000", "ANSWERED"), ("5503301", "ANSWER")]
    bad = await c.post("call/transfer", {**op, "attended_operate": "later"})
    assert bad["invalid_param_list"] == [{"field": "attended_operate", "value": "later"}]


# ---------------------------------------------------------- add member / listen
async def test_add_member(make_client: Factory) -> None:
    c = await make_client()
    call_id = await c.dial("2000", "2001")
    await c.talking(call_id)
    a = c.channel(call_id, "2000")
    assert await c.post("call/add_member", {"channel_id": a}) == required("number")
    gone = await c.post("call/add_member", {"channel_id": "PJSIP/1-1", "number": "2002"})
    assert gone == NOT_FOUND
    body = await c.post("call/add_member", {"channel_id": a, "number": "13900000002"})
    assert body["call_id"] == call_id
    assert c.events.statuses(call_id)[-1] == [
        ("2000", "ANSWERED"),
        ("2001", "ANSWER"),
        ("13900000002", "ANSWER"),
    ]
    # three parties: one leaving does not end the call
    await c.post("call/hangup", {"channel_id": c.channel(call_id, "2001")})
    assert c.sim.call_state(call_id) is not None and not c.events.of(30012, call_id)


async def test_listen_adds_the_monitor(make_client: Factory) -> None:
    c = await make_client()
    call_id = await c.dial("2000", "2001")
    await c.talking(call_id)
    a = c.channel(call_id, "2000")
    bad = await c.post("call/listen", {"monitor": "2008", "channel_id": a, "type": "spy"})
    assert bad["invalid_param_list"] == [{"field": "type", "value": "spy"}]
    missing = await c.post("call/listen", {"channel_id": a, "type": "listen"})
    assert missing == required("monitor")
    gone = await c.post("call/listen", {"monitor": "2008", "channel_id": "P-1", "type": "listen"})
    assert gone == NOT_FOUND
    body = await c.post("call/listen", {"monitor": "2008", "channel_id": a, "type": "whisper"})
    assert body["call_id"] == call_id
    assert c.events.statuses(call_id)[-2:] == [
        [("2000", "ANSWERED"), ("2001", "ANSWER"), ("2008", "ALERT")],
        [("2000", "ANSWERED"), ("2001", "ANSWER"), ("2008", "ANSWERED")],
    ]
    state = c.sim.call_state(call_id)
    assert state is not None and state["members"][2]["monitor"] == "whisper"
    # a listener does not count as a party: the call ends when a party hangs up
    await c.post("call/hangup", {"channel_id": c.channel(call_id, "2001")})
    await c.events.wait(lambda f: len(c.events.of(30012, call_id)) == 1)


# ------------------------------------------------------------------ play prompt
async def test_play_prompt_reports_30018(make_client: Factory) -> None:
    c = await make_client()
    body = {"number": "2000", "prompts": ["test_prompt1", "test_prompt2"], "count": 1}
    assert await c.post("call/play_prompt", body) == {"errcode": 0, "errmsg": "SUCCESS"}
    await c.events.wait(lambda f: len(c.events.of(30012)) == 1)
    (played,) = c.events.of(30018)
    assert played["prompt"] == "test_prompt1,test_prompt2"
    assert played["members"][0]["extension"]["number"] == "2000"
    assert c.events.of(30012)[0]["call_id"] == played["call_id"]
    assert await c.post("call/play_prompt", {"number": "2000"}) == required("prompts")
    external = await c.post("call/play_prompt", {"number": "5503301", "prompts": ["a"]})
    assert external == required("dial_permission")
    loud = await c.post("call/play_prompt", {"number": "2000", "prompts": ["a"], "volume": 30})
    assert loud["invalid_param_list"] == [{"field": "volume", "value": "30"}]


# ------------------------------------------------------------------------ query
async def test_query_by_call_id_type_and_number(make_client: Factory) -> None:
    c = await make_client()
    internal = await c.dial("2000", "2001")
    outbound = await c.dial("2002", "5503301")
    await c.talking(internal)
    await c.talking(outbound)
    body = await c.get("call/query", call_id=internal)
    assert body["errcode"] == 0 and [d["call_id"] for d in body["data"]] == [internal]
    first = body["data"][0]["members"][0]["extension"]
    assert first == {
        "number": "2000",
        "channel_id": c.channel(internal, "2000"),
        "member_status": "ANSWERED",
        "call_path": "",
    }
    assert [d["call_id"] for d in (await c.get("call/query", type="outbound"))["data"]] == [
        outbound
    ]
    assert [d["call_id"] for d in (await c.get("call/query", number="2001"))["data"]] == [internal]
    assert (await c.get("call/query", call_id="1.1"))["data"] == []
    assert await c.get("call/query") == required("call_id")
    bad = await c.get("call/query", type="video")
    assert bad["invalid_param_list"] == [{"field": "type", "value": "video"}]


# ---------------------------------------------------------------------- inbound
async def test_accept_inbound_within_window(make_client: Factory) -> None:
    c = await make_client()
    started = await c.sim.start_inbound_call(caller="5505501", dest="2006")
    call_id, channel = started["call_id"], started["channel_id"]
    await c.events.wait(lambda f: len(c.events.of(30016, call_id)) == 1)
    request = c.events.of(30016, call_id)[0]["members"][0]["inbound"]
    assert request["channel_id"] == channel and request["trunk_name"] == "peer-to-41"
    assert c.sim.call_state(call_id)["members"][0]["status"] == "ALERT"  # type: ignore[index]
    body = await c.post("call/accept_inbound", {"channel_id": channel})
    assert body == {"errcode": 0, "errmsg": "SUCCESS", "call_id": call_id}
    state = await c.talking(call_id)
    assert [m.get("number") or m["from"] for m in state["members"]] == ["5505501", "2006"]
    assert await c.post("call/accept_inbound", {"channel_id": channel}) == NOT_SUPPORTED
    assert await c.post("call/accept_inbound", {"channel_id": "PJSIP/trunk-x-1"}) == NOT_FOUND
    assert await c.post("call/accept_inbound", {}) == required("channel_id")


async def test_accept_after_window_fails_and_pbx_accepts(make_client: Factory) -> None:
    c = await make_client(inbound_control_window_s=0.2)
    started = await c.sim.start_inbound_call(dest="2007")
    await c.talking(started["call_id"])  # no answer from the app: the PBX routes the call
    late = await c.post("call/accept_inbound", {"channel_id": started["channel_id"]})
    assert late == NOT_SUPPORTED


async def test_refuse_inbound_ends_call_busy(make_client: Factory) -> None:
    c = await make_client()
    started = await c.sim.start_inbound_call()
    call_id = started["call_id"]
    body = await c.post("call/refuse_inbound", {"channel_id": started["channel_id"]})
    assert body["call_id"] == call_id
    await c.events.wait(lambda f: len(c.events.of(30012, call_id)) == 1)
    assert c.events.statuses(call_id)[-1][0][1] == "BYE"
    assert c.events.of(30012, call_id)[0]["status"] == "BUSY"
    assert c.sim.cdrs.records[-1].disposition == "BUSY"


async def test_generator_inbound_waits_when_asked(make_client: Factory) -> None:
    c = await make_client(inbound_wait=True)
    flow = asyncio.ensure_future(c.sim.run_call("inbound_ivr"))
    await c.events.wait(lambda f: len(c.events.of(30016)) == 1)
    request = c.events.of(30016)[0]
    channel = request["members"][0]["inbound"]["channel_id"]
    await asyncio.sleep(0.05)
    assert not flow.done()  # waiting for the decision
    assert await c.post("call/hold", {"channel_id": channel}) == NOT_SUPPORTED  # not steerable
    assert (await c.post("call/refuse_inbound", {"channel_id": channel}))["errcode"] == 0
    assert await asyncio.wait_for(flow, 3) == request["call_id"]
    assert c.events.of(30012, request["call_id"])[0]["status"] == "BUSY"
    assert not c.events.of(30018, request["call_id"])  # the IVR never played


# ----------------------------------------------------------------------- uaCSTA
async def test_uacsta_accept_then_hangup(make_client: Factory) -> None:
    c = await make_client()
    u = await c.sim.start_uacsta_call("2000", "2002")
    body = {"extension": "2002", "call_id": u["uacsta_call_id"], "ip_address": u["ip_address"]}
    assert await c.post("uacsta_call/accept", {**body, "extension": "2003"}) == {
        "errcode": 40002,
        "errmsg": "PARAMETER ERROR",
        "invalid_param_list": [{"field": "extension", "value": "2003"}],
    }
    assert await c.post("uacsta_call/accept", {**body, "call_id": "1"}) == NOT_FOUND
    assert await c.post("uacsta_call/accept", {"extension": "2002"}) == {
        "errcode": 40002,
        "errmsg": "PARAMETER ERROR",
        "invalid_param_list": [
            {"field": "call_id", "validation_type": "required"},
            {"field": "ip_address", "validation_type": "required"},
        ],
    }
    assert await c.post("uacsta_call/accept", body) == {"errcode": 0, "errmsg": "SUCCESS"}
    await c.talking(u["call_id"])
    assert await c.post("uacsta_call/refuse", body) == NOT_SUPPORTED
    assert await c.post("uacsta_call/hangup", body) == {"errcode": 0, "errmsg": "SUCCESS"}
    await c.events.wait(lambda f: len(c.events.of(30012, u["call_id"])) == 1)
    ops = [m["operation"] for m in c.events.of(30020)]
    assert ops == ["call_start", "call_answer", "call_over"]
    assert c.events.of(30020)[0]["ip_address"] == u["ip_address"]
    assert c.events.of(30012, u["call_id"])[0]["status"] == "ANSWER"


async def test_uacsta_refuse(make_client: Factory) -> None:
    c = await make_client()
    u = await c.sim.start_uacsta_call()
    body = {"extension": u["extension"], "call_id": u["uacsta_call_id"]}
    body["ip_address"] = u["ip_address"]
    assert (await c.post("uacsta_call/refuse", body))["errcode"] == 0
    await c.events.wait(lambda f: len(c.events.of(30012, u["call_id"])) == 1)
    assert [m["operation"] for m in c.events.of(30020)] == ["call_start", "call_over"]
    assert c.events.of(30015, u["call_id"])[0]["reason"] == "User Busy"
    assert c.events.of(30012, u["call_id"])[0]["status"] == "BUSY"
    assert await c.post("uacsta_call/hangup", body) == NOT_FOUND


# ----------------------------------------------------------------------- agents
async def test_agent_login_pause_and_status(make_client: Factory) -> None:
    c = await make_client()

    async def agents() -> dict[str, tuple[int, int, str]]:
        body = await c.get("queue/agent_status", id=3)
        assert body["errcode"] == 0 and body["total_number"] == len(body["data"])
        return {
            a["number"]: (a["is_login"], a["is_pause"], a["pause_reason"]) for a in body["data"]
        }

    assert await agents() == {"2010": (1, 0, ""), "2011": (1, 0, "")}
    first = (await c.get("queue/agent_status", id=3))["data"][0]
    assert first == {
        "name": "Lucy Fox",
        "number": "2010",
        "is_login": 1,
        "is_pause": 0,
        "call_status": 1,
        "pause_reason": "",
        "agent_type": "dynamic",
    }
    ok = {"errcode": 0, "errmsg": "SUCCESS"}
    assert await c.get("queue/agent_login", ext_ids="11", queue_id=3, operation="logout") == ok
    assert (await agents())["2010"] == (0, 0, "")
    login = {"operation": "login", "is_paused": 1, "reason": "*02"}
    assert await c.get("agent/login", ext_id=11, **login) == ok
    assert (await agents())["2010"] == (1, 1, "Break")
    assert await c.get("queue/agent_pause", ext_ids="11,12", queue_id=3, operation="unpause") == ok
    assert await agents() == {"2010": (1, 0, ""), "2011": (1, 0, "")}
    assert await c.get("agent/pause", ext_id=12, operation="pause", reason="*01") == ok
    assert (await agents())["2011"] == (1, 1, "Lunch")
    assert await c.get("queue/agent_login", queue_id=3, operation="login") == required("ext_ids")
    assert await c.get("agent/pause", operation="pause") == required("ext_id")
    unknown = await c.get("agent/login", ext_id=1, operation="login")
    assert unknown["invalid_param_list"] == [{"field": "ext_id", "value": "1"}]
    bad_reason = await c.get("agent/pause", ext_id=11, operation="pause", reason="*99")
    assert bad_reason["invalid_param_list"] == [{"field": "reason", "value": "*99"}]
    assert (await c.get("queue/agent_status", id=4))["errcode"] == 40002
    assert c.sim.control_calls["queue/agent_status"] == 7


async def test_extension_search_matches_parts_of_numbers_and_names(make_client: Factory) -> None:
    c = await make_client()
    exact = await c.get("extension/search", search_value="2010")
    assert exact["errcode"] == 0 and exact["total_number"] == 1
    [info] = exact["data"]
    assert (info["id"], info["number"]) == (11, "2010")  # the id agent/login takes
    assert set(info) >= {"online_status", "presence_status", "caller_id_name", "email_addr"}
    assert set(info["online_status"]) == {
        "sip_phone",
        "linkus_desktop",
        "linkus_mobile",
        "linkus_web",
    }
    partial = await c.get("extension/search", search_value="201", order_by="desc", sort_by="number")
    numbers = [d["number"] for d in partial["data"]]
    assert len(numbers) > 1 and "2010" in numbers and numbers == sorted(numbers, reverse=True)
    paged = await c.get("extension/search", search_value="20", page=2, page_size=2)
    assert len(paged["data"]) == 2 and paged["total_number"] > 2
    assert (await c.get("extension/search", order_by="sideways"))["errcode"] == 40002


async def test_queue_call_status_follows_dialled_queue_calls(make_client: Factory) -> None:
    c = await make_client()
    await c.get("agent/pause", ext_id=12, operation="pause")  # only 2010 takes calls
    c.sim.no_answer.add("2010")
    ringing_call = await c.dial("2000", "6402")
    await eventually(lambda: len(c.sim.call_state(ringing_call)["members"]) == 2)  # type: ignore[index]
    status = await c.get("queue/call_status", id=3)
    assert status["ringing_calls"] == 1 and status["ringing_list"][0]["callee_number"] == "2010"
    assert status["ringing_list"][0]["caller_display_name"] == "Leo Ball"
    assert status["waiting_calls"] == 0 and status["active_calls"] == 0
    c.sim.no_answer.clear()
    await c.post("call/hangup", {"channel_id": c.channel(ringing_call, "2010")})
    await c.get("agent/pause", ext_id=11, operation="pause")  # nobody left: callers wait
    waiting_call = await c.dial("2001", "6402")
    await eventually(lambda: (c.sim.call_state(waiting_call) or {}).get("answered") is True)
    status = await c.get("queue/call_status", id=3)
    assert [w["call_id"] for w in status["waiting_list"]] == [waiting_call]
    assert status["waiting_list"][0]["callee_number"] == "6402"
    await c.get("agent/pause", ext_id=11, operation="unpause")
    active_call = await c.dial("2002", "6402")
    await c.talking(active_call)
    status = await c.get("queue/call_status", id=3)
    assert [(a["call_id"], a["callee_number"]) for a in status["active_list"]] == [
        (active_call, "2010")
    ]
    agents = (await c.get("queue/agent_status", id=3))["data"]
    assert agents[0]["call_status"] == 2


# -------------------------------------------------------------------- lifecycle
async def test_stop_cancels_live_calls(make_client: Factory) -> None:
    c = await make_client()
    await c.dial()
    await c.sim.start_inbound_call()
    assert c.sim._tasks
    await c.sim.stop()
    assert not c.sim._tasks
