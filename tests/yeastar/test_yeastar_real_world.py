"""Yeastar as real PBXs send it: several CDRs per call, a direction that holds for the
whole call, day-first / 12-hour display dates, and event ids of newer firmware. Error codes are
in test_commands.py, nulls and wrong types in test_normalize_nulls.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from gateway.connectors.plugin import LinkResources
from gateway.connectors.watermark import Gap
from gateway.connectors.yeastar.calls import CallDirections, CallTracker, normalize_stream
from gateway.connectors.yeastar.cdrs import SeenCdrs
from gateway.connectors.yeastar.connector import YeastarConnector
from gateway.connectors.yeastar.normalize import normalize_cdr_record, normalize_frame
from gateway.connectors.yeastar.recovery import RecoveryResult, YeastarRecovery
from gateway.connectors.yeastar.settings import ALL_YEASTAR_TOPICS, YeastarPbxSettings
from gateway.connectors.yeastar.watermark import YeastarWatermark
from gateway.runtime.resources import SharedResources
from gateway.runtime.statestore import StateStore, StoreSlice
from gateway.schema.events import EVENT_TYPES, CloudEvent, NormalizeContext, StreamMemory
from gateway.settings import RecoverySettings
from gateway.sim.yeastar.server import YeastarSimulator
from tests.conftest import gateway_cli, wait_for
from tests.yeastar.test_recovery import _CappedCdrPbx, _FakeAuth

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "yeastar"
#: Three 30012 frames as a live PBX sends them: one forwarded call, three legs, one call id.
MULTI_LEG = (FIXTURES / "multi_leg_cdrs.jsonl").read_text().splitlines()
SHANGHAI = ZoneInfo("Asia/Shanghai")
RECEIVED = datetime(2026, 3, 2, 1, 20, tzinfo=UTC)


def ctx(
    tz: ZoneInfo = SHANGHAI, received_at: datetime = RECEIVED, include_raw: bool = False
) -> NormalizeContext:
    return NormalizeContext("acme", "yeastar", tz, received_at, include_raw)


def one(text: str, context: NormalizeContext | None = None, **kw: Any) -> CloudEvent:
    [event] = normalize_frame(text, context or ctx(), **kw)
    return event


def frame(type_: int, msg: dict[str, Any]) -> str:
    return json.dumps({"type": type_, "sn": "3631A0000007", "msg": json.dumps(msg)})


def ext(number: str, status: str) -> dict[str, Any]:
    return {
        "extension": {"number": number, "channel_id": f"PJSIP/{number}-1", "member_status": status}
    }


def trunk(kind: str, status: str, from_: str = "0555010002", to: str = "2001") -> dict[str, Any]:
    leg = {"from": from_, "to": to, "trunk_name": "SIP-1", "channel_id": "PJSIP/trunk-1"}
    return {kind: {**leg, "member_status": status}}


def unix(local: str, tz: ZoneInfo = SHANGHAI) -> int:
    return int(datetime.strptime(local, "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz).timestamp())


# --- 1. one call, several CDRs: one id per record ------------------------------------------------


def test_each_leg_of_a_forwarded_call_is_a_cdr_of_its_own() -> None:
    events = [one(line, ctx(ZoneInfo("UTC"))) for line in MULTI_LEG]
    assert [e.type for e in events] == ["cdr.created"] * 3
    assert {e.subject for e in events} == {"1700000000.42"}
    assert len({e.id for e in events}) == 3  # de-duplicating on id keeps all three
    assert [
        (
            e.data["started_at"],
            e.data["caller"],
            e.data["callee"],
            e.data["disposition"],
            e.data["leg_direction"],
        )
        for e in events
    ] == [
        ("2026-03-02T09:15:10Z", "2001", "0555010001", "failed", "outbound"),
        ("2026-03-02T09:14:40Z", "0555010002", "2001", "no_answer", "internal"),
        ("2026-03-02T09:15:13Z", "0555010002", "2002", "answered", "internal"),
    ]


def test_a_legs_id_does_not_depend_on_when_or_how_often_it_is_seen() -> None:
    first = [one(line).id for line in MULTI_LEG]
    after_restart = [
        one(line, ctx(received_at=RECEIVED + timedelta(days=3))).id for line in MULTI_LEG
    ]
    reordered = [one(line).id for line in reversed(MULTI_LEG)]
    assert first == after_restart == list(reversed(reordered))


class Leg(NamedTuple):
    """One CDR of a call: parties as cdr/list shows them (``Name<number>``), its disposition as
    cdr/list spells it (the live 30012 says ``ANSWER``, manual line 17488), type and seconds."""

    start: str  # PBX-local
    caller: str
    callee: str
    disposition: str
    type: str
    duration: int
    talk: int


#: A transferred inbound call whose three legs were all recorded: each record_file embeds the
#: call id, so the back-filled records can carry their live twins' ids.
CALL = f"{unix('2026-03-02 09:14:40')}.42"
RECORDED_LEGS = [
    Leg("2026-03-02 09:14:40", "0555010002", "Anna Simmons<2001>", "ANSWERED", "Inbound", 80, 75),
    Leg(
        "2026-03-02 09:16:00",
        "Anna Simmons<2001>",
        "Kristin Hale<2002>",
        "ANSWERED",
        "Internal",
        20,
        17,
    ),
    Leg("2026-03-02 09:16:20", "0555010002", "Kristin Hale<2002>", "ANSWERED", "Inbound", 95, 90),
]


def _number(shown: str) -> str:
    return shown.split("<")[-1].rstrip(">")


def _recording(leg: Leg, answered_after_s: int = 5) -> str:
    start = datetime.strptime(leg.start, "%Y-%m-%d %H:%M:%S") + timedelta(seconds=answered_after_s)
    caller, callee = _number(leg.caller), _number(leg.callee)
    return f"{start:%Y%m%d%H%M%S}-{CALL}-{caller}-{callee}-{leg.type}.wav"


def live_leg(leg: Leg, call_id: str = CALL, recorded: bool = True) -> str:
    return frame(
        30012,
        {
            "call_id": call_id,
            "time_start": leg.start,
            "call_from": _number(leg.caller),
            "call_to": _number(leg.callee),
            "call_duration": leg.duration,
            "talk_duration": leg.talk,
            "src_trunk_name": " ",
            "dst_trunk_name": " ",
            "status": {"ANSWERED": "ANSWER"}.get(leg.disposition, leg.disposition),
            "type": leg.type,
            "recording": _recording(leg) if recorded else " ",
            "did_number": " ",
            "agent_ring_time": 0,
        },
    )


def record_of(leg: Leg, n: int, recorded: bool = True) -> dict[str, Any]:
    """The leg as cdr/search answers it (manual line 13853, 表 277): display names, its own
    uid, MM/DD/YYYY time plus timestamp, zero fields left out."""
    local = datetime.strptime(leg.start, "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)
    record = {
        "id": 3000 + n,
        "time": local.strftime("%m/%d/%Y %H:%M:%S"),
        "call_from": leg.caller,
        "call_to": leg.callee,
        "timestamp": int(local.timestamp()),
        "uid": f"{local:%Y%m%d%H%M%S}{n:05X}",
        "duration": leg.duration,
        "talk_duration": leg.talk,
        "disposition": leg.disposition,
        "call_type": leg.type,
    }
    if recorded:
        record["record_file"] = _recording(leg)
    return {k: v for k, v in record.items() if v not in (0, "")}


def test_a_backfilled_leg_has_the_id_of_its_live_30012() -> None:
    live = [one(live_leg(leg)).id for leg in RECORDED_LEGS]
    later = ctx(received_at=RECEIVED + timedelta(hours=5))
    backfilled = [
        normalize_cdr_record(record_of(leg, n), later)[0].id for n, leg in enumerate(RECORDED_LEGS)
    ]
    assert backfilled == live and len(set(live)) == 3


def _recovery(records: list[dict[str, Any]], settle_s: float = 0.05) -> YeastarRecovery:
    fmt = "%m/%d/%Y %H:%M:%S"
    return YeastarRecovery(
        _CappedCdrPbx(records, cap=100, fmt=fmt, tz=SHANGHAI),  # type: ignore[arg-type]
        _FakeAuth(),  # type: ignore[arg-type]
        tenant="acme",
        tz=SHANGHAI,
        cdr_time_format=fmt,
        settings=RecoverySettings(cdr_settle_s=settle_s),
    )


GAP_START = datetime(2026, 3, 2, 1, 14, tzinfo=UTC)  # 09:14 in Shanghai, before the first leg
GAP = Gap(GAP_START, GAP_START)
GAP_END = GAP_START + timedelta(minutes=10)


async def test_recovery_publishes_each_leg_its_live_twin_missed_once() -> None:
    """Only the first leg's 30012 arrived before the link dropped: the back-fill publishes the
    other two legs (before, the shared id made it drop them), then nothing on a second run."""
    seen = SeenCdrs()
    live = [one(live_leg(leg)) for leg in RECORDED_LEGS]
    seen.add(live[0])
    records = [record_of(leg, n) for n, leg in enumerate(RECORDED_LEGS)]
    recovery = _recovery(records)
    published = await recovery._cdrs(GAP, GAP_END, seen)
    assert [e.id for e in published] == [live[1].id, live[2].id]
    assert await recovery._cdrs(GAP, GAP_END, seen) == []


async def test_recovery_tells_unrecorded_legs_apart_by_their_facts() -> None:
    """Legs without recordings: their records carry no call id, only a uid; each is matched to
    its own live 30012 by start, parties, disposition and durations."""
    legs = [
        Leg("2026-03-02 09:15:10", "Anna Simmons<2001>", "0555010001", "FAILED", "Outbound", 3, 0),
        Leg(
            "2026-03-02 09:14:40",
            "0555010002",
            "Anna Simmons<2001>",
            "NO ANSWER",
            "Internal",
            30,
            0,
        ),
        Leg(
            "2026-03-02 09:15:13",
            "0555010002",
            "Kristin Hale<2002>",
            "ANSWERED",
            "Internal",
            95,
            80,
        ),
    ]
    seen = SeenCdrs()
    for leg in (legs[0], legs[2]):  # the middle leg's 30012 was lost in the gap
        seen.add(one(live_leg(leg, "1700000000.42", recorded=False)))
    records = [record_of(leg, n, recorded=False) for n, leg in enumerate(legs)]
    published = await _recovery(records)._cdrs(GAP, GAP_END, seen)
    assert [(e.data["call_id"], e.data["callee"], e.data["disposition"]) for e in published] == [
        (records[1]["uid"], "2001", "no_answer")
    ]


# --- 2. one direction for the whole call ---------------------------------------------------

#: An inbound call 0555010002 -> 2001: the trunk leg is listed while it rings and talks, but the
#: last 30011 and the 30015 list only the extension leg, and the extension leg's CDR is typed
#: Internal.
INBOUND_CALL = f"{unix('2026-03-02 09:20:00')}.7"
INBOUND_STORY = [
    frame(
        30011,
        {"call_id": INBOUND_CALL, "members": [trunk("inbound", "ALERT"), ext("2001", "RING")]},
    ),
    frame(
        30011,
        {"call_id": INBOUND_CALL, "members": [trunk("inbound", "ANSWERED"), ext("2001", "ANSWER")]},
    ),
    frame(30011, {"call_id": INBOUND_CALL, "members": [ext("2001", "HOLD")]}),
    frame(30011, {"call_id": INBOUND_CALL, "members": [ext("2001", "BYE")]}),
    frame(30015, {"call_id": INBOUND_CALL, "reason": "BYE", "members": [ext("2001", "BYE")]}),
    frame(
        30012,
        {
            "call_id": INBOUND_CALL,
            "time_start": "2026-03-02 09:20:04",
            "call_from": "0555010002",
            "call_to": "2001",
            "status": "ANSWERED",
            "type": "Internal",
            "call_duration": 60,
        },
    ),
]


class Stream:
    """One ordered stream of frames, as the plugin's normalizer sees it in ``gateway
    normalize`` (one memory for the whole input)."""

    def __init__(self) -> None:
        self.memory = StreamMemory()

    def __call__(self, line: str, context: NormalizeContext) -> list[CloudEvent]:
        return normalize_stream(line, dataclasses.replace(context, memory=self.memory))


def test_every_event_of_an_inbound_call_says_inbound() -> None:
    stream = Stream()
    events = [event for line in INBOUND_STORY for event in stream(line, ctx())]
    assert [(e.type, e.data["direction"]) for e in events] == [
        ("call.ringing", "inbound"),
        ("call.answered", "inbound"),
        ("call.held", "inbound"),
        ("call.ended", "inbound"),
        ("call.failed", "inbound"),
        ("cdr.created", "inbound"),
    ]
    assert events[-1].data["leg_direction"] == "internal"  # the record's own type stays


def test_a_report_that_proves_nothing_says_unknown_never_internal() -> None:
    """Alone (the pure normalizer, or a call first seen mid-way) the extension-only reports of
    the inbound call above prove no direction: they say unknown, not internal."""
    assert [one(line).data["direction"] for line in INBOUND_STORY[2:5]] == ["unknown"] * 3


def test_an_outbound_call_is_unknown_until_its_trunk_leg_shows_then_outbound() -> None:
    call = f"{unix('2026-03-02 09:30:00')}.8"
    story = [
        frame(30011, {"call_id": call, "members": [ext("2001", "ALERT")]}),
        frame(
            30011, {"call_id": call, "members": [ext("2001", "ALERT"), trunk("outbound", "RING")]}
        ),
        frame(30011, {"call_id": call, "members": [ext("2001", "BYE")]}),
    ]
    stream = Stream()
    directions = [e.data["direction"] for line in story for e in stream(line, ctx())]
    assert directions == ["unknown", "outbound", "outbound"]


def test_an_internal_call_is_internal_once_an_extension_calls_an_extension() -> None:
    call = f"{unix('2026-03-02 09:31:00')}.9"
    story = [
        frame(30011, {"call_id": call, "members": [ext("2005", "ALERT")]}),
        frame(30011, {"call_id": call, "members": [ext("2005", "ALERT"), ext("2002", "RING")]}),
        frame(30011, {"call_id": call, "members": [ext("2005", "BYE"), ext("2002", "BYE")]}),
    ]
    stream = Stream()
    directions = [e.data["direction"] for line in story for e in stream(line, ctx())]
    assert directions == ["unknown", "internal", "internal"]


def test_dtmf_and_prompt_reports_teach_the_direction_too() -> None:
    call = "1648865408.348"
    dtmf = frame(30017, {"call_id": call, "members": [trunk("inbound", "ALERT")], "info": "1"})
    ended = frame(30011, {"call_id": call, "members": [ext("2002", "BYE")]})
    stream = Stream()
    assert stream(dtmf, ctx())[0].type == "call.dtmf"
    assert stream(ended, ctx())[0].data["direction"] == "inbound"


def _event(type_: str, call_id: str, direction: str, at: datetime = RECEIVED) -> CloudEvent:
    return CloudEvent(
        id=f"{type_}-{call_id}-{direction}",
        source="pbx://acme",
        type=type_,
        time=at,
        tenant="acme",
        vendor="yeastar",
        data={"call_id": call_id, "direction": direction, "members": []},
    )


def test_the_direction_of_a_call_in_progress_survives_a_restart() -> None:
    store = StateStore(":memory:")
    mark = YeastarWatermark(StoreSlice(store, "yeastar:acme:"), interval_s=0)
    ringing = mark.calls.direct(_event("call.ringing", INBOUND_CALL, "inbound"))
    mark.seen(RECEIVED, ringing)
    mark.interrupted(RECEIVED + timedelta(seconds=1))  # the gateway stops mid-call

    again = YeastarWatermark(StoreSlice(store, "yeastar:acme:"))
    assert again.load() is not None
    ended = again.calls.direct(_event("call.ended", INBOUND_CALL, "unknown"))
    assert ended.data["direction"] == "inbound"


class _CallQueryPbx:
    """call/query lists one call, by communication type; its members are extensions only."""

    def __init__(self, call_id: str, kind: str) -> None:
        self.call_id, self.kind = call_id, kind

    async def request(
        self, method: str, endpoint: str, token: str, *, params: Any = None, json: Any = None
    ) -> dict[str, Any]:
        assert endpoint == "call/query"
        calls = [{"call_id": self.call_id, "members": [ext("2001", "ANSWER")]}]
        return {"errcode": 0, "data": calls if params["type"] == self.kind else []}


async def test_a_call_first_seen_after_a_restart_is_unknown_until_call_query_says() -> None:
    calls = CallTracker()
    mid_call = frame(30011, {"call_id": INBOUND_CALL, "members": [ext("2001", "ANSWER")]})
    assert calls.direct(one(mid_call)).data["direction"] == "unknown"  # never a guess
    recovery = YeastarRecovery(
        _CallQueryPbx(INBOUND_CALL, "inbound"),  # type: ignore[arg-type]
        _FakeAuth(),  # type: ignore[arg-type]
        tenant="acme",
        tz=SHANGHAI,
        cdr_time_format="%m/%d/%Y %H:%M:%S",
        settings=RecoverySettings(),
        clock=lambda: RECEIVED,
    )
    [snapshot] = await recovery._calls(RecoveryResult(), calls)
    assert (snapshot.vendorevent, snapshot.data["direction"]) == ("call/query", "inbound")
    ended = frame(30011, {"call_id": INBOUND_CALL, "members": [ext("2001", "BYE")]})
    assert calls.direct(one(ended)).data["direction"] == "inbound"


def test_directions_are_bounded_and_the_first_one_stays() -> None:
    directions = CallDirections(limit=2)
    assert directions.learn("a", "inbound") == "inbound"
    assert directions.learn("a", "internal") == "inbound"  # established first: kept
    assert directions.learn("b", None) == "unknown"
    directions.learn("b", "outbound")
    directions.learn("c", "internal")
    assert directions.get("a") is None and directions.get("c") == "internal"


def test_gateway_normalize_keeps_one_direction_per_call_across_lines() -> None:
    result = gateway_cli(
        "normalize", "--vendor", "yeastar", "--tz", "Asia/Shanghai", stdin="\n".join(INBOUND_STORY)
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["data"]["direction"] for e in events] == ["inbound"] * 6


def test_gateway_normalize_on_the_issue_example_three_ids_one_direction() -> None:
    result = gateway_cli("normalize", "--vendor", "yeastar", stdin="\n".join(MULTI_LEG))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len({e["id"] for e in events}) == 3
    # None of the legs began the call (its id says 2023-11-14T22:13:20Z), so none tells the
    # call's direction: all three say so alike; each keeps its own type in leg_direction.
    assert [e["data"]["direction"] for e in events] == ["unknown"] * 3
    assert [e["data"]["leg_direction"] for e in events] == ["outbound", "internal", "internal"]
    # After the call's own report (trunk leg listed), every leg says the call's direction.
    first_report = frame(
        30011,
        {"call_id": "1700000000.42", "members": [trunk("inbound", "ALERT"), ext("2001", "RING")]},
    )
    result = gateway_cli(
        "normalize", "--vendor", "yeastar", stdin="\n".join([first_report, *MULTI_LEG])
    )
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["data"]["direction"] for e in events] == ["inbound"] * 4


def test_the_leg_that_began_the_call_tells_its_direction() -> None:
    """Without call reports (a call entirely inside a gap, CDRs only), the record whose start is
    the call id's time is the call's first leg: its type is the call's direction."""
    stream = Stream()
    first, transferred, back = (live_leg(leg) for leg in RECORDED_LEGS)
    assert [stream(line, ctx())[0].data["direction"] for line in (first, transferred, back)] == [
        "inbound"
    ] * 3


