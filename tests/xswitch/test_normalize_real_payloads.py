"""What real XSwitch nodes send, beside what the manuals describe: each test holds a payload
taken from a real source (named in its docstring) and the event it must give.

Sources:

* ``github:xswitch-cn/proto`` ``go/proto/xctrl/xctrl.pb.go`` ``type ChannelEvent``: every field
  is tagged ``json:"...,omitempty"``, so ``answered: false``, ``answer_epoch: 0``,
  ``peer_uuid: ""``, ``direction: ""`` never reach the wire.
* ``github:xswitch-cn/xctrl`` ``ctrl/bus/bus_test.go`` (``TestBus...`` fixture): a
  ``ChannelEvent`` DESTROY with only ``node_uuid``, ``uuid``, ``state`` and ``params``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from prometheus_client import REGISTRY

from gateway.connectors.xswitch.normalize import normalize_message
from gateway.schema.events import EVENT_TYPES, CloudEvent, NormalizeContext, StreamMemory

TZ = ZoneInfo("Asia/Shanghai")
RECEIVED = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def run(bodies: list[bytes], memory: StreamMemory | None = None) -> list[CloudEvent]:
    memory = memory if memory is not None else StreamMemory()
    events: list[CloudEvent] = []
    for body in bodies:
        ctx = NormalizeContext("acme", "xswitch", TZ, RECEIVED, memory=memory)
        events.extend(normalize_message(body, ctx))
    for event in events:
        EVENT_TYPES[event.type].model_validate(event.data)
    return events


def rpc(method: str, params: dict[str, Any]) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params})


#: ``ctrl/bus/bus_test.go``: the ``xctrl.ChannelEvent`` the SDK's own test marshals (Go
#: ``json.Marshal``, omitempty): a callee leg of a call that talked 60 s, ended normally.
BUS_TEST_DESTROY: dict[str, Any] = {
    "node_uuid": "xcc-node-3",
    "uuid": "1d67d67f-45bf-4377-a6c1-4e1e03185326",
    "state": "DESTROY",
    "params": {
        "XCC-Control-UUID": "app.dial.6eeb469e-234a-47e8-bd54-aa9e7291409b",
        "xcc_mark": "Dialing",
        "hangup_cause": "NORMAL_CLEARING",
        "duration": "66",
        "context": "xcc_bridge,park",
        "xcc_stationtype": "SIP",
        "xcc_origin_cid_number": "1003",
        "cc_agent": "c296c363-c17d-4439-8f19-8d780ce9fdac",
        "xcc_direction": "inbound",
        "cc_agent_session_uuid": "2045dbbf-8ce5-42ea-ae41-1f6b0fc65fa0",
        "xcc_identity": "callee",
        "xcc_origin_dest_number": "15223352450",
        "xcc_session": "f52f710b-f36a-425b-bfa9-bb40c3ec4499",
        "cc_side": "member",
        "billsec": "60",
        "xcc_domain": "dev.xswitch.cn",
        "sip_hangup_disposition": "recv_bye",
    },
}


# --- omitempty: absence is not "false" ---------------------------------------------------------


def test_a_destroy_without_answered_of_a_call_that_talked_ends_it() -> None:
    """``ctrl/bus/bus_test.go``'s DESTROY, the first message heard of its call (a gateway
    started mid-call): ``billsec`` 60 in its variables proves the talk; ``answered`` is absent
    only because Go leaves ``false`` out. The call ends; it never fails."""
    events = run([rpc("Event.Channel", BUS_TEST_DESTROY)])
    assert [e.type for e in events] == ["call.ended"]
    assert events[0].data["call_id"] == "1d67d67f-45bf-4377-a6c1-4e1e03185326"
    assert events[0].data["members"][0]["status"] == "hung_up"


def test_an_omitempty_call_followed_from_start_that_talked_is_answered() -> None:
    """The same leg followed from its START (omitempty: no ``answered``, no ``answer_epoch``
    on the START): the DESTROY's ``params.billsec`` proves the answer it never announced."""
    start = {k: v for k, v in BUS_TEST_DESTROY.items() if k != "params"} | {"state": "START"}
    events = run([rpc("Event.Channel", start), rpc("Event.Channel", BUS_TEST_DESTROY)])
    assert "call.failed" not in [e.type for e in events]
    assert events[-1].type == "call.ended"


