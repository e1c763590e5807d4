"""A call report's payload is built as :class:`CallData`'s JSON dump directly, not validated
into models and dumped again: it must be exactly what the model would validate and dump, for
every shape of ``members`` a PBX may send (tests/contract/test_output_pinned.py pins the
events of the recorded frames)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

from gateway.connectors.yeastar.normalize.calls import _MEMBER_STATUS, _call_data
from gateway.schema.events import CallData

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

_VALUES: tuple[Any, ...] = (None, "", " ", "2002", " 2003 ", 2004, 1.5, True, [], {}, "x" * 40)
_STATUSES: tuple[Any, ...] = (*_MEMBER_STATUS, "answer", "Early Media", "bogus", None, 7, "")
_KINDS = ("extension", "inbound", "outbound", "other")


def _random_member(rng: random.Random) -> Any:
    info = {
        key: rng.choice(_VALUES)
        for key in ("number", "from", "to", "trunk_name", "trunk", "channel_id", "call_path")
        if rng.random() < 0.7
    }
    info[rng.choice(("member_status", "member_statuses"))] = rng.choice(_STATUSES)
    roll = rng.random()
    if roll < 0.05:
        return None
    if roll < 0.1:
        return {rng.choice(_KINDS): "not an object"}
    return {rng.choice(_KINDS): info}


def _as_model(fields: dict[str, Any]) -> dict[str, Any]:
    return CallData(**fields).model_dump(mode="json", by_alias=True, exclude={"raw"})


def test_random_reports_give_the_models_dump() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        msg = {
            "call_id": rng.choice(("1648801160.5", " 17 ", 17)),
            "members": [_random_member(rng) for _ in range(rng.randrange(0, 5))],
        }
        fields = _call_data(msg)
        assert orjson.dumps(fields) == orjson.dumps(_as_model(fields))


def test_recorded_reports_give_the_models_dump() -> None:
    seen = 0
    for path in sorted((FIXTURES / "yeastar").glob("*.json")):
        frame = orjson.loads(path.read_bytes())
        frame = frame.get("frame", frame) if isinstance(frame, dict) else frame
        if not isinstance(frame, dict) or str(frame.get("type")) not in {
            "30011",
            "30013",
            "30014",
            "30016",
        }:
            continue
        msg = frame["msg"]
        msg = orjson.loads(msg) if isinstance(msg, str) else msg
        fields = _call_data(msg)
        assert orjson.dumps(fields) == orjson.dumps(_as_model(fields)), path.name
        seen += 1
    assert seen >= 3
