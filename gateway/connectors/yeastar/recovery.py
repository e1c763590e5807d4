"""Gap recovery for the Yeastar link: what the PBX did while the event socket was away.

The WebSocket has no replay. After any interruption (socket drop, token trouble, gateway
restart, lease takeover) the gateway re-reads the PBX's own state instead:

* ``call/query`` by communication type (the manual's only way to list every call): one
  call.* event per call in progress, derived like a 30011;
* ``cdr/search`` over the gap, in the PBX's display time format and zone: each record through
  :func:`normalize_cdr_record`, so it carries the id its live 30012 would have;
* ``queue/list`` then ``queue/agent_status`` per queue: one ``agent.queue_status`` per agent.

Where to start is the *watermark*: the time of the last frame heard, persisted per tenant in
the instance's state store so that a restart knows where the previous run stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson
from pydantic import ValidationError

from gateway.connectors.yeastar.auth import YeastarAuth
from gateway.connectors.yeastar.client import YeastarClient, YeastarError, list_queues
from gateway.connectors.yeastar.normalize import (
    normalize_call_query,
    normalize_cdr_record,
    record_call_id,
)
from gateway.runtime.statestore import KeyValue
from gateway.schema.events import (
    AgentQueueStatusData,
    CloudEvent,
    NormalizeContext,
    make_event,
    rejected,
)
from gateway.settings import RecoverySettings

VENDOR: Final = "yeastar"
#: call/query ``type`` values (manual 表 330): together they list every call in progress.
CALL_QUERY_TYPES: Final = ("inbound", "outbound", "internal")
#: CDRs are filtered on their *start* time, on the PBX's clock: reach back a little for skew.
CDR_MARGIN_S: Final = 15.0
#: cdr/search has no paging parameters; the gap is walked in slices of this many seconds.
CDR_SLICE_S: Final = 900
MAX_CDR_REQUESTS: Final = 2000
STEP_TIMEOUT_S: Final = 60.0
#: A call seen starting but never ending is forgotten after this long (its end was lost).
OPEN_CALL_MAX_S: Final = 6 * 3600
#: queue/agent_status ``call_status`` (manual): 4 = a new call while talking, 5 = held.
AGENT_CALL_STATE: Final[dict[int, str]] = {1: "idle", 2: "busy", 3: "ringing", 4: "busy", 5: "held"}
#: errcodes meaning "nothing there" / "this firmware has no such endpoint".
NOT_FOUND: Final = 60001
NO_INTERFACE: Final = 10001

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


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def call_start(call_id: str, seen_at: datetime) -> datetime:
    """A Yeastar call id is ``<unix start>.<seq>``; trust it only when it is plausible."""
    try:
        start = datetime.fromtimestamp(int(call_id.split(".", 1)[0]), UTC)
    except (ValueError, OverflowError, OSError):
        return seen_at
    if seen_at - timedelta(seconds=OPEN_CALL_MAX_S) <= start <= seen_at + timedelta(seconds=60):
        return min(start, seen_at)
    return seen_at


# --- what the link remembers between interruptions ---------------------------------------------


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


@dataclass(frozen=True, slots=True)
class Gap:
    """An interruption: events after ``start`` may be missing; CDRs of calls that started
    after ``floor`` (<= start, earlier when calls were in progress) may be missing."""

    start: datetime
    floor: datetime


class Watermark:
    """The last frame heard, persisted per tenant (throttled) so a restart resumes from it.

    While a gap is not yet recovered the persisted value stays at the gap's start: a stop in
    the middle of a recovery must not move the next run's starting point past it.
    """

    def __init__(
        self,
        store: KeyValue,
        tenant: str,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._key = f"yeastar:{tenant}:watermark"
        self._floor_key = f"yeastar:{tenant}:cdr_floor"
        self._cdrs_key = f"yeastar:{tenant}:cdr_facts"
        self._interval = interval_s
        self._clock = clock
        self._written = -float("inf")
        self.calls = CallTracker()
        self.cdrs = SeenCdrs()
        self.last: datetime | None = None
        self._outstanding: list[Gap] = []

    def load(self) -> Gap | None:
        """The previous run's stopping point, as a gap still to recover (None: first run)."""
        start = _parse_iso(self._store.get(self._key))
        if start is None:
            return None
        floor = _parse_iso(self._store.get(self._floor_key)) or start
        with contextlib.suppress(orjson.JSONDecodeError, TypeError):
            self.cdrs.restore(orjson.loads(self._store.get(self._cdrs_key) or "[]"))
        gap = Gap(start, min(floor, start))
        self._outstanding = [gap]  # the stored mark already folds in any earlier gap
        return gap

    def seen(self, at: datetime, event: CloudEvent | None = None) -> None:
        """A frame arrived and its event is spooled; persist at most once per ``interval_s``,
        but at once when a CDR's facts were noted: a restart must not back-fill it again under
        another id."""
        self.last = at
        noted = False
        if event is not None:
            self.calls.observe(event, at)
            if event.type == "cdr.created":
                noted = self.cdrs.add(event)
        if noted or self._clock() - self._written >= self._interval:
            self.persist()

    def interrupted(self, now: datetime) -> Gap:
        """The link went away: the gap starts at the last frame heard (or now)."""
        start = min(self.last or now, now)
        floor = min(self.calls.floor(now) or start, start)
        gap = Gap(start, floor)
        self._outstanding.append(gap)
        self.persist()
        return gap

    def recovered(self, gap: Gap) -> None:
        with contextlib.suppress(ValueError):
            self._outstanding.remove(gap)
        self.persist()

    def persist(self) -> None:
        """Write where a next run must start: the oldest unrecovered gap, else the last frame."""
        marks = [g.start for g in self._outstanding]
        if self.last is not None:
            marks.append(self.last)
        if not marks:
            return
        mark = min(marks)
        floors = [g.floor for g in self._outstanding]
        open_floor = self.calls.floor(self.last or mark)
        if open_floor is not None:
            floors.append(open_floor)
        floor = min([mark, *floors])
        self._store.set(self._key, _iso(mark))
        self._store.set(self._floor_key, _iso(floor))
        # The next back-fill reaches back to the floor less a margin: CDRs published live since
        # then must be recognised, also those whose record will carry no call id.
        since = floor - timedelta(seconds=CDR_MARGIN_S)
        self._store.set(self._cdrs_key, orjson.dumps(self.cdrs.facts_since(since)).decode())
        self._written = self._clock()


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
        started = _parse_iso(event.data.get("started_at"))  # data is JSON: an ISO string
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
                started = _parse_iso(orjson.loads(fact)[0])
            except (orjson.JSONDecodeError, IndexError, TypeError, KeyError):
                continue
            if started is not None:
                self._facts[fact] = started
                self._remember(fact)


