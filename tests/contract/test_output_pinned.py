"""The events the normalizers publish, pinned byte for byte.

Why: the event path is tuned for speed (``make_event`` / ``CloudEvent.to_json`` and the Yeastar
normalizer skip work that cannot change the result); this proves they still publish exactly what
they did before, for the recorded sample streams of every vendor, every Yeastar manual fixture,
a seeded set of malformed Yeastar frames (rejections included) and the shared event helpers.

The pinned outputs (``output_pinned.jsonl.gz``) were written by the code *before* that tuning. After
a deliberate change of the contract, write them again with::

    python tests/contract/test_output_pinned.py --regenerate
"""

from __future__ import annotations

import base64
import enum
import gzip
import json
import random
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script (--regenerate)
    sys.path.insert(0, str(ROOT))

from gateway.connectors import registry  # noqa: E402
from gateway.connectors.yeastar.calls import normalize_stream  # noqa: E402
from gateway.connectors.yeastar.normalize import (  # noqa: E402
    normalize_call_query,
    normalize_cdr_record,
    normalize_frame,
)
from gateway.schema import events as ev  # noqa: E402
from gateway.schema.events import (  # noqa: E402
    CloudEvent,
    NormalizeContext,
    StreamMemory,
    connection_event,
    gap_event,
    make_event,
    rejected,
)

FIXTURES = ROOT / "tests" / "fixtures"
PINNED = Path(__file__).with_name("output_pinned.jsonl.gz")  # 1.9 MB as text
VENDORS = ("fakepbx", "meiqia", "uucall", "xswitch", "yeastar")
#: Arrival times: with and without microseconds (both render differently).
ARRIVALS = (
    datetime(2026, 3, 2, 1, 2, 3, 456789, tzinfo=UTC),
    datetime(2022, 4, 27, 11, 5, 0, tzinfo=UTC),
)
ZONES = ("UTC", "Asia/Shanghai")
CDR_FORMATS = (None, "%m/%d/%Y %H:%M:%S", "%d/%m/%Y %I:%M:%S %p")


def _plugin_normalize(vendor: str) -> Callable[[str, NormalizeContext], list[CloudEvent]]:
    if vendor == "fakepbx":  # the test vendor is registered only inside a pytest session
        from tests.fakepbx.plugin import PLUGIN

        return PLUGIN.normalize
    return registry.plugins()[vendor].normalize


def _ctx(vendor: str, zone: str, at: datetime, raw: bool, memory: StreamMemory | None = None):
    return NormalizeContext("pin", vendor, ZoneInfo(zone), at, raw, memory or StreamMemory())


def _render(events: list[CloudEvent]) -> list[dict[str, Any]]:
    """Everything of an event a consumer or the gateway itself reads."""
    return [
        {
            "json": e.to_json().decode(),
            "dump_is_json": orjson.dumps(e.model_dump(mode="json")) == e.to_json(),
            "routing_key": e.routing_key,
            "time": e.time.isoformat(),
            "fields_set": sorted(e.model_fields_set),
        }
        for e in events
    ]


def _encode_input(value: str | bytes) -> str:
    """Inputs as JSON-safe text (bytes and lone surrogates included)."""
    if isinstance(value, bytes):
        return "b64:" + base64.b64encode(value).decode()
    return "str:" + value


def _decode_input(value: str) -> str | bytes:
    if value.startswith("b64:"):
        return base64.b64decode(value[4:])
    return value[4:]


# --- the inputs ----------------------------------------------------------------------------------


def _sample_lines(vendor: str) -> list[str]:
    path = FIXTURES / vendor / "sample.jsonl"
    return [line for line in path.read_text().splitlines() if line.strip()]


def _yeastar_frames() -> list[str]:
    frames = [
        json.dumps(json.loads(p.read_text())["frame"])
        for p in sorted((FIXTURES / "yeastar").glob("300*.json"))
    ]
    frames += _sample_lines("yeastar")
    frames += (FIXTURES / "yeastar" / "multi_leg_cdrs.jsonl").read_text().splitlines()
    return [f for f in frames if f.strip()]


