"""Polling -> account.* events against the simulator: each change found exactly once, also
across a restart (cursors in the state store) and by another instance (same ids, from the
facts); the threshold crossing over real polls; refused credentials and rate limits."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from gateway.connectors.link import LinkState
from gateway.connectors.polling import PollDeferred, PollStopped
from gateway.connectors.uucall.client import AuthRefused, UucallClient
from gateway.connectors.uucall.pollers import POLLERS, AccountPollers
from gateway.runtime.statestore import StateStore, StoreSlice
from gateway.schema.events import EVENT_TYPES, CloudEvent
from gateway.sim.uucall.rest import UucallSimulator
from tests.conftest import wait_for
from tests.uucall.helpers import make_sim, pbx_for


class Watched:
    """The pollers of one 'instance' on a state store, and every event they published."""

    def __init__(
        self,
        sim: UucallSimulator,
        http: aiohttp.ClientSession,
        store: StoreSlice,
        **overrides: Any,
    ) -> None:
        self.sent: list[CloudEvent] = []
        self.settings = pbx_for(sim, **overrides)
        self.state = LinkState("acme", "uucall", ZoneInfo("Asia/Shanghai"), include_raw=False)

        async def emit(event: CloudEvent) -> None:
            self.sent.append(event)

        self.state.attach(emit)
        self.client = UucallClient(http, self.settings)
        self.pollers = AccountPollers(self.client, self.settings, store, self.state)

    async def poll_all(self) -> list[CloudEvent]:
        before = len(self.sent)
        for name in POLLERS:
            await self.pollers.poll_once(name)
        return [e for e in self.sent[before:] if not e.type.startswith("gateway.")]

    def count(self, events: list[CloudEvent] | None = None) -> Counter[str]:
        return Counter(e.type for e in (self.sent if events is None else events))


def kinds(events: list[CloudEvent]) -> Counter[str]:
    return Counter(f"{e.type}:{e.data['action']}" if "action" in e.data else e.type for e in events)


@pytest.fixture
def db(tmp_path: Path) -> StateStore:
    store = StateStore(tmp_path / "state.sqlite3")
    yield store
    store.close()


def slice_of(db: StateStore) -> StoreSlice:
    return StoreSlice(db, "uucall:acme:")


async def test_the_first_poll(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, db: StateStore
) -> None:
    """The balance and both months' bills as they are; recharges, log entries and notices of
    the last ``history_s`` (7 days); nothing older."""
    watched = Watched(uusim, http_session, slice_of(db))
    events = await watched.poll_all()
    assert kinds(events) == {
        "account.balance_changed": 1,
        "account.recharged": 2,  # 5 and 2 days ago; 12 days ago and older are history
        "account.bill:created": 10,  # 6 sub-accounts last month, 4 this month
        "account.audit": 5,
        "account.notice:created": 1,  # the 30-day-old notice is the baseline
    }
    assert sorted(e.data["entry_id"] for e in events if e.type == "account.recharged") == ["6", "7"]
    for event in events:
        EVENT_TYPES[event.type].model_validate(event.data)
    assert watched.state.state == "connected"
    assert db.get("uucall:acme:cursor:account:10001") is not None
    assert {n for n in POLLERS if db.get(f"uucall:acme:cursor:{n}:10001")} == set(POLLERS)
    assert await watched.poll_all() == [], "nothing changed"


async def test_each_change_once_also_across_a_restart(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, db: StateStore
) -> None:
    first = Watched(uusim, http_session, slice_of(db))
    await first.poll_all()

    uusim.recharge(30000)
    uusim.add_oplog("agent03", "导出通话记录")
    uusim.edit_notice(1, "维护改到周六。")
    uusim.add_notice("新公告", "内容", "101")
    del uusim.notices[2]
    uusim.bill_usage("agent05", 700, 20)  # agent05's first bill this month
    changes = await first.poll_all()
    assert kinds(changes) == {
        "account.balance_changed": 1,
        "account.recharged": 1,
        "account.audit": 1,
        "account.notice:changed": 1,
        "account.notice:created": 1,
        "account.notice:removed": 1,
        "account.bill:created": 1,
    }
    (recharge,) = [e for e in changes if e.type == "account.recharged"]
    assert recharge.data["money"] == {"value": 30000, "amount": "300.00"}
    (changed,) = [e for e in changes if e.type == "account.balance_changed"]
    assert changed.data["change"] == {"value": 30000 - 720, "amount": "292.80"}
    assert await first.poll_all() == []

    # a restart: the same store, new pollers; what changed meanwhile is found, once
    uusim.add_oplog("agent04", "下载录音")
    uusim.bill_usage("agent01", 100)
    again = Watched(uusim, http_session, slice_of(db))
    after = await again.poll_all()
    assert kinds(after) == {
        "account.audit": 1,
        "account.bill:changed": 1,
        "account.balance_changed": 1,
    }
    assert await again.poll_all() == []
    everything = [*first.sent, *again.sent]
    ids = [e.id for e in everything if not e.type.startswith("gateway.")]
    assert len(ids) == len(set(ids))


async def test_another_instance_names_the_same_facts_alike(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Two instances that share nothing (a lost cursor, say) publish the same ids for the same
    facts: consumers de-duplicate them."""
    one_db, two_db = StateStore(tmp_path / "one.sqlite3"), StateStore(tmp_path / "two.sqlite3")
    try:
        one = Watched(uusim, http_session, slice_of(one_db))
        await one.poll_all()
        uusim.recharge(10000)
        uusim.add_oplog("agent02", "登录系统")
        ones = await one.poll_all()
        two = Watched(uusim, http_session, slice_of(two_db))
        twos = await two.poll_all()
        assert kinds(ones) == {
            "account.balance_changed": 1,
            "account.recharged": 1,
            "account.audit": 1,
        }
        assert {e.id for e in ones} <= {e.id for e in twos}, "the same facts, the same ids"
        one_ids = {e.id for e in one.sent if not e.type.startswith("gateway.")}
        assert {e.id for e in twos} <= one_ids, "and nothing the first did not publish"
    finally:
        one_db.close()
        two_db.close()


