"""The Yeastar link's watermark: the shared one, plus the calls still open, their directions and
the facts of the CDRs published live, so a back-fill after a restart or a takeover repeats none
of them and a call in progress keeps the direction it was published with."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any, Final

import orjson

from gateway.connectors.watermark import Watermark, parse_iso
from gateway.connectors.yeastar.calls import CallTracker, parse_directions
from gateway.connectors.yeastar.cdrs import SeenCdrs
from gateway.runtime.statestore import KeyValue
from gateway.schema.events import CloudEvent

#: CDRs are filtered on their *start* time, on the PBX's clock: reach back a little for skew.
CDR_MARGIN_S: Final = 15.0


class YeastarWatermark(Watermark):
    """Open calls move the floor back; each CDR without a call id has its facts persisted at
    once (a restart must not back-fill it again under another id)."""

    FACTS_KEY = "cdr_facts"
    DIRECTIONS_KEY = "call_directions"

    def __init__(self, store: KeyValue, **options: Any) -> None:
        super().__init__(store, **options)
        self.calls = CallTracker()
        self.cdrs = SeenCdrs()

    def observe(self, event: CloudEvent, at: datetime) -> bool:
        self.calls.observe(event, at)
        return event.type == "cdr.created" and self.cdrs.add(event)

    def open_floor(self, now: datetime) -> datetime | None:
        return self.calls.floor(now)

    def save_extra(self, floor: datetime) -> None:
        # The next back-fill reaches back to the floor less a margin: CDRs published live since
        # then must be recognised, also those whose record will carry no call id.
        since = floor - timedelta(seconds=CDR_MARGIN_S)
        self._store.set(self.FACTS_KEY, orjson.dumps(self.cdrs.facts_since(since)).decode())
        # Calls open then, or ended since: their later events (and CDRs) keep their direction.
        directions = self.calls.directions.since(since)
        self._store.set(self.DIRECTIONS_KEY, orjson.dumps(directions).decode())

    def load_extra(self) -> None:
        with contextlib.suppress(orjson.JSONDecodeError, TypeError):
            self.cdrs.restore(orjson.loads(self._store.get(self.FACTS_KEY) or "[]"))
        saved_as_of = parse_iso(self._store.get(self.FLOOR_KEY))
        directions = parse_directions(self._store.get(self.DIRECTIONS_KEY))
        self.calls.directions.restore(directions, saved_as_of)
