"""CDRs already published on a Yeastar link, so a back-fill publishes only news."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime

import orjson

from gateway.connectors.watermark import parse_iso
from gateway.schema.events import CloudEvent


class SeenCdrs:
    """CDRs already published on this link, by id and by fact, so a back-fill publishes only
    news. A record without a call id gets an id of its own (its ``uid``), so it is recognised
    by its facts instead: start, parties, disposition and durations, which a live 30012 and the
    record of the same call share and two different calls practically never do. The fact keys
    are persisted with the watermark, so this holds across a restart or a takeover too."""

    def __init__(self, limit: int = 20000) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._facts: dict[str, datetime] = {}  # fact key -> when the call started
        self._limit = limit

    @staticmethod
    def _fact(event: CloudEvent) -> str | None:
        data = event.data
        if not data.get("started_at"):
            return None
        # cdr/list omits empty fields where the 30012 says 0: a missing duration is 0.
        return orjson.dumps(
            [
                data.get("started_at"),
                data.get("caller"),
                data.get("callee"),
                data.get("disposition"),
                data.get("duration_s") or 0,
                data.get("talk_duration_s") or 0,
            ]
        ).decode()

    def _remember(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._limit:
            old, _ = self._keys.popitem(last=False)
            self._facts.pop(old, None)

    def add(self, event: CloudEvent) -> bool:
        """Remember the CDR; True when its facts were noted (they need persisting)."""
        self._remember(event.id)
        if event.data.get("recording"):
            return False  # its record names the call (file name): it is matched by id
        fact = self._fact(event)
        started = parse_iso(event.data.get("started_at"))  # data is JSON: an ISO string
        if fact is None or started is None:
            return False
        self._facts[fact] = started
        self._remember(fact)
        return True

    def knows(self, event: CloudEvent, *, by_fact: bool) -> bool:
        """Published before: same id, or (``by_fact``, for records without a call id) same facts."""
        return event.id in self._keys or (by_fact and self._fact(event) in self._keys)

    def facts_since(self, since: datetime) -> list[str]:
        """Fact keys of CDRs that started at or after ``since``: what a back-fill might repeat."""
        return [fact for fact, started in self._facts.items() if started >= since]

    def restore(self, facts: Iterable[str]) -> None:
        for fact in facts:
            try:
                started = parse_iso(orjson.loads(fact)[0])
            except (orjson.JSONDecodeError, IndexError, TypeError, KeyError):
                continue
            if started is not None:
                self._facts[fact] = started
                self._remember(fact)