def test_an_omitempty_destroy_that_proves_no_answer_fails() -> None:
    """Zero talk time (``billsec: "0"`` is a non-empty string, so it is sent) or a cause that
    is not a normal end: the failure is proven by the message itself."""
    busy = BUS_TEST_DESTROY | {
        "cause": "USER_BUSY",
        "params": BUS_TEST_DESTROY["params"] | {"billsec": "0", "hangup_cause": "USER_BUSY"},
    }
    events = run([rpc("Event.Channel", busy)])
    assert [e.type for e in events] == ["call.ended", "call.failed"]
    assert events[1].data["reason"] == "USER_BUSY"


def test_a_destroy_that_proves_nothing_is_not_a_failure() -> None:
    """No talk time, a normal cause, nothing heard before: neither answered nor failed is
    proven; the call ends, no ``call.failed`` is made up."""
    bare = {"node_uuid": "n", "uuid": "u-1", "state": "DESTROY", "cause": "NORMAL_CLEARING"}
    assert [e.type for e in run([rpc("Event.Channel", bare)])] == ["call.ended"]


# --- direction: proven, never guessed ----------------------------------------------------------


def test_xcc_direction_names_the_call_and_its_member_agrees() -> None:
    """``ctrl/bus/bus_test.go``'s DESTROY has no numbers and no ``direction`` (omitempty) but
    ``params.xcc_direction: inbound``: the call is inbound, and its member is on that side
    (no more ``outbound`` call listing an ``inbound`` member)."""
    (ended,) = run([rpc("Event.Channel", BUS_TEST_DESTROY)])
    assert ended.data["direction"] == "inbound"
    assert [m["kind"] for m in ended.data["members"]] == ["inbound"]


def test_nothing_proves_a_direction_then_unknown_until_something_does() -> None:
    """A leg with neither numbers, context, ``direction`` nor ``xcc_direction`` (all absent
    under omitempty): ``unknown`` (docs/CONTRACT.md), and the first later message that proves
    it sets it for the rest of the call."""
    bare = {"node_uuid": "n", "uuid": "u-1", "state": "RINGING"}
    proven = bare | {"state": "ANSWERED", "params": {"xcc_direction": "outbound"}}
    ringing, answered = run([rpc("Event.Channel", bare), rpc("Event.Channel", proven)])
    assert ringing.data["direction"] == "unknown"
    assert answered.data["direction"] == "outbound"


def test_a_bridged_callee_leg_heard_first_belongs_to_an_inbound_call() -> None:
    """``tboy/tboy.go`` ``Bridge``: the callee leg a node creates is ``direction: outbound``
    with the caller's ``cid_number`` and the dialled ``dest_number`` (and, per
    ``xctrl.proto``, the caller's leg as ``peer_uuid``). Heard first (the gateway started after
    the caller's START), an outside caller ringing an extension is an inbound call; the
    callee's kind stays ``extension``."""
    b_leg = {
        "node_uuid": "test-node",
        "uuid": "b-1",
        "peer_uuid": "a-1",
        "direction": "outbound",
        "state": "CALLING",
        "cid_name": "TEST",
        "cid_number": "13800138000",
        "dest_number": "1001",
        "create_epoch": 1772440000,
    }
    (event,) = run([rpc("Event.Channel", b_leg)])
    assert event.data["direction"] == "inbound"
    assert event.data["call_id"] == "a-1"
    assert [(m["kind"], m["number"]) for m in event.data["members"]] == [("extension", "1001")]


