"""The records and seat pollers against the simulator (real sockets, a real state store; events
collected in memory): paging, windows and their overlap, webhook hand-over, catch-up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.connectors.link import LinkState
from gateway.connectors.meiqia.client import MeiqiaClient
from gateway.connectors.meiqia.normalize import record_event
from gateway.connectors.meiqia.pollers import RecordsPoller, SeatsPoller, read_records
from gateway.connectors.polling import SAVE_SOON_S
from gateway.runtime.backoff import Backoff
from gateway.runtime.statestore import StateStore, StoreSlice
from gateway.schema.events import CloudEvent
from gateway.sim.meiqia.server import MeiqiaSimulator
from tests.conftest import wait_for
from tests.meiqia.helpers import FAST, TZ, pbx_for


class Link:
    """A records watcher and a seat watcher of one tenant, their events in ``sent``."""

    def __init__(
        self,
        sim: MeiqiaSimulator,
        http: aiohttp.ClientSession,
        store: StoreSlice,
        max_window_s: float = 86400.0,
        **kw: Any,
    ) -> None:
        pbx = pbx_for(sim, "acme", **kw)
        self.sent: list[CloudEvent] = []
        self.state = LinkState("acme", "meiqia", TZ, include_raw=False)

        async def emit(event: CloudEvent) -> None:
            self.sent.append(event)

        self.state.attach(emit)
        self.client = MeiqiaClient(http, pbx)
        self.now = datetime.now(UTC)
        self.records = RecordsPoller(
            self.client,
            store,
            self.state,
            interval_s=pbx.records_poll_interval_s,
            overlap_s=pbx.records_overlap_s,
            page_size=pbx.records_page_size,
            max_window_s=max_window_s,
            backoff=Backoff(FAST),
            now=lambda: self.now,
        )
        self.seats = SeatsPoller(
            self.client, store, self.state, interval_s=1.0, backoff=Backoff(FAST)
        )

    def of(self, type_: str) -> list[CloudEvent]:
        return [e for e in self.sent if e.type == type_]


@pytest.fixture
def store(tmp_path: Path) -> StoreSlice:
    return StoreSlice(StateStore(tmp_path / "state.sqlite3"), "meiqia:acme:")


async def test_every_page_is_read_although_the_server_caps_page_size(
    msim: MeiqiaSimulator, client: MeiqiaClient
) -> None:
    msim.record_delay_s = 0.0
    for n in range(230):
        msim.place_call("来电" if n % 2 else "外呼", "接听")
    await wait_for(lambda: len(msim.records()) == 230, timeout=15)
    rows, total = await read_records(client, {}, page_size=500)  # the server caps it at 100
    assert total == 230 and len(rows) == 230
    assert len({r["call_uuid"] for r in rows}) == 230
    assert msim.requests["records"] == 3


async def test_a_late_record_is_found_by_the_overlap(
    msim: MeiqiaSimulator, http: aiohttp.ClientSession, store: StoreSlice
) -> None:
    """The call ends before the first poll's window ends, its record is listed only after that
    poll: the next window reaches back far enough to find it."""
    link = Link(msim, http, store, records_overlap_s=60.0)
    msim.record_delay_s = 1.0
    call = msim.place_call("外呼", "接听", agent_id=1)
    await wait_for(lambda: msim.calls[call].hung_up, timeout=10)
    link.now = datetime.now(UTC)
    assert await link.records.poll_once() == 0  # ended, not listed yet
    first_until = link.records.cursor["until"]
    await wait_for(lambda: bool(msim.records()), timeout=10)
    link.now = datetime.now(UTC)
    assert await link.records.poll_once() == 1
    [event] = link.of("cdr.created")
    assert event.id == record_event(msim.calls[call].record, link.state.ctx()).id
    assert datetime.fromisoformat(first_until) > datetime.fromisoformat(
        msim.calls[call].record["end_time"]
    )  # it ended inside the window already read
    assert await link.records.poll_once() == 0  # the next overlapping window: passed once


async def test_without_enough_overlap_a_late_record_is_missed(
    msim: MeiqiaSimulator, http: aiohttp.ClientSession, store: StoreSlice
) -> None:
    """Why ``records_overlap_s`` must exceed the longest call plus the listing delay."""
    link = Link(msim, http, store, records_overlap_s=0.01)
    msim.record_delay_s = 1.0
    msim.talk_s = (1.2, 1.3)  # the window starts a whole second after the call (times in s)
    call = msim.place_call("外呼", "接听", agent_id=1)
    await wait_for(lambda: msim.calls[call].hung_up, timeout=10)
    link.now = datetime.now(UTC)
    await link.records.poll_once()
    await wait_for(lambda: bool(msim.records()), timeout=10)
    link.now = datetime.now(UTC)
    assert await link.records.poll_once() == 0
    assert link.of("cdr.created") == []


async def test_a_webhook_and_a_poll_pass_one_call_once_either_way(
    msim: MeiqiaSimulator, http: aiohttp.ClientSession, store: StoreSlice
) -> None:
    link = Link(msim, http, store)
    msim.record_delay_s = 0.0
    first = msim.place_call("外呼", "接听", agent_id=1)
    second = msim.place_call("来电", "接听")
    await wait_for(lambda: len(msim.records()) == 2, timeout=10)
    ctx = link.state.ctx()
    hooked = record_event(msim.calls[first].record, ctx)
    assert await link.records.offer([hooked]) == [hooked.id]  # webhook first
    link.now = datetime.now(UTC)
    assert await link.records.poll_once() == 1  # the poll adds only the other call
    polled = record_event(msim.calls[second].record, ctx)
    assert await link.records.offer([polled, hooked]) == []  # webhooks after the poll
    assert sorted(e.data["call_id"] for e in link.of("cdr.created")) == sorted([first, second])
    # the passed ids are saved with the cursor: a new watcher (a restart) knows them
    again = Link(msim, http, store)
    assert await again.records.offer([polled]) == []


async def test_after_a_long_outage_the_window_is_read_in_steps(
    msim: MeiqiaSimulator, http: aiohttp.ClientSession, store: StoreSlice
) -> None:
    link = Link(msim, http, store, records_overlap_s=60.0, max_window_s=6 * 3600.0)
    now = link.now
    start, end = link.records.window({"until": (now - timedelta(days=3)).isoformat()})
    assert start == now - timedelta(hours=6)  # never further back than max_window_s
    assert end == start + timedelta(hours=1)  # one step (max(1 h, 4 x overlap))
    start, end = link.records.window(None)  # first poll ever
    assert (start, end) == (now - timedelta(seconds=60), now)
    assert link.records.window({"until": "garbage"}) == (start, end)


async def test_seats_baseline_then_changes(
    msim: MeiqiaSimulator, http: aiohttp.ClientSession, store: StoreSlice
) -> None:
    link = Link(msim, http, store)
    assert await link.seats.poll_once() == 0  # the baseline
    msim.seats["8002"].agent_id = None
    msim.seats["8006"].agent_id = 5
    assert await link.seats.poll_once() == 2
    changes = {e.subject: (e.data["changes"], e.data["agent_id"]) for e in link.of("agent.seat")}
    assert changes == {"8002": (["occupied", "agent"], None), "8006": (["occupied", "agent"], "5")}
    assert await link.seats.poll_once() == 0
    assert all(msim.seats["8001"].password not in e.to_json().decode() for e in link.sent)
    saved = store.get("cursor:sips") or ""
    assert "password" not in saved and msim.seats["8001"].password not in saved


async def test_a_burst_of_webhooks_saves_the_passed_ids_once(
    msim: MeiqiaSimulator, http: aiohttp.ClientSession, store: StoreSlice
) -> None:
    """The passed ids are one list rewritten whole on each save: a save per webhook grew with
    the list (quadratic in a burst). A burst is saved once, within ``SAVE_SOON_S``; a watcher
    started after that (a restart) knows every id."""
    link = Link(msim, http, store)
    writes: list[str] = []
    original = store.set

    def counting_set(key: str, value: str) -> None:
        writes.append(key)
        original(key, value)

    store.set = counting_set  # type: ignore[method-assign]
    ctx = link.state.ctx()
    calls = [msim.place_call("来电", "接听") for _ in range(20)]
    await wait_for(lambda: len(msim.records()) == 20, timeout=10)
    hooked = [record_event(msim.calls[call].record, ctx) for call in calls]
    for event in hooked:
        assert await link.records.offer([event]) == [event.id]
    assert writes == [], "nothing written per webhook"
    await wait_for(lambda: writes == ["cursor:records"], timeout=SAVE_SOON_S + 5)
    again = Link(msim, http, store)
    assert await again.records.offer(hooked) == []
