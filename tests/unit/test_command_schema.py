"""The command contract: every command parses from a minimal body; anything malformed becomes
CommandInvalid (never another exception) with a message that names the problem."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.schema.commands import (
    COMMANDS,
    MAX_COMMAND_BYTES,
    CommandError,
    CommandFailed,
    CommandInvalid,
    CommandResult,
    ErrorCode,
    command_json_schema,
    parse_command,
)

CH = "PJSIP/2000-0000008a"
UACSTA = {"extension": "2000", "call_id": "32787", "device_address": "192.168.5.2:5060"}

#: the smallest valid args of every command
MINIMAL: dict[str, dict[str, Any]] = {
    "call.dial": {"caller": "2000", "callee": "5503301"},
    "call.hangup": {"channel_id": CH},
    "call.hold": {"channel_id": CH},
    "call.unhold": {"channel_id": CH},
    "call.mute": {"channel_id": CH},
    "call.unmute": {"channel_id": CH},
    "call.park": {"channel_id": CH},
    "call.park_status": {},
    "call.transfer": {"channel_id": CH, "mode": "blind", "target": "2008"},
    "call.listen": {"channel_id": CH, "listener": "2008"},
    "call.add_member": {"channel_id": CH, "number": "13900000002"},
    "call.play_prompt": {"number": "2000", "prompts": ["welcome"]},
    "call.record_start": {"channel_id": CH},
    "call.record_pause": {"channel_id": CH},
    "call.record_resume": {"channel_id": CH},
    "call.accept_inbound": {"channel_id": CH},
    "call.refuse_inbound": {"channel_id": CH},
    "call.query": {"call_id": "1650012665.266"},
    "call.uacsta_accept": UACSTA,
    "call.uacsta_refuse": UACSTA,
    "call.uacsta_hangup": UACSTA,
    "agent.login": {"agent": "85"},
    "agent.logout": {"agent": "85"},
    "agent.pause": {"agent": "85"},
    "agent.unpause": {"agent": "85"},
    "cdr.search": {"start": "2022-05-30T00:00:00+08:00", "end": "2022-05-30T23:59:59+08:00"},
}


def body(command: str, args: Any) -> bytes:
    return orjson.dumps({"command": command, "args": args})


def test_every_command_has_a_minimal_example() -> None:
    assert set(MINIMAL) == set(COMMANDS)
    assert len(COMMANDS) == 26


@pytest.mark.parametrize("name", sorted(MINIMAL))
def test_minimal_command_parses(name: str) -> None:
    command = parse_command(body(name, MINIMAL[name]))
    assert command.command == name
    assert isinstance(command, COMMANDS[name])
    assert command.args.deadline is None
    # str bodies work as well as bytes
    assert parse_command(body(name, MINIMAL[name]).decode()) == command


def test_values_are_stripped_and_deadline_is_aware() -> None:
    command = parse_command(
        body(
            "call.dial",
            {
                "caller": " 2000 ",
                "callee": "+8613900000002",
                "deadline": "2030-01-01T08:00:00+08:00",
            },
        )
    )
    assert command.args.caller == "2000"
    assert command.args.callee == "+8613900000002"
    assert command.args.deadline == datetime(2030, 1, 1, tzinfo=UTC)


def test_full_examples() -> None:
    transfer = parse_command(
        body(
            "call.transfer",
            {"channel_id": CH, "mode": "attended", "attended_action": "complete"},
        )
    )
    assert transfer.args.attended_action == "complete"
    login = parse_command(
        body(
            "agent.login",
            {"agent": "85", "queues": ["2", "3"], "paused": True, "pause_reason": "*01"},
        )
    )
    assert login.args.queues == ["2", "3"]
    cdr = parse_command(
        body(
            "cdr.search",
            {
                **MINIMAL["cdr.search"],
                "caller": "2005",
                "disposition": "no_answer",
                "page": 2,
                "page_size": 500,
                "fuzzy": True,
            },
        )
    )
    assert (cdr.args.page, cdr.args.page_size) == (2, 500)


BAD: list[tuple[str, bytes | str, str]] = [
    ("bad json", b'{"command": "call.dial", ', "not JSON"),
    ("empty", b"", "not JSON"),
    ("not utf-8", b"\xff\xfe{}", "not JSON"),
    ("lone surrogate", '{"command": "\ud800"}', "UTF-8"),
    ("array", b"[]", "JSON object"),
    ("string", b'"call.dial"', "JSON object"),
    ("null", b"null", "JSON object"),
    ("no command", b'{"args": {}}', "command: field required"),
    ("command not a string", b'{"command": 5, "args": {}}', "command: must be a string"),
    ("unknown command", body("call.teleport", {}), "unknown command 'call.teleport'"),
    ("missing args", b'{"command": "call.hold"}', "args: Field required"),
    ("args not an object", body("call.hold", []), "args"),
    ("missing field", body("call.dial", {"caller": "2000"}), "args.callee: Field required"),
    ("number as int", body("call.dial", {"caller": 2000, "callee": "1"}), "args.caller"),
    ("blank number", body("call.dial", {"caller": "  ", "callee": "1"}), "args.caller"),
    ("long number", body("call.dial", {"caller": "1" * 65, "callee": "1"}), "args.caller"),
    (
        "bool as string",
        body("call.dial", {"caller": "1", "callee": "2", "auto_answer": "yes"}),
        "args.auto_answer",
    ),
    ("extra arg", body("call.hold", {"channel_id": CH, "force": True}), "args.force: Extra"),
    ("extra top level", b'{"command": "call.park_status", "args": {}, "x": 1}', "x: Extra"),
    (
        "naive deadline",
        body("call.hold", {"channel_id": CH, "deadline": "2030-01-01T00:00:00"}),
        "args.deadline: Input should have timezone info",
    ),
    (
        "numeric deadline",
        body("call.hold", {"channel_id": CH, "deadline": 1893456000}),
        "args.deadline",
    ),
    (
        "bad deadline",
        body("call.hold", {"channel_id": CH, "deadline": "tomorrow"}),
        "args.deadline",
    ),
    (
        "naive cdr start",
        body("cdr.search", {"start": "2022-05-30 00:00:00", "end": "2022-05-30T01:00:00Z"}),
        "args.start",
    ),
    (
        "cdr end before start",
        body("cdr.search", {"start": "2022-05-30T01:00:00Z", "end": "2022-05-30T00:00:00Z"}),
        "end is before start",
    ),
    ("cdr page 0", body("cdr.search", {**MINIMAL["cdr.search"], "page": 0}), "args.page"),
    (
        "cdr page_size too big",
        body("cdr.search", {**MINIMAL["cdr.search"], "page_size": 10001}),
        "args.page_size",
    ),
    ("cdr page as string", body("cdr.search", {**MINIMAL["cdr.search"], "page": "2"}), "args.page"),
    (
        "bad transfer mode",
        body("call.transfer", {"channel_id": CH, "mode": "warm", "target": "1"}),
        "args.mode",
    ),
    (
        "blind without target",
        body("call.transfer", {"channel_id": CH, "mode": "blind"}),
        "blind transfer needs target",
    ),
    (
        "attended with both",
        body(
            "call.transfer",
            {"channel_id": CH, "mode": "attended", "target": "1", "attended_action": "swap"},
        ),
        "exactly one of target, attended_action",
    ),
    (
        "bad listen mode",
        body("call.listen", {"channel_id": CH, "listener": "1", "mode": "spy"}),
        "args.mode",
    ),
    ("hangup without target", body("call.hangup", {}), "exactly one of channel_id"),
    ("query without filter", body("call.query", {}), "exactly one of call_id"),
    (
        "query with two filters",
        body("call.query", {"call_id": "1", "extension": "2"}),
        "exactly one of call_id",
    ),
    ("no prompts", body("call.play_prompt", {"number": "2000", "prompts": []}), "args.prompts"),
    (
        "volume too loud",
        body("call.play_prompt", {"number": "2000", "prompts": ["a"], "volume": 21}),
        "args.volume",
    ),
    (
        "reason without pause",
        body("agent.login", {"agent": "85", "pause_reason": "*01"}),
        "pause_reason needs paused",
    ),
    ("empty queue list", body("agent.pause", {"agent": "85", "queues": []}), "args.queues"),
    (
        "agent id and number",
        body("agent.pause", {"agent": "85", "extension": "2001"}),
        "exactly one",
    ),
    ("no agent", body("agent.logout", {"queues": ["3"]}), "exactly one of 'agent'"),
    (
        "oversized",
        body("call.play_prompt", {"number": "2000", "prompts": ["x" * MAX_COMMAND_BYTES]}),
        "more than the 65536 allowed",
    ),
    ("deep nesting", b"[" * 5000 + b"]" * 5000, "not JSON"),
]


@pytest.mark.parametrize(("raw", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_bodies_are_invalid(raw: bytes | str, expected: str) -> None:
    with pytest.raises(CommandInvalid) as info:
        parse_command(raw)
    assert expected in str(info.value)
    assert info.value.errors and all("message" in e and "field" in e for e in info.value.errors)
    assert info.value.to_error().code == ErrorCode.INVALID


def test_every_error_is_listed() -> None:
    with pytest.raises(CommandInvalid) as info:
        parse_command(body("call.dial", {"caller": 1, "extra": True, "deadline": "2030-01-01"}))
    fields = {e["field"] for e in info.value.errors}
    assert fields == {"args.caller", "args.callee", "args.extra", "args.deadline"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise_anything_else(raw: bytes) -> None:
    try:
        parse_command(raw)
    except CommandInvalid:
        pass


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
ARG_KEYS = sorted({k for args in MINIMAL.values() for k in args} | {"deadline", "mode", "page"})


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([*sorted(COMMANDS), "nope", ""]),
    st.dictionaries(st.sampled_from(ARG_KEYS) | st.text(max_size=8), JSON, max_size=6),
)
def test_arbitrary_json_commands_never_raise_anything_else(command: str, args: dict) -> None:
    try:
        parsed = parse_command(orjson.dumps({"command": command, "args": args}))
    except CommandInvalid:
        return
    assert parsed.command == command


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_arbitrary_json_values_never_raise_anything_else(value: Any) -> None:
    try:
        parse_command(orjson.dumps(value))
    except CommandInvalid:
        pass


def test_command_failed_carries_a_contract_error() -> None:
    failed = CommandFailed("not_found", "call/hold: 70130 CAHNNEL ID NOT FOUND", vendor_code=70130)
    assert failed.to_error() == CommandError(
        code=ErrorCode.NOT_FOUND,
        message="call/hold: 70130 CAHNNEL ID NOT FOUND",
        vendor_code="70130",
        retryable=False,
    )
    result = CommandResult(command_id="c-1", ok=False, error=failed.to_error())
    assert orjson.loads(result.model_dump_json()) == {
        "command_id": "c-1",
        "ok": False,
        "result": None,
        "error": {
            "code": "not_found",
            "message": "call/hold: 70130 CAHNNEL ID NOT FOUND",
            "vendor_code": "70130",
            "retryable": False,
        },
    }


def test_json_schema_covers_every_command_and_the_result() -> None:
    schema = command_json_schema()
    orjson.dumps(schema)
    defs = schema["$defs"]
    mapping = defs["Command"]["discriminator"]["mapping"]
    assert set(mapping) == set(COMMANDS)
    assert "CommandResult" in defs and "CommandError" in defs
    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(schema)
    assert refs and all(ref.removeprefix("#/$defs/") in defs for ref in refs)