def test_a_trunk_context_of_any_name_is_inbound() -> None:
    """docs.xswitch.cn/xswitch-user/advanced/xcc (XCC-CDR): ``context`` is "呼叫源", the
    call's source; ``tboy/tboy.go`` ``sofia_profile_name``: "default 分机号码, public 外线号码".
    Trunk contexts are named by whoever configures the carrier (``MyCarrier-Inbound``): a
    5-digit service number coming in on one is an outside party, not an extension."""
    leg = {
        "node_uuid": "n",
        "uuid": "a-9",
        "direction": "inbound",
        "state": "START",
        "cid_number": "95555",
        "dest_number": "88880000",
        "context": "MyCarrier-Inbound",
    }
    (event,) = run([rpc("Event.Channel", leg)])
    assert event.data["direction"] == "inbound"
    assert event.data["members"][0]["kind"] == "inbound"


# --- states no manual lists ------------------------------------------------------------------


def _passed_over(state: str) -> float:
    value = REGISTRY.get_sample_value(
        "gateway_xswitch_states_passed_over_total", {"tenant": "acme", "state": state}
    )
    return value or 0.0


def test_bridged_from_the_sdks_own_fake_node_is_a_bridge() -> None:
    """``tboy/tboy.go`` ``Bridge`` (the SDK's fake node) publishes ``aleg.State = "BRIDGED"``
    and ``bleg.State = "BRIDGED"`` after the callee answers, then ``UNBRIDGE`` and
    ``DESTROY``: BRIDGED is read as BRIDGE (no progress of its own), never rejected."""
    a = {"node_uuid": "test-node", "uuid": "a-1", "direction": "inbound", "cid_number": "1001"}
    b = {"node_uuid": "test-node", "uuid": "b-1", "direction": "outbound", "peer_uuid": "a-1"}
    b |= {"cid_number": "1001", "dest_number": "1002", "answered": True}
    bodies = [
        rpc("Event.Channel", a | {"state": "START", "dest_number": "1002"}),
        rpc("Event.Channel", b | {"state": "CALLING"}),
        rpc("Event.Channel", b | {"state": "ANSWERED", "answer_epoch": 1772440003}),
        rpc("Event.Channel", a | {"state": "BRIDGED", "dest_number": "1002"}),
        rpc("Event.Channel", b | {"state": "BRIDGED"}),
        rpc("Event.Channel", a | {"state": "UNBRIDGE", "dest_number": "1002"}),
        rpc("Event.Channel", a | {"state": "DESTROY", "cause": "NORMAL_CLEARING"}),
        rpc("Event.Channel", b | {"state": "DESTROY", "cause": "NORMAL_CLEARING"}),
    ]
    before = _passed_over("BRIDGED")
    types = [e.type for e in run(bodies)]
    assert "gateway.rejected" not in types and "call.failed" not in types
    assert types[-1] == "call.ended" and "call.answered" in types
    assert _passed_over("BRIDGED") == before  # a known spelling: read, not passed over


def test_the_dtmf_state_of_the_sdk_is_passed_over_and_counted() -> None:
    """``ctrl/serve.go`` / ``docs/dtmf.md``: the SDK puts ``DTMF`` in a channel's state field
    ("实际上Channel没有这个State"). A known call's message in such a state: no event, no
    rejection, one count in ``gateway_xswitch_states_passed_over_total{state}``."""
    leg = {"node_uuid": "n", "uuid": "a-1", "direction": "inbound", "cid_number": "1001"}
    before = _passed_over("DTMF")
    events = run(
        [
            rpc("Event.Channel", leg | {"state": "START"}),
            rpc("Event.Channel", leg | {"state": "DTMF"}),
        ]
    )
    assert [e.type for e in events] == ["call.ringing"]
    assert _passed_over("DTMF") == before + 1