async def test_a_late_recharge_is_found(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, db: StateStore
) -> None:
    """An entry booked in the past (within ``cashlog_window_s``) that appears only now."""
    watched = Watched(uusim, http_session, slice_of(db))
    await watched.poll_all()
    entry = uusim.recharge(5000, note="对公转账补录")
    entry["account_time"] -= 3 * 86_400_000
    (late,) = [e for e in await watched.poll_all() if e.type == "account.recharged"]
    assert late.data["entry_id"] == str(entry["id"]) and late.data["note"] == "对公转账补录"


async def test_low_balance_over_real_polls(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, db: StateStore
) -> None:
    """Down through the threshold, further down, up, down again: two account.low_balance."""
    watched = Watched(uusim, http_session, slice_of(db))
    steps = [0, 7000, 2000, -30000, 5000, 25000]  # 26000 19000 17000 47000 42000 17000
    lows = []
    for spent in steps:
        if spent > 0:
            uusim.consume(spent)
        elif spent < 0:
            uusim.recharge(-spent)
        await watched.pollers.poll_once("account")
        lows.append(watched.count()["account.low_balance"])
    assert lows == [0, 1, 1, 1, 1, 2]
    low = [e for e in watched.sent if e.type == "account.low_balance"]
    assert [e.data["balance"]["value"] for e in low] == [19000, 17000]
    assert [e.data["previous_balance"]["value"] for e in low] == [26000, 42000]
    assert watched.count()["account.balance_changed"] == 6


async def test_refused_credentials_stop_polling(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, db: StateStore
) -> None:
    watched = Watched(
        uusim, http_session, slice_of(db), secret="wrong-token", max_auth_rejections=2
    )
    with pytest.raises(AuthRefused):
        await watched.pollers.poll_once("account")
    with pytest.raises(PollStopped) as stopped:
        await watched.pollers.poll_once("notice")
    assert stopped.value.state == "auth_failed" and "401" in stopped.value.reason
    assert "wrong-token" not in stopped.value.reason

    poller = watched.pollers.pollers["oplog"]
    task = asyncio.create_task(poller.run())
    try:
        await wait_for(lambda: watched.state.state == "auth_failed", timeout=5)
        (event,) = [e for e in watched.sent if e.data.get("state") == "auth_failed"]
        assert event.type == "gateway.connection" and "401" in event.data["reason"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_forbidden_blocks_the_poller(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, db: StateStore
) -> None:
    uusim.forbidden.add("/power/oplog")
    watched = Watched(uusim, http_session, slice_of(db), max_auth_rejections=1)
    with pytest.raises(PollStopped) as stopped:
        await watched.pollers.poll_once("oplog")
    assert stopped.value.state == "blocked" and "403" in stopped.value.reason


async def test_a_rate_limit_the_client_cannot_wait_out_pauses_the_poller(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, db: StateStore
) -> None:
    watched = Watched(uusim, http_session, slice_of(db), rate_limit_retries=0)
    uusim.storm(1, retry_after="2")
    with pytest.raises(PollDeferred) as deferred:
        await watched.pollers.poll_once("cashlog")
    assert deferred.value.retry_after_s == 2.0
    assert watched.pollers.pollers["cashlog"].cursor is None, "the cursor did not move"


async def test_a_record_without_an_id_is_rejected_once(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, db: StateStore
) -> None:
    watched = Watched(uusim, http_session, slice_of(db))
    await watched.poll_all()
    uusim.oplog[99] = {"uid": 10001, "time": uusim.now_ms(), "opdescribe": "无编号"}
    uusim.notices[99] = {"uid": 10001, "createtime": uusim.now_ms(), "title": "无编号"}
    for _ in range(3):
        await watched.pollers.poll_once("oplog")
        await watched.pollers.poll_once("notice")
    rejected = [e for e in watched.sent if e.type == "gateway.rejected"]
    assert sorted(e.data["error"] for e in rejected) == [
        "the notice has no id",
        "the operation log entry has no id",
    ]


async def test_cursors_of_another_enterprise_are_not_used(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, db: StateStore
) -> None:
    """The same tenant configured for another ``uid``: its old cursors say nothing about the
    new enterprise, whose first poll is a first poll."""
    before = Watched(uusim, http_session, slice_of(db))
    await before.poll_all()
    other = make_sim(uid="20002")
    await other.start()
    try:
        after = Watched(other, http_session, slice_of(db))
        first = await after.poll_all()
        assert kinds(first)["account.recharged"] == 2 and kinds(first)["account.audit"] == 5
        assert {e.data["enterprise"] for e in first} == {"20002"}
    finally:
        await other.stop()