# --- the connector: display format and directions on the live path ---------------------------


@pytest.fixture
async def connector() -> AsyncIterator[tuple[YeastarConnector, list[CloudEvent]]]:
    store = StateStore(":memory:")
    async with aiohttp.ClientSession() as session:
        pbx = YeastarPbxSettings(
            tenant="acme",
            vendor="yeastar",
            base_url="http://127.0.0.1:9",
            client_id="id",
            client_secret="secret",
            timezone="Asia/Shanghai",
            cdr_time_format="%d/%m/%Y %I:%M:%S %p",  # a day-first, 12-hour PBX
        )
        resources = LinkResources(
            http=session,
            store=StoreSlice(store, "yeastar:acme:"),
            recovery=RecoverySettings(),
            shared=SharedResources(),
        )
        link = YeastarConnector(pbx, resources)
        events: list[CloudEvent] = []

        async def emit(event: CloudEvent) -> None:
            events.append(event)

        link.link_state.attach(emit)
        yield link, events
    store.close()


async def test_connector_reads_cdr_times_in_the_pbx_display_format(
    connector: tuple[YeastarConnector, list[CloudEvent]],
) -> None:
    link, events = connector
    cdr = {"call_id": "9.1", "time_start": "02/10/2023 01:28:08 PM", "status": "ANSWERED"}
    await link._on_frame(1, frame(30012, cdr))
    assert events[-1].data["started_at"] == "2023-10-02T05:28:08Z"  # 2 October, 13:28 +08:00


