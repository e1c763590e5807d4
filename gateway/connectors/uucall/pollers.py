"""What UUCall is polled for, and how each poll finds what is new.

Five :class:`~gateway.connectors.polling.Poller` s, one per source (each overrides ``poll``),
each with its own interval, cursor (``cursor:<name>:<uid>`` in the PBX's slice of the state
store, shared with the next owner; a cursor belongs to the enterprise it was read for) and
source in the link state (``poll:<name>:<uid>``):

* ``account``: ``GET /account/{uid}`` every ``account_poll_s``; any change of ``balance``,
  ``overdraft``, ``advance``, ``consume`` or ``state`` (the cursor is the last record).
* ``cashlog``: ``GET /account/cashlog`` every ``cashlog_poll_s``; entries not seen before, by
  ``id``.
* ``bill``: ``GET /account/chargebill`` with ``time`` = this month and last month, every
  ``bill_poll_s``; bills that are new or whose amounts changed.
* ``oplog``: ``GET /power/oplog`` with ``startTime`` every ``oplog_poll_s``; entries not seen
  before, by ``id``, re-reading ``oplog_window_s`` back.
* ``notice``: ``GET /power/notice`` every ``notice_poll_s``; notices new, changed or gone.

An interval of 0 turns a source off.

Every fact found becomes one raw message for the pure normalizer (``normalize.py``); the
event ids derive from the facts, so the Poller's de-duplication and the consumers' see a fact
re-read after a crash (before its cursor was saved) under the same id.

**The first poll ever** (no cursor): the balance and both months' bills are published as they
are; cash log entries, oplog entries and notices younger than ``history_s`` are published,
older ones are taken as known. **Logs** (cash log, oplog) keep the ids they saw within a
window (``cashlog_window_s`` / ``oplog_window_s`` behind the newest time seen), so a late
entry is still found once; an unknown entry older than the window counts as old. The cash log
has no time filter: its pages are read until a page, sorted newest first, reaches past the
window.

Failures (read by the polling base, the same for every source): a 401 / 403
``max_auth_rejections`` times in a row stops the poller (``auth_failed`` / ``blocked``, as
:class:`PollStopped`; :class:`UucallPoller` says how many in a row and its reason text); a 429
the client could not wait out pauses it for the server's ``Retry-After``
(:class:`PollDeferred`); anything else is an outage (the cursor stays, the next good poll reads
what was missed).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

import orjson

from gateway.connectors.fields import canonical
from gateway.connectors.link import LinkState
from gateway.connectors.polling import Poller, PollResult
from gateway.connectors.rest import AuthRefused
from gateway.connectors.uucall.client import UucallClient, record, rows
from gateway.connectors.uucall.models import epoch_ms
from gateway.connectors.uucall.normalize import (
    ACCOUNT,
    BALANCE_FIELDS,
    CASHLOG,
    CHARGEBILL,
    NOTICE,
    OPLOG,
    normalize_message,
)
from gateway.connectors.uucall.settings import UucallPbxSettings
from gateway.runtime.backoff import Backoff
from gateway.runtime.statestore import KeyValue
from gateway.schema.commands import CommandFailed
from gateway.schema.events import CloudEvent

CURSOR_VERSION: Final = 1
STAMP: Final = "%Y-%m-%d %H:%M:%S"


def _month(now_ms: int, tz: Any, offset: int) -> str:
    local = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=now_ms)).astimezone(tz)
    year, month = local.year, local.month + offset
    while month < 1:
        year, month = year - 1, month + 12
    return f"{year:04d}-{month:02d}"


def _hash(value: Any) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()[:24]


def _money_state(record_: dict[str, Any]) -> list[str | None]:
    """The fields whose change is a balance change, compared as text (``1`` == ``"1"``)."""
    return [None if record_.get(f) is None else str(record_.get(f)).strip() for f in BALANCE_FIELDS]


class UucallPoller(Poller):
    """One source of one enterprise account (``source`` names it), and what UUCall's refusals
    say for every source."""

    source: ClassVar[str]

    def __init__(
        self,
        client: UucallClient,
        settings: UucallPbxSettings,
        store: KeyValue,
        state: LinkState,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        interval_s = settings.poll_intervals()[self.source]
        # A poll may read many pages and wait out 429s: bounded, but not by one request's time.
        timeout_s = (
            60.0
            + settings.request_timeout_s * 10
            + settings.max_retry_after_s * (settings.rate_limit_retries + 1)
        )
        super().__init__(
            f"{self.source}:{settings.uid}",
            state,
            store,
            interval_s=interval_s or 3600.0,
            backoff=Backoff(settings.backoff),
            timeout_s=timeout_s,
        )
        self.client = client
        self._s = settings
        self._wall = clock
        #: An interval of 0 turns the source off (e.g. a path the account may not read: its
        #: 403 would otherwise stop the poller and show the link blocked).
        self.enabled = interval_s > 0

    def stops(self, exc: AuthRefused) -> bool:
        """Refused credentials stop the poller after ``max_auth_rejections`` in a row."""
        return self.client.auth_rejections >= self._s.max_auth_rejections

    def stop_reason(self, exc: AuthRefused) -> str:
        return (
            f"{exc.message} ({self.client.auth_rejections} times in a row);"
            " fix the credentials and restart"
        )

    # --- helpers -------------------------------------------------------------------------------

    def _cursor(self, cursor: Any) -> dict[str, Any] | None:
        """A cursor this version wrote for this enterprise, or None (then the poll starts
        afresh: a cursor of another ``uid``, e.g. after the settings changed, says nothing
        about this one)."""
        if (
            isinstance(cursor, dict)
            and cursor.get("v") == CURSOR_VERSION
            and cursor.get("uid") == self._s.uid
        ):
            return cursor
        return None

    def _stamp(self) -> dict[str, Any]:
        """What every cursor says about itself."""
        return {"v": CURSOR_VERSION, "uid": self._s.uid}

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    def _events(self, message: dict[str, Any]) -> list[CloudEvent]:
        """The normalizer's events of one fact (the same function ``gateway normalize`` runs)."""
        text = orjson.dumps({"uid": self._s.uid, **message}, default=str).decode()
        return normalize_message(text, self.state.ctx())

    def _money_message(self, path: str, **fields: Any) -> dict[str, Any]:
        return {"path": path, "minor_unit": self._s.minor_unit, **fields}

    # --- logs (cash log, operation log) ----------------------------------------------------------

    def _new_entries(
        self,
        found: list[dict[str, Any]],
        cursor: Any,
        window_s: float,
        time_field: str,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The log entries not seen before (oldest first) and the cursor after them.

        The cursor keeps ``start`` (the first poll), ``newest`` (the newest entry time seen)
        and ``known``: the ids seen at or after ``newest - window``. An unknown entry is new
        when it is at least that young; on the first poll, when it is younger than
        ``history_s``."""
        saved = self._cursor(cursor)
        now = self._now_ms()
        window = int(window_s * 1000)
        if saved is None:
            start, newest, known = now, now, {}
            publish_floor = now - int(self._s.history_s * 1000)
        else:
            start = int(saved.get("start") or now)
            newest = int(saved.get("newest") or start)
            known = {str(k): int(v) for k, v in (saved.get("known") or {}).items()}
            publish_floor = newest - window
        fresh: list[tuple[int, str, dict[str, Any]]] = []
        for entry in found:
            ident = entry.get("id")
            # an entry without an id is remembered by its content: the normalizer rejects it
            # (gateway.rejected) once, not at every poll
            key = "#" + _hash(entry) if ident is None or ident == "" else str(ident).strip()
            if key in known:
                continue
            at = epoch_ms(entry.get(time_field))
            when = at if at is not None else now
            known[key] = when
            if when >= publish_floor:
                fresh.append((when, key, entry))
        newest = max([newest, *known.values()])
        known = {k: t for k, t in known.items() if t >= newest - window}
        fresh.sort(key=lambda item: (item[0], _id_order(item[1])))
        cursor_out = {**self._stamp(), "start": start, "newest": newest, "known": known}
        return [entry for _, _, entry in fresh], cursor_out


class AccountPoller(UucallPoller):
    """``GET /account/{uid}``: a change of the balance fields."""

    source = "account"

    async def poll(self, cursor: Any) -> PollResult:
        previous = (self._cursor(cursor) or {}).get("record")
        found = record(await self.client.get(f"/account/{self._s.uid}"))
        if found is None:
            raise CommandFailed("failed", f"GET /account/{self._s.uid}: empty answer")
        events: list[CloudEvent] = []
        if previous is None or _money_state(previous) != _money_state(found):
            message = self._money_message(ACCOUNT, previous=previous, record=found)
            if self._s.low_balance_threshold is not None:
                message["threshold"] = self._s.low_balance_threshold
            events = self._events(message)
        return PollResult(events, {**self._stamp(), "record": found}, records=1)


class CashlogPoller(UucallPoller):
    """``GET /account/cashlog``: entries not seen before."""

    source = "cashlog"

    async def poll(self, cursor: Any) -> PollResult:
        saved = self._cursor(cursor)
        now = self._now_ms()
        newest = int(saved.get("newest") or now) if saved else now
        floor = newest - int(self._s.cashlog_window_s * 1000)
        if saved is None:
            floor = min(floor, now - int(self._s.history_s * 1000))

        def past_floor(page: list[dict[str, Any]]) -> bool:
            """A page sorted newest first whose last entry is older than the window: the
            following pages hold only older entries."""
            times = [epoch_ms(row.get("account_time")) for row in page]
            if not times or any(t is None for t in times):
                return False
            ordered = [t for t in times if t is not None]
            return ordered == sorted(ordered, reverse=True) and ordered[-1] < floor

        found = await self.client.list_all(CASHLOG, {"uid": self._s.uid}, stop=past_floor)
        entries, cursor_out = self._new_entries(
            found, cursor, self._s.cashlog_window_s, "account_time"
        )
        events = [
            event
            for entry in entries
            for event in self._events(self._money_message(CASHLOG, record=entry))
        ]
        return PollResult(events, cursor_out, records=len(found))


class OplogPoller(UucallPoller):
    """``GET /power/oplog``: entries not seen before, re-reading ``oplog_window_s`` back."""

    source = "oplog"

    async def poll(self, cursor: Any) -> PollResult:
        saved = self._cursor(cursor)
        now = self._now_ms()
        if saved is None:
            since = now - int(self._s.history_s * 1000)
        else:
            since = int(saved.get("newest") or now) - int(self._s.oplog_window_s * 1000)
        start_time = (
            (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=since))
            .astimezone(self._s.zone)
            .strftime(STAMP)
        )
        found = rows(await self.client.get(OPLOG, {"uid": self._s.uid, "startTime": start_time}))
        entries, cursor_out = self._new_entries(found, cursor, self._s.oplog_window_s, "time")
        events = [
            event for entry in entries for event in self._events({"path": OPLOG, "record": entry})
        ]
        return PollResult(events, cursor_out, records=len(found))


class BillPoller(UucallPoller):
    """``GET /account/chargebill``, this month and last: bills new or changed."""

    source = "bill"

    async def poll(self, cursor: Any) -> PollResult:
        saved = self._cursor(cursor) or {}
        known: dict[str, Any] = dict(saved.get("bills") or {})
        now = self._now_ms()
        months = [_month(now, self._s.zone, 0), _month(now, self._s.zone, -1)]
        bills: dict[str, Any] = {}
        events: list[CloudEvent] = []
        count = 0
        for month in reversed(months):  # last month first: its bills are older
            found = await self.client.list_all(
                CHARGEBILL, {"uidName": self._s.uid_name, "time": month}
            )
            count += len(found)
            for bill in found:
                bill_month = str(bill.get("time") or month).strip()
                key = f"{bill_month}|{bill.get('subUserName')}"
                digest = _hash([bill.get(f) for f in ("total", "basicBill", "functionBill")])
                before = known.get(key)
                bills[key] = {"hash": digest, "record": bill}
                if before is not None and before.get("hash") == digest:
                    continue
                previous = before.get("record") if before is not None else None
                events.extend(
                    self._events(
                        self._money_message(
                            CHARGEBILL, month=bill_month, previous=previous, record=bill
                        )
                    )
                )
        return PollResult(events, {**self._stamp(), "bills": bills}, records=count)


class NoticePoller(UucallPoller):
    """``GET /power/notice``: notices new, changed or gone."""

    source = "notice"

    async def poll(self, cursor: Any) -> PollResult:
        saved = self._cursor(cursor)
        now = self._now_ms()
        start = int(saved.get("start") or now) if saved else now
        known: dict[str, Any] = dict(saved.get("notices") or {}) if saved else {}
        found = rows(await self.client.get(NOTICE, {"uid": self._s.uid}))
        current: dict[str, Any] = {}
        events: list[CloudEvent] = []
        history_floor = start - int(self._s.history_s * 1000)
        for notice in sorted(found, key=lambda n: _id_order(str(n.get("id")))):
            # a notice without an id is remembered by its content: the normalizer rejects it
            # (gateway.rejected) once, not at every poll
            ident = notice.get("id")
            key = "#" + _hash(notice) if ident is None or ident == "" else str(ident).strip()
            current[key] = notice
            before = known.get(key)
            if before is not None and _hash(before) == _hash(notice):
                continue
            if before is None and saved is None:
                created = epoch_ms(notice.get("createtime"))
                if created is not None and created < history_floor:
                    continue  # the first poll's baseline
            events.extend(self._events({"path": NOTICE, "previous": before, "record": notice}))
        for key in sorted(known.keys() - current.keys(), key=_id_order):
            events.extend(self._events({"path": NOTICE, "previous": known[key], "record": None}))
        cursor_out = {**self._stamp(), "start": start, "notices": current}
        return PollResult(events, cursor_out, records=len(found))


#: Every source, in the order a test or a re-read polls them.
SOURCES: Final[tuple[type[UucallPoller], ...]] = (
    AccountPoller,
    CashlogPoller,
    BillPoller,
    OplogPoller,
    NoticePoller,
)
POLLERS: Final = tuple(source.source for source in SOURCES)


class AccountPollers:
    """The five pollers of one enterprise account (see the module docstring), each built with
    the arguments given here (:class:`UucallPoller`'s)."""

    def __init__(self, *args: Any, **options: Any) -> None:
        self.pollers: dict[str, UucallPoller] = {
            source.source: source(*args, **options) for source in SOURCES
        }
        #: The pollers to run (an interval of 0 turns a source off).
        self.enabled = [name for name, poller in self.pollers.items() if poller.enabled]

    async def poll_once(self, name: str) -> int:
        """One poll of ``name`` now, outside ``run`` (tests, a re-read): the events published."""
        return await self.pollers[name].poll_once()


def _id_order(ident: str) -> tuple[int, int | str]:
    return (0, int(ident)) if ident.isdigit() else (1, ident)
