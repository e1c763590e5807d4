"""What the status page shows beyond the app's own status: rates over the last minute, read from
the gateway's Prometheus counters, and the last warnings and errors.

The app's ``status()`` says what is true now (links, broker, outbox); the board adds how things
have moved: events/s per PBX, the age of each PBX's last event, commands per minute and failures
by error code. It samples the counters whenever the page is read, every five seconds while
someone reads it (the last ten minutes), and once a window otherwise (enough for the rates of
the next reader, over one to two windows): each sample walks every PBX's counters, so with
thousands of PBXs a sample a second was most of an idle instance's CPU, and the minute of samples
kept for the rates a noticeable share of its memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from gateway.logging import RECENT_PROBLEMS
from gateway.runtime.metrics import COMMANDS, EVENTS_PUBLISHED

Status = Callable[[], dict[str, Any]]

#: The window rates are measured over.
WINDOW_S = 60.0
#: For this long after the page was read, the board samples every few seconds.
WATCHED_S = 600.0


def _totals(counter: Counter, key: str, sample: str) -> dict[str, float]:
    """A counter's values summed by one label (``key``).

    Read from the counter's children directly: its public ``collect()`` builds a sample, a
    labels dict and a ``_created`` sample for every series, which with thousands of PBXs was
    most of an idle instance's CPU. If the client library does not keep them as expected, from
    ``collect()`` (the same sums)."""
    children = getattr(counter, "_metrics", None)
    names = getattr(counter, "_labelnames", None)
    lock = getattr(counter, "_lock", None)
    if isinstance(children, dict) and isinstance(names, tuple) and key in names and lock:
        try:
            return _children_totals(children, names.index(key), lock)
        except AttributeError:
            pass
    return _collected_totals(counter, key, sample)


def _children_totals(children: dict[Any, Any], index: int, lock: Any) -> dict[str, float]:
    with lock:
        items = list(children.items())
    sums: dict[str, float] = {}
    for labels, child in items:
        label = labels[index]
        sums[label] = sums.get(label, 0.0) + child._value.get()
    return sums


def _collected_totals(counter: Counter, key: str, sample: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for family in counter.collect():
        for s in family.samples:
            if s.name == sample:
                label = s.labels.get(key, "")
                sums[label] = sums.get(label, 0.0) + s.value
    return sums


class StatusBoard:
    def __init__(
        self,
        status: Status,
        *,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._status = status
        self._window_s = window_s
        self._clock = clock
        #: (time, events published per tenant, commands answered per outcome)
        self._samples: deque[tuple[float, dict[str, float], dict[str, float]]] = deque()
        self._last_event: dict[str, float] = {}  # tenant -> when its count last grew
        self._task: asyncio.Task[None] | None = None
        self._read_at: float | None = None  # when the page was last read

    def sample(self) -> None:
        now = self._clock()
        events = _totals(EVENTS_PUBLISHED, "tenant", "gateway_events_published_total")
        commands = _totals(COMMANDS, "outcome", "gateway_commands_total")
        if self._samples:
            _, before, _ = self._samples[-1]
            for tenant, count in events.items():
                if count > before.get(tenant, 0.0):
                    self._last_event[tenant] = now
        self._samples.append((now, events, commands))
        # keep one sample at least a window old as the base of the rates
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window_s:
            self._samples.popleft()

    def snapshot(self) -> dict[str, Any]:
        """``/status.json``: the app's status plus rates, last event ages and recent problems."""
        self._read_at = self._clock()
        self.sample()
        body = self._status()
        now, events, commands = self._samples[-1]
        then, events_then, commands_then = self._samples[0]
        span = now - then
        for pbx in body.get("pbxs", []):
            tenant = pbx["tenant"]
            grown = events.get(tenant, 0.0) - events_then.get(tenant, 0.0)
            pbx["events_per_s"] = round(grown / span, 2) if span >= 1 else None
            pbx["events_total"] = int(events.get(tenant, 0.0))
            seen = self._last_event.get(tenant)
            pbx["last_event_age_s"] = round(now - seen, 1) if seen is not None else None
            link = next((x for x in body.get("links", []) if x.get("tenant") == tenant), None)
            if link is not None:
                pbx["link"] = link
        answered = sum(commands.values()) - sum(commands_then.values())
        body["commands"] = {
            "per_min": round(answered * 60 / span, 1) if span >= 1 else None,
            "total": int(sum(commands.values())),
            "failures_by_code": {
                code: int(n) for code, n in sorted(commands.items()) if code != "ok" and n
            },
        }
        body["window_s"] = round(span, 1)
        body["errors"] = list(reversed(RECENT_PROBLEMS))
        return body

    async def run(self, interval_s: float = 5.0) -> None:
        while True:
            self.sample()
            watched = self._read_at is not None and self._clock() - self._read_at < WATCHED_S
            await asyncio.sleep(interval_s if watched else self._window_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="status-board")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
