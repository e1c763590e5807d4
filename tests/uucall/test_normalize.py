"""The pure normalizer: polled records -> account.* events; the low-balance threshold crossing
(down, up, down again); amounts that are never floats; ids that come from the facts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.connectors.uucall.normalize import (
    crossed_below,
    money,
    normalize_message,
    scaled,
)
from gateway.schema.events import EVENT_TYPES, CloudEvent, NormalizeContext

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "uucall" / "sample.jsonl"
AT = datetime(2024, 5, 1, 10, 30, tzinfo=UTC)


def ctx(received_at: datetime = AT, include_raw: bool = False) -> NormalizeContext:
    return NormalizeContext("acme", "uucall", ZoneInfo("Asia/Shanghai"), received_at, include_raw)


def account(balance: Any, consume: Any = 1_000_000, **extra: Any) -> dict[str, Any]:
    return {
        "balance": balance,
        "overdraft": 10000,
        "name": "acme",
        "state": 1,
        "account": 50001,
        "note": "",
        "advance": 0,
        "consume": consume,
        **extra,
    }


def balance_message(previous: Any, record: Any, threshold: int | None = 20000) -> str:
    message: dict[str, Any] = {
        "path": "/account/{uid}",
        "uid": "10001",
        "minor_unit": 100,
        "previous": previous,
        "record": record,
    }
    if threshold is not None:
        message["threshold"] = threshold
    return json.dumps(message)


def floats_in(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in floats_in(v)]
    if isinstance(value, list):
        return [f for v in value for f in floats_in(v)]
    return []


def wire(event: CloudEvent) -> Any:
    """The event as a consumer decodes it (every JSON number with a fraction a float)."""
    return json.loads(event.to_json())


# --- the threshold -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "current", "crossed"),
    [
        (25000, 19999, True),  # down through it
        (20000, 19999, True),  # from exactly at it
        (19999, 15000, False),  # already below: said once
        (15000, 20000, False),  # up to it: no longer low, nothing to say
        (15000, 30000, False),  # up
        (30000, 20000, False),  # down to it, not below
        (None, 10000, True),  # first seen below
        (None, 30000, False),
    ],
)
def test_crossed_below(previous: int | None, current: int, crossed: bool) -> None:
    assert crossed_below(previous, current, 20000) is crossed


def test_low_balance_down_up_down_again() -> None:
    """A balance falling through the threshold, staying low, recovering and falling again: one
    account.low_balance per downward crossing, none while it stays below or recovers."""
    balances = [35000, 25000, 18000, 12000, 52000, 30000, 19000, 17000]
    consume = 1_000_000
    events: list[CloudEvent] = []
    previous = None
    for balance in balances:
        consume += 1000
        record = account(balance, consume)
        events += normalize_message(balance_message(previous, record), ctx())
        previous = record
    low = [e for e in events if e.type == "account.low_balance"]
    assert [e.data["balance"]["value"] for e in low] == [18000, 19000]
    assert [e.data["previous_balance"]["value"] for e in low] == [25000, 30000]
    assert low[0].data["threshold"] == {"value": 20000, "amount": "200.00"}
    changed = [e for e in events if e.type == "account.balance_changed"]
    assert [e.data["balance"]["amount"] for e in changed] == [
        "350.00",
        "250.00",
        "180.00",
        "120.00",
        "520.00",
        "300.00",
        "190.00",
        "170.00",
    ]
    assert changed[4].data["change"] == {"value": 40000, "amount": "400.00"}
    assert changed[0].data["previous_balance"] is None and changed[0].data["change"] is None
    assert len({e.id for e in events}) == len(events)


def test_no_threshold_no_low_balance() -> None:
    line = balance_message(account(30000), account(100), threshold=None)
    events = normalize_message(line, ctx())
    assert [e.type for e in events] == ["account.balance_changed"]


def test_balance_changed_says_what_changed() -> None:
    (event,) = normalize_message(
        balance_message(account(30000), account(30000, state=2) | {"state": 2}), ctx()
    )
    assert event.data["changed"] == ["state"] and event.data["state"] == 2
    assert event.subject == "50001" and event.vendorevent == "/account/{uid}"


# --- money ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (12345, 100, "123.45"),
        (-5, 100, "-0.05"),
        (0, 100, "0.00"),
        (7, 1, "7"),
        (123, 1000, "0.123"),
        (10**15, 100, "10000000000000.00"),
        (Decimal("1523.5"), 100, "15.235"),
    ],
)
def test_scaled(value: int | Decimal, unit: int, text: str) -> None:
    assert scaled(value, unit) == text


@given(
    value=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    unit=st.sampled_from([1, 10, 100, 1000, 10**6]),
)
def test_amounts_are_exact_decimal_strings(value: int, unit: int) -> None:
    amount = money(value, unit)
    assert amount is not None
    assert amount.value == value and isinstance(amount.value, int)
    assert Decimal(amount.amount) * unit == value  # exact, whatever the size
    assert isinstance(amount.amount, str)


@given(balance=st.integers(min_value=-(10**12), max_value=10**12))
def test_no_float_reaches_a_consumer(balance: int) -> None:
    events = normalize_message(balance_message(account(35000), account(balance)), ctx())
    for event in events:
        assert not floats_in(wire(event)), event


def test_bill_doubles_are_never_floats() -> None:
    """ChargeBill's ``number (double)`` amounts: the text the service sent, exactly."""
    line = (
        '{"path": "/account/chargebill", "uid": "10001", "minor_unit": 100, "previous": null,'
        ' "record": {"total": 1523.1, "time": "2024-05", "basicBill": 0.1,'
        ' "subUserName": "agent01", "functionBill": 1523.0}}'
    )
    (event,) = normalize_message(line, ctx())
    assert event.data["total"] == {"value": "1523.1", "amount": "15.231"}
    assert event.data["basic"] == {"value": "0.1", "amount": "0.001"}
    assert event.data["function"] == {"value": "1523.0", "amount": "15.230"}
    assert not floats_in(wire(event))


