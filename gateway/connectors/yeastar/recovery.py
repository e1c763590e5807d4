"""Gap recovery for the Yeastar link: what the PBX did while the event socket was away.

The WebSocket has no replay. After any interruption (socket drop, token trouble, gateway
restart, lease takeover) the gateway re-reads the PBX's own state instead:

* ``call/query`` by communication type (the manual's only way to list every call): one
  call.* event per call in progress, derived like a 30011; the type it was listed under is
  the call's direction where its members prove none (a call first seen after a restart);
* ``cdr/search`` over the gap, in the PBX's display time format and zone: each record through
  :func:`normalize_cdr_record`, so it carries the id its live 30012 would have (one per leg:
  a forwarded call's records share its call id, and each is published);
* ``queue/list`` then ``queue/agent_status`` per queue: one ``agent.queue_status`` per agent.

Where to start is the *watermark* (:mod:`gateway.connectors.yeastar.watermark`); the shared
reconnect loop (:class:`gateway.connectors.link.PushLink`) calls :meth:`YeastarRecovery.recover`
after every interruption and publishes the ``gateway.gap``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from gateway.connectors.watermark import Gap
from gateway.connectors.yeastar.auth import YeastarAuth
from gateway.connectors.yeastar.calls import CallTracker, call_start
from gateway.connectors.yeastar.cdrs import SeenCdrs
from gateway.connectors.yeastar.client import (
    UNSUPPORTED_ERRCODES,
    YeastarClient,
    YeastarError,
    list_queues,
)
from gateway.connectors.yeastar.normalize import (
    agent_status_events,
    normalize_call_query,
    normalize_cdr_record,
    record_call_id,
    text_or_none,
)
from gateway.connectors.yeastar.watermark import CDR_MARGIN_S
from gateway.schema.events import CloudEvent, NormalizeContext
from gateway.settings_models import RecoverySettings

VENDOR: Final = "yeastar"
#: call/query ``type`` values (manual 表 330): together they list every call in progress.
CALL_QUERY_TYPES: Final = ("inbound", "outbound", "internal")
#: cdr/search has no paging parameters; the gap is walked in slices of this many seconds.
CDR_SLICE_S: Final = 900
MAX_CDR_REQUESTS: Final = 2000
STEP_TIMEOUT_S: Final = 60.0
#: 60001 DATA NOT FOUND means "nothing there" (manual line 18516, 表 388).
NOT_FOUND: Final = 60001


def cdr_window(gap: Gap, end: datetime, settings: RecoverySettings) -> tuple[datetime, datetime]:
    """[floor - margin, end + settle], never longer than ``max_window_s``."""
    low = gap.floor - timedelta(seconds=CDR_MARGIN_S)
    low = max(low, end - timedelta(seconds=settings.max_window_s))
    return low, end + timedelta(seconds=settings.cdr_settle_s)


def cdr_slices(low: datetime, high: datetime, slice_s: int = CDR_SLICE_S) -> list[tuple[int, int]]:
    """Whole-second, inclusive, non-overlapping [start, end] slices covering the window."""
    first, last = int(low.timestamp()), int(high.timestamp()) + 1
    return [(a, min(a + slice_s - 1, last)) for a in range(first, last + 1, slice_s)]


# --- the recovery itself -------------------------------------------------------------------------

Emit = Callable[[CloudEvent], Awaitable[None]]


@dataclass(slots=True)
class RecoveryResult:
    published: int = 0
    errors: list[str] = field(default_factory=list)
    open_calls: dict[str, datetime] | None = None


class YeastarRecovery:
    """Re-reads calls, CDRs and queue agents over the OpenAPI (token refreshed once on 10004)."""

    def __init__(
        self,
        client: YeastarClient,
        auth: YeastarAuth,
        *,
        tenant: str,
        tz: ZoneInfo,
        cdr_time_format: str,
        settings: RecoverySettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._auth = auth
        self._tenant = tenant
        self._tz = tz
        self._format = cdr_time_format
        self.settings = settings
        self._clock = clock
        self.queue_list_supported = True

    async def recover(
        self, gap: Gap, end: datetime, emit: Emit, seen: SeenCdrs, calls: CallTracker
    ) -> RecoveryResult:
        """Calls first (they are live state), then the CDRs, then the queue agents."""
        result = RecoveryResult()
        steps: list[tuple[str, Callable[[], Awaitable[list[CloudEvent]]]]] = [
            ("call/query", lambda: self._calls(result, calls)),
            ("cdr/search", lambda: self._cdrs(gap, end, seen)),
            ("queue/agent_status", self._agents),
        ]
        for name, step in steps:
            try:
                async with asyncio.timeout(STEP_TIMEOUT_S):
                    events = await step()
            except Exception as exc:  # one step failing must not cost the others
                result.errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
                continue
            for event in events:
                await emit(event)
                result.published += 1
        return result

    def _ctx(self) -> NormalizeContext:
        """Recovered events carry no ``raw``: that field is the WebSocket frame, and there is
        none; consumers can tell them by ``vendorevent`` (call/query, cdr/list, queue/...)."""
        return NormalizeContext(self._tenant, VENDOR, self._tz, self._clock(), include_raw=False)

    async def _get(self, endpoint: str, params: dict[str, Any]) -> dict[str, Any]:
        async def get(access_token: str) -> dict[str, Any]:
            return await self._client.request("GET", endpoint, access_token, params=params)

        return await self._auth.with_token(get)

    async def _get_or_empty(self, endpoint: str, params: dict[str, Any]) -> dict[str, Any]:
        """60001 DATA NOT FOUND means "nothing", not a failure."""
        try:
            return await self._get(endpoint, params)
        except YeastarError as exc:
            if exc.errcode == NOT_FOUND:
                return {}
            raise

    # --- calls in progress ---------------------------------------------------------------------

    async def _calls(self, result: RecoveryResult, calls: CallTracker) -> list[CloudEvent]:
        asked_at = self._clock()
        infos: dict[str, tuple[dict[str, Any], str]] = {}
        for kind in CALL_QUERY_TYPES:
            body = await self._get_or_empty("call/query", {"type": kind})
            for info in _list(body.get("data")):
                call_id = text_or_none(info.get("call_id")) if isinstance(info, dict) else None
                if call_id is not None:
                    infos.setdefault(call_id, (info, kind))
        result.open_calls = {cid: call_start(cid, asked_at) for cid in infos}
        ctx = self._ctx()
        events = []
        for call_id, (info, kind) in infos.items():
            [event] = normalize_call_query(info, ctx, direction=kind)
            if event.type != "gateway.rejected":  # live reports to come keep this direction
                calls.directions.learn(call_id, event.data.get("direction"), asked_at)
            if calls.changed_since(call_id, asked_at):
                continue  # a live report after our question is newer than this snapshot
            events.append(event)
        return events

    # --- CDRs ----------------------------------------------------------------------------------

    def _pbx_time(self, unix: int) -> str:
        """cdr/search filters on the PBX's wall clock, in its display format (manual note)."""
        return datetime.fromtimestamp(unix, self._tz).strftime(self._format)

    async def search_cdrs(self, low: datetime, high: datetime) -> list[dict[str, Any]]:
        """Every record that started in [low, high]. cdr/search answers a whole window at once;
        if the PBX says it matched more (``total_number``) than it sent, the slice is halved."""
        pending = cdr_slices(low, high)
        records: list[dict[str, Any]] = []
        for _ in range(MAX_CDR_REQUESTS):
            if not pending:
                return records
            a, b = pending.pop(0)
            body = await self._get_or_empty(
                "cdr/search", {"start_time": self._pbx_time(a), "end_time": self._pbx_time(b)}
            )
            data = _list(body.get("data"))
            total = body.get("total_number")
            if isinstance(total, int) and total > len(data) and b > a:
                mid = (a + b) // 2
                pending[:0] = [(a, mid), (mid + 1, b)]
                continue
            records.extend(data)
        raise ValueError(f"cdr/search: more than {MAX_CDR_REQUESTS} requests for one gap")

    async def _cdrs(self, gap: Gap, end: datetime, seen: SeenCdrs) -> list[CloudEvent]:
        """The gap's CDRs not published yet. A record without a call id is held for
        ``cdr_settle_s`` first: if its call ended just now, its live 30012 may still be on its
        way over the new subscription, and only the facts can tell the two apart."""
        low, high = cdr_window(gap, end, self.settings)
        records = _unique_records(await self.search_cdrs(low, high))
        ctx = self._ctx()
        events: list[CloudEvent] = []
        held: list[CloudEvent] = []
        for record in records:
            by_fact = isinstance(record, dict) and record_call_id(record) is None
            for event in normalize_cdr_record(record, ctx, display_format=self._format):
                cdr = event.type == "cdr.created"
                if cdr and seen.knows(event, by_fact=by_fact):
                    continue
                if cdr and by_fact:
                    held.append(event)
                    continue
                seen.add(event)
                events.append(event)
        if held:
            await asyncio.sleep(self.settings.cdr_settle_s)
            for event in held:
                if not seen.knows(event, by_fact=True):
                    seen.add(event)
                    events.append(event)
        events.sort(key=lambda e: e.time)
        return events

    # --- queue agents --------------------------------------------------------------------------

    async def _agents(self) -> list[CloudEvent]:
        if not self.queue_list_supported:
            return []
        try:
            queues = await list_queues(self._get_or_empty)
        except YeastarError as exc:
            if exc.errcode in UNSUPPORTED_ERRCODES:
                self.queue_list_supported = False  # said once; this firmware has no queue/list
            raise
        events: list[CloudEvent] = []
        for queue in queues:
            queue_id = text_or_none(queue.get("id"))
            if queue_id is None:
                continue
            body = await self._get_or_empty("queue/agent_status", {"id": queue_id})
            events.extend(agent_status_events(queue, body, self._ctx()))
        return events


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _unique_records(records: Iterable[Any]) -> list[Any]:
    """Slices share no second, but a PBX may still repeat a record: keep one per uid / id."""
    out: dict[str, Any] = {}
    for record in records:
        if isinstance(record, dict):
            key = str(record.get("uid") or record.get("id") or orjson.dumps(record, default=str))
        else:
            key = repr(record)
        out.setdefault(key, record)
    return list(out.values())
