"""The shared push link: state events, reconnect with backoff, one gap per interruption even when
the vendor's recovery fails, and the watermark a restart resumes from."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.bus.outbox import Outbox
from gateway.bus.publisher import EventPublisher
from gateway.connectors.link import BaseConnector, LinkState, Part, PushLink
from gateway.connectors.plugin import LinkResources
from gateway.connectors.watermark import Gap, Watermark
from gateway.runtime.backoff import Backoff
from gateway.runtime.resources import SharedResources
from gateway.runtime.statestore import StateStore, StoreSlice
from gateway.schema.commands import CommandModel
from gateway.schema.events import CloudEvent
from gateway.settings import BackoffSettings
from gateway.settings_models import RecoverySettings
from tests.conftest import wait_for
from tests.fakepbx.settings import FakePbxSettings


class Vendor:
    """Connects after ``refusals`` failures; each session lives until ``end`` is set."""

    def __init__(self, refusals: int = 0, recover_fails: bool = False) -> None:
        self.refusals = refusals
        self.recover_fails = recover_fails
        self.sessions = 0
        self.end = asyncio.Event()
        self.recovered: list[Gap] = []

    async def connect(self) -> int:
        if self.refusals:
            self.refusals -= 1
            raise ConnectionRefusedError("refused")
        self.sessions += 1
        return self.sessions

    async def serve(self, session: int) -> str:
        await self.end.wait()
        self.end.clear()
        return f"session {session} closed by the PBX"

    async def recover(self, gap: Gap, end: datetime) -> int:
        self.recovered.append(gap)
        if self.recover_fails:
            raise RuntimeError("the PBX's API is down too")
        return 7


def link(vendor: Vendor, store: StoreSlice, sent: list[CloudEvent]) -> PushLink[int]:
    state = LinkState("t", "fakepush", ZoneInfo("UTC"), include_raw=False)

    async def emit(event: CloudEvent) -> None:
        sent.append(event)

    state.attach(emit)
    return PushLink(
        state,
        Watermark(store, interval_s=0),
        Backoff(BackoffSettings(initial_s=0.01, max_s=0.02)),
        connect=vendor.connect,
        serve=vendor.serve,
        recover=vendor.recover,
    )


def of(sent: list[CloudEvent], type_: str) -> list[CloudEvent]:
    return [e for e in sent if e.type == type_]


async def test_refusals_then_drops_each_give_state_events_and_one_gap() -> None:
    store = StoreSlice(StateStore(":memory:"), "fakepush:t:")
    vendor, sent = Vendor(refusals=2, recover_fails=True), []
    push = link(vendor, store, sent)
    task = asyncio.create_task(push.run())
    try:
        await wait_for(lambda: len(of(sent, "gateway.gap")) == 1)  # the refused start
        vendor.end.set()  # the PBX closes the socket
        await wait_for(lambda: len(of(sent, "gateway.gap")) == 2 and vendor.sessions == 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    states = [(e.data["state"], e.data["reason"]) for e in of(sent, "gateway.connection")]
    assert states == [
        ("disconnected", "ConnectionRefusedError: refused"),
        ("connected", None),
        ("disconnected", "session 1 closed by the PBX"),
        ("connected", None),
    ]
    gaps = of(sent, "gateway.gap")
    assert [g.data["recovered"] for g in gaps] == [0, 0], "recovery failed; the gaps went out"
    assert len(vendor.recovered) == 2 and gaps[0].data["to"] <= gaps[1].data["from"]
    assert store.get("watermark") is not None


async def test_a_restart_recovers_from_where_the_last_run_stopped() -> None:
    store = StoreSlice(StateStore(":memory:"), "fakepush:t:")
    sent: list[CloudEvent] = []
    first = link(Vendor(), store, sent)
    task = asyncio.create_task(first.run())
    await wait_for(lambda: first.state.state == "connected")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    stopped_at = store.get("watermark")

    vendor = Vendor()
    again = link(vendor, store, sent)
    task = asyncio.create_task(again.run())
    try:
        await wait_for(lambda: len(of(sent, "gateway.gap")) == 1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [gap] = of(sent, "gateway.gap")
    assert stopped_at is not None
    assert gap.data["recovered"] == 7
    assert datetime.fromisoformat(gap.data["from"]) == datetime.fromisoformat(stopped_at)
    assert [g.start.isoformat() for g in vendor.recovered] == [stopped_at]


async def test_shared_resources_open_once_and_close_newest_first() -> None:
    resources, opened, closed = SharedResources(), [], []

    async def open_(name: str) -> str:
        opened.append(name)
        return name

    async def close(name: str) -> None:
        closed.append(name)

    got = await asyncio.gather(
        *(resources.get("nats:a", lambda: open_("a"), close) for _ in range(3)),
        resources.get("nats:b", lambda: open_("b"), close),
    )
    assert got == ["a", "a", "a", "b"] and opened == ["a", "b"]
    await resources.close()
    assert closed == ["b", "a"]


def test_a_store_slice_keeps_vendors_and_tenants_apart() -> None:
    store = StateStore(":memory:")
    a, b = StoreSlice(store, "yeastar:t:"), StoreSlice(store, "fakepush:t:")
    a.set("watermark", "1")
    assert b.get("watermark") is None and store.get("yeastar:t:watermark") == "1"


# --- the connector base ----------------------------------------------------------------------


class Skeleton(BaseConnector):
    """A connector on the base: two parts, something to release, its own health field."""

    vendor = "fakepbx"

    def __init__(self, pbx: FakePbxSettings, resources: LinkResources) -> None:
        super().__init__(pbx, resources)
        self.started: list[str] = []
        self.order: list[str] = []
        self.fail = asyncio.Event()

    def tasks(self) -> dict[str, Part]:
        return {"push": self._push, "poll": self._poll}

    async def _push(self) -> None:
        self.started.append(asyncio.current_task().get_name())  # type: ignore[union-attr]
        await self.link_state.set("connected", None)
        await self.fail.wait()
        raise ConnectionResetError("the push session died")

    async def _poll(self) -> None:
        self.started.append(asyncio.current_task().get_name())  # type: ignore[union-attr]
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.order.append(f"close (running={self.running}, link={self.link.value})")

    async def execute(self, command: CommandModel) -> dict[str, Any]:
        raise NotImplementedError

    def health_details(self) -> dict[str, Any]:
        return {"cursor": 7}


def skeleton(spool: Any = None) -> Skeleton:
    pbx = FakePbxSettings(tenant="t", vendor="fakepbx", base_url="http://127.0.0.1:9", token="x")
    store = StoreSlice(StateStore(":memory:"), "fakepbx:t:")
    resources = LinkResources(
        http=None,  # type: ignore[arg-type]  # the base reads none of it
        store=store,
        recovery=RecoverySettings(),
        shared=SharedResources(),
        spool=spool,
    )
    return Skeleton(pbx, resources)


async def test_the_connector_base_runs_the_parts_and_reports_the_link() -> None:
    connector, sent = skeleton(spool="the spool"), []

    async def emit(event: CloudEvent) -> None:
        sent.append(event)
        if event.type == "gateway.connection" and event.data["state"] == "disconnected":
            connector.order.append("stopped reported")

    assert connector.link_state.spool == "the spool" and connector.link.value == "starting"
    assert not connector.running
    task = asyncio.create_task(connector.run(emit))
    await wait_for(lambda: connector.health()["state"] == "connected")
    assert connector.running and sorted(connector.started) == ["t-poll", "t-push"]
    health = connector.health()
    assert (health["tenant"], health["vendor"], health["reason"], health["cursor"]) == (
        "t",
        "fakepbx",
        None,
        7,
    )
    assert set(health) == {"tenant", "vendor", "state", "reason", "since", "frames", "cursor"}

    connector.fail.set()  # one part fails: the group stops the other, the link is stopped
    try:
        await task
    except* ConnectionResetError:
        pass
    assert connector.order == ["close (running=False, link=connected)", "stopped reported"]
    assert not connector.running and connector.link.value == "stopped"
    assert connector.health()["state"] == "disconnected"
    assert [e.data["state"] for e in sent if e.type == "gateway.connection"] == [
        "connected",
        "disconnected",
    ]


async def test_the_connector_base_stops_when_cancelled_and_runs_again() -> None:
    connector = skeleton()

    async def emit(_event: CloudEvent) -> None:
        return None

    for _ in range(2):  # a new ownership runs the same object again
        task = asyncio.create_task(connector.run(emit))
        await wait_for(lambda: connector.running and connector.link.value == "connected")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert connector.link.value == "stopped" and not connector.running
    assert len(connector.order) == 2


async def test_one_healthy_source_never_hides_another_ones_outage() -> None:
    state = LinkState("t", "fakepush", ZoneInfo("UTC"), include_raw=False)
    sent: list[CloudEvent] = []

    async def emit(event: CloudEvent) -> None:
        sent.append(event)

    state.attach(emit)
    await state.set("connected", None)  # the push subscription
    await state.set("connected", None, source="poll:records")
    await state.set("disconnected", "socket closed")
    await state.set("connected", None, source="poll:records")  # the poller is fine
    assert state.state == "disconnected" and state.link.value == "disconnected"
    await state.set("auth_failed", "401", source="poll:records")
    await state.set("connected", None)
    assert state.state == "auth_failed", "the poller still cannot log in"
    published = [(e.data["state"], e.data["reason"]) for e in sent]
    assert published == [
        ("connected", None),
        ("disconnected", "socket closed"),
        ("auth_failed", "401"),
    ]


async def test_live_events_are_on_disk_before_the_watermark_moves(tmp_path: Path) -> None:
    """Group commit keeps the promise: a live event is spooled without waiting for the disk,
    written at the end of the coalescing window (``coalesce_s``), and in any case before the
    watermark (what a restart trusts) is persisted past it."""
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    no_broker: Any = None
    publisher = EventPublisher(no_broker, "events", outbox=outbox)  # spool and sync only
    state = LinkState("t", "fakepush", ZoneInfo("UTC"), include_raw=False)
    state.spool = publisher
    state.attach(publisher.submit)
    store = StoreSlice(StateStore(":memory:"), "fakepush:t:")
    watermark = Watermark(store, interval_s=3600, barrier=state.sync)

    def on_disk() -> int:
        reader = Outbox(path)
        try:
            return len(reader)
        finally:
            reader.close()

    first = state.ctx()
    event = CloudEvent(
        id="e1",
        source="pbx://t",
        type="call.ringing",
        time=first.received_at,
        tenant="t",
        vendor="fakepush",
        data={},
    )
    await state.send_live(event)
    assert outbox.staged == 1 and on_disk() == 0, "taken without waiting for the disk"
    watermark.seen(datetime.now(UTC), event)  # the first mark is persisted at once
    assert store.get(Watermark.KEY) is not None
    assert on_disk() == 1, "the watermark synced the spool before it moved"

    await state.send_live(event.model_copy(update={"id": "e2"}))
    watermark.seen(datetime.now(UTC), event)  # throttled: nothing persisted, nothing synced
    assert on_disk() == 1
    await wait_for(lambda: outbox.staged == 0, 5, 0.001)  # the window (2 ms by default) closes
    assert on_disk() == 2 and outbox.staged == 0
    outbox.close()


async def test_without_a_window_live_events_are_written_at_the_end_of_the_turn(
    tmp_path: Path,
) -> None:
    """``coalesce_s=0``: every event spooled in one turn of the event loop is written at its
    end, in one transaction."""
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    no_broker: Any = None
    publisher = EventPublisher(no_broker, "events", outbox=outbox, coalesce_s=0)
    event = CloudEvent(
        id="e1",
        source="pbx://t",
        type="call.ringing",
        time=datetime.now(UTC),
        tenant="t",
        vendor="fakepush",
        data={},
    )
    publisher.spool(event)
    publisher.spool(event.model_copy(update={"id": "e2"}))
    assert outbox.staged == 2
    await asyncio.sleep(0)
    assert outbox.staged == 0 and len(outbox) == 2
    outbox.close()


async def test_without_a_spool_live_events_are_awaited_through_emit() -> None:
    sent: list[CloudEvent] = []
    state = LinkState("t", "fakepush", ZoneInfo("UTC"), include_raw=False)

    async def emit(event: CloudEvent) -> None:
        sent.append(event)

    state.attach(emit)
    event = CloudEvent(
        id="e1",
        source="pbx://t",
        type="call.ringing",
        time=state.ctx().received_at,
        tenant="t",
        vendor="fakepush",
        data={},
    )
    await state.send_live(event)
    state.sync()  # nothing to sync: a no-op
    assert sent == [event]


async def test_live_events_share_a_commit_at_most_one_window_after_the_last(
    tmp_path: Path,
) -> None:
    """The first event after a quiet spell is written at the end of its turn; the next ones,
    within the window, wait for its end and are written together."""
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    no_broker: Any = None
    publisher = EventPublisher(no_broker, "events", outbox=outbox, coalesce_s=0.2)
    event = CloudEvent(
        id="e1",
        source="pbx://t",
        type="call.ringing",
        time=datetime.now(UTC),
        tenant="t",
        vendor="fakepush",
        data={},
    )
    publisher.spool(event)
    await asyncio.sleep(0)
    assert outbox.staged == 0, "alone: written at the end of the turn"
    publisher.spool(event.model_copy(update={"id": "e2"}))
    publisher.spool(event.model_copy(update={"id": "e3"}))
    await asyncio.sleep(0)
    assert outbox.staged == 2, "within the window of the last commit: they wait"
    await wait_for(lambda: outbox.staged == 0, 5, 0.01)
    assert outbox.staged == 0 and len(outbox) == 3
    outbox.close()


async def test_a_poller_never_announces_a_push_link_not_yet_subscribed() -> None:
    """What the PBX pushes before the subscription is in place is gone: ``connected`` waits for
    the push link even when the configuration poller is up first."""
    store = StoreSlice(StateStore(":memory:"), "fakepush:t:")
    vendor, sent = Vendor(), []
    push = link(vendor, store, sent)
    await push.state.set("connected", None, source="poll:config")
    assert not of(sent, "gateway.connection") and push.state.state is None
    task = asyncio.create_task(push.run())
    try:
        await wait_for(lambda: vendor.sessions == 1 and bool(of(sent, "gateway.connection")))
        assert [e.data["state"] for e in of(sent, "gateway.connection")] == ["connected"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Swallower(Vendor):
    """A vendor client that, like nats-py's waits on Python 3.11, swallows a cancellation
    arriving with a result: in ``connect`` (returns a session) or in ``serve`` (returns)."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.entered = asyncio.Event()
        self.closed = 0

    async def connect(self) -> int:
        if self.where == "connect":
            self.entered.set()
            await _swallow_one_cancel()
        return await super().connect()

    async def serve(self, session: int) -> str:
        try:
            if self.where == "serve":
                self.entered.set()
                await _swallow_one_cancel()
                return "the library returned as if nothing happened"
            return await super().serve(session)
        finally:
            self.closed += 1


async def _swallow_one_cancel() -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)


@pytest.mark.parametrize("where", ["connect", "serve"])
async def test_a_stop_a_library_swallows_still_ends_the_link(where: str) -> None:
    """A stop lost inside a vendor library never leaves the link running (the gateway would
    never stop, or keep a PBX it handed over): the link ends, its session closed."""
    store = StoreSlice(StateStore(":memory:"), "fakepush:t:")
    vendor, sent = Swallower(where), []
    task = asyncio.create_task(link(vendor, store, sent).run())
    await asyncio.wait_for(vendor.entered.wait(), 5)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done == {task} and task.cancelled()
    assert vendor.closed == vendor.sessions  # a session it opened was served and so closed