async def test_connector_holds_the_direction_of_each_call(
    connector: tuple[YeastarConnector, list[CloudEvent]],
) -> None:
    link, events = connector
    for line in INBOUND_STORY:
        await link._on_frame(1, line)
    assert [e.data["direction"] for e in events] == ["inbound"] * 6


async def test_connector_passes_newer_firmware_events_as_vendor_unknown(
    connector: tuple[YeastarConnector, list[CloudEvent]],
) -> None:
    link, events = connector
    await link._on_frame(1, frame(30030, {"call_id": "9.2", "something": [1, None]}))
    assert events[-1].type == "vendor.unknown"
    assert events[-1].data["raw"]["msg"] == {"call_id": "9.2", "something": [1, None]}


# --- 4. display dates ----------------------------------------------------------------------------

DAY_FIRST = "%d/%m/%Y %H:%M:%S"
MONTH_FIRST = "%m/%d/%Y %H:%M:%S"


@pytest.mark.parametrize(
    ("record", "display_format", "started_at"),
    [
        # a day-first PBX's record without a timestamp
        ({"uid": "u1", "time": "02/10/2023 11:28:08"}, DAY_FIRST, "2023-10-02T03:28:08Z"),
        ({"uid": "u1", "time": "02/10/2023 11:28:08"}, MONTH_FIRST, "2023-02-10T03:28:08Z"),
        # the format unset or wrong: the uid's stamp decides (manual line 13728)
        (
            {"uid": "20231002112808ABCDE", "time": "02/10/2023 11:28:08"},
            None,
            "2023-10-02T03:28:08Z",
        ),
        (
            {"uid": "20231002112808ABCDE", "time": "02/10/2023 11:28:08"},
            MONTH_FIRST,
            "2023-10-02T03:28:08Z",
        ),
        # ... or the recording (written from the answer on) and the call id in its name
        (
            {
                "uid": "u2",
                "time": "02/10/2023 11:28:08",
                "duration": 40,
                "record_file": "20231002112815-1696217288.7-2005-2002-Internal.wav",
            },
            MONTH_FIRST,
            "2023-10-02T03:28:08Z",
        ),
        # 12-hour clocks
        (
            {"uid": "u3", "time": "02/10/2023 01:28:08 PM"},
            "%d/%m/%Y %I:%M:%S %p",
            "2023-10-02T05:28:08Z",
        ),
        (
            {"uid": "u3", "time": "2023/10/02 01:28:08 AM"},
            "%Y/%m/%d %I:%M:%S %p",
            "2023-10-01T17:28:08Z",
        ),
        # a text only one format reads needs no setting, and a wrong one does not misread it
        ({"uid": "u4", "time": "2023-10-02 11:28:08"}, None, "2023-10-02T03:28:08Z"),
        ({"uid": "u5", "time": "25/10/2023 11:28:08"}, MONTH_FIRST, "2023-10-25T03:28:08Z"),
        # a timestamp is the start, whatever the text says
        (
            {"uid": "u6", "time": "02/10/2023 11:28:08", "timestamp": 1696217288},
            MONTH_FIRST,
            "2023-10-02T03:28:08Z",
        ),
        # no time at all: the uid's stamp, or nothing
        ({"uid": "20231002112808ABCDE", "time": None}, None, "2023-10-02T03:28:08Z"),
        ({"uid": "u7"}, DAY_FIRST, None),
    ],
)
def test_cdr_record_start_in_the_display_format(
    record: dict[str, Any], display_format: str | None, started_at: str | None
) -> None:
    record = {"disposition": "ANSWERED", **record}
    [event] = normalize_cdr_record(record, ctx(), display_format=display_format)
    assert event.type == "cdr.created"
    assert event.data["started_at"] == started_at


