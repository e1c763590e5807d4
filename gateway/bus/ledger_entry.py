"""What the shared journal and the local command ledger exchange, apart from either of them.

The journal (:mod:`gateway.bus.journal`) reads records of every instance and merges them into
a ledger; the ledger (:mod:`gateway.bus.idempotency`) stores them. Both import this module and
neither imports the other: the journal knows a ledger only as :class:`FollowingLedger`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from gateway.schema.commands import CommandResult


@dataclass(frozen=True, slots=True)
class JournalEntry:
    command_id: str
    command: str | None
    result: CommandResult | None  # None: started, outcome not known yet
    at: float


class FollowingLedger(Protocol):
    """The ledger the journal's follower merges into."""

    def merge(self, tenant: str, entries: Iterable[JournalEntry]) -> int: ...

    def mark_followed(self, at: float) -> None: ...

    def followed(self) -> float | None: ...

    def expire(self) -> int: ...
