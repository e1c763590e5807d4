"""Yeastar gap recovery: call/query mapping, cdr/search paging, watermark, and the whole
recovery against the simulator over loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import orjson
import pytest

from gateway.connectors.plugin import LinkResources
from gateway.connectors.watermark import Gap
from gateway.connectors.yeastar.auth import YeastarAuth
from gateway.connectors.yeastar.calls import CallTracker
from gateway.connectors.yeastar.cdrs import SeenCdrs
from gateway.connectors.yeastar.client import YeastarClient, YeastarUnsupported
from gateway.connectors.yeastar.connector import YeastarConnector
from gateway.connectors.yeastar.normalize import (
    agent_status_events,
    normalize_call_query,
    normalize_cdr_record,
    normalize_frame,
)
from gateway.connectors.yeastar.recovery import YeastarRecovery, cdr_slices, cdr_window
from gateway.connectors.yeastar.settings import YeastarPbxSettings
from gateway.connectors.yeastar.watermark import YeastarWatermark
from gateway.runtime.resources import SharedResources
from gateway.runtime.statestore import StateStore, StoreSlice
from gateway.schema.events import CloudEvent, NormalizeContext, event_id
from gateway.settings import BackoffSettings, RecoverySettings
from gateway.sim.yeastar.agents import QUEUES
from gateway.sim.yeastar.server import YeastarSimulator
from tests.conftest import wait_for

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)

#: The manual's call/query answer (响应示例).
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "yeastar"
MANUAL_CALL_QUERY: dict[str, Any] = json.loads(
    (FIXTURES / "call_query_manual.json").read_text(encoding="utf-8")
)

#: Two agents of the manual's queue/agent_status answer.
MANUAL_AGENT_STATUS: dict[str, Any] = {
    "errcode": 0,
    "errmsg": "SUCCESS",
    "total_number": 2,
    "data": [
        {
            "name": "Leo Ball",
            "number": "1000",
            "is_login": 1,
            "is_pause": 0,
            "call_status": 1,
            "pause_reason": "",
            "agent_type": "dynamic",
        },
        {
            "name": "Phillip Huff",
            "number": "1001",
            "is_login": 1,
            "is_pause": 1,
            "call_status": 5,
            "pause_reason": "Break",
            "agent_type": "dynamic",
        },
    ],
}


def ctx(received_at: datetime = NOW) -> NormalizeContext:
    return NormalizeContext("acme", "yeastar", SHANGHAI, received_at)


# --- call/query -> call.* ------------------------------------------------------------------------


def test_call_query_manual_example_maps_like_a_30011() -> None:
    [event] = normalize_call_query(MANUAL_CALL_QUERY["data"][0], ctx())
    assert event.type == "call.answered" and event.subject == "1650012665.266"
    assert event.vendorevent == "call/query" and event.time == NOW
    data = event.data
    assert data["direction"] == "outbound" and data["state"] == "answered"
    assert [(m["kind"], m["status"]) for m in data["members"]] == [
        ("extension", "answered"),
        ("outbound", "answered"),
    ]
    assert data["members"][1]["to"] == "1003" and data["members"][1]["trunk"] == (
        "test-peer-trunking"
    )
    assert "raw" not in data  # include_raw is off


def test_call_query_state_and_id_follow_the_30011_rules() -> None:
    info = orjson.loads(orjson.dumps(MANUAL_CALL_QUERY["data"][0]))
    info["members"][1]["outbound"]["member_status"] = "HOLD"
    [held] = normalize_call_query(info, ctx())
    assert held.type == "call.held"
    frame = orjson.dumps({"type": 30011, "msg": orjson.dumps(info).decode()}).decode()
    [live] = normalize_frame(frame, ctx())
    assert live.type == held.type and live.data == held.data
    # a snapshot is a report of its time: the same state later is a new event
    [again] = normalize_call_query(info, ctx())
    [later] = normalize_call_query(info, ctx(NOW + timedelta(seconds=5)))
    assert again.id == held.id != later.id


@pytest.mark.parametrize("bad", [None, "x", {"members": []}, {"call_id": " "}])
def test_call_query_bad_info_is_rejected_not_raised(bad: Any) -> None:
    [event] = normalize_call_query(bad, ctx())
    assert event.type == "gateway.rejected" and event.vendorevent == "call/query"


def test_call_query_without_members_is_a_call_in_progress_of_its_listed_type() -> None:
    [event] = normalize_call_query({"call_id": "1.2", "members": None}, ctx(), direction="inbound")
    assert (event.type, event.data["direction"], event.data["members"]) == (
        "call.ringing",
        "inbound",
        [],
    )


# --- queue/agent_status -> agent.queue_status ----------------------------------------------


def test_agent_status_manual_example() -> None:
    queue = {"id": 3, "number": "6402", "name": "Support"}
    events = agent_status_events(queue, MANUAL_AGENT_STATUS, ctx())
    assert [e.type for e in events] == ["agent.queue_status"] * 2
    assert events[0].data == {
        "extension": "1000",
        "queue": "6402",
        "logged_in": True,
        "paused": False,
        "pause_reason": None,
        "call_state": "idle",
    }
    assert events[1].data["paused"] is True and events[1].data["pause_reason"] == "Break"
    assert events[1].data["call_state"] == "held" and events[1].subject == "1001"
    bad = agent_status_events(queue, {"data": [{"name": "nobody"}, 5]}, ctx())
    assert [e.type for e in bad] == ["gateway.rejected"] * 2


# --- cdr/search: window and paging --------------------------------------------------------------


def test_cdr_window_reaches_back_to_open_calls_and_is_capped() -> None:
    settings = RecoverySettings(max_window_s=600, cdr_settle_s=2)
    gap = Gap(start=NOW - timedelta(seconds=30), floor=NOW - timedelta(seconds=90))
    low, high = cdr_window(gap, NOW, settings)
    assert low == NOW - timedelta(seconds=105) and high == NOW + timedelta(seconds=2)
    old = Gap(start=NOW - timedelta(days=3), floor=NOW - timedelta(days=3))
    assert cdr_window(old, NOW, settings)[0] == NOW - timedelta(seconds=600)


def test_cdr_slices_cover_the_window_without_overlap() -> None:
    slices = cdr_slices(NOW, NOW + timedelta(seconds=2500), slice_s=1000)
    start = int(NOW.timestamp())
    assert slices[0][0] == start and slices[-1][1] >= start + 2500
    for (_, end), (nxt, _) in itertools.pairwise(slices):
        assert nxt == end + 1


class _FakeAuth:
    """Token stub; the one-refresh-one-retry rule is the real one."""

    with_token = YeastarAuth.with_token
    _within = staticmethod(YeastarAuth._within)

    def __init__(self) -> None:
        self.refreshed = 0

    async def wait_token(self, newer_than: int = 0) -> Any:
        return type("T", (), {"access_token": f"tok{self.refreshed}"})()

    async def force_refresh(self, stale: str) -> Any:
        self.refreshed += 1
        return await self.wait_token()


class _CappedCdrPbx:
    """cdr/search that answers at most ``cap`` records but reports the full ``total_number``;
    the first request is refused with an expired token."""

    def __init__(self, records: list[dict[str, Any]], cap: int, fmt: str, tz: ZoneInfo) -> None:
        self.records, self.cap, self.fmt, self.tz = records, cap, fmt, tz
        self.requests: list[dict[str, Any]] = []

    def _unix(self, text: str) -> int:
        return int(datetime.strptime(text, self.fmt).replace(tzinfo=self.tz).timestamp())

    async def request(
        self, method: str, endpoint: str, token: str, *, params: Any = None, json: Any = None
    ) -> dict[str, Any]:
        from gateway.connectors.yeastar.client import YeastarTokenError

        self.requests.append(dict(params))
        if token == "tok0":
            raise YeastarTokenError(10004, "ACCESS TOKEN EXPIRED")
        lo, hi = self._unix(params["start_time"]), self._unix(params["end_time"])
        match = [r for r in self.records if lo <= r["timestamp"] <= hi]
        return {"errcode": 0, "total_number": len(match), "data": match[: self.cap]}


async def test_cdr_search_pages_by_bisecting_short_answers() -> None:
    start = int(NOW.timestamp())
    records = [
        {
            "id": i,
            "uid": f"u{i}",
            "timestamp": start + i * 7,
            "call_from": "2005",
            "call_to": "2008",
            "disposition": "ANSWERED",
            "call_type": "Internal",
            "record_file": f"20240501083000-{start + i * 7}.{i}-2005-2008-Internal.wav",
        }
        for i in range(60)
    ]
    fmt = "%Y/%m/%d %I:%M:%S %p"  # a 12-hour PBX display format
    pbx = _CappedCdrPbx(records, cap=8, fmt=fmt, tz=SHANGHAI)
    auth = _FakeAuth()
    recovery = YeastarRecovery(
        pbx,  # type: ignore[arg-type]
        auth,  # type: ignore[arg-type]
        tenant="acme",
        tz=SHANGHAI,
        cdr_time_format=fmt,
        settings=RecoverySettings(),
    )
    found = await recovery.search_cdrs(NOW, NOW + timedelta(seconds=60 * 7))
    assert sorted(r["id"] for r in found) == list(range(60))
    assert auth.refreshed == 1 and len(pbx.requests) > 8
    assert pbx.requests[0]["start_time"] == datetime.fromtimestamp(start, SHANGHAI).strftime(fmt)


async def test_a_record_without_call_id_waits_for_its_live_twin() -> None:
    """Two calls without recordings ended during the recovery; the live 30012 of one arrives
    while the back-fill holds the records: only the other is back-filled."""
    start = int(NOW.timestamp())
    records = [
        {
            "id": i,
            "uid": f"u{i}",
            "timestamp": start + i,
            "call_from": "2005",
            "call_to": f"200{i}",
            "disposition": "NO ANSWER",
            "call_type": "Internal",
        }
        for i in (1, 2)
    ]
    fmt = "%Y-%m-%d %H:%M:%S"
    pbx = _CappedCdrPbx(records, cap=100, fmt=fmt, tz=SHANGHAI)
    recovery = YeastarRecovery(
        pbx,  # type: ignore[arg-type]
        _FakeAuth(),  # type: ignore[arg-type]
        tenant="acme",
        tz=SHANGHAI,
        cdr_time_format=fmt,
        settings=RecoverySettings(cdr_settle_s=0.5),
    )
    seen = SeenCdrs()
    gap = Gap(NOW - timedelta(seconds=60), NOW - timedelta(seconds=60))
    backfill = asyncio.create_task(recovery._cdrs(gap, NOW + timedelta(seconds=10), seen))
    # refused token, then the answer: the records are read, and held from that moment on
    await wait_for(lambda: len(pbx.requests) == 2, timeout=5)
    ctx = NormalizeContext("acme", "yeastar", SHANGHAI, NOW)
    (as_recorded,) = normalize_cdr_record(records[1], ctx)
    seen.add(as_recorded.model_copy(update={"id": "live-30012"}))  # same facts, live id
    published = await backfill
    assert [e.data["call_id"] for e in published] == ["u1"]
    assert seen.knows(published[0], by_fact=True)


# --- watermark ------------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_watermark_is_throttled_persisted_and_survives_a_restart(tmp_path: Any) -> None:
    store = StateStore(tmp_path / "state.sqlite3")
    clock = _Clock()
    mark = YeastarWatermark(StoreSlice(store, "yeastar:acme:"), interval_s=1.0, clock=clock)
    assert mark.load() is None
    mark.seen(NOW)
    assert store.get("yeastar:acme:watermark") == NOW.isoformat()
    mark.seen(NOW + timedelta(seconds=0.5))  # within a second: not written
    assert store.get("yeastar:acme:watermark") == NOW.isoformat()
    clock.now = 1.0
    mark.seen(NOW + timedelta(seconds=2))
    assert store.get("yeastar:acme:watermark") == (NOW + timedelta(seconds=2)).isoformat()
    mark.seen(NOW + timedelta(seconds=3))
    mark.persist()  # at stop / disconnect: always written
    store.close()

    store = StateStore(tmp_path / "state.sqlite3")
    again = YeastarWatermark(StoreSlice(store, "yeastar:acme:"))
    gap = again.load()
    assert gap == Gap(NOW + timedelta(seconds=3), NOW + timedelta(seconds=3))
    # frames of the new run do not move the mark past the unrecovered gap ...
    again.seen(NOW + timedelta(seconds=100))
    again.persist()
    assert store.get("yeastar:acme:watermark") == gap.start.isoformat()
    # ... until it is recovered
    again.recovered(gap)
    assert store.get("yeastar:acme:watermark") == (NOW + timedelta(seconds=100)).isoformat()


def test_a_link_restart_during_a_recovery_does_not_pin_the_mark() -> None:
    store = StateStore(":memory:")
    mark = YeastarWatermark(StoreSlice(store, "yeastar:acme:"), interval_s=0)
    mark.seen(NOW)
    mark.interrupted(NOW + timedelta(seconds=1))  # its recovery is then cancelled by a stop
    resumed = mark.load()  # the same connector runs again (lease lost and re-acquired)
    assert resumed is not None and resumed.start == NOW
    mark.seen(NOW + timedelta(seconds=50))
    mark.recovered(resumed)
    assert store.get("yeastar:acme:watermark") == (NOW + timedelta(seconds=50)).isoformat()


def _call_event(type_: str, call_id: str) -> CloudEvent:
    return CloudEvent(
        id=type_ + call_id,
        source="pbx://acme",
        type=type_,
        time=NOW,
        tenant="acme",
        vendor="yeastar",
        data={"call_id": call_id},
    )


def test_open_calls_pull_the_cdr_floor_back_to_their_start() -> None:
    store = StateStore(":memory:")
    mark = YeastarWatermark(StoreSlice(store, "yeastar:acme:"))
    started = int((NOW - timedelta(seconds=40)).timestamp())
    mark.seen(NOW - timedelta(seconds=10), _call_event("call.ringing", f"{started}.7"))
    mark.seen(NOW - timedelta(seconds=5), _call_event("call.ringing", "9.9"))  # no clock in id
    mark.seen(NOW - timedelta(seconds=4), _call_event("call.ended", "9.9"))
    gap = mark.interrupted(NOW)
    assert gap.start == NOW - timedelta(seconds=4)
    assert gap.floor == NOW - timedelta(seconds=40)
    assert store.get("yeastar:acme:cdr_floor") == gap.floor.isoformat()


def test_call_tracker_knows_newer_live_reports() -> None:
    calls = CallTracker()
    calls.observe(_call_event("call.answered", "1.1"), NOW)
    assert calls.changed_since("1.1", NOW) and not calls.changed_since("1.1", NOW + timedelta(1))
    assert not calls.changed_since("2.2", NOW)


def test_seen_cdrs_match_by_id_and_by_fact() -> None:
    seen = SeenCdrs(limit=10)
    data = {
        "started_at": NOW.isoformat(),
        "caller": "2005",
        "callee": "2008",
        "disposition": "answered",
        "duration_s": 12,
        "talk_duration_s": 9,
    }
    live = CloudEvent(
        id="a", source="s", type="cdr.created", time=NOW, tenant="t", vendor="yeastar", data=data
    )
    seen.add(live)
    by_fact = live.model_copy(update={"id": "b"})
    other = live.model_copy(update={"id": "c", "data": {**data, "callee": "2009"}})
    retry = live.model_copy(update={"id": "d", "data": {**data, "duration_s": 30}})
    unanswered = live.model_copy(update={"id": "e", "data": {**data, "talk_duration_s": 0}})
    seen.add(unanswered)
    omitted = unanswered.model_copy(update={"id": "f", "data": {**data, "talk_duration_s": None}})
    assert seen.knows(omitted, by_fact=True)  # cdr/list leaves out what the 30012 calls 0
    assert seen.knows(live, by_fact=False)
    assert seen.knows(by_fact, by_fact=True) and not seen.knows(by_fact, by_fact=False)
    assert not seen.knows(other, by_fact=True) and not seen.knows(retry, by_fact=True)


def test_seen_cdr_facts_survive_a_restart_within_the_backfill_reach() -> None:
    store = StateStore(":memory:")
    mark = YeastarWatermark(StoreSlice(store, "yeastar:acme:"), interval_s=0)
    old, recent = _cdr_event("old", NOW - timedelta(hours=1)), _cdr_event("new", NOW)
    mark.seen(NOW, old)
    mark.seen(NOW + timedelta(seconds=1), recent)
    again = YeastarWatermark(StoreSlice(store, "yeastar:acme:"))
    again.load()
    twin = recent.model_copy(update={"id": "uid-based"})  # its record had no call id
    assert again.cdrs.knows(twin, by_fact=True)
    assert not again.cdrs.knows(old.model_copy(update={"id": "x"}), by_fact=True)  # out of reach


def test_a_cdr_without_recording_is_persisted_at_once_not_throttled() -> None:
    store = StateStore(":memory:")
    clock = _Clock()
    mark = YeastarWatermark(StoreSlice(store, "yeastar:acme:"), interval_s=60.0, clock=clock)
    mark.seen(NOW)  # the throttle starts
    rec = _cdr_event("rec", NOW)
    recorded = rec.model_copy(update={"data": {**rec.data, "recording": "x.wav"}})
    mark.seen(NOW + timedelta(seconds=1), recorded)  # matched by id later: may wait
    assert store.get("yeastar:acme:watermark") == NOW.isoformat()
    mark.seen(NOW + timedelta(seconds=2), _cdr_event("plain", NOW))
    assert store.get("yeastar:acme:watermark") == (NOW + timedelta(seconds=2)).isoformat()
    again = YeastarWatermark(StoreSlice(store, "yeastar:acme:"))
    again.load()
    twin = _cdr_event("plain", NOW).model_copy(update={"id": "uid-based"})
    assert again.cdrs.knows(twin, by_fact=True)


def _cdr_event(id_: str, started: datetime) -> CloudEvent:
    data = {"call_id": id_, "started_at": started.isoformat(), "caller": "2001", "callee": "2002"}
    return CloudEvent(
        id=id_,
        source="s",
        type="cdr.created",
        time=started,
        tenant="acme",
        vendor="yeastar",
        data={**data, "disposition": "answered", "duration_s": 5, "talk_duration_s": 3},
    )


# --- against the simulator ------------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[YeastarSimulator]:
    simulator = YeastarSimulator(seed=11, tz="Asia/Shanghai", trap_rate=0.0, step_delay=0.001)
    await simulator.start(port=0)
    try:
        yield simulator
    finally:
        await simulator.stop()


class _SimAuth(_FakeAuth):
    def __init__(self, client: YeastarClient, sim: YeastarSimulator) -> None:
        super().__init__()
        self.client, self.sim = client, sim
        self.token: Any = None

    async def wait_token(self, newer_than: int = 0) -> Any:
        if self.token is None:
            pair = await self.client.get_token(self.sim.client_id, self.sim.client_secret)
            self.token = type("T", (), {"access_token": pair.access_token})()
        return self.token


def _live_cdr_ids(sim: YeastarSimulator) -> dict[str, str]:
    """call id -> the id of the cdr.created its live 30012 gives."""
    out = {}
    for frame in sim.sent:
        if frame.event == 30012:
            [event] = normalize_frame(frame.text, ctx())
            out[event.data["call_id"]] = event.id
    return out


async def test_recovery_against_the_simulator(sim: YeastarSimulator) -> None:
    async with aiohttp.ClientSession() as session:
        client = YeastarClient(session, sim.base_url, user_agent="test", timeout_s=5)
        recovery = YeastarRecovery(
            client,
            _SimAuth(client, sim),  # type: ignore[arg-type]
            tenant="acme",
            tz=SHANGHAI,
            cdr_time_format="%m/%d/%Y %H:%M:%S",
            settings=RecoverySettings(),
        )
        before = datetime.now(UTC) - timedelta(seconds=1)
        await sim.run_traffic(calls=12, concurrency=4)
        waiting = await sim.start_inbound_call()  # one call still in progress
        emitted: list[CloudEvent] = []

        async def emit(event: CloudEvent) -> None:
            emitted.append(event)

        seen = SeenCdrs()
        result = await recovery.recover(
            Gap(before, before), datetime.now(UTC), emit, seen, CallTracker()
        )
    assert result.errors == [] and result.published == len(emitted)
    assert not [e for e in emitted if e.type == "gateway.rejected"]
    calls = [e for e in emitted if e.type.startswith("call.")]
    assert waiting["call_id"] in {e.subject for e in calls}
    assert result.open_calls is not None and waiting["call_id"] in result.open_calls
    cdrs = [e for e in emitted if e.type == "cdr.created"]
    assert len(cdrs) == len(sim.cdrs.records) >= 12
    live = _live_cdr_ids(sim)
    with_recording = [r for r in sim.cdrs.records if r.record_file]
    assert with_recording
    for record in with_recording:  # same id as the live 30012: consumers de-duplicate
        assert live[record.call_id] in {e.id for e in cdrs}
    agents = [e for e in emitted if e.type == "agent.queue_status"]
    assert {e.subject for e in agents} == set(next(iter(QUEUES.values()))[2])
    assert {e.data["queue"] for e in agents} == {"6402"}


def _resources(session: aiohttp.ClientSession, store: StateStore) -> LinkResources:
    return LinkResources(
        http=session,
        store=StoreSlice(store, "yeastar:acme:"),
        recovery=RecoverySettings(),
        shared=SharedResources(),
    )


def _pbx(sim: YeastarSimulator) -> YeastarPbxSettings:
    return YeastarPbxSettings(
        tenant="acme",
        vendor="yeastar",
        base_url=sim.base_url,
        client_id=sim.client_id,
        client_secret=sim.client_secret,
        timezone="Asia/Shanghai",
        heartbeat_interval_s=1.0,
        heartbeat_timeout_s=2.0,
        backoff=BackoffSettings(initial_s=0.05, max_s=0.2, reset_after_s=5),
    )


async def test_connector_recovers_after_a_drop_and_after_a_restart(
    sim: YeastarSimulator, tmp_path: Any
) -> None:
    store = StateStore(tmp_path / "state.sqlite3")
    events: list[CloudEvent] = []

    async def emit(event: CloudEvent) -> None:
        events.append(event)

    def gaps() -> list[CloudEvent]:
        return [e for e in events if e.type == "gateway.gap"]

    async with aiohttp.ClientSession() as session:
        connector = YeastarConnector(_pbx(sim), _resources(session, store))
        task = asyncio.create_task(connector.run(emit))
        await wait_for(lambda: connector.state == "connected")
        assert gaps() == []  # first run: nothing to recover
        await sim.run_traffic(calls=4)
        await sim.drop_connections()
        await sim.run_traffic(calls=4)  # while the gateway reconnects
        await wait_for(lambda: len(gaps()) == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        stopped_at = store.get("yeastar:acme:watermark")
        assert stopped_at is not None

        await sim.run_traffic(calls=5)  # while the gateway is down
        events.clear()
        connector = YeastarConnector(_pbx(sim), _resources(session, store))
        task = asyncio.create_task(connector.run(emit))
        await wait_for(lambda: len(gaps()) == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    store.close()
    [gap] = gaps()
    assert datetime.fromisoformat(gap.data["from"]) == datetime.fromisoformat(stopped_at)
    assert gap.data["recovered"] > 0
    received = {e.id for e in events if e.type == "cdr.created"}
    live = _live_cdr_ids(sim)
    for record in sim.cdrs.records[-5:]:
        if record.record_file:
            assert live[record.call_id] in received
        else:
            assert event_id("acme", "yeastar", "cdr.created", "cdr-uid", record.uid) in received


class _OldApiPbx:
    """A PBX that no longer serves v1.0 queue/list (10002); calls and CDRs answer empty."""

    def __init__(self, errcode: int) -> None:
        self.errcode = errcode
        self.asked: list[str] = []

    async def request(
        self, method: str, endpoint: str, token: str, *, params: Any = None, json: Any = None
    ) -> dict[str, Any]:
        self.asked.append(endpoint)
        if endpoint == "queue/list":
            raise YeastarUnsupported(self.errcode, "API VERSION OUT OF MAINTENANCE")
        return {"errcode": 0, "data": []}


@pytest.mark.parametrize("errcode", [10001, 10002, 10003])
async def test_queue_list_the_firmware_does_not_serve_is_asked_once(errcode: int) -> None:
    pbx = _OldApiPbx(errcode)
    auth = _FakeAuth()
    recovery = YeastarRecovery(
        pbx,  # type: ignore[arg-type]
        auth,  # type: ignore[arg-type]
        tenant="acme",
        tz=SHANGHAI,
        cdr_time_format="%m/%d/%Y %H:%M:%S",
        settings=RecoverySettings(),
        clock=lambda: NOW,
    )

    async def emit(event: CloudEvent) -> None:
        return None

    gap = Gap(NOW - timedelta(seconds=5), NOW - timedelta(seconds=5))
    first = await recovery.recover(gap, NOW, emit, SeenCdrs(), CallTracker())
    assert [e.split(":")[0] for e in first.errors] == ["queue/agent_status"]
    assert str(errcode) in first.errors[0]
    assert recovery.queue_list_supported is False and auth.refreshed == 0  # not a token error
    second = await recovery.recover(gap, NOW, emit, SeenCdrs(), CallTracker())
    assert second.errors == [] and pbx.asked.count("queue/list") == 1
