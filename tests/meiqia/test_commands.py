"""Meiqia commands against the simulator: what reaches which endpoint, what is refused before
any request, what comes back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.connectors import registry
from gateway.connectors.meiqia.client import MeiqiaClient
from gateway.connectors.meiqia.commands import MeiqiaCommands
from gateway.connectors.meiqia.normalize import record_event
from gateway.schema.commands import CommandFailed, CommandInvalid, CommandModel, ErrorCode
from gateway.sim.meiqia.server import MeiqiaSimulator
from tests.conftest import wait_for
from tests.meiqia.helpers import ctx


def parse(command: str, args: dict[str, Any]) -> CommandModel:
    return registry.command_catalog().parse(json.dumps({"command": command, "args": args}))


@pytest.fixture
def commands(client: MeiqiaClient) -> MeiqiaCommands:
    return MeiqiaCommands(client, lambda: ctx("acme"))


async def run(commands: MeiqiaCommands, command: str, args: dict[str, Any]) -> dict[str, Any]:
    return await commands.execute(parse(command, args))


async def test_dial_places_a_callout(commands: MeiqiaCommands, msim: MeiqiaSimulator) -> None:
    result = await run(
        commands,
        "call.dial",
        {
            "agent_id": 1,
            "callee": "13800000000",
            "trunk_number": "01088886666",
            "user_data": "crm-lead-4711",
        },
    )
    [sent] = msim.callouts
    assert result == {"call_id": sent["uuid"]}
    assert {k: v for k, v in sent.items() if k != "uuid"} == {
        "agent_id": 1,  # the document's int64, although the contract carries ids as text
        "callee": "13800000000",
        "trunk_number": "01088886666",
        "user_data": "crm-lead-4711",
    }
    assert (await run(commands, "call.dial", {"agent_id": "2", "callee": "139"}))["call_id"]
    assert msim.callouts[1]["agent_id"] == 2 and "user_data" not in msim.callouts[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"caller": "8001", "callee": "138"}, "give agent_id"),
        ({"agent_id": 1, "callee": "138", "user_data": "x" * 101}, "at most 100"),
        ({"agent_id": "agent-7", "callee": "138"}, "integer agent id"),
        ({"agent_id": 0, "callee": "138"}, "integer agent id"),
        ({"agent_id": 1, "callee": "138", "dial_permission": "8001"}, "dial_permission"),
        ({"agent_id": 1, "callee": "138", "auto_answer": True}, "auto_answer"),
    ],
)
async def test_dial_args_meiqia_cannot_honour_are_invalid_without_a_request(
    commands: MeiqiaCommands, msim: MeiqiaSimulator, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(CommandFailed) as info:
        await run(commands, "call.dial", args)
    assert info.value.code is ErrorCode.INVALID and message in info.value.message
    assert sum(msim.requests.values()) == 0


async def test_user_data_of_exactly_100_characters_is_sent(
    commands: MeiqiaCommands, msim: MeiqiaSimulator
) -> None:
    await run(commands, "call.dial", {"agent_id": 1, "callee": "138", "user_data": "数" * 100})
    assert msim.callouts[0]["user_data"] == "数" * 100


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ({"agent_id": 5, "callee": "138"}, ErrorCode.FAILED, "坐席未注册"),
        ({"agent_id": 42, "callee": "138"}, ErrorCode.NOT_FOUND, "客服 42 不存在"),
        ({"agent_id": 1, "callee": "138", "trunk_number": "999"}, ErrorCode.INVALID, "外显号码"),
    ],
)
async def test_dial_refused_by_meiqia(
    commands: MeiqiaCommands,
    msim: MeiqiaSimulator,
    args: dict[str, Any],
    code: ErrorCode,
    message: str,
) -> None:
    with pytest.raises(CommandFailed) as info:
        await run(commands, "call.dial", args)
    assert info.value.code is code and message in info.value.message
    assert msim.requests["callout"] == 1 and msim.callouts == []


async def test_cdr_search_returns_the_ids_of_the_live_path(
    commands: MeiqiaCommands, msim: MeiqiaSimulator
) -> None:
    answered = msim.place_call("外呼", "接听", agent_id=1, customer="13800000001")
    msim.place_call("来电", "队列放弃", customer="13700000002")
    await wait_for(lambda: len(msim.records()) == 2, timeout=10)
    window = {"start": "2020-01-01T00:00:00Z", "end": "2099-01-01T00:00:00+08:00"}
    result = await run(commands, "cdr.search", {**window, "page_size": 1})
    assert (result["total"], result["page"], result["has_more"]) == (2, 1, True)
    page2 = await run(commands, "cdr.search", {**window, "page": 2, "page_size": 1})
    assert page2["has_more"] is False
    found = {e["data"]["call_id"]: e for e in result["events"] + page2["events"]}
    record = msim.calls[answered].record
    assert found[answered]["id"] == record_event(record, ctx("acme")).id
    assert found[answered]["type"] == "cdr.created"
    only = await run(commands, "cdr.search", {**window, "disposition": "no_answer"})
    assert [e["data"]["reason"] for e in only["events"]] == ["abandoned_in_queue"]
    inbound = await run(commands, "cdr.search", {**window, "caller": "13700000002"})
    assert [e["data"]["direction"] for e in inbound["events"]] == ["inbound"]
    assert (await run(commands, "cdr.search", {**window, "callee": "13700000002"}))["total"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"disposition": "busy"}, "no 'busy' calls"),
        ({"fuzzy": True}, "no fuzzy"),
        ({"extension_group": "3"}, "extension groups"),
        ({"caller": "1", "callee": "2"}, "one customer number"),
    ],
)
async def test_cdr_search_filters_meiqia_lacks_are_invalid(
    commands: MeiqiaCommands, msim: MeiqiaSimulator, args: dict[str, Any], message: str
) -> None:
    window = {"start": "2024-05-01T00:00:00Z", "end": "2024-05-02T00:00:00Z"}
    with pytest.raises(CommandFailed) as info:
        await run(commands, "cdr.search", {**window, **args})
    assert info.value.code is ErrorCode.INVALID and message in info.value.message
    assert msim.requests["records"] == 0


async def test_sips_list_leaves_passwords_out_unless_asked(
    commands: MeiqiaCommands, msim: MeiqiaSimulator
) -> None:
    result = await run(commands, "meiqia.sips.list", {})
    assert result["total"] == 6 and all("password" not in row for row in result["data"])
    free = await run(commands, "meiqia.sips.list", {"occupied": False})
    assert [row["sip"] for row in free["data"]] == ["8005", "8006"]
    mine = await run(commands, "meiqia.sips.list", {"agent_id": "3", "include_password": True})
    assert [row["sip"] for row in mine["data"]] == ["8003"]
    assert mine["data"][0]["password"] == msim.seats["8003"].password


async def test_sip_bind_and_number_groups(commands: MeiqiaCommands, msim: MeiqiaSimulator) -> None:
    assert await run(commands, "meiqia.sip.bind", {"agent_id": 5, "sip": "8005"}) == {
        "agent_id": 5,
        "sip": "8005",
    }
    assert msim.seats["8005"].agent_id == 5
    groups = await run(commands, "meiqia.number_groups.list", {})
    assert [g["name"] for g in groups["groups"]] == ["华北号码组", "全国随机"]
    assert [n["number"] for n in groups["numbers"]] == ["01088886666", "02166668888", "02087654321"]
    args = {"agent_ids": [1, "2"], "group_ids": [2], "numbers": ["01088886666"]}
    assert await run(commands, "meiqia.number_groups.assign", args) == {
        "agent_ids": [1, 2],
        "group_ids": [2],
        "numbers": ["01088886666"],
    }
    assert msim.assignments[2] == {"group_ids": [2], "numbers": ["01088886666"]}
    with pytest.raises(CommandFailed) as info:
        await run(commands, "meiqia.sip.bind", {"agent_id": 1, "sip": "9999"})
    assert info.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(CommandFailed) as info:
        await run(commands, "meiqia.number_groups.assign", {**args, "agent_ids": [77]})
    assert info.value.code is ErrorCode.NOT_FOUND


@pytest.mark.parametrize(
    ("command", "args", "field"),
    [
        ("meiqia.sip.bind", {"sip": "8001"}, "args.agent_id"),
        ("meiqia.sip.bind", {"agent_id": True, "sip": "8001"}, "args.agent_id"),
        ("meiqia.sip.bind", {"agent_id": 1, "sip": ""}, "args.sip"),
        (
            "meiqia.number_groups.assign",
            {"agent_ids": [], "group_ids": [], "numbers": []},
            "args.agent_ids",
        ),
        ("meiqia.number_groups.assign", {"agent_ids": [1], "numbers": []}, "args.group_ids"),
        ("meiqia.sips.list", {"occupied": "maybe"}, "args.occupied"),
        ("meiqia.number_groups.list", {"x": 1}, "args.x"),
    ],
)
def test_management_args_are_checked_when_parsed(
    command: str, args: dict[str, Any], field: str
) -> None:
    with pytest.raises(CommandInvalid) as info:
        parse(command, args)
    assert field in {e["field"] for e in info.value.errors}


async def test_a_429_on_a_write_is_waited_out_once(
    commands: MeiqiaCommands, msim: MeiqiaSimulator
) -> None:
    msim.rate_limit(1, retry_after_s=1)
    result = await run(commands, "call.dial", {"agent_id": 1, "callee": "138"})
    assert result["call_id"] == msim.callouts[0]["uuid"]
    assert [s for _t, p, s in msim.log if p == "callout"] == [429, 200]
