"""XSwitch management commands: every command's request (path and body, as the simulator
received it), its result, and arguments refused by pydantic before any request."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from gateway.connectors.plugin import VendorPlugin
from gateway.connectors.xswitch.client import XccClient
from gateway.connectors.xswitch.commands import (
    COMMAND_MODELS,
    COMMAND_NAMES,
    ENDPOINTS,
    EXTENSION_SECRETS,
    QUEUE_STRATEGIES,
    execute_rest,
)
from gateway.connectors.xswitch.settings import XSwitchPbxSettings
from gateway.schema.commands import (
    CommandCatalog,
    CommandFailed,
    CommandInvalid,
    CommandModel,
    ErrorCode,
    command_name,
    parse_command,
)
from gateway.schema.events import NormalizeContext
from gateway.sim.xswitch.rest import API, STRATEGIES, XccRestSimulator
from tests.xswitch.rest_helpers import api_calls, doc_answer

CATALOG = CommandCatalog(COMMAND_MODELS)
ALL_PAGES = {"page": "1", "page_size": "100"}


def parse(command: str, args: dict[str, Any]) -> CommandModel:
    return CATALOG.parse(orjson.dumps({"command": command, "args": args}))


async def run(client: XccClient, command: str, args: dict[str, Any]) -> dict[str, Any]:
    """What the consumer does: parse (validate), then execute."""
    return await execute_rest(client, parse(command, args))


#: (command, args, path as sent, body as sent): the document's examples where it has one.
CASES: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    ("xswitch.extension.list", {}, "extensions/list", ALL_PAGES),
    (
        "xswitch.extension.list",
        {
            "search_field": "extn",
            "search_key": "100",
            "sort_field": "extn",
            "sort_order": "descend",
        },
        "extensions/list",
        {
            **ALL_PAGES,
            "search_field": "extn",
            "search_key": "100",
            "sort_field": "extn",
            "sort_order": "descend",
        },
    ),
    ("xswitch.extension.get", {"id": 236}, "extensions/get", {"id": "236"}),
    (
        "xswitch.extension.create",
        {
            "name": "EXT_1030",
            "extn": "1030",
            "password": "$VeryGoodPassw0rd",
            "context": "default",
            "domain": "xswitch.cn",
        },
        "extensions/add",
        {
            "name": "EXT_1030",
            "extn": "1030",
            "password": "$VeryGoodPassw0rd",
            "context": "default",
            "domain": "xswitch.cn",
        },
    ),
    (
        "xswitch.extension.update",
        {
            "id": "192",
            "name": "EXT_1030",
            "password": "$VeryGoodPassw0rd",
            "type": "VERTO",
            "cid_number": "",
            "cid_name": "Front desk",
        },
        "extensions/set",
        {
            "id": "192",
            "name": "EXT_1030",
            "password": "$VeryGoodPassw0rd",
            "type": "VERTO",
            "cid_number": "",
            "cid_name": "Front desk",
        },
    ),
    ("xswitch.extension.delete", {"id": "201"}, "extensions/del", {"id": "201"}),
    ("xswitch.queue.list", {"name": "test"}, "queues/list", {**ALL_PAGES, "name": "test"}),
    (
        "xswitch.queue.list",
        {"page": 2, "page_size": 5},
        "queues/list",
        {"page": "2", "page_size": "5"},
    ),
    (
        "xswitch.queue.create",
        {
            "name": "657894",
            "greeting": "local_stream://moh",
            "strategy": "random",
            "server_ip": "172.18.0.5",
            "notify_position": True,
            "notify_position_interval": 30,
            "agent_timeout": 20,
            "capacity": 10,
            "overflow_capacity_action": {"action": "transfer", "type": "queue", "data": "5100"},
            "wait_timeout_action": {"action": "hangup"},
        },
        "queues/add",
        {
            "name": "657894",
            "greeting": "local_stream://moh",
            "strategy": "random",
            "server_ip": "172.18.0.5",
            "notify_position": True,
            "notify_position_interval": 30,
            "agent_timeout": 20,
            "capacity": 10,
            "overflow_capacity_action": '{"action":"transfer","type":"queue","data":"5100"}',
            "wait_timeout_action": '{"action":"hangup"}',
        },
    ),
    (
        "xswitch.queue.update",
        {"id": 17, "greeting": "local_stream://moh", "strategy": "agent-with-least-talk-time"},
        "queues/set",
        {"id": "17", "greeting": "local_stream://moh", "strategy": "agent-with-least-talk-time"},
    ),
    ("xswitch.queue.delete", {"id": "12"}, "queues/del", {"id": "12"}),
    ("xswitch.node.list", {}, "freeswitch/list", {}),
    ("xswitch.work_time.list", {}, "timeDef/list", {"type": "work_time"}),
    (
        "xswitch.work_time.create",
        {"weekday": 5, "start_time": "08:00:00", "end_time": "18:00:00"},
        "timeDef/add",
        {"type": "work_time", "weekday": "5", "start_time": "08:00:00", "end_time": "18:00:00"},
    ),
    (
        "xswitch.work_time.update",
        {"id": "4", "start_time": "08:00:00", "end_time": "19:00:00"},
        "timeDef/set",
        {"type": "work_time", "id": "4", "start_time": "08:00:00", "end_time": "19:00:00"},
    ),
    ("xswitch.work_time.delete", {"id": "4"}, "timeDef/del", {"type": "work_time", "id": "4"}),
    ("xswitch.offday.list", {}, "timeDef/list", {"type": "offday"}),
    (
        "xswitch.offday.create",
        {"name": "test", "start_date": "03-03 00:00:00", "end_date": "03-03 23:59:59"},
        "timeDef/add",
        {
            "type": "offday",
            "name": "test",
            "start_date": "03-03 00:00:00",
            "end_date": "03-03 23:59:59",
        },
    ),
    (
        "xswitch.offday.update",
        {"id": 2, "name": "test", "end_date": "03-04 23:59:59"},
        "timeDef/set",
        {"type": "offday", "id": "2", "name": "test", "end_date": "03-04 23:59:59"},
    ),
    ("xswitch.offday.delete", {"id": "2"}, "timeDef/del", {"type": "offday", "id": "2"}),
    ("xswitch.ivr.list", {"name": "2"}, "ivrs/list", {**ALL_PAGES, "name": "2"}),
    ("xswitch.ivr.get", {"id": "1"}, "ivrs/get", {"id": "1"}),
    (
        "xswitch.ivr.create",
        {
            "level": 0,
            "name": "总部9",
            "nbr": "11119",
            "type": "transfer",
            "voice_type": "file",
            "call_extn_allowed": True,
            "record": "miss",
            "business_type": "order",
            "numbers": ["1000", "1001"],
            "digits": "1",
            "timeout_enable": "0",
            "timeout": 10,
        },
        "ivrs/add",
        {
            "level": 0,
            "name": "总部9",
            "nbr": "11119",
            "type": "transfer",
            "voice_type": "file",
            "call_extn_allowed": 1,
            "record": "miss",
            "business_type": "order",
            "numbers": "1000,1001",
            "digits": "1",
            "timeout_enable": 0,
            "timeout": 10,
        },
    ),
    (
        "xswitch.ivr.create",
        {"name": "子菜单", "level": 1, "parent_id": 3, "type": "prev"},
        "ivrs/add",
        {"name": "子菜单", "level": 1, "parent_id": "3", "type": "prev"},
    ),
    (
        "xswitch.ivr.update",
        {
            "id": 1,
            "name": "山东总部",
            "nbr": "111",
            "type": "transfer",
            "voice_type": "file",
            "call_extn_allowed": 0,
        },
        "ivrs/set",
        {
            "id": "1",
            "name": "山东总部",
            "nbr": "111",
            "type": "transfer",
            "voice_type": "file",
            "call_extn_allowed": 0,
        },
    ),
    ("xswitch.ivr.delete", {"id": "3"}, "ivrs/del", {"id": "3"}),
    ("xswitch.hotline.list", {"nbr": "1"}, "hotlines/list", {**ALL_PAGES, "nbr": "1"}),
    ("xswitch.hotline.get", {"id": "3"}, "hotlines/get", {"id": "3"}),
    (
        "xswitch.hotline.create",
        {
            "nbr": "12399",
            "period_enable": True,
            "period_type": "work",
            "type": "only",
            "numbers": "1111,2222,3333,4444",
        },
        "hotlines/add",
        {
            "nbr": "12399",
            "period_enable": "1",
            "period_type": "work",
            "type": "only",
            "numbers": "1111,2222,3333,4444",
        },
    ),
    (
        "xswitch.hotline.update",
        {
            "id": "1",
            "nbr": "0000000",
            "period_enable": "true",
            "period_type": "work",
            "type": "only",
            "numbers": ["00000"],
            "description": "",
        },
        "hotlines/set",
        {
            "id": "1",
            "nbr": "0000000",
            "period_enable": "1",
            "period_type": "work",
            "type": "only",
            "numbers": "00000",
            "description": "",
        },
    ),
    ("xswitch.hotline.delete", {"id": "2"}, "hotlines/del", {"id": "2"}),
]


def test_every_command_has_a_request_case_and_an_endpoint() -> None:
    assert {case[0] for case in CASES} == set(ENDPOINTS) == COMMAND_NAMES
    assert len(COMMAND_MODELS) == len(ENDPOINTS) == 28
    for name, path in ENDPOINTS.items():
        assert path.startswith(API) and name.startswith("xswitch.")
        assert "hostlines" not in path and "/ivr/" not in path


@pytest.mark.parametrize(
    ("command", "args", "path", "body"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
async def test_request_shape(
    rest_sim: XccRestSimulator,
    xcc: XccClient,
    command: str,
    args: dict[str, Any],
    path: str,
    body: dict[str, Any],
) -> None:
    await run(xcc, command, args)
    calls = api_calls(rest_sim)
    assert calls[0][:2] == (API + path, body), "the first (only) request"
    assert all(status == 200 for *_, status in calls), calls
    assert ENDPOINTS[command] == API + path


# --- results -------------------------------------------------------------------------------------


async def test_lists_read_every_page_or_the_one_asked(
    rest_sim: XccRestSimulator, xcc: XccClient
) -> None:
    every = await run(xcc, "xswitch.extension.list", {"page_size": 5})
    assert every["row_count"] == 22 and len(every["data"]) == 22
    assert rest_sim.requests[API + "extensions/list"] == 5
    page = await run(xcc, "xswitch.queue.list", {"page": 2, "page_size": 5})
    assert page == {
        **{k: v for k, v in doc_answer("queues_list").items() if k != "data"},
        "data": doc_answer("queues_list")["data"],
        "page_size": 5,
    }
    beyond = await run(xcc, "xswitch.hotline.list", {"page": 9, "page_size": 5})
    assert beyond["data"] == [] and beyond["row_count"] == 8


async def test_get_results_are_the_records(xcc: XccClient) -> None:
    record = doc_answer("extensions_get")
    with_secrets = await run(xcc, "xswitch.extension.get", {"id": "236", "include_secrets": True})
    assert with_secrets == record
    without = {k: v for k, v in record.items() if k not in EXTENSION_SECRETS}
    assert await run(xcc, "xswitch.extension.get", {"id": "236"}) == without
    assert await run(xcc, "xswitch.hotline.get", {"id": 3}) == doc_answer("hotlines_get")
    assert await run(xcc, "xswitch.ivr.get", {"id": 1}) == doc_answer("ivrs_get")[0]
    nodes = await run(xcc, "xswitch.node.list", {})
    assert nodes == {"data": doc_answer("freeswitch_list")}
    offdays = await run(xcc, "xswitch.offday.list", {})
    assert offdays == {"data": doc_answer("timeDef_list_offday")}


async def test_extension_credentials_stay_off_the_bus_unless_asked(xcc: XccClient) -> None:
    """``ha1`` (MD5 of user:realm:password) registers as the extension: results travel on
    the bus, so lists and gets leave it (and ``ha1b``, ``vm_password``) out by default."""
    listed = await run(xcc, "xswitch.extension.list", {})
    assert listed["data"] and not any(
        secret in record for record in listed["data"] for secret in EXTENSION_SECRETS
    )
    asked = await run(xcc, "xswitch.extension.list", {"include_secrets": True})
    assert all("ha1" in record for record in asked["data"])


async def test_writes_answer_the_id_acted_on(rest_sim: XccRestSimulator, xcc: XccClient) -> None:
    created = await run(xcc, "xswitch.hotline.create", {"nbr": "5555", "type": "queue"})
    ident = created["id"]
    assert rest_sim.hotlines[ident]["nbr"] == "5555"
    updated = await run(xcc, "xswitch.hotline.update", {"id": int(ident), "description": "x"})
    assert updated == {"id": ident}, "hotlines/set answers {} (line 1132): the id is added"
    assert rest_sim.hotlines[ident]["description"] == "x"
    assert await run(xcc, "xswitch.hotline.delete", {"id": ident}) == {"id": ident}
    assert ident not in rest_sim.hotlines
    queue = await run(xcc, "xswitch.queue.create", {"name": "sales", "strategy": "top-down"})
    assert rest_sim.queues[int(queue["id"])]["strategy"] == "top-down"


async def test_pbx_refusals_become_neutral_errors(xcc: XccClient) -> None:
    with pytest.raises(CommandFailed) as missing:
        await run(xcc, "xswitch.extension.get", {"id": "999"})
    assert missing.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(CommandFailed) as duplicate:
        await run(xcc, "xswitch.extension.create", {"extn": "1000", "password": "pw-1000"})
    assert duplicate.value.code is ErrorCode.CONFLICT
    with pytest.raises(CommandFailed) as gone:
        await run(xcc, "xswitch.ivr.get", {"id": "404"})
    assert gone.value.code is ErrorCode.NOT_FOUND


async def test_a_contract_command_is_not_executed_here(xcc: XccClient) -> None:
    command = parse_command(b'{"command": "call.hangup", "args": {"channel_id": "abc"}}')
    with pytest.raises(CommandFailed) as failed:
        await execute_rest(xcc, command)
    assert failed.value.code is ErrorCode.UNSUPPORTED


# --- validation ----------------------------------------------------------------------------------

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("xswitch.extension.get", {}, "args.id"),
    ("xswitch.extension.get", {"id": True}, "args.id"),
    ("xswitch.extension.get", {"id": "12a"}, "args.id"),
    ("xswitch.extension.get", {"id": 1.5}, "args.id"),
    ("xswitch.extension.get", {"id": "1", "extra": 1}, "args.extra"),
    ("xswitch.extension.list", {"search_key": "10"}, "args"),
    ("xswitch.extension.list", {"page": 0}, "args.page"),
    ("xswitch.extension.list", {"page_size": 5000}, "args.page_size"),
    ("xswitch.extension.list", {"sort_order": "up"}, "args.sort_order"),
    ("xswitch.extension.list", {"sort_field": "id; drop"}, "args.sort_field"),
    ("xswitch.extension.create", {"extn": "1030"}, "args.password"),
    ("xswitch.extension.create", {"extn": 1030, "password": "x"}, "args.extn"),
    ("xswitch.extension.create", {"extn": "1030", "password": "x", "type": "sip"}, "args.type"),
    ("xswitch.extension.create", {"extn": "1", "password": "x", "domain": "a b"}, "args.domain"),
    ("xswitch.extension.update", {"id": "1"}, "args"),
    ("xswitch.extension.update", {"id": "1", "extn": "1002"}, "args.extn"),
    ("xswitch.queue.create", {"name": "q", "strategy": "round_robin"}, "args.strategy"),
    ("xswitch.queue.create", {"strategy": "random"}, "args.name"),
    ("xswitch.queue.create", {"name": "q", "agent_timeout": "20"}, "args.agent_timeout"),
    ("xswitch.queue.create", {"name": "q", "capacity": -1}, "args.capacity"),
    (
        "xswitch.queue.create",
        {"name": "q", "overflow_capacity_action": {"action": "transfer"}},
        "args.overflow_capacity_action",
    ),
    (
        "xswitch.queue.create",
        {"name": "q", "wait_timeout_action": {"action": "hangup", "data": "1"}},
        "args.wait_timeout_action",
    ),
    ("xswitch.queue.update", {"id": "6", "name": "renamed"}, "args.name"),
    ("xswitch.queue.update", {"id": "6", "strategy": "fastest"}, "args.strategy"),
    ("xswitch.node.list", {"page": 1}, "args.page"),
    (
        "xswitch.work_time.create",
        {"weekday": 8, "start_time": "08:00:00", "end_time": "18:00:00"},
        "args.weekday",
    ),
    (
        "xswitch.work_time.create",
        {"weekday": 1, "start_time": "08:00:0", "end_time": "18:00:00"},
        "args.start_time",
    ),
    (
        "xswitch.work_time.create",
        {"weekday": 1, "start_time": "18:00:00", "end_time": "08:00:00"},
        "args",
    ),
    ("xswitch.work_time.update", {"id": "1", "weekday": "2"}, "args.weekday"),
    (
        "xswitch.offday.create",
        {"name": "x", "start_date": "02-30 00:00:00", "end_date": "03-01 00:00:00"},
        "args.start_date",
    ),
    (
        "xswitch.offday.create",
        {"name": "x", "start_date": "2020-03-03 00:00:00", "end_date": "03-03 23:59:59"},
        "args.start_date",
    ),
    (
        "xswitch.offday.create",
        {"start_date": "03-03 00:00:00", "end_date": "03-03 23:59:59"},
        "args.name",
    ),
    ("xswitch.offday.delete", {"id": "5", "type": "offwork"}, "args.type"),
    ("xswitch.ivr.create", {"name": "x", "type": "jump"}, "args.type"),
    ("xswitch.ivr.create", {"name": "x", "level": 1}, "args"),
    ("xswitch.ivr.create", {"name": "x", "parent_id": "1"}, "args"),
    ("xswitch.ivr.create", {"name": "x", "voice_type": "tts"}, "args.voice_type"),
    ("xswitch.ivr.create", {"name": "x", "record": "some"}, "args.record"),
    ("xswitch.ivr.create", {"name": "x", "business_type": "any"}, "args.business_type"),
    ("xswitch.ivr.create", {"name": "x", "call_extn_allowed": 2}, "args.call_extn_allowed"),
    ("xswitch.ivr.create", {"name": "x", "digits": "12a"}, "args.digits"),
    ("xswitch.ivr.update", {"id": "1", "level": 1}, "args.level"),
    ("xswitch.hotline.create", {"nbr": "1"}, "args.type"),
    (
        "xswitch.hotline.create",
        {"nbr": "1", "type": "only", "period_type": "night"},
        "args.period_type",
    ),
    (
        "xswitch.hotline.create",
        {"nbr": "1", "type": "only", "period_enable": "yes"},
        "args.period_enable",
    ),
    ("xswitch.hotline.update", {"id": "1"}, "args"),
]


@pytest.mark.parametrize(
    ("command", "args", "field"), INVALID, ids=[f"{c[0]}-{i}" for i, c in enumerate(INVALID)]
)
async def test_invalid_arguments_are_refused_before_any_request(
    rest_sim: XccRestSimulator, xcc: XccClient, command: str, args: dict[str, Any], field: str
) -> None:
    with pytest.raises(CommandInvalid) as invalid:
        await run(xcc, command, args)
    assert field in [e["field"] for e in invalid.value.errors], invalid.value.errors
    assert invalid.value.to_error().code is ErrorCode.INVALID
    model = CATALOG.names[command]
    with pytest.raises(ValidationError):
        model.model_validate({"command": command, "args": args})
    assert not rest_sim.received, "nothing reached the PBX"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_nine_documented_strategies(strategy: str) -> None:
    assert QUEUE_STRATEGIES == STRATEGIES and len(STRATEGIES) == 9
    parse("xswitch.queue.update", {"id": "6", "strategy": strategy})


def test_passwords_stay_out_of_reprs() -> None:
    command = parse("xswitch.extension.create", {"extn": "1030", "password": "$VeryGoodPassw0rd"})
    assert "VeryGoodPassw0rd" not in repr(command) and "VeryGoodPassw0rd" not in str(command)


# --- the plugin seam -----------------------------------------------------------------------------


def test_the_models_plug_into_a_vendor_declaration() -> None:
    def _unused(*_: Any) -> Any:
        raise AssertionError

    def _normalize(_: str, __: NormalizeContext) -> list[Any]:
        return []

    VendorPlugin(
        name="xswitch",
        title="XSwitch XCC",
        settings=XSwitchPbxSettings,
        connector=_unused,
        normalize=_normalize,
        commands=COMMAND_NAMES,
        command_models=COMMAND_MODELS,
    ).check()
    schema = CATALOG.json_schema()
    names = {command_name(model) for model in COMMAND_MODELS}
    assert names <= set(CATALOG.names)
    assert all(n in orjson.dumps(schema).decode() for n in names)
