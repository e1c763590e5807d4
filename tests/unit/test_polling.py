"""The polling base: cursor, overlap de-duplication across restarts, one warning per outage,
gap on recovery, a stop on refused credentials, a pause on Retry-After."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from gateway.connectors import rest
from gateway.connectors.link import LinkState
from gateway.connectors.polling import PollDeferred, Poller, PollResult, PollStopped
from gateway.runtime.backoff import Backoff
from gateway.runtime.statestore import StateStore, StoreSlice
from gateway.schema.commands import CommandFailed, ErrorCode
from gateway.schema.events import CloudEvent, NormalizeContext, TrunkStatusData, make_event
from gateway.settings import BackoffSettings
from tests.conftest import wait_for

CTX = NormalizeContext("t", "fakepoll", ZoneInfo("UTC"), datetime(2026, 1, 1, tzinfo=UTC))


def record(n: int) -> CloudEvent:
    data = TrunkStatusData(trunk=f"t{n}", state="up")
    return make_event(CTX, "trunk.status", data, identity=(n,))


class Vendor:
    """Records 1..n; each poll returns every record after the cursor plus the one before it
    (an overlapping window), or raises what ``fail`` holds."""

    def __init__(self) -> None:
        self.records = 0
        self.fail: list[BaseException] = []
        self.cursors: list[Any] = []

    async def poll(self, cursor: Any) -> PollResult:
        self.cursors.append(cursor)
        if self.fail:
            raise self.fail.pop(0)
        start = max(0, (cursor or 0) - 1)
        events = [record(n) for n in range(start + 1, self.records + 1)]
        return PollResult(events, self.records, records=len(events))


def poller(vendor: Vendor, store: StoreSlice, sent: list[CloudEvent]) -> tuple[Poller, LinkState]:
    state = LinkState("t", "fakepoll", ZoneInfo("UTC"), include_raw=False)

    async def emit(event: CloudEvent) -> None:
        sent.append(event)

    state.attach(emit)
    backoff = Backoff(BackoffSettings(initial_s=0.01, max_s=0.02))
    return Poller("records", state, store, vendor.poll, interval_s=0.01, backoff=backoff), state


def of(sent: list[CloudEvent], type_: str) -> list[CloudEvent]:
    return [e for e in sent if e.type == type_]


async def test_overlapping_windows_pass_each_record_once_across_a_restart() -> None:
    store = StoreSlice(StateStore(":memory:"), "fakepoll:t:")
    vendor, sent = Vendor(), []
    vendor.records = 3
    first, state = poller(vendor, store, sent)
    assert await first.poll_once() == 3 and state.state == "connected"
    vendor.records = 5
    assert await first.poll_once() == 2, "record 3 came again in the overlap: passed once"
    assert [e.data["trunk"] for e in of(sent, "trunk.status")] == [f"t{n}" for n in range(1, 6)]

    again, _ = poller(vendor, store, sent)  # a restart, or the next owner: same store
    again.load()
    assert again.cursor == 5
    vendor.records = 6
    assert await again.poll_once() == 1 and vendor.cursors[-1] == 5
    assert len(of(sent, "trunk.status")) == 6


async def test_an_outage_warns_once_goes_disconnected_and_ends_with_one_gap() -> None:
    store = StoreSlice(StateStore(":memory:"), "fakepoll:t:")
    vendor, sent = Vendor(), []
    vendor.records = 1
    p, _ = poller(vendor, store, sent)
    await p.poll_once()
    vendor.fail = [OSError("connection refused") for _ in range(5)]
    vendor.records = 3
    with capture_logs() as logs:
        task = asyncio.create_task(p.run())
        try:
            await wait_for(lambda: len(of(sent, "gateway.gap")) == 1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    warnings = [entry for entry in logs if entry["event"] == "poll_failed"]
    assert len(warnings) == 1, "one warning per outage, not one per failed poll"
    states = [e.data["state"] for e in of(sent, "gateway.connection")]
    assert states == ["connected", "disconnected", "connected"]
    [gap] = of(sent, "gateway.gap")
    assert gap.data["recovered"] == 2, "the poll after the outage brought records 2 and 3"
    assert gap.data["from"] <= gap.data["to"]


async def test_refused_credentials_stop_polling_and_a_rate_limit_pauses() -> None:
    store = StoreSlice(StateStore(":memory:"), "fakepoll:t:")
    vendor, sent = Vendor(), []
    vendor.fail = [PollDeferred(0.05), PollStopped("auth_failed", "401: token revoked")]
    p, state = poller(vendor, store, sent)
    task = asyncio.create_task(p.run())
    try:
        await wait_for(lambda: state.state == "auth_failed")
        polls = len(vendor.cursors)
        assert polls == 2 and not of(sent, "gateway.gap")
        await asyncio.sleep(0.1)  # ten poll intervals: proving that nothing happens meanwhile
        assert len(vendor.cursors) == polls, "no poll after the vendor refused the credentials"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [event] = of(sent, "gateway.connection")
    assert event.data == {"state": "auth_failed", "reason": "401: token revoked"}


@pytest.mark.parametrize("saved", ["not json", '{"cursor": 1, "seen": 7}', "[]"])
async def test_an_unreadable_cursor_starts_afresh(saved: str) -> None:
    store = StoreSlice(StateStore(":memory:"), "fakepoll:t:")
    store.set("cursor:records", saved)
    p, _ = poller(Vendor(), store, [])
    p.load()
    assert p.cursor is None and p.seen.items() == []


def test_passed_ids_are_kept_only_as_long_as_an_overlap_can_last() -> None:
    from gateway.connectors.polling import SeenIds

    now = [1000.0]
    seen = SeenIds(ttl_s=60, limit=3, clock=lambda: now[0])
    for n in range(4):
        seen.add(f"e{n}")
    assert [i for i, _ in seen.items()] == ["e1", "e2", "e3"], "bounded by count"
    now[0] += 61
    seen.add("e4")
    assert [i for i, _ in seen.items()] == ["e4"], "older than the overlap: forgotten"
    again = SeenIds(seen.items(), ttl_s=60, clock=lambda: now[0])
    assert "e4" in again and "e1" not in again


# --- a source on the base: one overridable poll(cursor), the vendor's refusals read once -------


class Refused(Exception):
    """A vendor client's 'credentials refused'."""


