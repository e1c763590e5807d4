"""The XSwitch normalizer: every documented channel state and spelling, whole call flows,
duplicates, out-of-order messages, CDR before DESTROY, nulls and retyped fields."""

from __future__ import annotations

import copy
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.connectors.xswitch.normalize import STATE_ALIASES, normalize_message
from gateway.schema.events import EVENT_TYPES, CloudEvent, NormalizeContext, StreamMemory
from gateway.sim.xswitch.flows import FlowBuilder, sample

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xswitch"
TZ = ZoneInfo("Asia/Shanghai")
RECEIVED = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def run(bodies: list[bytes | str], memory: StreamMemory | None = None) -> list[CloudEvent]:
    """One stream, in order (as the connector and ``gateway normalize`` feed it)."""
    memory = memory if memory is not None else StreamMemory()
    events: list[CloudEvent] = []
    for body in bodies:
        ctx = NormalizeContext("acme", "xswitch", TZ, RECEIVED, memory=memory)
        events.extend(normalize_message(body, ctx))
    for event in events:
        EVENT_TYPES[event.type].model_validate(event.data)
    return events


def channel(state: str, uuid: str = "a-1", **fields: Any) -> bytes:
    params = {
        "node_uuid": "node-1",
        "uuid": uuid,
        "direction": "inbound",
        "state": state,
        "cid_number": "13800138000",
        "dest_number": "1001",
        "context": "public",
        **fields,
    }
    return orjson.dumps({"jsonrpc": "2.0", "method": "Event.Channel", "params": params})


def by_call(events: list[CloudEvent]) -> dict[str, list[CloudEvent]]:
    calls: dict[str, list[CloudEvent]] = defaultdict(list)
    for event in events:
        if event.type.startswith(("call.", "cdr.")):
            calls[event.data["call_id"]].append(event)
    return calls


# --- states ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", sorted(STATE_ALIASES))
def test_every_documented_spelling_is_read(spelling: str) -> None:
    """docs/channel.md writes ANSWERD and ANSWER beside ANSWERED, RING beside RINGING; the
    proto comment ACTIVE: each is a state, none is rejected."""
    events = run([channel(spelling), channel(spelling.lower(), uuid="a-2")])
    assert events and all(e.type != "gateway.rejected" for e in events)


@pytest.mark.parametrize(
    ("state", "expected", "status"),
    [
        ("START", "call.ringing", "ringing"),
        ("RINGING", "call.ringing", "ringing"),
        ("RING", "call.ringing", "ringing"),
        ("MEDIA", "call.ringing", "early_media"),
        ("ANSWERED", "call.answered", "answered"),
        ("ANSWERD", "call.answered", "answered"),
        ("ANSWER", "call.answered", "answered"),
        ("DESTROY", "call.ended", "hung_up"),
    ],
)
def test_first_message_of_a_leg(state: str, expected: str, status: str) -> None:
    events = run([channel(state)])
    assert events[0].type == expected
    assert events[0].data["members"][0]["status"] == status
    assert events[0].data["call_id"] == "a-1"
    assert events[0].subject == "a-1"


def test_outbound_leg_starts_dialing() -> None:
    (event,) = run([channel("CALLING", direction="outbound", context="default")])
    assert event.type == "call.ringing"
    assert event.data["members"][0]["status"] == "dialing"
    assert event.data["direction"] == "outbound"


def test_a_state_no_document_lists_is_passed_over_not_rejected() -> None:
    """A well-formed message in a state nobody listed publishes nothing (counted); a
    message without a state is not well-formed and is rejected with the reason."""
    assert run([channel("START"), channel("TELEPORTED")])[-1].type == "call.ringing"
    assert run([channel("TELEPORTED")]) == []
    body = orjson.loads(channel("START"))
    del body["params"]["state"]
    (event,) = run([orjson.dumps(body)])
    assert event.type == "gateway.rejected" and "state" in event.data["error"]
    assert event.vendorevent == "Event.Channel"


def test_uuid_is_the_identity() -> None:
    body = orjson.loads(channel("START"))
    del body["params"]["uuid"]
    (event,) = run([orjson.dumps(body)])
    assert event.type == "gateway.rejected" and "uuid" in event.data["error"]


# --- whole calls -------------------------------------------------------------------------------


