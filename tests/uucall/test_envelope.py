"""The response envelope as UUCall's API wiki shows it: HTTP 200 with
``{"Result": "success", "Code": 0, "Data": ...}`` (capitalised) or in lower case, ``Data`` a
model or a list. Every path of the client unwraps it, so the balance, the cash log and the
commands read the records inside and never the envelope itself.

Sources (copied into ``tests/fixtures/uucall/wiki_revision.json``):

* 账户充值, revision diff oldid=87 (``GET /account/{uid}``: "Result / Code / Data: success /
  0 / BillingAccount, FAILED / 1 / 错误描述"):
  http://112.5.128.48:9988/index.php?diff=cur&oldid=87&title=%E8%B4%A6%E6%88%B7%E5%85%85%E5%80%BC
* 查询、记录 (``GET /callback/daillog``: "success / 0 / list"):
  http://112.5.128.48:9988/index.php?printable=yes&title=%E6%9F%A5%E8%AF%A2%E3%80%81%E8%AE%B0%E5%BD%95
* 通话记录 (``POST /cti/phonelog/page``: "success / PhoneLog集合, failed / 失败描述": the
  lower-case spelling of a failure):
  http://112.5.128.48:9988/index.php/%E9%80%9A%E8%AF%9D%E8%AE%B0%E5%BD%95
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.connectors.uucall.client import UucallClient, record
from gateway.connectors.uucall.commands import execute_rest
from gateway.connectors.uucall.downloads import Downloads
from gateway.connectors.uucall.envelope import read_envelope
from gateway.runtime.statestore import StateStore, StoreSlice
from tests.uucall.helpers import make_sim, pbx_for
from tests.uucall.test_commands import parse
from tests.uucall.test_pollers import Watched, kinds

WIKI = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures/uucall/wiki_revision.json").read_text()
)
#: The wiki's example account (``GET /account/1225``) answered with a BillingAccount.
ACCOUNT = {
    "balance": 26000,
    "overdraft": 10000,
    "name": "计费账户",
    "state": 1,
    "account": 51225,
    "note": "",
    "advance": 0,
    "consume": 1250000,
}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateStore]:
    store = StateStore(tmp_path / "state.sqlite3")
    yield store
    store.close()


def test_the_wiki_tables_read_as_envelopes() -> None:
    """Each row of the wiki's response tables, with its model in ``Data``, in both key cases."""
    rows = [*WIKI["envelope_table"]["rows"], *WIKI["list_envelope_table"]["rows"]]
    for result, code, data in rows:
        ok = result == "success"
        body = ACCOUNT if data == "BillingAccount" else [ACCOUNT] if data == "list" else data
        for keys in (("Result", "Code", "Data"), ("result", "code", "data")):
            envelope = read_envelope(dict(zip(keys, (result, code, body), strict=True)))
            assert envelope is not None and envelope.ok is ok
            assert envelope.data == body and envelope.code_number() == code
    for result, text in WIKI["lower_case_result_table"]["rows"]:
        envelope = read_envelope({"result": result, "data": text})
        assert envelope is not None and envelope.ok is (result == "success")


@pytest.mark.parametrize(
    "body",
    [
        ACCOUNT,
        [ACCOUNT],
        {"data": [ACCOUNT], "total": 1},
        {"result": [ACCOUNT]},  # a list under "result", not a Result word
        {"Result": "success"},  # no Code, no Data: not the wiki's shape
        {"Result": "ok", "Code": 0, "Data": ACCOUNT},  # a word the wiki never uses
        None,
    ],
)
def test_records_are_never_envelopes(body: Any) -> None:
    assert read_envelope(body) is None


@pytest.mark.parametrize("envelope", ["wiki", "wiki-lower"])
async def test_the_client_unwraps_every_answer(
    envelope: str, http_session: aiohttp.ClientSession
) -> None:
    sim = make_sim(envelope=envelope)
    await sim.start()
    try:
        client = UucallClient(http_session, pbx_for(sim))
        answer = await client.get("/account/10001")
        assert answer == sim.account and record(answer) == sim.account
        found = await client.list_all("/account/cashlog", {"uid": "10001"}, page_size=2)
        assert [row["id"] for row in found] == [7, 6, 5, 4, 3, 2, 1]
        assert len(sim.calls("GET", "/account/cashlog")) == 4  # the short page ends it
    finally:
        await sim.stop()


@pytest.mark.parametrize("envelope", ["wiki", "wiki-lower", "bare", "data"])
async def test_polls_read_the_records_inside(
    envelope: str, http_session: aiohttp.ClientSession, db: StateStore
) -> None:
    """With the capitalised envelope the balance event is published and the cash log entries
    are accepted (before, the envelope was taken for the record: no balance event, every
    entry rejected)."""
    sim = make_sim(envelope=envelope)
    await sim.start()
    try:
        watched = Watched(sim, http_session, StoreSlice(db, "uucall:acme:"))
        events = await watched.poll_all()
        assert kinds(events) == {
            "account.balance_changed": 1,
            "account.recharged": 2,
            "account.bill:created": 10,
            "account.audit": 5,
            "account.notice:created": 1,
        }
        balance = next(e for e in events if e.type == "account.balance_changed")
        assert balance.data["balance"]["value"] == sim.account["balance"]
        assert not Counter(e.type for e in watched.sent if e.type == "gateway.rejected")
    finally:
        await sim.stop()


async def test_commands_read_the_records_inside(
    http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    sim = make_sim(envelope="wiki")
    await sim.start()
    try:
        settings = pbx_for(sim)
        client = UucallClient(http_session, settings)
        folder = Downloads(tmp_path, 1 << 20)

        async def run(command: str, args: dict[str, Any]) -> dict[str, Any]:
            return await execute_rest(client, settings, parse(command, args), folder)

        assert await run("uucall.account.get", {}) == sim.account
        cashlog = await run("uucall.cashlog.list", {"page_size": 3})
        assert cashlog["row_count"] == 7 and cashlog["data"][0] == sim.cashlog[7]
        users = await run("uucall.subuser.list", {})
        assert [u["account"] for u in users["data"]] == [f"agent{n:02d}" for n in range(1, 7)]
        # a write: HTTP 200 and an envelope without Data (the wiki answers every method so)
        assert await run("uucall.role.create", {"name": "财务"}) == {"status": 200}
        assert any(r["name"] == "财务" for r in sim.roles.values())
    finally:
        await sim.stop()
