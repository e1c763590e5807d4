"""The PBX's own UTC offset, read from its calls (pure: no I/O, no clock).

A live call id is ``<Unix time of the call's start>.<sequence>`` (manual line 17503 vs 17507:
call id ``1651057476.362``, ``time_start`` ``2022-04-27 19:04:36`` on a +08:00 PBX), and the
record of the leg that began the call shows that start as the PBX's local wall clock. Their
difference is the PBX's real offset from UTC whatever zone the gateway was told, to the second,
and a whole number of quarter hours (every offset in use is: -09:30, +05:45, +12:45 ...).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

#: Offsets a PBX can have (UTC-12:00 to UTC+14:00), in quarter hours.
QUARTER: Final = timedelta(minutes=15)
EARLIEST: Final = timedelta(hours=-12)
LATEST: Final = timedelta(hours=14)
#: How far a leg's start text may be from its call id's second (the two are written apart).
SLACK: Final = timedelta(seconds=2)
#: Agreeing samples before an offset counts as the PBX's.
SAMPLES: Final = 3
#: ``memory`` key of the offset the link confirmed (``timedelta``), read by the normalizer.
MEMORY_KEY: Final = "yeastar:pbx_utc_offset"

_UNIX_CALL_ID = re.compile(r"^(\d{9,10})\.\d+$")


def call_started(call_id: str | None) -> datetime | None:
    """The call's start (aware UTC) its live call id carries, or None."""
    match = _UNIX_CALL_ID.match(call_id) if call_id else None
    if match is None:
        return None
    return datetime.fromtimestamp(int(match.group(1)), UTC)


def wall_offset(wall: datetime, call_start: datetime) -> timedelta:
    """The PBX-local wall clock (naive) minus the call id's instant (as naive UTC)."""
    return wall.replace(tzinfo=None) - call_start.astimezone(UTC).replace(tzinfo=None)


def as_offset(seen: timedelta) -> timedelta | None:
    """``seen`` as a UTC offset a PBX can have (a whole quarter hour, to :data:`SLACK`), or
    None: then the wall clock is not the call's start in any zone (a later leg)."""
    quarters = round(seen / QUARTER)
    offset = quarters * QUARTER
    if abs(seen - offset) > SLACK or not EARLIEST <= offset <= LATEST:
        return None
    return offset


def leg_offset(call_id: str | None, started_at: datetime | None, tz: ZoneInfo) -> timedelta | None:
    """The UTC offset at which this leg's start (read in the configured zone ``tz``) is the
    moment its call began: the PBX's real offset when the leg began the call, else None."""
    call_start = call_started(call_id)
    if call_start is None or started_at is None:
        return None
    return as_offset(wall_offset(started_at.astimezone(tz), call_start))


def format_offset(offset: timedelta) -> str:
    """``+08:00`` / ``-09:30``."""
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{rest:02d}"


@dataclass(frozen=True, slots=True)
class ZoneVerdict:
    """What the PBX's calls say about the configured zone at one moment."""

    pbx_offset: timedelta
    configured_offset: timedelta
    configured_zone: str

    @property
    def mismatch(self) -> bool:
        return self.pbx_offset != self.configured_offset

    def message(self) -> str:
        return (
            f"the PBX's clock runs at UTC{format_offset(self.pbx_offset)} but its configured"
            f" time zone {self.configured_zone} is UTC{format_offset(self.configured_offset)}"
            " there: set pbxs[].timezone to the PBX's zone (or the PBX's own zone in System >"
            " Date and Time)"
        )


class ZoneCheck:
    """Confirms the PBX's offset from the legs that began their calls: :data:`SAMPLES` in a row
    must agree (a later leg that happens to start a quarter hour after its call is one odd
    sample, not a new offset)."""

    def __init__(self, tz: ZoneInfo, samples: int = SAMPLES) -> None:
        self._tz = tz
        self._recent: deque[timedelta] = deque(maxlen=samples)
        self.verdict: ZoneVerdict | None = None

    def observe(
        self, call_id: str | None, started_at: datetime | None
    ) -> ZoneVerdict | None:
        """One CDR leg (its call id, its start read in the configured zone). Returns the new
        verdict when the confirmed offset (or the configured zone's there, at a DST change)
        changes, else None."""
        offset = leg_offset(call_id, started_at, self._tz)
        if offset is None or started_at is None:
            return None
        self._recent.append(offset)
        if len(self._recent) < (self._recent.maxlen or 1) or len(set(self._recent)) != 1:
            return None
        configured = started_at.astimezone(self._tz).utcoffset() or timedelta(0)
        verdict = ZoneVerdict(offset, configured, str(self._tz.key))
        if verdict == self.verdict:
            return None
        self.verdict = verdict
        return verdict