def test_sample_calls_one_story_per_call() -> None:
    """Seven calls of every kind: each has one call_id for both legs, one direction, starts
    ringing, ends exactly once; unanswered ones also fail; every id is unique."""
    events = run(sample())
    assert not [e for e in events if e.type == "gateway.rejected"]
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids))
    calls = by_call(events)
    assert len(calls) == 7
    for call_id, story in calls.items():
        types = [e.type for e in story]
        assert types[0] == "call.ringing", (call_id, types)
        assert types.count("call.ended") == 1, types
        assert types.count("cdr.created") == len(
            {m["channel_id"] for e in story for m in e.data.get("members", [])}
        ), types
        directions = {e.data["direction"] for e in story if "direction" in e.data}
        assert len(directions) == 1, (call_id, directions)
        answered = "call.answered" in types
        assert types.count("call.failed") == (0 if answered else 1), types
    assert Counter(
        next(e.data["direction"] for e in story if "direction" in e.data)
        for story in calls.values()
    ) == {"inbound": 3, "outbound": 3, "internal": 1}


def test_bridged_legs_share_the_originating_call_id() -> None:
    builder = FlowBuilder(node_uuid="n", tz=TZ, seed=1, start=1772440000)
    builder.call("inbound")
    a_uuid = builder.messages[0][1]["params"]["uuid"]
    events = run([orjson.dumps(body) for _, body in builder.messages])
    assert {e.data["call_id"] for e in events} == {a_uuid}
    ended = next(e for e in events if e.type == "call.ended")
    assert [m["kind"] for m in ended.data["members"]] == ["inbound", "extension"]
    last_destroy = builder.messages[-1][1]["params"]
    assert ended.time == datetime.fromtimestamp(last_destroy["hangup_epoch"], UTC)


def test_click_to_dial_is_outbound_with_both_legs() -> None:
    builder = FlowBuilder(node_uuid="n", tz=TZ, seed=2, start=1772440000)
    builder.call("bridged")
    events = run([orjson.dumps(body) for _, body in builder.messages])
    (call_id,) = {e.data["call_id"] for e in events}
    assert call_id == builder.messages[0][1]["params"]["uuid"]
    assert {e.data["direction"] for e in events} == {"outbound"}
    cdrs = [e for e in events if e.type == "cdr.created"]
    assert [c.data["disposition"] for c in cdrs] == ["answered", "answered"]


def test_failed_call_reports_the_cause() -> None:
    builder = FlowBuilder(node_uuid="n", tz=TZ, seed=3, start=1772440000)
    builder.call("busy")
    events = run([orjson.dumps(body) for _, body in builder.messages])
    failed = [e for e in events if e.type == "call.failed"]
    assert len(failed) == 1 and failed[0].data["reason"] == "USER_BUSY"
    assert {e.data["disposition"] for e in events if e.type == "cdr.created"} == {"busy"}


def test_dtmf_counts_keys_per_leg() -> None:
    builder = FlowBuilder(node_uuid="n", tz=TZ, seed=4, start=1772440000)
    builder.ivr_dtmf("0555123456", "12#")
    events = run([orjson.dumps(body) for _, body in builder.messages])
    dtmf = [e.data for e in events if e.type == "call.dtmf"]
    assert [(d["digit"], d["sequence"], d["digits"]) for d in dtmf] == [
        ("1", 0, "1"),
        ("2", 1, "12"),
        ("#", 2, "12#"),
    ]


# --- messy streams ---------------------------------------------------------------------------


def test_duplicates_publish_nothing_new() -> None:
    bodies = sample()
    once = run(bodies)
    twice = run([b for body in bodies for b in (body, body)])
    # DTMF cannot tell a repeated message from a repeated key: it is the one exception.
    assert [e.id for e in twice if e.type != "call.dtmf"] == [
        e.id for e in once if e.type != "call.dtmf"
    ]


def test_stale_state_after_answer_changes_nothing() -> None:
    events = run([channel("START"), channel("ANSWERED"), channel("RINGING"), channel("START")])
    assert [e.type for e in events] == ["call.ringing", "call.answered"]


def test_messages_after_destroy_are_dropped() -> None:
    events = run([channel("START"), channel("DESTROY"), channel("ANSWERED"), channel("DESTROY")])
    assert [e.type for e in events] == ["call.ringing", "call.ended", "call.failed"]


def test_a_leg_heard_after_its_call_ended_changes_nothing() -> None:
    """A redelivered b-leg overtaken by the a-leg's DESTROY: the call ended once."""
    b_leg = {"direction": "outbound", "peer_uuid": "a-1", "context": "default"}
    events = run(
        [
            channel("START"),
            channel("DESTROY"),
            channel("CALLING", uuid="b-1", **b_leg),
            channel("DESTROY", uuid="b-1", **b_leg),
        ]
    )
    assert [e.type for e in events] == ["call.ringing", "call.ended", "call.failed"]


