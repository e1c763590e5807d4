"""The consumer library's pure parts: typed parsing, de-duplication, CDR legs by call."""

from __future__ import annotations

import orjson
import pytest

from gateway.consumer import CallLegs, MemoryDedupe, NotAnEvent, parse_event, topic_matches
from gateway.consumer.runner import with_gap_bindings
from gateway.schema.events import CdrData, GatewayGapData
from tests.consumer.factory import cdr, gap


def test_a_delivery_parses_into_the_contract_model_of_its_type() -> None:
    event = parse_event(cdr("acme", "c1", caller=None).to_json())
    assert isinstance(event.data, CdrData) and event.typed
    assert event.data.call_id == "c1" and event.data.caller is None
    assert event.tenant == "acme" and event.type == "cdr.created"
    window = parse_event(gap("acme").to_json())
    assert isinstance(window.data, GatewayGapData) and window.data.recovered == 2


def test_what_cannot_be_typed_stays_a_generic_event() -> None:
    body = orjson.loads(cdr("acme", "c1").to_json())
    unknown = parse_event({**body, "type": "call.teleported", "data": {"x": 1}})
    assert unknown.data == {"x": 1} and not unknown.typed
    assert "unknown to this version" in (unknown.problem or "")
    refused = parse_event({**body, "data": {**body["data"], "duration_s": "long"}})
    assert refused.data["duration_s"] == "long" and "duration_s" in (refused.problem or "")
    # A newer gateway's extra payload field and envelope attribute: still typed.
    newer = parse_event({**body, "traceparent": "00-x", "data": {**body["data"], "mos": 4.1}})
    assert isinstance(newer.data, CdrData) and newer.typed


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"type": "cdr.created"}', b'{"id": "1", "data": {}}', b"\xff"],
)
def test_only_a_body_that_is_no_cloudevent_raises(body: bytes) -> None:
    with pytest.raises(NotAnEvent):
        parse_event(body)


async def test_memory_dedupe_forgets_after_its_ttl_and_beyond_its_limit() -> None:
    now = [0.0]
    store = MemoryDedupe(ttl_s=60, limit=3, clock=lambda: now[0])
    await store.remember("a")
    assert await store.seen("a") and not await store.seen("b")
    now[0] = 61
    assert not await store.seen("a")
    for key in "wxyz":
        await store.remember(key)
    assert len(store) == 3 and not await store.seen("w") and await store.seen("z")


def test_call_legs_group_by_call_ignore_copies_and_settle() -> None:
    now = [0.0]
    legs = CallLegs(settle_s=5, clock=lambda: now[0])
    first = parse_event(cdr("acme", "c1", leg=1).to_json())
    call = legs.add(parse_event(cdr("acme", "c1", leg=2).to_json()))
    call = legs.add(first)
    call = legs.add(first)  # a redelivered copy
    legs.add(parse_event(cdr("other", "c1").to_json()))  # same call id, another tenant
    assert [leg.data.callee for leg in call.legs] == ["2001", "2002"], "in start order, once each"
    assert call.talk_s == 21 + 22 and call.answered and call.direction == "inbound"
    assert legs.settled() == []
    now[0] = 6
    assert {(c.tenant, len(c.legs)) for c in legs.settled()} == {("acme", 2), ("other", 1)}
    assert len(legs) == 0
    with pytest.raises(TypeError):
        legs.add(parse_event(gap("acme").to_json()))


def test_topic_matching_and_gap_bindings() -> None:
    assert topic_matches("*.cdr.created", "acme.cdr.created")
    assert topic_matches("acme.#", "acme.gateway.gap") and topic_matches("#", "a.b")
    assert not topic_matches("*.call.*", "acme.call.a.b")
    assert with_gap_bindings(["*.cdr.created"]) == ["*.cdr.created", "*.gateway.gap"]
    assert with_gap_bindings(["acme.#"]) == ["acme.#"]
    assert with_gap_bindings(["acme.cdr.created", "acme.call.*"]) == [
        "acme.cdr.created",
        "acme.call.*",
        "acme.gateway.gap",
    ]