def test_an_ambiguous_date_nothing_decides_is_rejected_with_the_reason() -> None:
    record = {"uid": "u8", "time": "02/10/2023 11:28:08", "disposition": "ANSWERED"}
    [event] = normalize_cdr_record(record, ctx())
    assert event.type == "gateway.rejected"
    error = event.data["error"]
    assert "2023-02-10 11:28:08" in error and "2023-10-02 11:28:08" in error
    assert "cdr_time_format" in error


def test_a_live_cdr_in_a_day_first_display_format_is_placed_by_its_call_id() -> None:
    msg = {"call_id": "1696217288.7", "time_start": "02/10/2023 11:28:08", "status": "ANSWERED"}
    assert one(frame(30012, msg)).data["started_at"] == "2023-10-02T03:28:08Z"


@pytest.mark.parametrize("fmt", ["%d/%m/%Y", "%Y-%m-%d %I:%M:%S", "%H:%M:%S", "nonsense"])
def test_a_display_format_missing_part_of_the_date_or_time_is_refused(fmt: str) -> None:
    with pytest.raises(ValueError, match="cdr_time_format"):
        YeastarPbxSettings(
            tenant="t",
            vendor="yeastar",
            base_url="http://pbx:8088",
            client_id="a",
            client_secret="b",
            cdr_time_format=fmt,
        )


