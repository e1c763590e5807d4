"""The XCC REST simulator on its own, with plain HTTP: the document's answers for the
document's requests, its spellings (``hostlines``, ``ivr/list``, ``offwork``), tokens,
validation, paging and configuration that changes over time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.sim.xswitch.rest import API, STRATEGIES, XccRestSimulator
from tests.conftest import wait_for
from tests.xswitch.rest_helpers import DEV_KEY, doc_answer


class Http:
    """Plain requests to the simulator, authenticated once."""

    def __init__(self, sim: XccRestSimulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session
        self.token = ""

    async def post(
        self, path: str, body: Any = None, *, token: str | None = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        headers = {"token": self.token if token is None else token}
        if raw is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.post(
            self.sim.base_url + API + path,
            json=None if raw is not None else body,
            data=raw,
            headers=headers,
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def login(self) -> str:
        status, answer = await self.post("sessions/auth", {"dev_key": DEV_KEY}, token="")
        assert status == 200, answer
        self.token = answer["token"]
        return self.token

    async def ok(self, path: str, body: Any) -> Any:
        status, answer = await self.post(path, body)
        assert status == 200, (path, body, answer)
        return answer


@pytest.fixture
async def http(rest_sim: XccRestSimulator) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as session:
        client = Http(rest_sim, session)
        await client.login()
        yield client


# --- tokens --------------------------------------------------------------------------------------


async def test_auth_answers_like_the_document(rest_sim: XccRestSimulator, http: Http) -> None:
    status, answer = await http.post("sessions/auth", {"dev_key": DEV_KEY}, token="")
    documented = doc_answer("sessions_auth")
    assert status == 200 and answer.keys() == documented.keys()
    assert {k: v for k, v in answer.items() if k != "token"} == {
        k: v for k, v in documented.items() if k != "token"
    }
    assert answer["token"] != http.token and rest_sim.tokens_issued == 2


@pytest.mark.parametrize(
    ("body", "status"), [({"dev_key": "wrong"}, 401), ({}, 400), ({"dev_key": ""}, 400)]
)
async def test_auth_checks_the_dev_key(http: Http, body: dict[str, Any], status: int) -> None:
    answered, answer = await http.post("sessions/auth", body, token="")
    assert answered == status and answer["code"] == status and answer["message"]


@pytest.mark.parametrize(("token", "message"), [("", "token required"), ("nope", "invalid token")])
async def test_calls_need_a_valid_token(http: Http, token: str, message: str) -> None:
    status, answer = await http.post("extensions/list", {}, token=token)
    assert (status, answer) == (401, {"code": 401, "message": message})


async def test_tokens_expire(http: Http, rest_sim: XccRestSimulator) -> None:
    await http.ok("extensions/list", {})
    rest_sim.expire_tokens()
    assert await http.post("extensions/list", {}) == (
        401,
        {"code": 401, "message": "token expired"},
    )
    await http.login()
    await http.ok("extensions/list", {})


async def test_a_short_token_lifetime(rest_sim: XccRestSimulator) -> None:
    sim = XccRestSimulator(DEV_KEY, token_ttl_s=0.2)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = Http(sim, session)
            await client.login()
            await client.ok("queues/list", {})

            async def expired() -> bool:
                return (await client.post("queues/list", {}))[0] == 401

            await wait_for(expired, timeout=5)
    finally:
        await sim.stop()


async def test_extension_token(http: Http) -> None:
    answer = await http.ok("sessions/getExtnToken", {"extn": "1001"})
    documented = doc_answer("sessions_getExtnToken")
    assert answer.keys() == documented.keys()
    assert (answer["extn_id"], answer["domain"]) == (documented["extn_id"], documented["domain"])
    status, _ = await http.post("sessions/getExtnToken", {"extn": "7777"})
    assert status == 404


# --- the document's answers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "fixture"),
    [
        ("extensions/list", {"page_size": "2"}, "extensions_list"),
        ("extensions/get", {"id": "236"}, "extensions_get"),
        ("queues/list", {"page_size": "5", "page": "2"}, "queues_list"),
        ("freeswitch/list", {}, "freeswitch_list"),
        ("timeDef/list", {"type": "work_time"}, "timeDef_list_work_time"),
        ("timeDef/list", {"type": "offday"}, "timeDef_list_offday"),
        ("ivrs/list", {"name": "2"}, "ivrs_list"),
        ("ivr/list", {"name": "2"}, "ivrs_list"),  # line 765's spelling
        ("ivrs/get", {"id": "1"}, "ivrs_get"),
        ("hotlines/list", {"page_size": "2"}, "hotlines_list"),
        ("hotlines/get", {"id": "3"}, "hotlines_get"),
        ("hostlines/get", {"id": "3"}, "hotlines_get"),  # line 1060's spelling
        ("hotlines/get", {"id": 3}, "hotlines_get"),  # ids as numbers too
    ],
)
async def test_documented_answers(http: Http, path: str, body: Any, fixture: str) -> None:
    assert await http.ok(path, body) == doc_answer(fixture)


async def test_requests_are_counted_per_path_as_sent(
    http: Http, rest_sim: XccRestSimulator
) -> None:
    await http.ok("hostlines/list", {})
    await http.ok("hotlines/list", {})
    await http.ok("hotlines/list", {})
    assert rest_sim.requests[API + "hostlines/list"] == 1
    assert rest_sim.requests[API + "hotlines/list"] == 2
    assert rest_sim.auth_requests == 1
    assert [r.status for r in rest_sim.calls(API + "hotlines/list")] == [200, 200]


# --- the document's write examples ---------------------------------------------------------------


async def test_extension_examples(http: Http, rest_sim: XccRestSimulator) -> None:
    added = await http.ok(  # line 214
        "extensions/add",
        {
            "name": "EXT_1030",
            "extn": "1030",
            "password": "$VeryGoodPassw0rd",
            "context": "default",
            "domain": "xswitch.cn",
        },
    )
    ident = added["id"]
    assert set(added) == {"id"} and isinstance(ident, str)
    record = rest_sim.extensions[ident]
    assert (record["extn"], record["name"], record["type"]) == ("1030", "EXT_1030", "SIP")
    assert await http.ok(  # line 242
        "extensions/set",
        {
            "id": ident,
            "name": "EXT_1030",
            "password": "$VeryGoodPassw0rd",
            "context": "default",
            "domain": "xswitch.cn",
        },
    ) == {"id": ident}
    got = await http.ok("extensions/get", {"id": ident})
    assert got["id"] == int(ident) and got["login"] == "1030"
    assert await http.ok("extensions/del", {"id": ident}) == {"id": ident}  # line 185
    assert (await http.post("extensions/get", {"id": ident}))[0] == 404


async def test_queue_examples(http: Http, rest_sim: XccRestSimulator) -> None:
    added = await http.ok(  # line 357
        "queues/add",
        {
            "name": "657894",
            "greeting": "local_stream://moh",
            "strategy": "random",
            "server_ip": "172.18.0.5",
        },
    )
    ident = added["id"]
    assert isinstance(ident, str) and rest_sim.queues[int(ident)]["name"] == "657894"
    assert await http.ok(  # line 440
        "queues/set",
        {"id": ident, "greeting": "local_stream://moh", "strategy": "agent-with-least-talk-time"},
    ) == {"id": ident}
    assert rest_sim.queues[int(ident)]["strategy"] == "agent-with-least-talk-time"
    assert await http.ok("queues/del", {"id": ident}) == {"id": ident}  # line 379


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_the_nine_strategies(http: Http, strategy: str) -> None:
    await http.ok("queues/add", {"name": f"q-{strategy}", "strategy": strategy})


@pytest.mark.parametrize(
    "action",
    [
        {"action": "hangup"},
        '{"action":"transfer","type":"queue","data":"5100"}',
        {"action": "transfer", "type": "voicemail", "data": "1000"},
    ],
)
async def test_queue_actions_as_json_or_text(
    http: Http, rest_sim: XccRestSimulator, action: Any
) -> None:
    ident = (await http.ok("queues/add", {"name": "q", "overflow_capacity_action": action}))["id"]
    assert rest_sim.queues[int(ident)]["overflow_capacity_action"].startswith('{"action":')


async def test_time_definition_examples(http: Http, rest_sim: XccRestSimulator) -> None:
    work = await http.ok(  # line 492
        "timeDef/add",
        {"type": "work_time", "weekday": "5", "start_time": "08:00:00", "end_time": "18:00:00"},
    )
    await http.ok(  # line 517, with the id just made
        "timeDef/set",
        {"type": "work_time", "id": work["id"], "start_time": "08:00:00", "end_time": "19:00:00"},
    )
    assert rest_sim.work_times[work["id"]]["end_time"] == "19:00:00"
    await http.ok("timeDef/del", {"type": "work_time", "id": "4"})  # line 587
    off = await http.ok(  # line 642
        "timeDef/add",
        {
            "type": "offday",
            "name": "test",
            "start_date": "03-03 00:00:00",
            "end_date": "03-03 23:59:59",
        },
    )
    await http.ok(  # line 668
        "timeDef/set",
        {
            "type": "offday",
            "id": off["id"],
            "name": "test",
            "start_date": "03-03 00:00:00",
            "end_date": "03-04 23:59:59",
        },
    )
    assert rest_sim.offdays[off["id"]]["end_date"] == "03-04 23:59:59"
    await http.ok("timeDef/del", {"type": "offwork", "id": off["id"]})  # line 684's type
    await http.ok("timeDef/del", {"type": "offday", "id": "2"})  # line 691's
    assert rest_sim.offdays == {} and "4" not in rest_sim.work_times
    status, _ = await http.post("timeDef/del", {"type": "work_time", "id": off["id"]})
    assert status == 404, "an offday is not a work time"


async def test_ivr_examples(http: Http, rest_sim: XccRestSimulator) -> None:
    top = await http.ok(  # line 733
        "ivrs/add",
        {
            "level": 0,
            "name": "总部X",
            "nbr": "11111",
            "type": "transfer",
            "voice_type": "file",
            "call_extn_allowed": 1,
        },
    )
    child = await http.ok(
        "ivrs/add", {"level": 1, "parent_id": top["id"], "name": "分部", "type": "prev"}
    )
    tree = await http.ok("ivrs/get", {"id": top["id"]})
    assert [c["id"] for c in tree[0]["ivrs"]] == [child["id"]]
    assert (
        await http.ok(  # line 975, an id as a number
            "ivrs/set",
            {
                "id": int(top["id"]),
                "name": "山东总部",
                "nbr": "111",
                "type": "transfer",
                "voice_type": "file",
                "call_extn_allowed": 0,
            },
        )
        == {}
    )
    assert rest_sim.ivrs[top["id"]]["call_extn_allowed"] == "0"
    assert await http.ok("ivrs/del", {"id": top["id"]}) == {}  # line 937
    assert top["id"] not in rest_sim.ivrs and child["id"] not in rest_sim.ivrs


async def test_hotline_examples_on_both_spellings(http: Http, rest_sim: XccRestSimulator) -> None:
    added = await http.ok(  # line 1097, posted to hostlines/add
        "hostlines/add",
        {
            "nbr": "12399",
            "period_enable": "1",
            "period_type": "work",
            "type": "only",
            "numbers": "1111,2222,3333,4444",
        },
    )
    ident = added["id"]
    assert (
        await http.ok(  # line 1127: "period_enable": "true"
            "hostlines/set",
            {
                "id": ident,
                "nbr": "0000000",
                "period_enable": "true",
                "period_type": "work",
                "type": "only",
                "numbers": "00000",
            },
        )
        == {}
    )
    assert rest_sim.hotlines[ident]["period_enable"] == "1"
    assert rest_sim.hotlines[ident]["nbr"] == "0000000"
    assert await http.ok("hostlines/del", {"id": ident}) == {}  # line 1150
    assert await http.ok("hotlines/del", {"id": "2"}) == {}


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("queues/add", {"name": "q", "strategy": "round_robin"}, 400, "strategy"),
        ("queues/set", {"id": "17", "strategy": "fastest"}, 400, "strategy"),
        ("queues/add", {"name": "testapi6"}, 409, "exists"),
        (
            "queues/add",
            {"name": "q", "wait_timeout_action": {"action": "transfer"}},
            400,
            "transfer",
        ),
        ("queues/add", {"name": "q", "wait_timeout_action": "{not json"}, 400, "JSON"),
        ("extensions/add", {"extn": "1000", "password": "x"}, 409, "exists"),
        ("extensions/add", {"extn": "1040"}, 400, "password"),
        ("extensions/add", {"extn": "1040", "password": "x", "type": "SKYPE"}, 400, "type"),
        ("extensions/get", {"id": "9999"}, 404, "9999"),
        ("extensions/get", {}, 400, "id"),
        ("extensions/list", {"sort_order": "up"}, 400, "sort_order"),
        ("extensions/list", {"page_size": "many"}, 400, "page_size"),
        ("timeDef/list", {"type": "holiday"}, 400, "type"),
        (
            "timeDef/add",
            {"type": "work_time", "weekday": "9", "start_time": "08:00:00", "end_time": "18:00:00"},
            400,
            "weekday",
        ),
        (
            "timeDef/add",
            {
                "type": "offday",
                "name": "x",
                "start_date": "13-01 00:00:00",
                "end_date": "13-01 23:59:59",
            },
            400,
            "start_date",
        ),
        ("ivrs/add", {"name": "x", "level": 1}, 400, "parent_id"),
        ("ivrs/add", {"name": "x", "level": 1, "parent_id": "77"}, 400, "parent_id"),
        ("ivrs/add", {"name": "总部"}, 409, "exists"),
        ("ivrs/set", {"id": "1", "record": "sometimes"}, 400, "record"),
        ("hotlines/add", {"nbr": "1", "type": "fax"}, 400, "type"),
        ("hotlines/set", {"id": "1", "period_enable": "maybe"}, 400, "period_enable"),
        ("nothing/here", {}, 404, "no such API"),
    ],
)
async def test_refusals(http: Http, path: str, body: Any, status: int, words: str) -> None:
    answered, answer = await http.post(path, body)
    assert answered == status and answer["code"] == status, answer
    assert words in answer["message"]


async def test_bodies_must_be_json_objects(http: Http) -> None:
    assert (await http.post("extensions/list", raw=b"{not json"))[0] == 400
    assert (await http.post("extensions/list", raw=b"[1, 2]"))[0] == 400
    assert (await http.post("sessions/auth", raw=b'{dev_key": "x"}', token=""))[0] == 400


async def test_paging(http: Http) -> None:
    page = await http.ok("extensions/list", {"page": 3, "page_size": 10})
    assert (page["page"], page["row_count"], page["page_count"]) == (3, 22, 3)
    assert [r["id"] for r in page["data"]] == ["212", "236"], "sorted by id, as numbers"
    beyond = await http.ok("extensions/list", {"page": "9", "page_size": "10"})
    assert beyond["data"] is None and beyond["row_count"] == 22
    down = await http.ok("hotlines/list", {"sort_field": "id", "sort_order": "descend"})
    assert [r["id"] for r in down["data"]] == [str(i) for i in range(8, 0, -1)]
    assert len((await http.ok("hotlines/list", {}))["data"]) == 8, "200 a page (line 988)"
    found = await http.ok("extensions/list", {"search_field": "extn", "search_key": "101"})
    assert [r["extn"] for r in found["data"]] == [str(n) for n in range(1010, 1020)]


# --- configuration over time ---------------------------------------------------------------------


@pytest.mark.parametrize("action", ["added", "changed", "removed"])
@pytest.mark.parametrize("kind", ["extension", "queue", "ivr", "hotline"])
async def test_mutations_show_in_the_lists(
    http: Http, rest_sim: XccRestSimulator, kind: Any, action: Any
) -> None:
    list_path = {
        "extension": "extensions/list",
        "queue": "queues/list",
        "ivr": "ivrs/list",
        "hotline": "hotlines/list",
    }[kind]

    async def rows() -> dict[str, dict[str, Any]]:
        answer = await http.ok(list_path, {"page_size": 1000})
        return {str(r["id"]): r for r in answer["data"] or []}

    before = await rows()
    trees = {i: await http.ok("ivrs/get", {"id": i}) for i in before} if kind == "ivr" else {}
    mutation = rest_sim.mutate(kind, action)
    after = await rows()
    if action == "added":
        assert after.keys() - before.keys() == {mutation.id}
    elif action == "removed":
        assert before.keys() - after.keys() == {mutation.id}
    elif kind == "ivr":
        assert await http.ok("ivrs/get", {"id": mutation.id}) != trees[mutation.id]
    else:
        assert after.keys() == before.keys() and after[mutation.id] != before[mutation.id]


async def test_the_last_object_is_never_removed(rest_sim: XccRestSimulator) -> None:
    for _ in range(len(rest_sim.queues) - 1):
        rest_sim.mutate("queue", "removed")
    assert len(rest_sim.queues) == 1
    assert rest_sim.mutate("queue", "removed").action == "added"
    assert len(rest_sim.queues) == 2


async def test_periodic_mutations(rest_sim: XccRestSimulator) -> None:
    sim = XccRestSimulator(DEV_KEY, seed=3, mutate_every_s=0.01)
    await sim.start()
    try:
        await wait_for(lambda: len(sim.mutations) >= 5)
        assert XccRestSimulator.at(sim.base_url) is sim
        rest_sim.start_mutations(0.01)
        await wait_for(lambda: len(rest_sim.mutations) >= 3)
        await rest_sim.stop_mutations()
    finally:
        await sim.stop()
        await sim.stop()  # twice is fine
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert "xcc-sim-mutations" not in names, "no mutation task outlives its simulator"


def test_random_mutations_follow_the_seed() -> None:
    one, two = XccRestSimulator(DEV_KEY, seed=11), XccRestSimulator(DEV_KEY, seed=11)
    assert [one.mutate() for _ in range(30)] == [two.mutate() for _ in range(30)]
