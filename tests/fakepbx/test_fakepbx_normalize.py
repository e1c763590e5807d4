"""The fake vendor's pure normalizers: states, ids, records, and totality."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.sdk import EVENT_TYPES, NormalizeContext
from tests.fakepbx.normalize import normalize, record_events
from tests.fakepbx.sim import frame


def ctx(seconds: int = 0) -> NormalizeContext:
    at = datetime(2024, 5, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return NormalizeContext("acme", "fakepbx", ZoneInfo("UTC"), at)


@pytest.mark.parametrize(
    ("state", "statuses"),
    [
        ("ringing", ["dialing", "ringing"]),
        ("answered", ["answered", "answered"]),
        ("ended", ["hung_up", "hung_up"]),
    ],
)
def test_call_frames(state: str, statuses: list[str]) -> None:
    [event] = normalize(json.dumps(frame("c1", state, at=1714552200)), ctx())
    assert (event.type, event.subject, event.vendorevent) == (f"call.{state}", "c1", "call")
    assert event.time == datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
    data = EVENT_TYPES[event.type].model_validate(event.data)
    assert [m.status for m in data.members] == statuses  # type: ignore[attr-defined]
    assert [m.number for m in data.members] == ["2001", "2002"]  # type: ignore[attr-defined]


def test_ids_come_from_the_call_and_state_not_from_when_it_was_heard() -> None:
    line = json.dumps(frame("c1", "ringing", at=1714552200))
    assert normalize(line, ctx())[0].id == normalize(line, ctx(30))[0].id
    assert normalize(line, ctx())[0].id != normalize(line.replace("ringing", "ended"), ctx())[0].id


RINGING = frame("c1", "ringing")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "{",
        "[]",
        '{"kind": "sms"}',
        json.dumps({**RINGING, "state": "held"}),
        json.dumps({**RINGING, "at": "noon"}),
        json.dumps({**RINGING, "id": 7}),
        json.dumps({**RINGING, "at": 1e300}),
    ],
)
def test_bad_frames_are_rejected_never_raised(line: str) -> None:
    [event] = normalize(line, ctx())
    assert event.type == "gateway.rejected" and event.data["text"] == line


def test_records_become_cdrs_and_bad_ones_are_rejected() -> None:
    record = {
        "seq": 1,
        "call_id": "c9",
        "caller": "2001",
        "callee": "2002",
        "started": 1714552200,
        "talk": 0,
    }
    [event] = record_events(record, ctx())
    assert event.type == "cdr.created" and event.data["disposition"] == "no_answer"
    assert event.id == record_events(record, ctx(60))[0].id
    for bad in ({"seq": 2}, {**record, "talk": -1}, [1, 2], None):
        [event] = record_events(bad, ctx())
        assert event.type == "gateway.rejected"
