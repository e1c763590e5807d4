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
class Sender:
    """Who published a command, as its AMQP properties say (None: not given)."""

    user_id: str | None = None
    app_id: str | None = None


#: A command whose properties name no sender.
NO_SENDER = Sender()


@dataclass(frozen=True, slots=True)
class JournalEntry:
    command_id: str
    command: str | None
    result: CommandResult | None  # None: started, outcome not known yet
    at: float
    sender: Sender = NO_SENDER
    fingerprint: str | None = None  # see gateway.bus.idempotency.fingerprint


class FollowingLedger(Protocol):
    """The ledger the journal's follower merges into."""

    def merge(self, tenant: str, entries: Iterable[JournalEntry]) -> int: ...

    def mark_followed(self, at: float) -> None: ...

    def followed(self) -> float | None: ...

    def expire(self) -> int: ...
