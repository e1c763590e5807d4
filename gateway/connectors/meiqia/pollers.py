"""Meiqia call records: ``POST records`` read in moving, overlapping windows, every page.

Meiqia pushes nothing over a socket: a call becomes a record in ``records`` once it has ended
(and, in practice, a little later). Every ``records_poll_interval_s`` the watcher reads the
window ``[until - records_overlap_s, now]`` (``start_time`` / ``end_time``, RFC 3339 with the
PBX's offset, the document's ``date-time``) page by page (``page_index`` from 1, ``page_size``,
until ``total`` records or an empty page), and moves ``until`` to ``now``. So every window
reaches back ``records_overlap_s`` before the previous one ended: a record that appeared late
is still found. The document's filters select calls that *started* after ``start_time`` and
*ended* before ``end_time``, so a call longer than the overlap (default 30 min) is found only by
its webhook or a ``cdr.search``: raise ``records_overlap_s`` above the longest call expected.

It runs on the shared :class:`~gateway.connectors.polling.Poller`: the cursor (``until``) and
the ids passed (one per ``call_uuid``, see :mod:`.normalize`) are persisted in the PBX's slice
of the state store and shared with the next owner, so what two windows (or a restart, or a
takeover) return twice is published once. A failed poll leaves ``until`` where it was: the
next good one reads the missed time. After a long outage the windows are read in steps of at
most ``max(1 h, 4 x overlap)``, back to ``recovery.max_window_s`` at most.

Webhooks (``cdr.hangup``) hand their events to :meth:`RecordsPoller.offer`: the same passed ids,
under the same lock as a poll, so a call delivered by a webhook and later polled (or the
other way round, or delivered twice) is published once.

Refusals: a 401 stops polling (``gateway.connection`` ``auth_failed``) until the gateway is
restarted with a valid token; a 429 pauses it for ``Retry-After`` (with jitter); anything else
is an outage with backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from gateway.connectors.fields import integer
from gateway.connectors.link import LinkState
from gateway.connectors.meiqia.client import MeiqiaAuthRejected, MeiqiaClient, MeiqiaRateLimited
from gateway.connectors.meiqia.normalize import records_events
from gateway.connectors.polling import PollDeferred, Poller, PollResult, PollStopped
from gateway.connectors.watermark import parse_iso
from gateway.runtime.backoff import Backoff
from gateway.runtime.statestore import KeyValue
from gateway.schema.commands import CommandFailed, ErrorCode
from gateway.schema.events import CloudEvent

RECORDS_PATH: Final = "records"
CURSOR_VERSION: Final = 1
#: Pages read in one window at most; beyond, the poll fails rather than skip records.
MAX_PAGES: Final = 1000


def stopped_reason(client: MeiqiaClient) -> str:
    return (
        f"Meiqia refused the access token ({client.refused}); the gateway never requests a new"
        " one (that would invalidate the one in use): set a valid token and restart the gateway"
    )


def rfc3339(instant: datetime, tz: Any) -> str:
    """The document's ``date-time``: RFC 3339 in the PBX's zone, whole seconds."""
    return instant.astimezone(tz).replace(microsecond=0).isoformat()


async def read_records(
    client: MeiqiaClient, body: dict[str, Any], page_size: int, *, max_pages: int = MAX_PAGES
) -> tuple[list[Any], int | None]:
    """Every record ``body`` selects (all pages): the rows and the server's ``total``.

    Stops at ``total`` rows or at an empty page, never on a short page: a server that caps
    ``page_size`` below the one asked for still has more pages."""
    rows: list[Any] = []
    total: int | None = None
    for page in range(1, max_pages + 1):
        answer = await client.post(
            RECORDS_PATH, {**body, "page_index": page, "page_size": page_size}, write=False
        )
        data = answer.get("data") if isinstance(answer, dict) else None
        data = data if isinstance(data, list) else []
        total = integer(answer.get("total")) if isinstance(answer, dict) else None
        rows.extend(data)
        if not data or (total is not None and len(rows) >= total):
            return rows, total
    raise CommandFailed(
        ErrorCode.FAILED,
        f"{RECORDS_PATH}: more than {max_pages} pages of {page_size}; not all read",
    )


class RecordsPoller(Poller):
    """The records :class:`Poller`, which also takes the events of webhooks (:meth:`offer`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loaded = False

    def load(self) -> None:
        super().load()
        self.loaded = True

    async def offer(self, events: Iterable[CloudEvent], timeout_s: float = 10.0) -> list[str]:
        """Publish what was not passed yet, as a poll would, and remember it with the cursor;
        the ids published. Waits for a poll under way (at most ``timeout_s``, then
        ``TimeoutError``), so a poll and a webhook never both pass one id."""
        async with asyncio.timeout(timeout_s):
            await self._polling.acquire()
        try:
            if not self.loaded:
                self.load()
            published: list[str] = []
            for event in events:
                if event.id in self.seen:
                    continue
                await self.state.send(event)  # spooled durably before it is marked as passed
                self.seen.add(event.id)
                published.append(event.id)
            if published:
                self.save_soon()
            return published
        finally:
            self._polling.release()


class RecordsWatcher:
    """Polls one enterprise's call records and publishes one ``cdr.created`` per call."""

    def __init__(
        self,
        client: MeiqiaClient,
        store: KeyValue,
        state: LinkState,
        *,
        interval_s: float,
        overlap_s: float,
        page_size: int,
        max_window_s: float,
        backoff: Backoff,
        timeout_s: float = 120.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._state = state
        self._overlap = timedelta(seconds=overlap_s)
        self._step = timedelta(seconds=max(3600.0, 4 * overlap_s))
        self._max_window = timedelta(seconds=max_window_s)
        self._page_size = page_size
        self._backoff = backoff
        self._now = now
        self.records_read = 0
        self.poller = RecordsPoller(
            "records",
            state,
            store,
            self.poll,
            interval_s=interval_s,
            backoff=backoff,
            timeout_s=timeout_s,
            seen_ttl_s=2 * overlap_s + 2 * interval_s + 3600.0,
            seen_limit=50_000,
        )

    async def run(self) -> None:
        await self.poller.run()

    async def poll_once(self) -> int:
        """One poll now, outside ``run`` (tests): how many events were published."""
        if not self.poller.loaded:
            self.poller.load()
        return await self.poller.poll_once()

    def window(self, cursor: Any) -> tuple[datetime, datetime]:
        """The next window: from ``until - overlap`` (first poll: ``now - overlap``), at most
        ``max_window`` back and one step long."""
        now = self._now()
        saved = cursor.get("until") if isinstance(cursor, dict) else None
        until = parse_iso(saved) if isinstance(saved, str) else None
        start = (until or now) - self._overlap
        start = max(start, now - self._max_window)
        return start, min(now, start + self._step)

    async def poll(self, cursor: Any) -> PollResult:
        """The Poller's ``poll``: the window's records, and ``until`` moved to its end."""
        if self._client.refused is not None:
            raise PollStopped("auth_failed", stopped_reason(self._client))
        start, end = self.window(cursor)
        tz = self._state.tz
        body = {"start_time": rfc3339(start, tz), "end_time": rfc3339(end, tz)}
        try:
            rows, _total = await read_records(self._client, body, self._page_size)
        except MeiqiaAuthRejected:
            raise PollStopped("auth_failed", stopped_reason(self._client)) from None
        except MeiqiaRateLimited as exc:
            wait = self._client.wait_for(exc, fallback_s=self._backoff.next_delay())
            raise PollDeferred(wait, exc.message) from None
        self.records_read += len(rows)
        events = records_events(rows, self._state.ctx())
        return PollResult(events, {"v": CURSOR_VERSION, "until": end.isoformat()}, len(rows))