# --- 6. newer firmware (30029 is normalized: tests/yeastar/test_yeastar_newer_events.py) --------


@pytest.mark.parametrize("event_id", [i for i in range(30027, 30037) if i != 30029])
def test_event_ids_of_newer_firmware_stay_vendor_unknown_with_the_raw_frame(event_id: int) -> None:
    msg = {"call_id": "1772414080.1", "new_field": {"a": [1, None]}, "status": None}
    text = frame(event_id, msg)
    for events in (normalize_frame(text, ctx()), Stream()(text, ctx())):
        [event] = events
        assert event.type == "vendor.unknown"
        assert event.vendorevent == event.data["event"] == str(event_id)
        assert event.data["raw"] == {"type": event_id, "sn": "3631A0000007", "msg": msg}
        EVENT_TYPES[event.type].model_validate(event.data)


def test_newer_firmware_topics_can_be_subscribed() -> None:
    pbx = YeastarPbxSettings(
        tenant="t",
        vendor="yeastar",
        base_url="http://pbx:8088",
        client_id="a",
        client_secret="b",
        topics=[*ALL_YEASTAR_TOPICS, *range(30027, 30037)],
    )
    assert pbx.topics[-1] == 30036


# --- against the simulator: its inbound calls end with reports listing only the extension ----


