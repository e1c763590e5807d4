"""The durable outbox: every event is spooled in SQLite before the publisher takes it, and leaves
the spool only after RabbitMQ confirmed it.

One file per instance (``<state_dir>/outbox.sqlite3``, WAL, ``synchronous=NORMAL``): an appended
event survives a crash or kill of the process (the commit is in the WAL when :meth:`Outbox.append`
returns); a power loss may lose the last commits, as for the rest of the instance's state. Events
left in the file are published first by the next start, in ``seq`` order. A publish confirmed but
not yet removed when the process dies is published again with the same ``id`` (consumers
de-duplicate on ``id``): never lost, duplicated only as an identical copy. The WAL is copied back
into the file by a thread of its own (:class:`~gateway.runtime.sqlite.Checkpointer`), so a
checkpoint's fsync does not hold up the event loop; only if that thread falls 64 MB behind (tens of
thousands of events a second) does the writer's commit checkpoint itself.

``seq`` orders the spool: it only grows while the process runs and continues after the highest
``seq`` left in the file when it is reopened (an empty file starts again at 1).

Bound policy (settings ``outbox.max_events``, ``outbox.max_age_s``, ``outbox.warn_at``), applied
only while RabbitMQ does not take events as fast as the PBXs produce them:

* ``gateway_outbox_events`` shows the spool size and ``gateway_outbox_oldest_age_seconds`` how
  long its oldest event has waited (read at scrape time); one warning (``outbox_filling``) is
  logged each time it rises past ``warn_at`` x ``max_events`` (re-armed once it fell back below
  90% of that).
* When an append takes the spool past ``max_events``, it is shrunk to ``max_events`` less 5%
  headroom (so shedding happens in rounds, not per event), in this order, stopping as soon as the
  spool is small enough:

  1. coalesce agent states (``agent.call_state``, ``agent.presence``, ``agent.registration``,
     ``agent.queue_status``): only the newest event per tenant + type + subject is kept;
  2. drop the oldest non-critical events (anything but ``call.*``, ``cdr.*``, ``gateway.*``,
     ``command.*``);
  3. drop the oldest ``call.*`` events.

  ``cdr.*``, ``gateway.*`` and ``command.*`` are never dropped; if the spool holds nothing else it
  grows past ``max_events`` (logged as an error, then another round only after another 5%)
  rather than lose a CDR.
* Events spooled longer than ``max_age_s`` are dropped by the same rule: every expired event is
  dropped except ``cdr.*``, ``gateway.*`` and ``command.*``.
* Whenever a round dropped anything, ONE ``gateway.gap`` event per affected tenant is appended
  (``data.from``/``data.to`` = the time range of that tenant's dropped events, ``recovered`` = 0),
  and ``gateway_outbox_dropped_total{tenant,type,reason}`` counts the drops
  (reason ``coalesced``, ``dropped`` or ``expired``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.logging import get_logger
from gateway.runtime.metrics import OUTBOX_DROPPED, OUTBOX_EVENTS, OUTBOX_OLDEST_AGE
from gateway.runtime.sqlite import Checkpointer, open_sqlite
from gateway.schema.events import CloudEvent, NormalizeContext, gap_event

#: The spool's bounds, as the docs show them (scripts/gen-docs: "Delivery guarantees").
BOUND_POLICY = """\
Every event is written to the outbox (`<state_dir>/outbox.sqlite3`, SQLite WAL) before the gateway
relies on it, and leaves it only once RabbitMQ has confirmed it; events still spooled at
shutdown or after a crash are published first on the next start (same `id`s, so a redelivered copy
is identical). While RabbitMQ is away the spool grows; `gateway_outbox_events` shows its size,
`gateway_outbox_oldest_age_seconds` how long its oldest event has waited, and a warning is logged
once it passes `outbox.warn_at` of `outbox.max_events`. At `outbox.max_events` the gateway sheds 5%
of the bound in this order: (1) agent states (`agent.call_state`, `agent.presence`,
`agent.registration`, `agent.queue_status`) are coalesced to the newest per tenant, type and
extension; (2) the oldest non-critical events (all but `call.*`, `cdr.*`, `gateway.*`, `command.*`)
are dropped; (3) only then the oldest `call.*`. Events older than `outbox.max_age_s` are dropped by
the same rule. `cdr.*`, `gateway.*` and `command.*` are never dropped. Whenever anything was
dropped, one `gateway.gap` event per tenant (`from`/`to` = the dropped events' time range,
`recovered: 0`) tells consumers, and `gateway_outbox_dropped_total{tenant,type,reason}` counts the
drops."""

AGENT_STATES = ("agent.call_state", "agent.presence", "agent.registration", "agent.queue_status")
PROTECTED_PREFIXES = ("cdr.", "gateway.", "command.")
_HEADROOM = 0.05  # share of max_events freed by one shedding round (at least one event)
_REARM = 0.9  # the warning re-arms below this share of the warning level
_FRESH_MAX = 4096  # rows just committed kept for the publisher's next read

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY,  -- assigned by Outbox: max(seq) + 1, then counting up
    id         TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    tenant     TEXT    NOT NULL,
    vendor     TEXT    NOT NULL,
    subject    TEXT,
    time       REAL    NOT NULL,  -- the event's own time (unix s)
    created_at REAL    NOT NULL,  -- when it was spooled (unix s)
    body       BLOB    NOT NULL   -- the structured-mode CloudEvent (JSON)
)
"""

