"""Meiqia records, webhook deliveries and seat lists -> contract events (pure functions)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

from gateway.connectors.meiqia.normalize import (
    normalize_message,
    parse_time,
    record_event,
    records_events,
    seat_events,
    seat_snapshot,
)
from gateway.schema.events import EVENT_TYPES, CdrData
from tests.meiqia.helpers import TZ, ctx, records, sample

#: Every ``call_type`` x ``states`` pair of the document's ``records`` (外呼状态: 主叫未接 |
#: 被叫未接 | 接听; 来电状态: ivr | 队列放弃 | 振铃未接 | 接听) -> direction, disposition, reason.
DOCUMENT_STATES = [
    ("外呼", "接听", "outbound", "answered", None),
    ("外呼", "主叫未接", "outbound", "no_answer", "caller_no_answer"),
    ("外呼", "被叫未接", "outbound", "no_answer", "callee_no_answer"),
    ("来电", "接听", "inbound", "answered", None),
    ("来电", "ivr", "inbound", "no_answer", "ended_in_ivr"),
    ("来电", "队列放弃", "inbound", "no_answer", "abandoned_in_queue"),
    ("来电", "振铃未接", "inbound", "no_answer", "ring_no_answer"),
]


def record(**fields: Any) -> dict[str, Any]:
    return {**records()[0], **fields}


@pytest.mark.parametrize(
    ("call_type", "states", "direction", "disposition", "reason"), DOCUMENT_STATES
)
def test_every_state_of_the_document(
    call_type: str, states: str, direction: str, disposition: str, reason: str | None
) -> None:
    event = record_event(record(call_type=call_type, states=states), ctx())
    assert event.type == "cdr.created"
    assert event.data["direction"] == event.data["leg_direction"] == direction
    assert event.data["disposition"] == disposition
    assert event.data["reason"] == reason
    CdrData.model_validate(event.data)


def test_the_fixture_holds_every_document_state() -> None:
    pairs = {(r["call_type"], r["states"]) for r in records()}
    assert pairs == {(c, s) for c, s, *_ in DOCUMENT_STATES}


def test_unknown_states_and_call_types_are_null_not_guessed() -> None:
    event = record_event(record(call_type="转接", states="挂断"), ctx())
    assert (event.data["direction"], event.data["disposition"], event.data["reason"]) == (
        "unknown",
        None,
        None,
    )


def test_an_outbound_record_maps_every_field() -> None:
    event = record_event(records()[0], ctx(include_raw=True))
    assert event.id == record_event(records()[0], ctx("acme")).id
    assert event.subject == "2bbf137f-7707-4789-9f71-64cdfa5ddb22"
    assert event.vendorevent == "records"
    assert event.time == datetime(2024, 5, 1, 2, 0, tzinfo=UTC)  # 10:00 +08:00
    data = {k: v for k, v in event.data.items() if k != "raw"}
    assert data == {
        "call_id": "2bbf137f-7707-4789-9f71-64cdfa5ddb22",
        "started_at": "2024-05-01T02:00:00Z",
        "caller": "8001",  # the agent's seat places the call
        "callee": "13800000000",
        "direction": "outbound",
        "leg_direction": "outbound",
        "disposition": "answered",
        "reason": None,
        "duration_s": 205,
        "talk_duration_s": 197,
        "ring_duration_s": 8,
        "queue_wait_s": 0,
        "trunk_in": None,
        "trunk_out": "02166668888",
        "trunk_name": "上海客服",
        "did": None,
        "recording": "https://recordings.meiqia.example/2bbf137f-7707-4789-9f71-64cdfa5ddb22.mp3",
        "agent_id": "10086",
        "agent_ring_s": None,
        "customer_location": "广东 深圳",
        "user_data": "crm-lead-4711",
    }
    assert event.data["raw"]["agent_evaluated"] == 5


def test_an_inbound_record_names_the_customer_caller_and_the_trunk() -> None:
    answered = next(r for r in records() if r["call_type"] == "来电" and r["states"] == "接听")
    data = record_event(answered, ctx()).data
    assert (data["caller"], data["callee"]) == ("13700001111", "8002")
    assert (data["trunk_in"], data["did"], data["trunk_out"]) == (
        "02166668888",
        "02166668888",
        None,
    )
    assert (data["queue_wait_s"], data["talk_duration_s"], data["agent_id"]) == (20, 450, "10087")
    ivr = next(r for r in records() if r["states"] == "ivr")
    data = record_event(ivr, ctx()).data
    assert data["callee"] == "02166668888"  # no agent took it: the number dialled
    assert data["agent_id"] is None  # agent_id 0 is "no agent"


@pytest.mark.parametrize("user_data", ["crm-lead-4711", "  padded  ", "ticket 9 · 回访", "a" * 100])
def test_user_data_is_carried_unchanged(user_data: str) -> None:
    assert record_event(record(user_data=user_data), ctx()).data["user_data"] == user_data


def test_user_data_empty_is_null() -> None:
    assert record_event(record(user_data=""), ctx()).data["user_data"] is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T10:00:00+08:00", datetime(2024, 5, 1, 2, 0, tzinfo=UTC)),
        ("2024-05-01T02:00:00Z", datetime(2024, 5, 1, 2, 0, tzinfo=UTC)),
        ("2024-05-01 10:00:00", datetime(2024, 5, 1, 2, 0, tzinfo=UTC)),  # PBX-local
        (1714528800, datetime(2024, 5, 1, 2, 0, tzinfo=UTC)),
        ("", None),
        ("yesterday", None),
        ("2024-05-01", None),
        (None, None),
    ],
)
def test_times(value: Any, expected: datetime | None) -> None:
    assert parse_time(value, TZ) == expected


def test_a_webhook_delivery_gets_the_id_of_the_polled_record() -> None:
    lines = sample()
    delivery = next(m for m in lines if m.get("event") == "cdr.hangup")
    polled = next(m for m in lines if m.get("call_uuid") == delivery["cdr"]["call_uuid"])
    [from_hook] = normalize_message(json.dumps(delivery), ctx())
    [from_poll] = normalize_message(json.dumps(polled), ctx())
    assert from_hook.id == from_poll.id
    assert from_hook.type == from_poll.type == "cdr.created"
    assert from_hook.vendorevent == "cdr.hangup" and from_poll.vendorevent == "records"
    assert from_hook.data == from_poll.data


def test_a_robot_call_is_a_cdr_and_other_topics_are_vendor_unknown() -> None:
    lines = sample()
    robot = next(m for m in lines if m.get("event") == "call_robot.hangup")
    [event] = normalize_message(json.dumps(robot), ctx())
    assert (event.type, event.vendorevent, event.data["caller"]) == (
        "cdr.created",
        "call_robot.hangup",
        None,
    )
    other = next(m for m in lines if m.get("event") == "conversation.updated")
    [unknown] = normalize_message(json.dumps(other), ctx())
    assert unknown.type == "vendor.unknown" and unknown.vendorevent == "conversation.updated"
    assert unknown.data["event"] == "conversation.updated"
    assert "enterprise_token" not in unknown.data["raw"]
    assert unknown.data["raw"]["conversation"] == {"id": 123456, "summary": "咨询"}
    assert unknown.time == datetime.fromtimestamp(1632648830, UTC)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('{"call_uuid": "", "states": "接听"}', "without 'call_uuid'"),
        ('{"id": "d1", "event": "cdr.hangup"}', "without its Cdr"),
        ('{"id": "d1", "event": "cdr.hangup", "cdr": {"states": "接听"}}', "without 'call_uuid'"),
        ('{"kind": "call"}', "neither a call record"),
        ("[1, 2]", "not a JSON object"),
        ("not json", "not valid JSON"),
    ],
)
def test_what_cannot_be_read_is_rejected(line: str, error: str) -> None:
    [event] = normalize_message(line, ctx())
    assert event.type == "gateway.rejected"
    assert error in event.data["error"] and event.data["text"] == line


def test_a_bad_row_in_a_page_is_rejected_and_the_others_published() -> None:
    events = records_events([records()[0], "oops", {"states": "接听"}], ctx())
    assert [e.type for e in events] == ["cdr.created", "gateway.rejected", "gateway.rejected"]


def test_every_sample_line_is_valid() -> None:
    for message in sample():
        for event in normalize_message(json.dumps(message, ensure_ascii=False), ctx()):
            assert event.type != "gateway.rejected", event.data
            EVENT_TYPES[event.type].model_validate(event.data)


# --- seats ---------------------------------------------------------------------------------------

NOW = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)


def sips(**changes: dict[str, Any]) -> list[dict[str, Any]]:
    rows = {
        "8001": {
            "agent_id": 10086,
            "agent_name": "张三",
            "expiration_at": "2024-12-31T23:59:59+08:00",
            "occupied": "y",
            "password": "s3cret-8001",
            "sip": "8001",
        },
        "8002": {
            "agent_id": 0,
            "agent_name": "",
            "expiration_at": "2024-12-31T23:59:59+08:00",
            "occupied": "n",
            "password": "s3cret-8002",
            "sip": "8002",
        },
    }
    for sip, fields in changes.items():
        if fields is None:
            rows.pop(sip)
        else:
            rows[sip] = {**rows.get(sip, {"sip": sip}), **fields}
    return list(rows.values())


def diff(before: list[dict[str, Any]], after: list[dict[str, Any]], now: datetime = NOW) -> Any:
    seq: dict[str, int] = {}
    events = seat_events(seat_snapshot(before, NOW, TZ), seat_snapshot(after, now, TZ), seq, ctx())
    return events, seq


def test_an_unchanged_list_is_quiet_and_a_name_alone_is_no_change() -> None:
    assert diff(sips(), sips())[0] == []
    assert diff(sips(), sips(**{"8001": {"agent_name": "张三丰"}}))[0] == []


def test_occupancy_binding_and_expiry_changes() -> None:
    after = sips(
        **{
            "8001": {"occupied": "n", "agent_id": 0, "agent_name": ""},
            "8002": {"expiration_at": "2025-06-30T23:59:59+08:00"},
            "8003": {"occupied": "y", "agent_id": 7, "agent_name": "新人", "expiration_at": ""},
        }
    )
    events, seq = diff(sips(), after)
    by_seat = {e.subject: e for e in events}
    assert {s: e.data["changes"] for s, e in by_seat.items()} == {
        "8001": ["occupied", "agent"],
        "8002": ["expires_at"],
        "8003": ["added"],
    }
    assert by_seat["8001"].data["occupied"] is False and by_seat["8001"].data["agent_id"] is None
    assert by_seat["8002"].data["expires_at"] == "2025-06-30T15:59:59Z"
    assert by_seat["8003"].data["agent_id"] == "7" and by_seat["8003"].data["expires_at"] is None
    assert seq == {"8001": 1, "8002": 1, "8003": 1}
    for event in events:
        assert event.type == "agent.seat" and event.vendorevent == "sips"
        assert "s3cret" not in event.to_json().decode()  # the SIP password never leaves
        EVENT_TYPES["agent.seat"].model_validate(event.data)


def test_a_seat_that_went_and_one_whose_expiry_passed() -> None:
    later = datetime(2025, 1, 1, tzinfo=UTC)
    events, _ = diff(sips(), sips(**{"8002": None}), now=later)
    by_seat = {e.subject: e.data for e in events}
    assert by_seat["8002"]["changes"] == ["removed"]
    assert by_seat["8002"]["occupied"] is None
    assert by_seat["8001"]["changes"] == ["expired"] and by_seat["8001"]["expired"] is True


def test_a_seat_going_back_and_forth_gets_a_new_id_each_time() -> None:
    freed = sips(**{"8001": {"occupied": "n", "agent_id": 0}})
    seq: dict[str, int] = {}
    ids = []
    states = [sips(), freed, sips(), freed]
    for before, after in pairwise(states):
        [event] = seat_events(
            seat_snapshot(before, NOW, TZ), seat_snapshot(after, NOW, TZ), seq, ctx()
        )
        ids.append(event.id)
    assert len(set(ids)) == 3
    # the same change recomputed (a poll repeated after a crash) has the same id
    [again] = seat_events(
        seat_snapshot(sips(), NOW, TZ), seat_snapshot(freed, NOW, TZ), {"8001": 2}, ctx()
    )
    assert again.id == ids[2]


def test_expiry_in_the_future_is_not_expired() -> None:
    snapshot = seat_snapshot(sips(), NOW, TZ)
    assert snapshot["8001"]["expired"] is False
    assert snapshot["8001"]["expires_at"] == (
        datetime(2024, 12, 31, 15, 59, 59, tzinfo=UTC).isoformat()
    )
    assert "password" not in snapshot["8001"]
    assert NOW + timedelta(days=1) < datetime(2024, 12, 31, tzinfo=UTC)