class TooMany(Exception):
    """A vendor client's 429, with the server's ``Retry-After``."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"429, retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class CountingStore(StoreSlice):
    """A store slice that counts the reads of the cursor."""

    def __init__(self) -> None:
        super().__init__(StateStore(":memory:"), "fakepoll:t:")
        self.reads = 0

    def get(self, key: str) -> str | None:
        self.reads += 1
        return super().get(key)


class Source(Poller):
    """A source as a vendor writes it: ``poll`` raises its client's own exceptions, and
    ``refusal`` (once per vendor) says which of them stop or pause polling."""

    def __init__(self, store: StoreSlice, state: LinkState) -> None:
        backoff = Backoff(BackoffSettings(initial_s=0.01, max_s=0.02))
        super().__init__("records", state, store, interval_s=0.01, backoff=backoff)
        self.vendor = Vendor()
        self.refused_before: str | None = None
        self.polled_at: list[float] = []

    async def poll(self, cursor: Any) -> PollResult:
        self.polled_at.append(asyncio.get_running_loop().time())
        return await self.vendor.poll(cursor)

    def refusal(self, exc: Exception) -> PollStopped | PollDeferred | None:
        if isinstance(exc, Refused):
            return PollStopped("auth_failed", f"the vendor refused the token ({exc})")
        if isinstance(exc, TooMany):
            return PollDeferred(exc.retry_after_s, str(exc))
        return None

    def blocked(self) -> PollStopped | None:
        if self.refused_before is None:
            return None
        return PollStopped("auth_failed", self.refused_before)


def source(store: StoreSlice, sent: list[CloudEvent]) -> tuple[Source, LinkState]:
    state = LinkState("t", "fakepoll", ZoneInfo("UTC"), include_raw=False)

    async def emit(event: CloudEvent) -> None:
        sent.append(event)

    state.attach(emit)
    return Source(store, state), state


async def running(p: Poller) -> asyncio.Task[None]:
    return asyncio.create_task(p.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_saved_cursor_is_read_once_outside_run_and_again_by_each_run() -> None:
    store = CountingStore()
    vendor_first, sent = Vendor(), []
    vendor_first.records = 2
    first = Poller(
        "records",
        LinkState("t", "fakepoll", ZoneInfo("UTC"), include_raw=False),
        store,
        vendor_first.poll,
        interval_s=60,
        backoff=Backoff(BackoffSettings(initial_s=0.01, max_s=0.02)),
    )
    await first.poll_once()  # saves cursor 2
    store.reads = 0

    again, _ = source(store, sent)
    again.vendor.records = 3
    assert await again.poll_once() == 1, "records 1 and 2 were passed by the first one"
    assert again.vendor.cursors == [2], "it started from the saved cursor"
    await again.poll_once()
    assert await again.offer([record(9)]) == [record(9).id]
    assert store.reads == 1, "read once, by the first poll_once; not by the next, nor by offer"

    task = await running(again)
    try:
        await wait_for(lambda: len(again.vendor.cursors) >= 4)
    finally:
        await stop(task)
    assert store.reads == 2, "run() reads it again: the PBX may have had another owner"


async def test_a_refusal_the_vendor_names_stops_polling_with_its_state_logged_once() -> None:
    store, sent = CountingStore(), []
    p, state = source(store, sent)
    p.vendor.fail = [Refused("401 invalid token")]
    with capture_logs() as logs:
        task = await running(p)
        try:
            await wait_for(lambda: state.state == "auth_failed")
            await asyncio.sleep(0.1)  # ten poll intervals: proving that nothing happens meanwhile
        finally:
            await stop(task)
    assert len(p.vendor.cursors) == 1, "no poll after the vendor refused the credentials"
    [event] = of(sent, "gateway.connection")
    assert event.data == {
        "state": "auth_failed",
        "reason": "the vendor refused the token (401 invalid token)",
    }
    assert [e["event"] for e in logs if e["log_level"] in ("warning", "error")] == [
        "polling_stopped",
        "link_state",
    ]


async def test_a_stop_known_before_asking_makes_no_request() -> None:
    p, state = source(CountingStore(), [])
    p.refused_before = "a command saw the token refused"
    task = await running(p)
    try:
        await wait_for(lambda: state.state == "auth_failed")
    finally:
        await stop(task)
    assert p.vendor.cursors == [] and state.reason == "a command saw the token refused"


async def test_a_429_defers_the_next_poll_by_retry_after_and_is_no_outage() -> None:
    sent: list[CloudEvent] = []
    p, state = source(CountingStore(), sent)
    p.vendor.records = 1
    p.vendor.fail = [TooMany(0.3)]
    with capture_logs() as logs:
        task = await running(p)
        try:
            await wait_for(lambda: state.state == "connected")
        finally:
            await stop(task)
    first, second = p.polled_at[:2]
    assert second - first >= 0.3, "waited as long as the vendor asked, not one poll interval"
    assert [e.data["state"] for e in of(sent, "gateway.connection")] == ["connected"]
    assert not of(sent, "gateway.gap"), "a pause is not an outage"
    [deferred] = [e for e in logs if e["event"] == "poll_deferred"]
    assert deferred["retry_in_s"] == 0.3 and not [e for e in logs if e["event"] == "poll_failed"]


async def test_other_failures_are_one_outage_logged_once_whatever_the_exception() -> None:
    sent: list[CloudEvent] = []
    p, state = source(CountingStore(), sent)
    p.vendor.records = 1
    p.vendor.fail = [OSError("reset"), TimeoutError(), ValueError("not JSON"), OSError("reset")]
    with capture_logs() as logs:
        task = await running(p)
        try:
            await wait_for(lambda: len(of(sent, "gateway.gap")) == 1)
        finally:
            await stop(task)
    assert [e["event"] for e in logs if e["log_level"] == "warning"].count("poll_failed") == 1
    assert len([e for e in logs if e["event"] == "poll_failed_again"]) == 3
    assert [e.data["state"] for e in of(sent, "gateway.connection")] == [
        "disconnected",
        "connected",
    ]
    assert state.state == "connected"


async def test_a_poller_without_a_poll_says_so() -> None:
    state = LinkState("t", "fakepoll", ZoneInfo("UTC"), include_raw=False)
    backoff = Backoff(BackoffSettings(initial_s=0.01, max_s=0.02))
    bare = Poller(
        "records", state, StoreSlice(StateStore(":memory:"), "x:"), interval_s=1, backoff=backoff
    )
    with pytest.raises(NotImplementedError, match="must override poll"):
        await bare.poll_once()


# --- the default: the shared REST refusals, read by the base --------------------------------


class RestSource(Poller):
    """A source on a client of the shared REST layer: it overrides ``poll`` only."""

    def __init__(self, store: StoreSlice, state: LinkState) -> None:
        backoff = Backoff(BackoffSettings(initial_s=0.01, max_s=0.02))
        super().__init__("records", state, store, interval_s=0.01, backoff=backoff)
        self.vendor = Vendor()
        self.polled_at: list[float] = []

    async def poll(self, cursor: Any) -> PollResult:
        self.polled_at.append(asyncio.get_running_loop().time())
        return await self.vendor.poll(cursor)


def rest_source(sent: list[CloudEvent]) -> tuple[RestSource, LinkState]:
    state = LinkState("t", "fakepoll", ZoneInfo("UTC"), include_raw=False)

    async def emit(event: CloudEvent) -> None:
        sent.append(event)

    state.attach(emit)
    return RestSource(CountingStore(), state), state


async def test_by_default_a_rest_rate_limit_defers_by_its_retry_after() -> None:
    sent: list[CloudEvent] = []
    p, state = rest_source(sent)
    p.vendor.records = 1
    p.vendor.fail = [rest.RateLimited("records: 429 slow down", 0.3)]
    with capture_logs() as logs:
        task = await running(p)
        try:
            await wait_for(lambda: state.state == "connected")
        finally:
            await stop(task)
    first, second = p.polled_at[:2]
    assert second - first >= 0.3, "waited as long as the server asked, not one poll interval"
    assert [e.data["state"] for e in of(sent, "gateway.connection")] == ["connected"]
    assert not of(sent, "gateway.gap"), "a pause is not an outage"
    [deferred] = [e for e in logs if e["event"] == "poll_deferred"]
    assert deferred["retry_in_s"] == 0.3 and deferred["reason"] == "records: 429 slow down"
    assert not [e for e in logs if e["event"] == "poll_failed"]


def test_by_default_a_rate_limit_without_retry_after_waits_the_next_backoff_delay() -> None:
    p, _ = rest_source([])
    verdict = p.refusal(rest.RateLimited("429", None))
    assert isinstance(verdict, PollDeferred) and 0 < verdict.retry_after_s <= 0.02


async def test_by_default_a_rest_auth_refusal_stops_with_auth_failed_logged_once() -> None:
    sent: list[CloudEvent] = []
    p, state = rest_source(sent)
    p.vendor.fail = [rest.AuthRefused(401, "records: 401 token revoked")]
    with capture_logs() as logs:
        task = await running(p)
        try:
            await wait_for(lambda: state.state == "auth_failed")
            await asyncio.sleep(0.1)  # ten poll intervals: proving that nothing happens meanwhile
        finally:
            await stop(task)
    assert len(p.vendor.cursors) == 1, "no poll after the server refused the credentials"
    reason = "records: 401 token revoked; fix the credentials and restart"
    [event] = of(sent, "gateway.connection")
    assert event.data == {"state": "auth_failed", "reason": reason}
    [stopped] = [e for e in logs if e["event"] == "polling_stopped"]
    assert (stopped["state"], stopped["reason"]) == ("auth_failed", reason)
    assert [e["event"] for e in logs if e["log_level"] in ("warning", "error")] == [
        "polling_stopped",
        "link_state",
    ]


def test_by_default_refused_rights_stop_as_blocked_and_other_failures_are_outages() -> None:
    p, _ = rest_source([])
    verdict = p.refusal(rest.AuthRefused(403, "records: 403 forbidden"))
    assert isinstance(verdict, PollStopped) and verdict.state == "blocked"
    assert p.refusal(CommandFailed(ErrorCode.UNAVAILABLE, "no answer", retryable=True)) is None
    assert p.refusal(OSError("reset")) is None


def test_a_vendor_may_count_refusals_and_keep_its_rate_limits_outages() -> None:
    class Patient(RestSource):
        rate_limits_defer = False
        refusals = 0

        def stops(self, exc: rest.AuthRefused) -> bool:
            self.refusals += 1
            return self.refusals >= 2

    p = Patient(CountingStore(), LinkState("t", "fakepoll", ZoneInfo("UTC"), include_raw=False))
    refused = rest.AuthRefused(401, "401")
    assert p.refusal(refused) is None, "the first refusal in a row is an outage"
    assert isinstance(p.refusal(refused), PollStopped)
    assert p.refusal(rest.RateLimited("429", 5.0)) is None
