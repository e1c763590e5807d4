"""A call's CDR legs, grouped by ``call_id``.

A forwarded, transferred or ring-group call sends one ``cdr.created`` per leg, each with its own
``id`` but all with the call's ``call_id``; when the last leg comes is not said. :class:`CallLegs`
gathers them per (tenant, call_id), ignores copies of a leg (same ``id``), and hands a call out
as settled once no leg has come for ``settle_s`` seconds.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.consumer.events import Event
from gateway.schema.events import CdrData


@dataclass
class Call:
    """The legs of one call seen so far, in the order they started."""

    tenant: str
    call_id: str
    legs: list[Event[CdrData]] = field(default_factory=list)
    last_leg_at: float = 0.0  # monotonic clock

    @property
    def started_at(self) -> datetime | None:
        starts = [leg.data.started_at for leg in self.legs if leg.data.started_at is not None]
        return min(starts) if starts else None

    @property
    def answered(self) -> bool:
        return any(leg.data.disposition == "answered" for leg in self.legs)

    @property
    def talk_s(self) -> int:
        return sum(leg.data.talk_duration_s or 0 for leg in self.legs)

    @property
    def direction(self) -> str | None:
        """The whole call's direction (the same on every leg)."""
        return next((leg.data.direction for leg in self.legs if leg.data.direction), None)


class CallLegs:
    """CDR legs grouped by call; bounded to ``limit`` calls (the longest quiet go first)."""

    def __init__(
        self,
        settle_s: float = 10.0,
        limit: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settle = settle_s
        self._limit = limit
        self._clock = clock
        self._calls: OrderedDict[tuple[str, str], Call] = OrderedDict()

    def add(self, event: Event[Any]) -> Call:
        """Add a ``cdr.created`` event; returns its call with every leg so far."""
        if not isinstance(event.data, CdrData):
            raise TypeError(f"not a typed cdr.created event: {event.type} ({event.problem})")
        key = (event.tenant, event.data.call_id)
        call = self._calls.get(key) or Call(event.tenant, event.data.call_id)
        self._calls[key] = call
        self._calls.move_to_end(key)
        call.last_leg_at = self._clock()
        if all(leg.id != event.id for leg in call.legs):
            call.legs.append(event)
            call.legs.sort(key=_start)
        while len(self._calls) > self._limit:
            self._calls.popitem(last=False)
        return call

    def get(self, tenant: str, call_id: str) -> Call | None:
        return self._calls.get((tenant, call_id))

    def settled(self) -> list[Call]:
        """Take out the calls no leg has come for in ``settle_s`` seconds."""
        quiet_since = self._clock() - self._settle
        done: list[Call] = []
        while self._calls:
            call = next(iter(self._calls.values()))
            if call.last_leg_at > quiet_since:
                break
            self._calls.popitem(last=False)
            done.append(call)
        return done

    def __len__(self) -> int:
        return len(self._calls)


def _start(leg: Event[CdrData]) -> tuple[bool, float, str]:
    started = leg.data.started_at
    return (started is None, started.timestamp() if started else 0.0, leg.id)