_ODD_VALUES: tuple[Any, ...] = (
    None,
    " ",
    "",
    0,
    1,
    -1,
    1.5,
    2.0,
    True,
    False,
    [],
    {},
    "  2002  ",
    2**70,
    "ANSWERED",
    "bye",
    "Ring ing",
    "early-media",
    "early_media",
    "HOLD",
    "alert",
    "No Answer",
    "Inbound",
    "internal",
    "1651057476.362",
    "2022-04-27 19:04:36",
    "04/27/2022 07:04:36 PM",
    "05/06/2022 10:00:00",
    "Kristin Hale<2005>",
    "20220427190445-1651057476.362-2005-2002-Internal.wav",
    "早上好",
    {"number": "2003", "member_status": "RING"},
    [{"extension": {"number": "2009", "member_status": "ALERT"}}],
    [{"inbound": None}, None, 5, {"outbound": {"to": 5503301, "member_statuses": "Answer"}}],
)


def _mutate(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """One random change somewhere in a decoded msg: a value replaced or a key dropped."""
    if isinstance(value, dict) and value and depth < 4:
        key = rng.choice(sorted(value))
        out = dict(value)
        roll = rng.random()
        if roll < 0.15:
            del out[key]
        elif roll < 0.55:
            out[key] = rng.choice(_ODD_VALUES)
        else:
            out[key] = _mutate(value[key], rng, depth + 1)
        return out
    if isinstance(value, list) and value and depth < 4:
        out_list = list(value)
        i = rng.randrange(len(out_list))
        if rng.random() < 0.2:
            del out_list[i]
        else:
            out_list[i] = _mutate(out_list[i], rng, depth + 1)
        return out_list
    return rng.choice(_ODD_VALUES)


def _fuzzed_frames(count: int = 900) -> list[str | bytes]:
    """Deterministic malformed variants of the manual's frames (stored with the outputs)."""
    rng = random.Random(20260302)
    bases = [json.loads(f) for f in _yeastar_frames()]
    out: list[str | bytes] = []
    for _ in range(count):
        frame = dict(rng.choice(bases))
        msg = json.loads(frame["msg"]) if isinstance(frame.get("msg"), str) else frame.get("msg")
        for _ in range(rng.randint(1, 3)):
            msg = _mutate(msg, rng)
        roll = rng.random()
        if roll < 0.1:
            frame["msg"] = msg  # already an object
        elif roll < 0.15:
            frame["msg"] = json.dumps(json.dumps(msg))  # encoded twice
        else:
            frame["msg"] = json.dumps(msg, ensure_ascii=rng.random() < 0.5)
        roll = rng.random()
        if roll < 0.05:
            frame["type"] = str(frame["type"])
        elif roll < 0.08:
            frame["type"] = f" {frame['type']} "
        elif roll < 0.1:
            frame["type"] = float(frame["type"])
        elif roll < 0.12:
            frame["type"] = rng.choice((None, True, [], "", "30021", 99999, "abc"))
        elif roll < 0.13:
            del frame["type"]
        elif roll < 0.15:
            frame.pop("msg")
        out.append(json.dumps(frame))
    out += [
        "",
        "not json",
        "[]",
        '"30011"',
        "{}",
        '{"type": 30011, "msg": "{"}',
        '{"type": 30011, "msg": "[1, 2]"}',
        '{"type": 30011, "msg": 5}',
        '{"type": 30011, "msg": "{\\"members\\": []}"}',
        '{"type": 30021, "sn": "x", "msg": "{\\"a\\": 1}"}',
        '{"type": 30099, "sn": "x", "msg": "not json"}',
        '{"type": 30011, "msg": "{\\"call_id\\": \\"1.2\\", \\"members\\": 7}"}',
        '{"type": 30011, "msg": "{\\"call_id\\": \\"\\ud800\\", \\"members\\": []}"}',
        '{"type": 30011, "msg": "{\\"call_id\\": \\"1.2\\"}"}\udcff',
        b'{"type": 30011, "msg": "{\\"call_id\\": \\"1.2\\xff\\"}"}',
        b"\xff\xfe",
        '{"type": 30012, "msg": "{\\"call_id\\": \\"1651057476.362\\",'
        ' \\"time_start\\": \\"05/06/2022 10:00:00\\"}"}',
        '{"type": 30011, "msg": "{\\"call_id\\": 123456789012345678901234567890}"}',
        '{"type": 30017, "msg": "{\\"call_id\\": \\"1.2\\", \\"flag\\": 1e400}"}',
    ]
    return out


def _cdr_records() -> list[Any]:
    records: list[Any] = [
        json.loads(p.read_text())["record"] for p in sorted((FIXTURES / "yeastar").glob("cdr_*"))
    ]
    rng = random.Random(2711)
    for _ in range(120):
        records.append(_mutate(rng.choice(records[:6]), rng))
    return [*records, "not a record", None, {"uid": " "}, {"id": 2**70, "uid": "u1", "x": 1e308}]


def _calls() -> list[Any]:
    data = json.loads((FIXTURES / "yeastar" / "call_query_manual.json").read_text())["data"]
    rng = random.Random(15630)
    calls: list[Any] = list(data)
    for _ in range(60):
        calls.append(_mutate(rng.choice(data), rng))
    return [*calls, "not a call", {"members": []}]


# --- the cases -----------------------------------------------------------------------------------


class _Color(enum.Enum):
    RED = "red"


@dataclass
class _Point:
    x: int


#: Vendor payloads ``raw`` may carry (other connectors hand over what they received).
_RAWS: tuple[Any, ...] = (
    {"a": 1, "b": [1, 2.5, None, True], "c": {"d": "é"}},
    {"when": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)},
    {"when": datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=ZoneInfo("Asia/Shanghai"))},
    {"naive": datetime(2024, 1, 2, 3, 4, 5)},
    {"money": Decimal("1.50")},
    {"tuple": (1, "x")},
    {"set": {1}},
    {"bytes": b"abc"},
    {"enum": _Color.RED},
    {"uuid": uuid.UUID(int=7)},
    {"dataclass": _Point(3)},
    {1: "int key"},
    {"nan": float("nan"), "inf": float("inf")},
    {"big": 2**63 - 1, "neg": -(2**63)},
    "text",
    [1, 2],
)


