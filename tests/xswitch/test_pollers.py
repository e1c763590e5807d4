"""Configuration-change events: the first poll is the baseline, then extensions, queues, IVRs
and hotlines that were added, changed or removed are announced once, also across a restart
(the hashes live in the state store), and what changed while the gateway was down is not
lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from gateway.connectors.link import LinkState
from gateway.connectors.xswitch.client import XccClient
from gateway.connectors.xswitch.pollers import ConfigPoller, content_hash
from gateway.runtime.backoff import Backoff
from gateway.runtime.statestore import StateStore, StoreSlice
from gateway.schema.events import CloudEvent
from gateway.sim.xswitch.rest import API, XccRestSimulator
from tests.conftest import wait_for
from tests.xswitch.rest_helpers import FAST_BACKOFF, pbx_settings

KINDS = ("extension", "queue", "ivr", "hotline")


class Watched:
    """One watcher on a state store, and every event it published."""

    def __init__(self, client: XccClient, store: StoreSlice, **options: Any) -> None:
        self.sent: list[CloudEvent] = []
        self.state = LinkState("acme", "xswitch", ZoneInfo("Asia/Shanghai"), include_raw=False)

        async def emit(event: CloudEvent) -> None:
            self.sent.append(event)

        self.state.attach(emit)
        options.setdefault("interval_s", 60.0)
        self.watcher = ConfigPoller(
            client, store, self.state, backoff=Backoff(FAST_BACKOFF), **options
        )

    def changes(self) -> list[tuple[str, str, list[str]]]:
        return [
            (e.data["object"], e.data["action"], e.data["ids"])
            for e in self.sent
            if e.type == "config.changed"
        ]

    def of(self, type_: str) -> list[CloudEvent]:
        return [e for e in self.sent if e.type == type_]


@pytest.fixture
def state_db(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state.sqlite3")


def slice_of(db: StateStore) -> StoreSlice:
    return StoreSlice(db, "xswitch:acme:")


@contextlib.asynccontextmanager
async def running(watched: Watched) -> AsyncIterator[None]:
    task = asyncio.create_task(watched.watcher.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_first_poll_is_the_baseline(
    rest_sim: XccRestSimulator, xcc: XccClient, state_db: StateStore
) -> None:
    watched = Watched(xcc, slice_of(state_db))
    assert await watched.watcher.poll_once() == 0
    assert watched.changes() == [] and watched.state.state == "connected"
    assert state_db.get("xswitch:acme:cursor:config"), "the hashes are saved"
    assert await watched.watcher.poll_once() == 0, "nothing changed"
    top_ivrs = [i for i, r in rest_sim.ivrs.items() if r["level"] == "0"]
    assert rest_sim.requests[API + "ivrs/get"] == 2 * len(top_ivrs), "each IVR with its tree"


@pytest.mark.parametrize("action", ["added", "changed", "removed"])
@pytest.mark.parametrize("kind", KINDS)
async def test_each_change_is_announced_once(
    rest_sim: XccRestSimulator, xcc: XccClient, state_db: StateStore, kind: Any, action: Any
) -> None:
    watched = Watched(xcc, slice_of(state_db))
    await watched.watcher.poll_once()
    mutation = rest_sim.mutate(kind, action)
    assert (mutation.object, mutation.action) == (kind, action)
    assert await watched.watcher.poll_once() == 1
    assert watched.changes() == [(kind, action, [mutation.id])]
    event = watched.of("config.changed")[0]
    assert event.subject == kind and event.vendorevent == API + f"{kind}s/list"
    assert await watched.watcher.poll_once() == 0


async def test_changes_of_one_poll_are_grouped_by_kind_and_action(
    rest_sim: XccRestSimulator, xcc: XccClient, state_db: StateStore
) -> None:
    watched = Watched(xcc, slice_of(state_db))
    await watched.watcher.poll_once()
    added = sorted((rest_sim.mutate("extension", "added").id for _ in range(2)), key=int)
    removed = rest_sim.mutate("extension", "removed").id
    changed = rest_sim.mutate("hotline", "changed").id
    await watched.watcher.poll_once()
    assert watched.changes() == [
        ("extension", "added", added),
        ("extension", "removed", [removed]),
        ("hotline", "changed", [changed]),
    ]


async def test_a_save_that_changes_nothing_is_no_change(
    rest_sim: XccRestSimulator, xcc: XccClient, state_db: StateStore
) -> None:
    watched = Watched(xcc, slice_of(state_db))
    await watched.watcher.poll_once()
    before = dict(rest_sim.extensions["191"])
    rest_sim.touch("extension", "191")
    rest_sim.touch("queue", "17")
    await xcc.call(API + "hotlines/set", {"id": "1", "nbr": "12345"})  # the same number again
    assert rest_sim.extensions["191"]["updated_at"] != before["updated_at"]
    assert await watched.watcher.poll_once() == 0


async def test_a_sub_menu_change_is_a_change_of_its_top_level_ivr(
    rest_sim: XccRestSimulator, xcc: XccClient, state_db: StateStore
) -> None:
    watched = Watched(xcc, slice_of(state_db))
    await watched.watcher.poll_once()
    await xcc.call(API + "ivrs/set", {"id": "9", "name": "烟大2"})  # level 2, below 8, below 1
    await watched.watcher.poll_once()
    assert watched.changes() == [("ivr", "changed", ["1"])]


async def test_without_trees_only_top_level_ivrs_count(
    rest_sim: XccRestSimulator, xcc: XccClient, state_db: StateStore
) -> None:
    watched = Watched(xcc, slice_of(state_db), ivr_trees=False)
    await watched.watcher.poll_once()
    await xcc.call(API + "ivrs/set", {"id": "9", "name": "烟大2"})
    assert await watched.watcher.poll_once() == 0
    assert rest_sim.requests[API + "ivrs/get"] == 0


async def test_a_restart_does_not_announce_again_but_announces_what_it_missed(
    rest_sim: XccRestSimulator, xcc: XccClient, state_db: StateStore
) -> None:
    first = Watched(xcc, slice_of(state_db))
    await first.watcher.poll_once()
    queue = rest_sim.mutate("queue", "added").id
    await first.watcher.poll_once()
    assert first.changes() == [("queue", "added", [queue])]

    # the gateway is down: an extension goes, an IVR changes
    gone = rest_sim.mutate("extension", "removed").id
    ivr = rest_sim.mutate("ivr", "changed").id

    again = Watched(xcc, slice_of(state_db))  # the same store, as after a restart
    async with running(again):
        await wait_for(lambda: again.state.state == "connected")
    assert again.changes() == [("extension", "removed", [gone]), ("ivr", "changed", [ivr])]
    gap = again.of("gateway.gap")
    assert len(gap) == 1 and gap[0].data["recovered"] == 2, "the downtime is a gap"

    third = Watched(xcc, slice_of(state_db))
    assert await third.watcher.poll_once() == 0, "announced once, never again"


async def test_event_ids_are_deterministic_and_tell_repeated_changes_apart(
    rest_sim: XccRestSimulator, xcc: XccClient, tmp_path: Path
) -> None:
    one = Watched(xcc, slice_of(StateStore(tmp_path / "one.sqlite3")))
    two = Watched(xcc, slice_of(StateStore(tmp_path / "two.sqlite3")))
    for watched in (one, two):
        await watched.watcher.poll_once()
    assert rest_sim.extensions["192"]["cid_name"] == ""
    for cid_name in ("night", "", "night"):  # A -> B -> A -> B
        await xcc.call(API + "extensions/set", {"id": "192", "cid_name": cid_name})
        for watched in (one, two):
            assert await watched.watcher.poll_once() == 1
    ids_one = [e.id for e in one.of("config.changed")]
    assert ids_one == [e.id for e in two.of("config.changed")], "same facts, same ids"
    assert len(set(ids_one)) == 3, "a change made again is a new event"


async def test_a_failed_poll_changes_nothing_and_ends_with_a_gap(
    rest_sim: XccRestSimulator, xcc: XccClient, state_db: StateStore
) -> None:
    watched = Watched(xcc, slice_of(state_db), interval_s=0.05)
    await watched.watcher.poll_once()
    saved = state_db.get("xswitch:acme:cursor:config")
    rest_sim.script(API + "hotlines/list", status=503, times=3)
    extension = rest_sim.mutate("extension", "added").id
    async with running(watched):
        await wait_for(lambda: watched.state.state == "disconnected")
        assert state_db.get("xswitch:acme:cursor:config") == saved
        await wait_for(lambda: bool(watched.changes()) and watched.state.state == "connected")
    assert watched.changes() == [("extension", "added", [extension])]
    assert len(watched.of("gateway.gap")) == 1


async def test_the_watcher_follows_a_changing_simulator(
    rest_sim: XccRestSimulator, xcc: XccClient, state_db: StateStore
) -> None:
    watched = Watched(xcc, slice_of(state_db), interval_s=0.05)
    async with running(watched):
        await wait_for(lambda: watched.state.state == "connected")
        rest_sim.start_mutations(0.02)
        await wait_for(lambda: len(watched.changes()) >= 5)
        await rest_sim.stop_mutations()
    mutated = {(m.object, m.id) for m in rest_sim.mutations}
    for kind, _, ids in watched.changes():
        assert {(kind, i) for i in ids} <= mutated


async def test_a_refused_key_stops_polling_as_auth_failed(
    rest_sim: XccRestSimulator, http_session: aiohttp.ClientSession, state_db: StateStore
) -> None:
    client = XccClient(http_session, pbx_settings(rest_sim.base_url, dev_key="not-the-key"))
    watched = Watched(client, slice_of(state_db), interval_s=0.01, max_auth_rejections=2)
    async with running(watched):
        await wait_for(lambda: watched.state.state == "auth_failed")
        requests = rest_sim.auth_requests
    assert requests == 2 and "not-the-key" not in str(watched.state.reason)
    assert watched.changes() == []


def test_content_hash_ignores_updated_at_and_number_forms() -> None:
    record = {"id": "236", "disabled": "0", "updated_at": "2020-01-19 15:39:28"}
    assert content_hash(record) == content_hash({"id": 236, "disabled": 0, "updated_at": "x"})
    assert content_hash(record) != content_hash({**record, "disabled": "1"})
    nested = {"id": "1", "ivrs": [{"id": "2", "updated_at": "a"}]}
    assert content_hash(nested) == content_hash({"id": "1", "ivrs": [{"id": "2"}]})


def test_the_link_reads_other_controllers_subjects_once_each() -> None:
    """docs.xswitch.cn/xswitch-user/advanced/xcc: ``cdr-subject`` "如填写cn.xswitch.cdr";
    ``tboy/tboy_acd.go`` publishes to ``cn.xswitch.ctrl.app.acd`` and ``ctrl/bus/bus_test.go``
    names a controller ``app.dial.<uuid>``: controller ids contain dots. Own subject and
    wildcards never overlap (JetStream refuses overlapping subjects)."""
    from gateway.connectors.xswitch.link import covers, subjects
    from gateway.connectors.xswitch.settings import XSwitchPbxSettings

    pbx = XSwitchPbxSettings(
        tenant="acme",
        vendor="xswitch",
        base_url="http://127.0.0.1",
        dev_key="k",
        subject_prefix="from-acme.",
        ctrl_uuid="app.gateway",
    )
    assert subjects(pbx) == [
        "from-acme.cn.xswitch.ctrl",
        "from-acme.cn.xswitch.ctrl.*",
        "from-acme.cn.xswitch.ctrl.app.>",
        "from-acme.cn.xswitch.cdr",
        "from-acme.cn.xswitch.ctrl.event.cdr",
        "from-acme.cn.xswitch.event.cdr",
    ]
    assert covers("a.*", "a.b") and covers("a.>", "a.b.c") and not covers("a.*", "a.b.c")
    assert not covers("a.*", "a.>") and covers("a.>", "a.*")
