"""Nulls, absent fields and wrong types anywhere: live PBXs send ``null`` where the
manual shows a list, an object or a string, and leave out fields the manual marks as present.

For the manual's example of every one of the 21 event ids, every field (nested ones too) is in
turn set to null, deleted and given another type: as long as the event's identity survives,
the event keeps its type, with the field empty; only a frame that lost its identity may become
``gateway.rejected``. The same holds for back-filled cdr/list / cdr/search records.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.connectors.yeastar.calls import normalize_stream
from gateway.connectors.yeastar.normalize import (
    HANDLERS,
    call_id_from_recording,
    normalize_cdr_record,
    normalize_frame,
)
from tests.yeastar.test_normalize import check_valid, ctx

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "yeastar"

CALL_STATES = {"call.ringing", "call.answered", "call.held", "call.ended"}
#: event id -> (its identity fields: one readable is enough, the types it may become)
EVENTS: Final[dict[str, tuple[tuple[str, ...], set[str]]]] = {
    "30005": ((), {"config.changed"}),
    "30006": ((), {"config.changed"}),
    "30007": (("extension",), {"agent.registration"}),
    "30008": (("extension",), {"agent.call_state"}),
    "30009": (("extension",), {"agent.presence"}),
    "30010": (("trunk_name",), {"trunk.status"}),
    "30011": (("call_id",), CALL_STATES),
    "30012": (("call_id", "recording"), {"cdr.created"}),  # the recording's name has the id
    "30013": (("call_id",), {"call.transferred"}),
    "30014": (("call_id",), {"call.forwarded"}),
    "30015": (("call_id",), {"call.failed"}),
    "30016": (("call_id",), {"call.incoming"}),
    "30017": (("call_id",), {"call.dtmf"}),
    "30018": (("call_id",), {"call.prompt_finished"}),
    "30019": (("call_id",), {"call.survey"}),
    "30020": ((), {"call.uacsta"}),  # every field of a uaCSTA report is optional
    "30022": (("ext_number",), {"config.changed"}),
    "30023": (("trunk_name",), {"config.changed"}),
    "30024": (("conference_id",), {"conference.host_left"}),
    "30025": (("agent_number",), {"agent.auto_paused"}),
    "30026": (("agent_number",), {"agent.ring_timeout"}),
}
#: A back-filled record is identified by its call id, its recording's name or its uid.
RECORD_IDENTITY: Final = ("call_id", "record_file", "uid")

DELETE: Final = object()
#: null, absence, and every other JSON type (blank and huge values included).
REPLACEMENTS: Final[list[Any]] = [
    None,
    DELETE,
    0,
    7,
    -1.5,
    2**70,
    "",
    " ",
    "x",
    True,
    False,
    [],
    [None],
    {},
    {"x": None},
]


def _manual_examples() -> dict[str, dict[str, Any]]:
    """One fixture per event id, the manual's own example where there is one."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(FIXTURES.glob("300*.json")):
        doc = json.loads(path.read_text())
        code = str(doc["frame"]["type"])
        if code not in found or (
            doc["source"].startswith("manual") and not found[code]["source"].startswith("manual")
        ):
            found[code] = doc
    return found


EXAMPLES = _manual_examples()
RECORDS = {p.stem: json.loads(p.read_text())["record"] for p in sorted(FIXTURES.glob("cdr_*.json"))}


def _msg(code: str) -> dict[str, Any]:
    msg = EXAMPLES[code]["frame"]["msg"]
    return copy.deepcopy(json.loads(msg) if isinstance(msg, str) else msg)


Path_ = tuple[str | int, ...]


def paths(value: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every field of a payload, nested ones included (list items too)."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        yield (*prefix, key)
        if isinstance(child, dict | list):
            yield from paths(child, (*prefix, key))


def mutate(payload: Any, path: Path_, replacement: Any) -> bool:
    """Set (or delete) the field at ``path`` in place; False when an earlier change removed it."""
    parent = payload
    for key in path[:-1]:
        try:
            parent = parent[key]
        except (KeyError, IndexError, TypeError):
            return False
    last = path[-1]
    if isinstance(parent, dict) and isinstance(last, str) and last in parent:
        if replacement is DELETE:
            del parent[last]
        else:
            parent[last] = copy.deepcopy(replacement)
        return True
    if isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        if replacement is DELETE:
            del parent[last]
        else:
            parent[last] = copy.deepcopy(replacement)
        return True
    return False


def _readable(value: Any) -> bool:
    """An identity value the normalizer can use: non-blank text or a number."""
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, int | float) and not isinstance(value, bool)


def survives(fields: tuple[str, ...], payload: dict[str, Any]) -> bool:
    if not fields:
        return True
    for field in fields:
        value = payload.get(field)
        if field in ("recording", "record_file"):
            if isinstance(value, str) and call_id_from_recording(value) is not None:
                return True
        elif _readable(value):
            return True
    return False


def frame(code: str, msg: Any) -> str:
    return json.dumps({"type": int(code), "sn": "3631A2124XXX", "msg": json.dumps(msg)})


def check_frame(code: str, msg: dict[str, Any]) -> None:
    identity, types = EVENTS[code]
    text = frame(code, msg)
    for events in (normalize_frame(text, ctx()), normalize_stream(text, ctx())):
        check_valid(events)
        [event] = events
        if survives(identity, msg):
            assert event.type in types, (code, msg, event.data.get("error"))
        else:
            assert event.type in types | {"gateway.rejected"}, (code, msg)


