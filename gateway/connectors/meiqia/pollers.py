"""Meiqia call records: ``POST records`` read in moving, overlapping windows, every page; and
seats (``GET sips``) compared. Each is a :class:`~gateway.connectors.polling.Poller`.

Meiqia pushes nothing over a socket: a call becomes a record in ``records`` once it has ended
(and, in practice, a little later). Every ``records_poll_interval_s`` the poller reads the
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

Refusals (read by the polling base): a 401 stops polling (``gateway.connection``
``auth_failed``) until the gateway is restarted with a valid token; a 429 pauses it for
``Retry-After`` (capped, with jitter); anything else is an outage with backoff.
:class:`MeiqiaPoller` says only Meiqia's reason text and wait, and stops without asking once
the client saw the token refused.

Seats: a seat is a SIP account agents are bound to (``sip``, ``agent_id``, ``agent_name``,
``occupied`` y/n, ``expiration_at``, ``password``). Meiqia announces no change, so the whole
list is read every ``seats_poll_interval_s`` and compared with the previous one (the cursor):
each seat whose occupancy, bound agent or expiry changed (also one whose expiry time has now
passed, one that appeared, one that went) becomes one ``agent.seat`` event. The SIP password is
never compared, published or saved. The first poll ever is the baseline (it publishes nothing),
and a restart (or the next owner) compares with the saved list, so it announces only what
changed meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

from gateway.connectors.link import LinkState
from gateway.connectors.meiqia.client import MeiqiaClient
from gateway.connectors.meiqia.normalize import records_events, seat_events, seat_snapshot
from gateway.connectors.polling import Poller, PollResult, PollStopped
from gateway.connectors.rest import AuthRefused, RateLimited
from gateway.connectors.watermark import parse_iso
from gateway.runtime.backoff import Backoff
from gateway.runtime.statestore import KeyValue
from gateway.schema.events import CloudEvent

RECORDS_PATH: Final = "records"
SIPS_PATH: Final = "sips"
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
    """Every record ``body`` selects (all pages): the rows and the server's ``total``."""
    return await client.list_all(RECORDS_PATH, body, page_size=page_size, max_pages=max_pages)


def seat_rows(answer: Any) -> list[Any]:
    """The document's answer is a bare array; an object with ``data`` is read too."""
    if isinstance(answer, list):
        return answer
    if isinstance(answer, dict) and isinstance(answer.get("data"), list):
        return list(answer["data"])
    return []


class MeiqiaPoller(Poller):
    """A polled source of one enterprise (``source`` names its cursor), and what Meiqia's
    refusals say for every one."""

    source: ClassVar[str]

    def __init__(
        self, client: MeiqiaClient, store: KeyValue, state: LinkState, **options: Any
    ) -> None:
        super().__init__(self.source, state, store, **options)  # interval_s, backoff ...
        self.client = client

    def blocked(self) -> PollStopped | None:
        if self.client.refused is None:
            return None
        return PollStopped("auth_failed", stopped_reason(self.client))

    def stop_reason(self, exc: AuthRefused) -> str:
        return stopped_reason(self.client)

    def retry_after(self, exc: RateLimited) -> float:
        return self.client.wait_for(exc, fallback_s=self._backoff.next_delay())


class RecordsPoller(MeiqiaPoller):
    """Polls one enterprise's call records and publishes one ``cdr.created`` per call; takes
    the events of webhooks too (``offer``)."""

    source = "records"

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
        super().__init__(
            client,
            store,
            state,
            interval_s=interval_s,
            backoff=backoff,
            timeout_s=timeout_s,
            seen_ttl_s=2 * overlap_s + 2 * interval_s + 3600.0,
            seen_limit=50_000,
        )
        self._overlap = timedelta(seconds=overlap_s)
        self._step = timedelta(seconds=max(3600.0, 4 * overlap_s))
        self._max_window = timedelta(seconds=max_window_s)
        self._page_size = page_size
        self._now = now

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
        """The window's records, and ``until`` moved to its end."""
        start, end = self.window(cursor)
        tz = self.state.tz
        body = {"start_time": rfc3339(start, tz), "end_time": rfc3339(end, tz)}
        rows, _total = await read_records(self.client, body, self._page_size)
        events = records_events(rows, self.state.ctx())
        return PollResult(events, {"v": CURSOR_VERSION, "until": end.isoformat()}, len(rows))


class SeatsPoller(MeiqiaPoller):
    """Polls one enterprise's seats and publishes what changed."""

    source = "sips"

    async def poll(self, cursor: Any) -> PollResult:
        """The seats now against the cursor's (none: the baseline), and the new cursor."""
        rows = seat_rows(await self.client.get(SIPS_PATH))
        ctx = self.state.ctx()
        snapshot = seat_snapshot(rows, ctx.received_at, ctx.tz)
        saved = cursor if isinstance(cursor, dict) and cursor.get("v") == CURSOR_VERSION else None
        before = saved.get("seats") if saved else None
        sequences: dict[str, int] = {}
        if saved and isinstance(saved.get("seq"), dict):
            sequences = {str(k): int(v) for k, v in saved["seq"].items() if isinstance(v, int)}
        events: list[CloudEvent] = []
        if isinstance(before, dict):
            known = {str(k): v for k, v in before.items() if isinstance(v, dict)}
            events = seat_events(known, snapshot, sequences, ctx)
        cursor = {"v": CURSOR_VERSION, "seats": snapshot, "seq": sequences}
        return PollResult(events, cursor, records=len(rows))