def test_the_first_leg_heard_after_its_call_ended_changes_nothing() -> None:
    """The a-leg's messages overtaken by its b-leg's whole life: the call ends once."""
    b_leg = {"direction": "outbound", "peer_uuid": "a-1", "context": "default"}
    events = run(
        [
            channel("CALLING", uuid="b-1", **b_leg),
            channel("DESTROY", uuid="b-1", **b_leg),
            channel("START"),
            channel("DESTROY"),
        ]
    )
    assert [e.type for e in events] == ["call.ringing", "call.ended", "call.failed"]
    assert {e.data["call_id"] for e in events} == {"a-1"}


def test_cdr_before_destroy_and_after_restart_find_the_call() -> None:
    builder = FlowBuilder(node_uuid="n", tz=TZ, seed=5, start=1772440000)
    builder.call("inbound")
    bodies = [orjson.dumps(body) for _, body in builder.messages]
    a_uuid = builder.messages[0][1]["params"]["uuid"]
    cdr_bodies = [b for b in bodies if b"Event.CDR" in b]
    # in the stream, the b-leg's CDR comes before its DESTROY:
    live = [e for e in run(bodies) if e.type == "cdr.created"]
    assert {e.data["call_id"] for e in live} == {a_uuid}
    # alone (a restarted gateway, a redelivery): the b-leg's CDR names its peer, same ids
    alone = [e for body in cdr_bodies for e in run([body])]
    assert [e.id for e in alone] == [e.id for e in live]
    assert {e.data["call_id"] for e in alone} == {a_uuid}


def test_cdr_fields() -> None:
    builder = FlowBuilder(node_uuid="n", tz=TZ, seed=6, start=1772440000)
    builder.call("inbound")
    events = run([orjson.dumps(body) for _, body in builder.messages])
    a_cdr = [e for e in events if e.type == "cdr.created"][-1]
    data = a_cdr.data
    assert data["direction"] == "inbound"
    assert data["started_at"] == "2026-03-02T08:26:40Z"  # 16:26:40 in Shanghai
    assert data["disposition"] == "answered"
    assert data["talk_duration_s"] > 0 and data["duration_s"] >= data["talk_duration_s"]
    assert data["caller"].startswith("0555")


@pytest.mark.parametrize(
    ("cause", "billsec", "disposition"),
    [
        ("NORMAL_CLEARING", "30", "answered"),
        ("NORMAL_CLEARING", "0", "no_answer"),
        ("USER_BUSY", "0", "busy"),
        ("NO_ANSWER", "0", "no_answer"),
        ("ORIGINATOR_CANCEL", "0", "no_answer"),
        ("CALL_REJECTED", "0", "busy"),
        ("UNALLOCATED_NUMBER", "0", "failed"),
        (None, None, "failed"),
    ],
)
def test_disposition_from_hangup_cause(
    cause: str | None, billsec: str | None, disposition: str
) -> None:
    body = {
        "jsonrpc": "2.0",
        "method": "Event.CDR",
        "params": {"uuid": "x", "cdr": {"uuid": "x", "hangup_cause": cause, "billsec": billsec}},
    }
    (event,) = run([orjson.dumps(body)])
    assert event.data["disposition"] == disposition


def test_sdk_cdr_template_is_read() -> None:
    """``tboy/tboy.go`` ``cdr_template``, the SDK's own example CDR."""
    body = (FIXTURES / "cdr_tboy_template.json").read_bytes()
    (event,) = run([body])
    assert event.type == "cdr.created"
    assert event.data["call_id"] == "5c29b3fb-b75a-4dbd-a33c-e4cb8c9af829"
    assert event.data["talk_duration_s"] == 29
    assert event.data["agent_id"] is None or isinstance(event.data["agent_id"], str)


def test_results_and_other_methods() -> None:
    result = b'{"jsonrpc":"2.0","id":"1","result":{"code":200,"message":"OK"}}'
    event_result = b'{"jsonrpc":"2.0","method":"Event.Result","params":{"code":200}}'
    custom = b'{"jsonrpc":"2.0","method":"Event.Custom","params":{"x":1}}'
    assert run([result]) == [] and run([event_result]) == []
    (unknown,) = run([custom])
    assert unknown.type == "vendor.unknown" and unknown.data["raw"]["params"] == {"x": 1}


