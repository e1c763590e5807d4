"""Calls seen on a Yeastar link: which are still open (a back-fill must reach back to their
start, and a stale call/query snapshot must not override a live report), and which direction
each call was shown to have, so every event of one call says the same."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from gateway.connectors.yeastar.normalize import DIRECTIONS, normalize_frame
from gateway.schema.events import CloudEvent, NormalizeContext

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
#: A CDR does not close its call: a forwarded or ring-group call sends one per leg, the first
#: while the call goes on (its later legs' CDRs are still due).
_CLOSED_TYPES: Final = frozenset({"call.ended", "call.failed"})
UNKNOWN: Final = "unknown"


def call_start(call_id: str, seen_at: datetime) -> datetime:
    """A Yeastar call id is ``<unix start>.<seq>``; trust it only when it is plausible."""
    try:
        start = datetime.fromtimestamp(int(call_id.split(".", 1)[0]), UTC)
    except (ValueError, OverflowError, OSError):
        return seen_at
    if seen_at - timedelta(seconds=OPEN_CALL_MAX_S) <= start <= seen_at + timedelta(seconds=60):
        return min(start, seen_at)
    return seen_at


def _directed(event: CloudEvent) -> str | None:
    """The call id of an event that belongs to one call's story (uaCSTA ids are not PBX
    call ids), or None."""
    if event.type == "call.uacsta" or not event.type.startswith(("call.", "cdr.")):
        return None
    call_id = event.data.get("call_id")
    return call_id if isinstance(call_id, str) else None


def _evidence(event: CloudEvent) -> str | None:
    """What the event itself shows: its ``direction`` (the normalizer's per-frame proof, or a
    CDR leg's type), else a trunk member (DTMF, prompt and survey reports have no direction)."""
    data = event.data
    if "direction" in data:
        value = data["direction"]
        return value if value in DIRECTIONS else None
    members = data.get("members")
    kinds = {m.get("kind") for m in members if isinstance(m, dict)} if members else set()
    return next((k for k in ("inbound", "outbound") if k in kinds), None)


class CallDirections:
    """The direction each call was first shown to have, per call id (bounded, newest kept).

    Why: a call's reports differ in what they show (an inbound call's last 30011 and its 30015
    often list only the extension leg), so each event alone would give a call several
    directions. The first evidence (a trunk member, an extension calling an extension, the
    type call/query listed it under, or its first CDR's type) is kept and every later event of
    the call says it; before any evidence the call is ``unknown``, never a guess.
    """

    def __init__(self, limit: int = 5000) -> None:
        self._known: OrderedDict[str, tuple[str, datetime | None]] = OrderedDict()
        self._limit = limit

    def get(self, call_id: str) -> str | None:
        found = self._known.get(call_id)
        return found[0] if found else None

    def learn(self, call_id: str, direction: str | None, at: datetime | None = None) -> str:
        """The call's direction: the known one, else ``direction`` (then kept), else unknown."""
        known = self._known.get(call_id)
        if known is not None:
            known_direction, last_seen = known
            if at is not None and (last_seen is None or at > last_seen):
                self._known[call_id] = (known_direction, at)
            self._known.move_to_end(call_id)
            return known_direction
        if direction not in DIRECTIONS:
            return UNKNOWN
        self._known[call_id] = (direction, at)
        while len(self._known) > self._limit:
            self._known.popitem(last=False)
        return direction

    def apply(self, event: CloudEvent) -> CloudEvent:
        """``event`` with its call's established direction (learning it from the event first)."""
        call_id = _directed(event)
        if call_id is None:
            return event
        direction = self.learn(call_id, _evidence(event), event.time)
        if "direction" not in event.data or event.data["direction"] == direction:
            return event
        return event.model_copy(update={"data": {**event.data, "direction": direction}})

    def since(self, since: datetime, limit: int = 2000) -> dict[str, str]:
        """Directions of calls seen at or after ``since`` (newest ``limit``), to persist."""
        recent = [
            (call_id, direction)
            for call_id, (direction, at) in self._known.items()
            if at is not None and at >= since
        ]
        return dict(recent[-limit:])

    def restore(self, saved: Mapping[str, Any], at: datetime | None) -> None:
        """Adopt persisted directions (saved as of ``at``); what this run established stays."""
        for call_id, direction in saved.items():
            if isinstance(call_id, str) and direction in DIRECTIONS and call_id not in self._known:
                self._known[call_id] = (direction, at)
                self._known.move_to_end(call_id, last=False)  # older than anything seen live


class CallTracker:
    """Calls seen starting but not ending: their CDR may still be due, so a back-fill must reach
    back to their start. Also when each call last changed, so a stale snapshot never overrides
    a live report, and each call's direction (:class:`CallDirections`)."""

    def __init__(self, limit: int = 5000) -> None:
        self._open: dict[str, datetime] = {}
        self._changed: OrderedDict[str, datetime] = OrderedDict()
        self._limit = limit
        self.directions = CallDirections(limit)

    def observe(self, event: CloudEvent, at: datetime) -> None:
        call_id = _directed(event)
        if call_id is None:
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

    def direct(self, event: CloudEvent) -> CloudEvent:
        """The event with its call's direction; call before it is spooled."""
        return self.directions.apply(event)

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


def normalize_stream(text: str, ctx: NormalizeContext) -> list[CloudEvent]:
    """``gateway normalize --vendor yeastar``: :func:`normalize_frame`, with a call's direction
    held across the stream's lines (in ``ctx.memory``) as the connector holds it."""
    directions = ctx.memory.get("yeastar:directions")
    if directions is None:
        directions = CallDirections()
        ctx.memory.set("yeastar:directions", directions)
    return [directions.apply(event) for event in normalize_frame(text, ctx)]


def parse_directions(text: str | None) -> dict[str, Any]:
    """Persisted directions (a JSON object) -> mapping; anything unreadable is nothing."""
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