_INSERT = (
    "INSERT INTO outbox (seq, id, type, tenant, vendor, subject, time, created_at, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# SQL fragments selecting the classes of the policy (``type`` is never NULL).
_AGENT_SQL = "type IN ({})".format(", ".join(f"'{t}'" for t in AGENT_STATES))
_PROTECTED_SQL = "(" + " OR ".join(f"type LIKE '{p}%'" for p in PROTECTED_PREFIXES) + ")"
_CALL_SQL = "type LIKE 'call.%'"
_NON_CRITICAL_SQL = f"NOT {_PROTECTED_SQL} AND NOT {_CALL_SQL}"


#: The spool the process-wide gauges read (the newest one opened).
_gauges_owner: Outbox | None = None


def is_protected(type_: str) -> bool:
    """Never dropped by the bound policy."""
    return type_.startswith(PROTECTED_PREFIXES)


@dataclass
class ShedReport:
    """What one enforcement round did."""

    coalesced: int = 0
    dropped: int = 0  # non-critical
    dropped_calls: int = 0
    expired: int = 0
    gaps: list[CloudEvent] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.coalesced + self.dropped + self.dropped_calls + self.expired


class Outbox:
    """Append-only SQLite spool of CloudEvents; synchronous, used from one event loop (its
    checkpoints run in a thread of their own)."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_events: int = 200_000,
        max_age_s: float = 7 * 86400,
        warn_at: float = 0.8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_events < 1 or max_age_s <= 0 or not 0 < warn_at <= 1:
            raise ValueError("max_events >= 1, max_age_s > 0 and 0 < warn_at <= 1 required")
        self.path = str(path)
        self.max_events = max_events
        self.max_age_s = max_age_s
        self._warn_level = max(1, int(max_events * warn_at))
        self.headroom = max(1, int(max_events * _HEADROOM))  # freed by one shedding round
        self._shed_at = max_events  # raised while only protected events fill the spool
        self._clock = clock
        self._log = get_logger("bus.outbox")
        # Checkpoints run in a thread of their own (Checkpointer); the writer checkpoints only if
        # that falls 64 MB behind, and the WAL file is trimmed back to 16 MB after.
        self._db = open_sqlite(
            self.path, "wal_autocheckpoint=16000", f"journal_size_limit={16 * 2**20}"
        )
        self._db.execute(_SCHEMA)
        self._count, last = self._db.execute("SELECT COUNT(*), MAX(seq) FROM outbox").fetchone()
        self._next_seq: int = (last or 0) + 1  # AUTOINCREMENT would halve the append rate
        self._staged: list[tuple[object, ...]] = []  # rows of stage(), written by commit()
        # (seq, body) of the latest commits, in seq order without holes, not yet read by
        # pending_bodies(): the publisher's next read, without a query (see pending_bodies)
        self._fresh: list[tuple[int, bytes]] = []
        self._warned = False
        self._next_age_check = 0.0
        self.last_shed: ShedReport | None = None
        # read at scrape time: nothing to update per event
        global _gauges_owner
        _gauges_owner = self
        OUTBOX_EVENTS.set_function(self.__len__)
        OUTBOX_OLDEST_AGE.set_function(self.oldest_age_s)
        if self._count:
            self._log.info("outbox_resumed", events=self._count, path=self.path)
        self._check_level()
        self._checkpointer = Checkpointer(self.path) if self.path != ":memory:" else None

    # --- the hot path ---------------------------------------------------------------------------

    def append(self, event: CloudEvent) -> int:
        """Spool one event (committed, with everything staged before it, when this returns);
        its ``seq``. May shed (see module). If the write fails, this raises and the event stays
        staged, written by the next commit that works."""
        seq = self.stage(event)
        self.commit()
        return seq

    def stage(self, event: CloudEvent) -> int:
        """Give the event its ``seq`` now, write it with the next :meth:`commit` (group commit:
        one transaction for every event staged in between). Nothing reads a staged event, the
        publisher included, before it is committed."""
        seq = self._next_seq
        self._staged.append(self._row(seq, event))
        self._next_seq = seq + 1
        self._count += 1
        return seq

    def commit(self) -> None:
        """Write everything staged in one transaction, then apply the bounds. A failed write is
        rolled back and raised; the staged events stay staged for the next call."""
        if not self._staged:
            return
        try:
            self._db.execute("BEGIN")
            self._db.executemany(_INSERT, self._staged)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._remember(self._staged)
        self._staged = []
        self._check_level()
        if self._count > self._shed_at:
            self._shed_to_bound()
        now = self._clock()
        if now >= self._next_age_check:  # the age bound, checked at most once a second
            self._next_age_check = now + 1.0
            self.expire(now)

    def _remember(self, rows: list[tuple[Any, ...]]) -> None:
        """Keep the rows just committed for the next :meth:`pending_bodies` (bounded: past
        ``_FRESH_MAX`` rows the reader is behind anyway and reads the file)."""
        fresh = self._fresh
        if fresh and fresh[-1][0] + 1 != rows[0][0]:
            fresh.clear()  # not contiguous (a gap event went in directly): start again
        if len(fresh) + len(rows) > _FRESH_MAX:
            fresh.clear()
            return
        fresh.extend([(row[0], row[8]) for row in rows])

    @property
    def staged(self) -> int:
        """Events given a ``seq`` but not yet committed."""
        return len(self._staged)

    def _row(self, seq: int, event: CloudEvent) -> tuple[object, ...]:
        return (
            seq,
            event.id,
            event.type,
            event.tenant,
            event.vendor,
            event.subject,
            event.time.timestamp(),
            self._clock(),
            event.to_json(),
        )

    def _insert(self, event: CloudEvent) -> int:
        """One event written at once, inside the caller's transaction (shedding's gap events),
        with anything staged before it: nothing with a higher ``seq`` is on disk before them."""
        seq = self.stage(event)
        self._db.executemany(_INSERT, self._staged)
        self._staged = []
        self._fresh.clear()
        return seq

    def pending(self, after_seq: int = 0, limit: int = 1000) -> list[tuple[int, CloudEvent]]:
        """Spooled events with ``seq > after_seq``, in ``seq`` order."""
        rows = self._db.execute(
            "SELECT seq, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        ).fetchall()
        return [(seq, CloudEvent.model_validate_json(body)) for seq, body in rows]

    def pending_bodies(self, after_seq: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        """Like :meth:`pending`, but the stored CloudEvent JSON as is (the publisher's hot path:
        no model is built, the body is not serialized again). When the reader keeps up (reads
        on from where it stopped, right after the rows last committed) the rows come from
        memory: the same rows the query would return, since everything after ``after_seq`` in
        the file is exactly what was committed since (nothing is deleted from it before being
        read except by the bound policy, which forgets the remembered rows)."""
        fresh = self._fresh
        if fresh:
            first = fresh[0][0]
            if first <= after_seq:  # read already: forget them
                del fresh[: after_seq + 1 - first]
                first = fresh[0][0] if fresh else 0
            if first == after_seq + 1:
                rows = fresh[:limit]
                del fresh[: len(rows)]  # read: from here on only the file knows them
                return rows
        return self._db.execute(
            "SELECT seq, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        ).fetchall()

    def remove(self, seqs: Iterable[int]) -> int:
        """Forget confirmed events; unknown seqs (already shed) are ignored. How many went."""
        seqs = sorted(seqs)
        fresh = self._fresh
        if seqs and fresh and seqs[0] <= fresh[-1][0] and seqs[-1] >= fresh[0][0]:
            fresh.clear()  # rows read by a query (after a restart) may be among them
        removed = 0
        if seqs and seqs[-1] - seqs[0] == len(seqs) - 1 and len(set(seqs)) == len(seqs):
            # the usual case: confirms come back in order, one range per batch
            removed = self._db.execute(
                "DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (seqs[0], seqs[-1])
            ).rowcount
            seqs = []
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            removed += self._db.execute(
                f"DELETE FROM outbox WHERE seq IN ({marks})", chunk
            ).rowcount
        if removed:
            self._count -= removed
            if self._count <= self.max_events - self.headroom:
                self._shed_at = self.max_events
            self._check_level()
        return removed

    def __len__(self) -> int:
        return self._count

    def oldest_age_s(self) -> float:
        """Seconds the oldest spooled event has waited; 0 when empty."""
        row = self._db.execute("SELECT created_at FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return max(0.0, self._clock() - row[0]) if row else 0.0

    def types(self) -> list[str]:
        """Types of the spooled events in ``seq`` order (for tests and diagnostics)."""
        return [row[0] for row in self._db.execute("SELECT type FROM outbox ORDER BY seq")]

    def close(self) -> None:
        """Commit what is staged, then close the file (raises if the commit fails; the file is
        closed all the same)."""
        global _gauges_owner
        if _gauges_owner is self:  # the gauges read a newer spool if there is one
            _gauges_owner = None
            OUTBOX_OLDEST_AGE.set_function(lambda: 0.0)
            OUTBOX_EVENTS.set_function(lambda: 0.0)
        if self._checkpointer is not None:
            self._checkpointer.stop()
        try:
            self.commit()
        finally:
            self._db.close()

    # --- bounds ---------------------------------------------------------------------------------

    def _check_level(self) -> None:
        if not self._warned and self._count >= self._warn_level:
            self._warned = True
            self._log.warning(
                "outbox_filling", events=self._count, max_events=self.max_events, path=self.path
            )
        elif self._warned and self._count < self._warn_level * _REARM:
            self._warned = False
            self._log.info("outbox_draining", events=self._count, max_events=self.max_events)

    def _shed_to_bound(self) -> ShedReport:
        target = self.max_events - self.headroom
        report = ShedReport()
        dropped: list[tuple[str, str, str, float]] = []  # tenant, vendor, type, time
        with self._db:  # one transaction for the whole round
            self._db.execute("BEGIN IMMEDIATE")
            # 1. agent states: keep the newest per tenant + type + subject
            rows = self._db.execute(
                f"SELECT seq, tenant, vendor, type, time FROM outbox WHERE {_AGENT_SQL}"
                " AND seq NOT IN (SELECT MAX(seq) FROM outbox WHERE "
                f"{_AGENT_SQL} GROUP BY tenant, type, subject)"
            ).fetchall()
            report.coalesced = self._delete(rows, dropped, "coalesced")
            # 2. oldest non-critical, 3. oldest call.*
            for where, attr in ((_NON_CRITICAL_SQL, "dropped"), (_CALL_SQL, "dropped_calls")):
                excess = self._count - target
                if excess <= 0:
                    break
                rows = self._db.execute(
                    f"SELECT seq, tenant, vendor, type, time FROM outbox WHERE {where}"
                    " ORDER BY seq LIMIT ?",
                    (excess,),
                ).fetchall()
                setattr(report, attr, self._delete(rows, dropped, "dropped"))
            report.gaps = self._append_gaps(dropped)
        self._after_shed(report, "outbox_full")
        if self._count > target:
            # Only cdr.*, gateway.* and command.* are left: let the spool grow, and try again
            # only after another headroom's worth, not on every append.
            self._shed_at = self._count + self.headroom
            self._log.error(
                "outbox_over_bound_with_protected_events",
                events=self._count,
                max_events=self.max_events,
            )
        return report

    def expire(self, now: float | None = None) -> ShedReport:
        """Drop events spooled longer than ``max_age_s``, except cdr.*, gateway.*, command.*."""
        now = self._clock() if now is None else now
        report = ShedReport()
        cutoff = now - self.max_age_s
        oldest = self._db.execute("SELECT created_at FROM outbox ORDER BY seq LIMIT 1").fetchone()
        if oldest is None or oldest[0] >= cutoff:
            return report
        dropped: list[tuple[str, str, str, float]] = []
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                "SELECT seq, tenant, vendor, type, time FROM outbox"
                f" WHERE created_at < ? AND NOT {_PROTECTED_SQL}",
                (cutoff,),
            ).fetchall()
            report.expired = self._delete(rows, dropped, "expired")
            report.gaps = self._append_gaps(dropped)
        self._after_shed(report, "outbox_expired")
        return report

    def _delete(
        self, rows: list[tuple[int, str, str, str, float]], dropped: list, reason: str
    ) -> int:
        if not rows:
            return 0
        self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(row[0],) for row in rows])
        self._fresh.clear()  # they may be among the remembered rows
        for _, tenant, vendor, type_, at in rows:
            dropped.append((tenant, vendor, type_, at))
            OUTBOX_DROPPED.labels(tenant, vendor, type_, reason).inc()
        self._count -= len(rows)
        return len(rows)

    def _append_gaps(self, dropped: list[tuple[str, str, str, float]]) -> list[CloudEvent]:
        spans: dict[tuple[str, str], tuple[float, float]] = {}
        for tenant, vendor, _, at in dropped:
            low, high = spans.get((tenant, vendor), (at, at))
            spans[(tenant, vendor)] = (min(low, at), max(high, at))
        gaps: list[CloudEvent] = []
        received_at = datetime.fromtimestamp(self._clock(), UTC)
        for (tenant, vendor), (low, high) in sorted(spans.items()):
            ctx = NormalizeContext(tenant, vendor, ZoneInfo("UTC"), received_at)
            gap = gap_event(
                ctx, datetime.fromtimestamp(low, UTC), datetime.fromtimestamp(high, UTC), 0
            )
            self._insert(gap)
            gaps.append(gap)
        return gaps

    def _after_shed(self, report: ShedReport, what: str) -> None:
        self._check_level()
        if report.total:
            self.last_shed = report
            self._log.warning(
                what,
                coalesced=report.coalesced,
                dropped=report.dropped,
                dropped_calls=report.dropped_calls,
                expired=report.expired,
                gaps=len(report.gaps),
                events=self._count,
            )