def test_hold_spellings_and_a_status_come_back_to_is_a_new_event() -> None:
    """``xctrl.proto`` ``ChannelEvent.held``; FreeSWITCH's ``CHANNEL_HOLD`` / ``CHANNEL_UNHOLD``
    event names (developer.signalwire.com, FreeSWITCH Event List): held, answered again, held
    again: each change is its own event with its own id."""
    leg = {"node_uuid": "n", "uuid": "a-1", "direction": "inbound", "cid_number": "1001"}
    leg |= {"dest_number": "1002"}
    states = ["START", "ANSWERED", "CHANNEL_HOLD", "UNHOLD", "HELD", "UNHELD", "DESTROY"]
    events = run([rpc("Event.Channel", leg | {"state": state}) for state in states])
    assert [e.type for e in events] == [
        "call.ringing",
        "call.answered",
        "call.held",
        "call.answered",
        "call.held",
        "call.answered",
        "call.ended",
    ]
    assert len({e.id for e in events}) == len(events)


# --- the manual's default CDR field set --------------------------------------------------------


def test_the_manuals_default_cdr_field_set_gives_the_caller() -> None:
    """docs.xswitch.cn/xswitch-user/advanced/xcc, "XCC-CDR": the default fields are
    ``caller_id_name`` ("主叫号码", the caller number), ``destination_number``, ``uuid``,
    ``start_stamp``, ``answer_stamp``, ``end_stamp``, ``duration``, ``billsec``,
    ``hangup_cause``, ``context``, ``direction``: no ``caller_id_number``, no ``leg``, no
    epochs; values are strings (``tboy/tboy.go`` ``json:"billsec,string"``); published on
    ``cdr-subject`` ``cn.xswitch.cdr`` (``tboy/tboy_cdr.go`` ``SendCDR``)."""
    cdr = {
        "caller_id_name": "13800138000",
        "destination_number": "1001",
        "uuid": "c-1",
        "start_stamp": "2026-03-02 16:26:40",
        "answer_stamp": "2026-03-02 16:26:45",
        "end_stamp": "2026-03-02 16:27:30",
        "duration": "50",
        "billsec": "45",
        "hangup_cause": "NORMAL_CLEARING",
        "context": "public",
        "direction": "inbound",
    }
    params = {"uuid": "c-1", "node_ip": "127.0.0.1", "node_uuid": "n", "cdr": cdr}
    (event,) = run([rpc("Event.CDR", params)])
    data = event.data
    assert data["caller"] == "13800138000" and data["callee"] == "1001"
    assert (data["talk_duration_s"], data["duration_s"], data["ring_duration_s"]) == (45, 50, 5)
    assert data["started_at"] == "2026-03-02T08:26:40Z"
    assert (data["direction"], data["disposition"]) == ("inbound", "answered")


def test_a_b_leg_cdr_without_peer_uuid_joins_its_a_legs_call() -> None:
    """``tboy/tboy.go`` ``Bridge``: the b-leg's CDR is the ``cdr_template`` (no
    ``peer_uuid``) with ``cdr.uuid`` = the b-leg and ``leg: "b"``, sent with
    ``RequestParam.uuid`` = the a-leg's uuid: it belongs to the a-leg's call."""
    cdr = {"uuid": "b-1", "leg": "b", "billsec": "29", "caller_id_number": "10000200"}
    params = {"uuid": "a-1", "node_ip": "127.0.0.1", "node_uuid": "test-node", "cdr": cdr}
    (event,) = run([rpc("Event.CDR", params)])
    assert event.data["call_id"] == "a-1"


def test_a_made_up_state_counts_as_other_never_a_new_series() -> None:
    """The label takes known values only: a node (or anyone on its subject) sending invented
    states must not grow the metric's series."""
    leg = {"node_uuid": "n", "uuid": "a-9", "direction": "inbound", "cid_number": "1001"}
    before = _passed_over("other")
    states = ["START"] + [f"MADEUP{n}" for n in range(20)]
    events = run([rpc("Event.Channel", leg | {"state": state}) for state in states])
    assert [e.type for e in events] == ["call.ringing"]
    assert _passed_over("other") == before + 20
    assert _passed_over("MADEUP1") == 0.0
