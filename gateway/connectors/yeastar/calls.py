"""Calls seen starting but not ending on a Yeastar link: a back-fill must reach back to their
start (their CDR is still due), and a stale call/query snapshot must not override a live report."""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Final

from gateway.schema.events import CloudEvent

#: A call seen starting but never ending is forgotten after this long (its end was lost).
OPEN_CALL_MAX_S: Final = 6 * 3600

_OPEN_TYPES: Final = frozenset(
    {
        "call.ringing",
        "call.answered",
        "call.held",
        "call.incoming",
        "call.transferred",
        "call.forwarded",
    }
)
_CLOSED_TYPES: Final = frozenset({"call.ended", "call.failed", "cdr.created"})


def call_start(call_id: str, seen_at: datetime) -> datetime:
    """A Yeastar call id is ``<unix start>.<seq>``; trust it only when it is plausible."""
    try:
        start = datetime.fromtimestamp(int(call_id.split(".", 1)[0]), UTC)
    except (ValueError, OverflowError, OSError):
        return seen_at
    if seen_at - timedelta(seconds=OPEN_CALL_MAX_S) <= start <= seen_at + timedelta(seconds=60):
        return min(start, seen_at)
    return seen_at


class CallTracker:
    """Calls seen starting but not ending: their CDR may still be due, so a back-fill must reach
    back to their start. Also when each call last changed, so a stale snapshot never overrides
    a live report."""

    def __init__(self, limit: int = 5000) -> None:
        self._open: dict[str, datetime] = {}
        self._changed: OrderedDict[str, datetime] = OrderedDict()
        self._limit = limit

    def observe(self, event: CloudEvent, at: datetime) -> None:
        call_id = event.data.get("call_id") if event.type.startswith(("call.", "cdr.")) else None
        if not isinstance(call_id, str) or event.type == "call.uacsta":
            return
        self._changed[call_id] = at
        self._changed.move_to_end(call_id)
        while len(self._changed) > self._limit:
            self._changed.popitem(last=False)
        if event.type in _CLOSED_TYPES:
            self._open.pop(call_id, None)
        elif event.type in _OPEN_TYPES and call_id not in self._open:
            if len(self._open) < self._limit:
                self._open[call_id] = call_start(call_id, at)

    def changed_since(self, call_id: str, since: datetime) -> bool:
        changed = self._changed.get(call_id)
        return changed is not None and changed >= since

    def floor(self, now: datetime) -> datetime | None:
        """Start of the oldest open call (calls open for implausibly long are dropped)."""
        oldest = now - timedelta(seconds=OPEN_CALL_MAX_S)
        self._open = {k: v for k, v in self._open.items() if v >= oldest}
        return min(self._open.values(), default=None)

    def reset(self, open_calls: dict[str, datetime]) -> None:
        """After a call/query the PBX's list of calls in progress is the truth."""
        self._open = dict(open_calls)