def _event_cases() -> Iterator[tuple[str, Callable[[], list[CloudEvent]]]]:
    """The shared helpers of gateway/schema/events.py, with every kind of payload and time."""
    at = ARRIVALS[0]
    for raw_flag in (False, True):
        ctx = _ctx("pin", "UTC", at, raw_flag)
        yield f"rejected/{raw_flag}", lambda c=ctx: [rejected(c, "bad \u00e9", "why", "30011")]
        yield f"connection/{raw_flag}", lambda c=ctx: [connection_event(c, "connected", None)]
        yield (
            f"gap/{raw_flag}",
            lambda c=ctx: [gap_event(c, at - timedelta(minutes=5, microseconds=3), at, 2)],
        )
        for n, raw in enumerate(_RAWS):
            yield (
                f"raw{n}/{raw_flag}",
                lambda c=ctx, r=raw, i=n: [
                    make_event(
                        c,
                        "vendor.unknown",
                        ev.VendorUnknownData(event="x"),
                        identity=("x", i),
                        raw=r,
                    )
                ],
            )
    ctx = _ctx("pin", "UTC", at, False)
    times = (
        at,
        datetime(2022, 4, 27, 19, 4, 36, tzinfo=ZoneInfo("Asia/Shanghai")),
        datetime(2022, 4, 27, 19, 4, 36, 1, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
        datetime(2022, 4, 27, 19, 4, 36),  # naive
        datetime(1, 1, 1, tzinfo=UTC),
    )
    for n, when in enumerate(times):
        yield (
            f"time{n}",
            lambda w=when, i=n: [
                make_event(
                    ctx,
                    "cdr.created",
                    ev.CdrData(
                        call_id="1.2",
                        started_at=w,
                        caller=None,
                        callee="2002",
                        direction=None,
                        disposition="answered",
                        duration_s=3,
                        talk_duration_s=None,
                    ),
                    identity=("cdr", i),
                    time=w,
                    subject="1.2",
                    vendorevent="30012",
                )
            ],
        )
    money = ev.Money(value=12345, amount="123.45")
    yield (
        "money",
        lambda: [
            make_event(
                ctx,
                "account.balance_changed",
                ev.AccountBalanceChangedData(
                    enterprise="e", minor_unit=100, balance=money, changed=["balance"]
                ),
                identity=("m",),
            )
        ],
    )
    member = ev.Member(kind="outbound", from_="2002", to="5503301", status="answered")
    yield (
        "member-alias",
        lambda: [
            make_event(
                ctx,
                "call.answered",
                ev.CallData(
                    call_id="1.2", state="answered", direction="outbound", members=[member]
                ),
                identity=("c", None, 1, 2.5, b"x"),
                subject="1.2",
            )
        ],
    )


def _cases() -> Iterator[tuple[str, str | bytes | None, Callable[[], list[CloudEvent]]]]:
    """(name, input, produce) for every pinned case; ``input`` is stored to show what was read."""
    for vendor in VENDORS:
        normalize = _plugin_normalize(vendor)
        for zone, at, raw in ((ZONES[0], ARRIVALS[0], False), (ZONES[1], ARRIVALS[1], True)):
            memory = StreamMemory()  # one stream per run, as a link keeps it
            for n, line in enumerate(_sample_lines(vendor)):
                ctx = _ctx(vendor, zone, at + timedelta(seconds=n), raw, memory)
                yield (
                    f"{vendor}/sample/{zone}/{raw}/{n}",
                    line,
                    lambda ln=line, c=ctx, norm=normalize: norm(ln, c),
                )
    for zone in ZONES:
        for raw in (False, True):
            memory = StreamMemory()
            for n, frame in enumerate(_yeastar_frames()):
                ctx = _ctx("yeastar", zone, ARRIVALS[0] + timedelta(seconds=n), raw, memory)
                yield (
                    f"yeastar/frame/{zone}/{raw}/{n}",
                    frame,
                    lambda f=frame, c=ctx: normalize_stream(f, c),
                )
    for n, frame in enumerate(_fuzzed_frames()):
        ctx = _ctx("yeastar", ZONES[n % 2], ARRIVALS[n % 2], n % 3 == 0)
        fmt = CDR_FORMATS[n % 3]
        yield (
            f"yeastar/fuzz/{n}",
            frame,
            lambda f=frame, c=ctx, d=fmt: normalize_frame(f, c, display_format=d),
        )
    for n, record in enumerate(_cdr_records()):
        ctx = _ctx("yeastar", ZONES[n % 2], ARRIVALS[0], n % 2 == 0)
        fmt = CDR_FORMATS[n % 3]
        yield (
            f"yeastar/cdr_record/{n}",
            json.dumps(record, default=str),
            lambda r=record, c=ctx, d=fmt: normalize_cdr_record(r, c, display_format=d),
        )
    for n, call in enumerate(_calls()):
        ctx = _ctx("yeastar", "UTC", ARRIVALS[1], n % 2 == 1)
        hint = (None, "inbound", "bogus", "internal")[n % 4]
        yield (
            f"yeastar/call_query/{n}",
            json.dumps(call),
            lambda cl=call, c=ctx, h=hint: normalize_call_query(cl, c, direction=h),
        )
    for name, produce in _event_cases():
        yield f"events/{name}", None, produce


def _outcome(produce: Callable[[], list[CloudEvent]]) -> Any:
    try:
        return _render(produce())
    except Exception as exc:  # pinned too: a payload that cannot be serialized must still fail
        return {"error": type(exc).__name__}


def _generate() -> list[dict[str, Any]]:
    return [
        {
            "case": name,
            "input": None if given is None else _encode_input(given),
            "out": _outcome(produce),
        }
        for name, given, produce in _cases()
    ]


def _load_pinned() -> dict[str, dict[str, Any]]:
    text = gzip.decompress(PINNED.read_bytes()).decode()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {row["case"]: row for row in rows}


PINNED_ROWS = _load_pinned() if PINNED.exists() else {}


def test_the_same_cases_are_pinned() -> None:
    assert [name for name, _, _ in _cases()] == list(PINNED_ROWS)


@pytest.mark.parametrize("vendor", VENDORS)
def test_sample_streams_publish_the_pinned_bytes(vendor: str) -> None:
    _check(lambda name: name.startswith(f"{vendor}/sample/"))


def test_yeastar_frames_publish_the_pinned_bytes() -> None:
    _check(lambda name: name.startswith("yeastar/") and "/sample/" not in name)


def test_event_helpers_publish_the_pinned_bytes() -> None:
    _check(lambda name: name.startswith("events/"))


def _check(selected: Callable[[str], bool]) -> None:
    checked = 0
    for name, given, produce in _cases():
        if not selected(name):
            continue
        row = PINNED_ROWS[name]
        if given is not None:
            assert _decode_input(row["input"]) == given, name
        assert _outcome(produce) == row["out"], name
        checked += 1
    assert checked


if __name__ == "__main__":
    if "--regenerate" not in sys.argv:
        sys.exit(f"usage: python {Path(__file__).relative_to(ROOT)} --regenerate")
    # json (not orjson): inputs may hold lone surrogates, which json escapes
    text = "".join(json.dumps(row, ensure_ascii=True) + "\n" for row in _generate())
    PINNED.write_bytes(gzip.compress(text.encode(), mtime=0))
    print(f"wrote {PINNED}")