@pytest.mark.parametrize("text", ["", "{", "[]", "null", "\x00\xff", '"x"', "1"])
def test_garbage_is_rejected_never_raised(text: str) -> None:
    (event,) = run([text])
    assert event.type == "gateway.rejected"


# --- nulls, absences and wrong types (real nodes are messier than the SDK) ------------------

_SAMPLE = [orjson.loads(line) for line in sample()]
_VARIANTS = st.sampled_from([None, "", 0, -1, 1.5, True, [], {}, "x" * 300, 2**70])


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(0, len(_SAMPLE) - 1),
    field=st.integers(0, 40),
    value=_VARIANTS,
    remove=st.booleans(),
)
def test_any_field_nulled_removed_or_retyped(
    index: int, field: int, value: Any, remove: bool
) -> None:
    """Every field of every sample message in turn: while the identity (``uuid``, the state,
    the DTMF digit) survives, the message still gives its own event type."""
    message = copy.deepcopy(_SAMPLE[index])
    params = message["params"]
    target = params["cdr"] if message["method"] == "Event.CDR" else params
    keys = sorted(target)
    key = keys[field % len(keys)]
    if remove:
        del target[key]
    else:
        target[key] = value
    events = run([json.dumps(message)])  # orjson refuses 2**70; a node may not
    identity = {"uuid", "state", "dtmf_digit"}
    if message["method"] == "Event.CDR":
        identity = set()  # the CDR's uuid is also in its params
    if key in identity:
        return
    assert events, message
    assert all(e.type != "gateway.rejected" for e in events), (key, value, events[0].data)
    expected = {"Event.Channel": "call.", "Event.CDR": "cdr.", "Event.DTMF": "call.dtmf"}
    assert events[0].type.startswith(expected[message["method"]])


def _dtmf(digit: str) -> bytes:
    params = {"node_uuid": "node-1", "uuid": "a-1", "dtmf_digit": digit, "dtmf_duration": 100}
    return orjson.dumps({"jsonrpc": "2.0", "method": "Event.DTMF", "params": params})


def test_dtmf_with_a_stream_position_is_identified_by_it() -> None:
    """With JetStream a key has a place in the stream: a redelivery (same place) publishes
    nothing, also into a fresh memory (a restarted gateway) it gets the same id; the same
    digit at another place is another key."""
    memory = StreamMemory()

    def at(body: bytes, position: str, into: StreamMemory) -> list[CloudEvent]:
        ctx = NormalizeContext("acme", "xswitch", TZ, RECEIVED, memory=into)
        return normalize_message(body, ctx, position=position)

    first = at(_dtmf("5"), "XCC_acme:10", memory)
    assert at(_dtmf("5"), "XCC_acme:10", memory) == []
    again = at(_dtmf("5"), "XCC_acme:11", memory)
    assert again[0].id != first[0].id and again[0].data["digits"] == "55"
    restarted = at(_dtmf("5"), "XCC_acme:10", StreamMemory())
    assert restarted[0].id == first[0].id


def test_each_cdr_says_its_legs_own_direction() -> None:
    """A bridged inbound call has two CDRs under one call id: the caller's leg from the
    trunk and the leg that rang the extension."""
    builder = FlowBuilder(node_uuid="n", tz=TZ, seed=8, start=1772440000)
    builder.call("inbound")
    events = run([orjson.dumps(body) for _, body in builder.messages])
    b_leg, a_leg = [e.data for e in events if e.type == "cdr.created"]  # b hangs up first
    assert (a_leg["leg_direction"], b_leg["leg_direction"]) == ("inbound", "internal")
    assert a_leg["direction"] == b_leg["direction"] == "inbound"
    assert a_leg["call_id"] == b_leg["call_id"]


@pytest.mark.parametrize("seed", range(6))
def test_a_call_heard_from_its_callee_leg_on_is_still_inbound(seed: int) -> None:
    """A gateway started after the caller's START: the simulated node's inbound call (trunk
    contexts of any name, with or without ``xcc_direction``) heard from its callee leg's
    first message on keeps one call id and is inbound throughout."""
    builder = FlowBuilder(node_uuid="n", tz=TZ, seed=seed, start=1772440000)
    builder.call("inbound")
    bodies = [body for _, body in builder.messages][1:]  # the a-leg's START is lost
    events = run([orjson.dumps(body) for body in bodies])
    calls = by_call(events)
    assert len(calls) == 1
    assert {e.data["direction"] for e in events if "direction" in e.data} == {"inbound"}