@pytest.fixture
async def sim() -> AsyncIterator[YeastarSimulator]:
    simulator = YeastarSimulator(seed=23, tz="Asia/Shanghai", trap_rate=0.3, step_delay=0.001)
    await simulator.start(port=0)
    try:
        yield simulator
    finally:
        await simulator.stop()


async def test_every_simulated_call_keeps_the_direction_of_its_cdr(sim: YeastarSimulator) -> None:
    """Each call's events say ``unknown`` until its reports prove a direction, then that one
    direction to the end, and it is the PBX's own type of the call (its CDR's)."""
    store = StateStore(":memory:")
    events: list[CloudEvent] = []

    async def emit(event: CloudEvent) -> None:
        events.append(event)

    async with aiohttp.ClientSession() as session:
        pbx = YeastarPbxSettings(
            tenant="acme",
            vendor="yeastar",
            base_url=sim.base_url,
            client_id=sim.client_id,
            client_secret=sim.client_secret,
            timezone="Asia/Shanghai",
        )
        resources = LinkResources(
            http=session,
            store=StoreSlice(store, "yeastar:acme:"),
            recovery=RecoverySettings(),
            shared=SharedResources(),
        )
        link = YeastarConnector(pbx, resources)
        task = asyncio.create_task(link.run(emit))
        try:
            await wait_for(lambda: link.state == "connected")
            await sim.run_traffic(calls=16, concurrency=4)
            calls = {r.call_id: r.call_type.lower() for r in sim.cdrs.records}
            await wait_for(
                lambda: len([e for e in events if e.type == "cdr.created"]) == len(calls)
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    store.close()
    assert not [e for e in events if e.type == "gateway.rejected"]
    assert set(calls.values()) == {"inbound", "outbound", "internal"}
    for call_id, call_type in calls.items():
        said = [
            e.data["direction"]
            for e in events
            if e.subject == call_id and "direction" in e.data and e.type != "call.uacsta"
        ]
        known = [d for d in said if d != "unknown"]
        assert known and set(known) == {call_type}, (call_id, said)
        assert said[said.index(call_type) :] == [call_type] * len(known), (call_id, said)
