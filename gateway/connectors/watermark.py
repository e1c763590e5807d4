"""Where a PBX link stopped hearing its PBX, persisted so any later run knows what to recover.

A vendor with no event history (a WebSocket or NATS subscription) cannot replay what it sent
while nobody listened; the gateway re-reads the PBX's own state for that window instead and
publishes one ``gateway.gap`` per interruption. The watermark says where such a window starts:
the time of the last message heard, and a *floor* reaching back to the oldest call still open
(its CDR may still be due). It is kept in the PBX's slice of the state store (keys
``<vendor>:<tenant>:watermark`` and ``...:cdr_floor``), so a restart, or the next owner after a
takeover, starts from it.

Vendors add what they must remember between interruptions by overriding the hooks
(:meth:`Watermark.observe`, :meth:`Watermark.open_floor`, :meth:`Watermark.save_extra`,
:meth:`Watermark.load_extra`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.runtime.statestore import KeyValue
from gateway.schema.events import CloudEvent


@dataclass(frozen=True, slots=True)
class Gap:
    """An interruption: events after ``start`` may be missing; CDRs of calls that started
    after ``floor`` (<= start, earlier when calls were in progress) may be missing."""

    start: datetime
    floor: datetime


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def parse_iso(value: str | None) -> datetime | None:
    """An ISO 8601 text as an aware datetime (naive: UTC); None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Watermark:
    """The last message heard, persisted (throttled to ``interval_s``) so a restart resumes.

    While a gap is not yet recovered the persisted value stays at the gap's start: a stop in
    the middle of a recovery must not move the next run's starting point past it.
    """

    KEY = "watermark"
    FLOOR_KEY = "cdr_floor"

    def __init__(
        self,
        store: KeyValue,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        barrier: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._barrier = barrier  # makes the events seen so far durable first
        self._interval = interval_s
        self._clock = clock
        self._written = -float("inf")
        self.last: datetime | None = None
        self._outstanding: list[Gap] = []

    # --- hooks for what a vendor remembers besides the time --------------------------------

    def observe(self, event: CloudEvent, at: datetime) -> bool:
        """Note a spooled event; True when the state must be persisted at once."""
        return False

    def open_floor(self, now: datetime) -> datetime | None:
        """Start of the oldest call still open (its CDR is still due), if any."""
        return None

    def save_extra(self, floor: datetime) -> None:
        """Persist what a back-fill from ``floor`` must know (e.g. CDRs already published)."""

    def load_extra(self) -> None:
        """Read back what :meth:`save_extra` wrote."""

    # --- the watermark itself --------------------------------------------------------------

    def load(self) -> Gap | None:
        """The previous run's stopping point, as a gap still to recover (None: first run)."""
        start = parse_iso(self._store.get(self.KEY))
        if start is None:
            return None
        floor = parse_iso(self._store.get(self.FLOOR_KEY)) or start
        self.load_extra()
        gap = Gap(start, min(floor, start))
        self._outstanding = [gap]  # the stored mark already folds in any earlier gap
        return gap

    def seen(self, at: datetime, event: CloudEvent | None = None) -> None:
        """A message arrived and its event is spooled; persist at most once per
        ``interval_s``, or at once when :meth:`observe` says so."""
        self.last = at
        urgent = event is not None and self.observe(event, at)
        if urgent or self._clock() - self._written >= self._interval:
            self.persist()

    def interrupted(self, now: datetime) -> Gap:
        """The link went away: the gap starts at the last message heard (or now)."""
        start = min(self.last or now, now)
        floor = min(self.open_floor(now) or start, start)
        gap = Gap(start, floor)
        self._outstanding.append(gap)
        self.persist()
        return gap

    def recovered(self, gap: Gap) -> None:
        with contextlib.suppress(ValueError):
            self._outstanding.remove(gap)
        self.persist()

    def persist(self) -> None:
        """Write where a next run must start: the oldest unrecovered gap, else the last message.
        The events seen so far are on disk first (``barrier``): the mark never runs ahead. A
        failed barrier raises, and the next try waits ``interval_s`` like any write."""
        self._written = self._clock()
        if self._barrier is not None:
            self._barrier()
        marks = [g.start for g in self._outstanding]
        if self.last is not None:
            marks.append(self.last)
        if not marks:
            return
        mark = min(marks)
        floors = [g.floor for g in self._outstanding]
        open_floor = self.open_floor(self.last or mark)
        if open_floor is not None:
            floors.append(open_floor)
        floor = min([mark, *floors])
        self._store.set(self.KEY, iso(mark))
        self._store.set(self.FLOOR_KEY, iso(floor))
        self.save_extra(floor)
        self._written = self._clock()