def test_numbers_sent_as_strings() -> None:
    line = json.dumps(
        {
            "path": "/account/cashlog",
            "uid": 10001,
            "record": {"id": "9", "account_time": "1714557600000", "money": "40000", "type": "2"},
        }
    )
    (event,) = normalize_message(line, ctx())
    assert event.data["money"] == {"value": 40000, "amount": "400.00"}
    assert event.data["kind"] == 2 and event.data["entry_id"] == "9"
    assert event.time == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def test_minor_unit_of_the_message() -> None:
    line = json.dumps(
        {
            "path": "/account/cashlog",
            "uid": "10001",
            "minor_unit": 1000,
            "record": {"id": 1, "account_time": 1714557600, "money": 40000, "type": 1},
        }
    )
    (event,) = normalize_message(line, ctx())
    assert event.data["money"]["amount"] == "40.000" and event.data["minor_unit"] == 1000


# --- each type, ids ------------------------------------------------------------------------------


def test_every_sample_line_and_type() -> None:
    lines = [line for line in SAMPLE.read_text().splitlines() if line.strip()]
    got = [normalize_message(line, ctx()) for line in lines]
    types = [[e.type for e in events] for events in got]
    assert types == [
        ["account.balance_changed"],
        ["account.balance_changed", "account.low_balance"],
        ["account.balance_changed"],
        ["account.recharged"],
        ["account.bill"],
        ["account.bill"],
        ["account.audit"],
        ["account.notice"],
        ["account.notice"],
        ["account.notice"],
    ]
    flat = [e for events in got for e in events]
    for event in flat:
        EVENT_TYPES[event.type].model_validate(event.data)
        assert event.tenant == "acme" and event.vendor == "uucall"
    assert {e.type for e in flat} == {t for t in EVENT_TYPES if t.startswith("account.")}
    audit = flat[7]
    assert audit.data == {
        "enterprise": "10001",
        "entry_id": "6",
        "at": "2024-05-01T10:10:00Z",
        "who": "agent02",
        "what": "导出通话记录",
    }
    assert audit.subject == "agent02" and audit.time == datetime(2024, 5, 1, 10, 10, tzinfo=UTC)
    notices = [e.data["action"] for e in flat if e.type == "account.notice"]
    assert notices == ["created", "changed", "removed"]
    assert flat[-1].data["targets"] == ["101", "102", "103", "104", "105", "106"]
    bills = [e.data for e in flat if e.type == "account.bill"]
    assert bills[1]["previous_total"] == {"value": "1523.5", "amount": "15.235"}
    assert [b["action"] for b in bills] == ["created", "changed"]


def test_ids_come_from_the_fact_not_from_when_it_was_seen() -> None:
    later = ctx(AT + timedelta(days=3))
    for line in SAMPLE.read_text().splitlines():
        assert [e.id for e in normalize_message(line, ctx())] == [
            e.id for e in normalize_message(line, later)
        ]


def test_raw_only_when_asked() -> None:
    line = SAMPLE.read_text().splitlines()[3]
    (plain,) = normalize_message(line, ctx())
    (raw,) = normalize_message(line, ctx(include_raw=True))
    assert "raw" not in plain.data
    assert raw.data["raw"]["serial_number"] == "SN20240008"


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"uid": "1"}', "no path"),
        ('{"path": "/account/cashlog", "record": {"id": 1, "money": 5}}', "no uid"),
        ('{"path": "/account/cashlog", "uid": "1", "record": {"money": 5}}', "no id"),
        ('{"path": "/account/cashlog", "uid": "1", "record": {"id": 1}}', "no money"),
        ('{"path": "/account/cashlog", "uid": "1", "record": {"id": 1, "money": 5.5}}', "5.5"),
        ('{"path": "/account/cashlog", "uid": "1", "record": {"id": 1, "money": "x"}}', "x"),
        ('{"path": "/account/{uid}", "uid": "1", "record": {"state": 1}}', "no balance"),
        ('{"path": "/account/chargebill", "uid": "1", "record": {"total": 1}}', "no month"),
        ('{"path": "/power/notice", "uid": "1", "record": null, "previous": null}', "no notice"),
        ('{"path": "/power/oplog", "uid": "1", "record": [1]}', "not an object"),
        ('{"path": "/account/cashlog", "uid": "1", "minor_unit": 3, "record": {}}', "power of"),
    ],
)
def test_unreadable_messages_are_rejected(line: str, error: str) -> None:
    (event,) = normalize_message(line, ctx())
    assert event.type == "gateway.rejected"
    assert error in event.data["error"], event.data
    assert event.data["text"] == line


def test_an_unknown_path_is_vendor_unknown() -> None:
    (event,) = normalize_message('{"path": "/account/other", "uid": "1", "x": 1}', ctx())
    assert event.type == "vendor.unknown" and event.vendorevent == "/account/other"
