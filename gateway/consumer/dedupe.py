"""De-duplication on the event ``id``: the gateway publishes at least once, and a copy (a
redelivery, a replay from its spool, a CDR back-filled after a gap) always carries the same id.

A store answers "was this id handled already?" and is told once an event has been handled. Any
object with these two coroutines will do (a Redis set, a database table: the PostgreSQL sink
uses its tables' primary keys); :class:`MemoryDedupe` is the default.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class DedupeStore(Protocol):
    async def seen(self, event_id: str) -> bool:
        """True when an event with this id was handled already."""
        ...

    async def remember(self, event_id: str) -> None:
        """The event with this id has been handled (called before its message is acked)."""
        ...


class MemoryDedupe:
    """Ids handled in the last ``ttl_s`` seconds (a day by default), at most ``limit`` of them
    (the oldest go first). Per process: a restarted consumer starts empty, so copies that arrive
    right after a restart are handled again; use a shared store where that matters."""

    def __init__(
        self,
        ttl_s: float = 86_400.0,
        limit: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or limit <= 0:
            raise ValueError("ttl_s and limit must be positive")
        self._ttl = ttl_s
        self._limit = limit
        self._clock = clock
        self._ids: OrderedDict[str, float] = OrderedDict()  # id -> when remembered

    async def seen(self, event_id: str) -> bool:
        self._expire()
        return event_id in self._ids

    async def remember(self, event_id: str) -> None:
        self._ids[event_id] = self._clock()
        self._ids.move_to_end(event_id)
        while len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ids)

    def _expire(self) -> None:
        oldest = self._clock() - self._ttl
        while self._ids:
            first_id, at = next(iter(self._ids.items()))
            if at > oldest:
                return
            del self._ids[first_id]