# --- pure mappings -------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    return text or None


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    try:
        return bool(int(value))
    except (TypeError, ValueError):
        return None


def _code(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def agent_status_events(
    queue: dict[str, Any], body: dict[str, Any], ctx: NormalizeContext
) -> list[CloudEvent]:
    """One queue/agent_status answer -> one ``agent.queue_status`` per agent (snapshot at
    ``ctx.received_at``, which is part of the id: the same state later is a new report)."""
    queue_number = _text(queue.get("number")) or _text(queue.get("id"))
    events = []
    for item in body.get("data") or []:
        raw = orjson.dumps(item, option=orjson.OPT_SORT_KEYS, default=str).decode()
        extension = _text(item.get("number")) if isinstance(item, dict) else None
        if not isinstance(item, dict) or extension is None:
            events.append(rejected(ctx, raw, "agent without a number", "queue/agent_status"))
            continue
        try:
            data = AgentQueueStatusData(
                extension=extension,
                queue=queue_number,
                logged_in=_flag(item.get("is_login")),
                paused=_flag(item.get("is_pause")),
                pause_reason=_text(item.get("pause_reason")),
                call_state=AGENT_CALL_STATE.get(_code(item.get("call_status")) or 0),
            )
        except ValidationError as exc:
            events.append(rejected(ctx, raw, str(exc)[:300], "queue/agent_status"))
            continue
        events.append(
            make_event(
                ctx,
                "agent.queue_status",
                data,
                identity=("queue/agent_status", queue_number, raw, ctx.received_at.isoformat()),
                subject=extension,
                vendorevent="queue/agent_status",
                raw=item,
            )
        )
    return events


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
        infos: dict[str, dict[str, Any]] = {}
        for kind in CALL_QUERY_TYPES:
            body = await self._get_or_empty("call/query", {"type": kind})
            for info in _list(body.get("data")):
                call_id = _text(info.get("call_id")) if isinstance(info, dict) else None
                if call_id is not None:
                    infos.setdefault(call_id, info)
        result.open_calls = {cid: call_start(cid, asked_at) for cid in infos}
        ctx = self._ctx()
        events = []
        for call_id, info in infos.items():
            if calls.changed_since(call_id, asked_at):
                continue  # a live report after our question is newer than this snapshot
            events.extend(normalize_call_query(info, ctx))
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
            for event in normalize_cdr_record(record, ctx):
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
            if exc.errcode == NO_INTERFACE:
                self.queue_list_supported = False  # said once; this firmware has no queue/list
            raise
        events: list[CloudEvent] = []
        for queue in queues:
            queue_id = _text(queue.get("id"))
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
