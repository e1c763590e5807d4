"""CDR store answering ``cdr/list`` and ``cdr/search`` from the calls the simulator played.

Why: the gateway backfills missed 30012 reports from these endpoints, so their records must
describe exactly the simulated calls, in the manual's shape: ``time`` as ``MM/DD/YYYY HH:MM:SS`` in
the PBX time zone plus a Unix ``timestamp``, a ``uid`` that is *not* the call id, and the call id
embedded in ``record_file``. Empty fields are omitted, as in the manual's examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

LIST_TIME_FORMAT = "%m/%d/%Y %H:%M:%S"
SORT_FIELDS = (
    "id",
    "uid",
    "time",
    "duration",
    "ring_duration",
    "talk_duration",
    "disposition",
    "src_trunk",
    "dst_trunk",
    "call_type",
    "did_number",
    "dod_number",
    "src_addr",
)
DISPOSITIONS = ("ANSWERED", "NO ANSWER", "BUSY", "FAILED", "VOICEMAIL")
MAX_PAGE_SIZE = 10000


@dataclass
class CdrRecord:
    """One call-detail record with both the 30012 and the cdr/list view of it."""

    id: int
    call_id: str
    uid: str
    timestamp: int
    caller: str  # number
    caller_display: str  # "Name<2005>" or the number
    callee: str
    callee_display: str
    src_addr: str
    src_trunk: str
    dst_trunk: str
    duration: int
    ring_duration: int
    talk_duration: int
    disposition: str
    call_type: str  # Inbound / Outbound / Internal
    did_number: str
    dod_number: str
    record_file: str
    reason: str
    extensions: tuple[str, ...] = ()

    def to_list_item(self, tz: ZoneInfo) -> dict[str, Any]:
        """The CDR_Details object (表 274), empty/zero fields left out like the examples."""
        item: dict[str, Any] = {
            "id": self.id,
            "time": datetime.fromtimestamp(self.timestamp, tz).strftime(LIST_TIME_FORMAT),
            "call_from": self.caller_display,
            "call_to": self.callee_display,
            "timestamp": self.timestamp,
            "uid": self.uid,
            "src_addr": self.src_addr,
            "src_trunk": self.src_trunk,
            "dst_trunk": self.dst_trunk,
            "duration": self.duration,
            "ring_duration": self.ring_duration,
            "talk_duration": self.talk_duration,
            "disposition": self.disposition,
            "call_type": self.call_type,
            "did_number": self.did_number,
            "dod_number": self.dod_number,
            "record_file": self.record_file,
            "reason": self.reason,
        }
        return {k: v for k, v in item.items() if v not in ("", 0, None) or k == "id"}


@dataclass
class CdrStore:
    """Append-only list of records in call-end order."""

    tz: ZoneInfo
    records: list[CdrRecord] = field(default_factory=list)

    def next_id(self) -> int:
        return len(self.records) + 1

    def add(self, record: CdrRecord) -> None:
        self.records.append(record)

    def parse_time(self, text: str) -> int | None:
        """Parse a filter time in the PBX display format; None when it does not match."""
        try:
            return int(
                datetime.strptime(text.strip(), LIST_TIME_FORMAT)
                .replace(tzinfo=self.tz)
                .timestamp()
            )
        except ValueError:
            return None

    def listing(
        self, *, page: int, page_size: int, sort_by: str, order_by: str
    ) -> tuple[int, list[dict[str, Any]]]:
        """cdr/list: sorted, paged records and the total count."""
        key = "timestamp" if sort_by == "time" else sort_by
        items = sorted(
            self.records, key=lambda r: (_sort_value(r, key), r.id), reverse=order_by == "desc"
        )
        start = (page - 1) * page_size
        return len(items), [r.to_list_item(self.tz) for r in items[start : start + page_size]]

    def search(
        self,
        *,
        start_time: str | None,
        end_time: str | None,
        call_from: str | None,
        call_to: str | None,
        status: str | None,
        fuzzy: bool,
    ) -> list[dict[str, Any]]:
        """cdr/search: a time string not in the display format matches nothing (manual note)."""
        lo = hi = None
        if start_time:
            lo = self.parse_time(start_time)
            if lo is None:
                return []
        if end_time:
            hi = self.parse_time(end_time)
            if hi is None:
                return []
        out = []
        for rec in self.records:
            if lo is not None and rec.timestamp < lo:
                continue
            if hi is not None and rec.timestamp > hi:
                continue
            if status and rec.disposition != status:
                continue
            if call_from and not _number_matches(call_from, rec.caller, fuzzy):
                continue
            if call_to and not _number_matches(call_to, rec.callee, fuzzy):
                continue
            out.append(rec.to_list_item(self.tz))
        return out


def _sort_value(record: CdrRecord, key: str) -> Any:
    value = getattr(record, key)
    return value if isinstance(value, int) else str(value)


def _number_matches(wanted: str, number: str, fuzzy: bool) -> bool:
    return wanted in number if fuzzy else wanted == number
