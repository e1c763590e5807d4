"""The ledger follower: a record that could not be merged is never passed over."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import orjson

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
