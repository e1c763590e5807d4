"""The ledger follower: a record that could not be merged is never passed over."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import aio_pika
import orjson
import pytest

from gateway.bus.journal import CommandJournal, JournalEntry


class FlakyLedger:
    """Refuses the first ``failures`` merges, like a locked or full disk would."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.merged: list[str] = []
        self.followed: list[float] = []

    def merge(self, tenant: str, entries: Iterable[JournalEntry]) -> int:
        if self.failures:
            self.failures -= 1
            raise OSError("database is locked")
        ids = [e.command_id for e in entries]
        self.merged.extend(ids)
        return len(ids)

    def mark_followed(self, at: float) -> None:
        self.followed.append(at)


def _journal(ledger: FlakyLedger) -> CommandJournal:
    journal = CommandJournal(None, None, retention_s=60)  # type: ignore[arg-type]
    journal._ledger = ledger  # type: ignore[assignment]
    journal._tenants = frozenset({"acme"})
    return journal


async def test_a_failed_merge_keeps_the_records_and_the_follow_point() -> None:
    ledger = FlakyLedger(failures=1)
    journal = _journal(ledger)
    seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    journal._markers["m1"] = (seen, 1000.0)
    record: dict[str, Any] = {
        "tenant": "acme",
        "command_id": "c-1",
        "command": "call.dial",
        "at": 1.0,
    }
    journal._take(orjson.dumps(record))
    journal._take(orjson.dumps({"marker": "m1"}))  # the merge fails here
    assert not seen.done() and ledger.followed == [] and ledger.merged == []
    journal._markers["m2"] = (seen, 2000.0)
    journal._take(orjson.dumps({"marker": "m2"}))  # merged now: the follow point moves
    assert seen.done() and ledger.merged == ["c-1"] and ledger.followed == [2000.0]


class StreamChannel:
    """A channel to a cluster whose stream is being created by another instance, or whose
    leader is moving: the first ``failures`` stream operations close the channel with the
    error RabbitMQ gives then."""

    def __init__(self, broker: FlakyBroker) -> None:
        self.broker = broker
        self.is_closed = False
        self.default_exchange = self
        self.cancels: set[Any] = set()
        self.on_consumer_cancel_callbacks = self.cancels

    def _maybe_fail(self) -> None:
        if self.broker.failures:
            self.broker.failures -= 1
            self.is_closed = True
            raise aio_pika.exceptions.ConnectionClosed(
                541, "INTERNAL_ERROR - stream_not_found"  # seen with two instances at once
            )

    async def declare_queue(self, name: str, **_: Any) -> StreamChannel:
        self._maybe_fail()
        self.broker.declared += 1
        return self

    async def publish(self, message: aio_pika.Message, routing_key: str) -> None:
        self._maybe_fail()
        self.broker.appended.append(orjson.loads(message.body))

    async def consume(self, callback: Any, **_: Any) -> str:
        self._maybe_fail()
        return "tag-1"

    async def set_qos(self, **_: Any) -> None: ...

    async def close(self) -> None:
        self.is_closed = True

    async def get_underlay_channel(self) -> StreamChannel:
        return self


class FlakyBroker:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.declared = 0
        self.appended: list[dict[str, Any]] = []
        self.connected = asyncio.Event()
        self.connected.set()
        self.reconnect_callbacks: set[Any] = set()

    async def channel(self, **_: Any) -> StreamChannel:
        return StreamChannel(self)


async def test_stream_operations_are_retried_through_a_declaration_race_and_a_leader_change(
    tmp_path,
) -> None:
    from gateway.bus.idempotency import CommandLedger
    from gateway.bus.topology import CommandNames

    broker = FlakyBroker(failures=3)
    journal = CommandJournal(broker, CommandNames(), retention_s=60)  # type: ignore[arg-type]
    ledger = CommandLedger(tmp_path / "ledger.sqlite3", 60)
    try:
        await journal.follow(ledger, ["acme"])  # declared and subscribed, after 3 refusals
        assert journal._follow_tag == "tag-1" and broker.failures == 0
        broker.failures = 2
        await journal.record("acme", "c-1", "call.dial", None)  # a leader change mid-write
        assert [r["command_id"] for r in broker.appended] == ["c-1"]
    finally:
        await journal.close()
        ledger.close()


async def test_a_stream_that_stays_away_is_a_journal_error_in_bounded_time() -> None:
    from gateway.bus.journal import JournalError
    from gateway.bus.topology import CommandNames

    broker = FlakyBroker(failures=1000)
    journal = CommandJournal(
        broker,  # type: ignore[arg-type]
        CommandNames(),
        retention_s=60,
        retry_s=0.5,
    )
    with pytest.raises(JournalError, match="stream_not_found"):
        await asyncio.wait_for(journal.record("acme", "c-1", "call.dial", None), 5)


async def test_callers_at_the_same_time_share_a_marker_written_after_each_of_them() -> None:
    """Thousands of PBXs starting at once do not each write a marker: the callers that come
    while one is written share the next one, and none is answered by a marker written before
    its call."""
    journal = _journal(FlakyLedger(failures=0))
    appended: list[str] = []
    calls: list[tuple[int, int]] = []  # (markers appended when the call came, when answered)

    async def append(body: dict[str, object]) -> None:
        marker = str(body["marker"])
        appended.append(marker)
        await asyncio.sleep(0.01)  # the broker's confirm
        asyncio.get_running_loop().call_later(0.01, journal._take, orjson.dumps({"marker": marker}))

    journal._append = append  # type: ignore[method-assign]

    async def caller(delay: float) -> None:
        await asyncio.sleep(delay)
        came = len(appended)
        await journal.caught_up()
        calls.append((came, len(appended)))

    await asyncio.gather(*(caller(n * 0.001) for n in range(200)))
    assert len(calls) == 200
    # callers come over 0.2 s and a marker takes 0.01 s to write: about one marker per write
    assert len(appended) <= 25, f"{len(appended)} markers for 200 callers"
    # each call answered by a marker appended after it came (one more than it saw, at least)
    assert all(answered > came for came, answered in calls)
    assert not journal._markers