def check_record(record: dict[str, Any]) -> None:
    [event] = normalize_cdr_record(record, ctx())
    check_valid([event])
    if survives(RECORD_IDENTITY, record):
        assert event.type == "cdr.created", (record, event.data.get("error"))
    else:
        assert event.type in {"cdr.created", "gateway.rejected"}


def test_every_event_id_has_its_manual_example_and_identity() -> None:
    # 30029 (newer firmware) is not in the manual: tests/yeastar/test_yeastar_newer_events.py
    assert set(EXAMPLES) == set(HANDLERS) - {"30029"} == set(EVENTS)
    assert len(EVENTS) == 21
    for code, doc in EXAMPLES.items():
        [event] = normalize_frame(json.dumps(doc["frame"]), ctx())
        assert event.type == doc["expect"]["type"] in EVENTS[code][1]


@pytest.mark.parametrize("code", sorted(EVENTS))
def test_each_field_null_absent_or_retyped_keeps_the_event(code: str) -> None:
    """Exhaustive: every field of the example, every replacement, one at a time."""
    original = _msg(code)
    fields = list(paths(original))
    assert fields
    for path in fields:
        for replacement in REPLACEMENTS:
            msg = _msg(code)
            assert mutate(msg, path, replacement)
            check_frame(code, msg)


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_each_field_of_a_backfilled_record_null_absent_or_retyped(name: str) -> None:
    for path in list(paths(RECORDS[name])):
        for replacement in REPLACEMENTS:
            record = copy.deepcopy(RECORDS[name])
            assert mutate(record, path, replacement)
            check_record(record)


_PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPS
@given(st.data())
def test_property_several_fields_broken_at_once(data: st.DataObject) -> None:
    code = data.draw(st.sampled_from(sorted(EVENTS)), label="event id")
    msg = _msg(code)
    changes = data.draw(
        st.lists(
            st.tuples(st.sampled_from(list(paths(msg))), st.sampled_from(REPLACEMENTS)),
            min_size=1,
            max_size=6,
        ),
        label="changes",
    )
    for path, replacement in changes:
        mutate(msg, path, replacement)
    check_frame(code, msg)


@_PROPS
@given(st.data())
def test_property_backfilled_record_with_several_fields_broken(data: st.DataObject) -> None:
    record = copy.deepcopy(RECORDS[data.draw(st.sampled_from(sorted(RECORDS)))])
    changes = data.draw(
        st.lists(
            st.tuples(st.sampled_from(list(paths(record))), st.sampled_from(REPLACEMENTS)),
            min_size=1,
            max_size=6,
        )
    )
    for path, replacement in changes:
        mutate(record, path, replacement)
    check_record(record)


# --- the values: what a missing field becomes -------------------------------------------------


@pytest.mark.parametrize(
    ("code", "msg", "expected"),
    [
        ("30005", {"org_status": None}, {"object": "organization", "action": None}),
        ("30006", {"id_list": None, "action": "create"}, {"ids": [], "action": "create"}),
        ("30006", {"id_list": "16", "action": None}, {"ids": [], "action": None}),
        ("30007", {"extension": "2010", "status": None}, {"registered": None, "device": None}),
        ("30008", {"extension": "2002", "status": None}, {"state": None}),
        ("30008", {"extension": "2002", "status": "dancing"}, {"state": None}),
        ("30009", {"extension": "2005"}, {"presence": None}),
        ("30010", {"trunk_name": "t", "status": "up"}, {"state": "unknown", "code": None}),
        ("30011", {"call_id": "9.1", "members": None}, {"state": "ringing", "members": []}),
        (
            "30011",
            {"call_id": "9.1", "members": [{"extension": None}, None, {"trunk": {}}]},
            {
                "state": "ringing",
                "direction": "unknown",
                "members": [
                    {
                        "kind": "extension",
                        "number": None,
                        "from": None,
                        "to": None,
                        "trunk": None,
                        "channel_id": None,
                        "status": None,
                        "via": None,
                    }
                ],
            },
        ),
        (
            "30011",
            {"call_id": "9.1", "members": [{"extension": {"number": "2002", "member_status": 5}}]},
            {"state": "ringing"},
        ),
        (
            "30012",
            {"call_id": "9.2", "status": None, "type": None, "time_start": None},
            {
                "disposition": None,
                "direction": "unknown",
                "leg_direction": None,
                "started_at": None,
            },
        ),
        ("30015", {"call_id": "9.3", "reason": None}, {"reason": None, "members": []}),
        ("30017", {"call_id": "9.4", "info": None, "flag": "x"}, {"digit": None, "sequence": None}),
        ("30018", {"call_id": "9.5", "prompt": ["x"]}, {"prompt": None}),
        ("30019", {"call_id": "9.6", "survey_result": {}}, {"result": None}),
        ("30020", {}, {"call_id": None, "operation": None, "extension": None}),
        ("30022", {"ext_number": "3355", "option": None}, {"action": None, "ids": ["3355"]}),
        ("30024", {"conference_id": "1.0", "host_num": None}, {"host": None}),
        ("30025", {"agent_number": "2010", "calls": None}, {"missed_calls": []}),
        ("30025", {"agent_number": "2010", "calls": {"a": 1}}, {"missed_calls": []}),
        ("30026", {"agent_number": "2010"}, {"queue": None, "caller": None, "call_id": None}),
    ],
)
def test_a_missing_field_is_published_empty(
    code: str, msg: dict[str, Any], expected: dict[str, Any]
) -> None:
    [event] = normalize_frame(frame(code, msg), ctx())
    assert event.type in EVENTS[code][1], event.data.get("error")
    for key, value in expected.items():
        assert event.data[key] == value, key
