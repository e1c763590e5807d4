"""When a CDR started: its start is PBX-local text in a display format the record does not
name, so it is read against what else in the record says when the call began."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from gateway.connectors.yeastar import zonecheck
from gateway.connectors.yeastar.normalize.envelope import (
    _Invalid,
)
from gateway.schema.events import (
    NormalizeContext,
)

#: Date orders and clocks the PBX's "系统 > 日期和时间 > 显示格式" setting can produce (manual
#: line 13814, cdr/search ``start_time``: 月/日/年 or 年/月/日, 24-hour or 12-hour AM/PM).
_DATE_ORDERS: Final = ("%Y-%m-%d", "%Y/%m/%d", "%m/%d/%Y", "%d/%m/%Y", "%m-%d-%Y", "%d-%m-%Y")
_CLOCKS: Final = ("%H:%M:%S", "%I:%M:%S %p", "%H:%M", "%I:%M %p")
_LOCAL_TIME_FORMATS: Final = (
    *(f"{date} {clock}" for date in _DATE_ORDERS for clock in _CLOCKS),
    "%Y-%m-%dT%H:%M:%S",
)


def _time_shape(text: str) -> tuple[object, ...]:
    """What of a time text no directive of :data:`_LOCAL_TIME_FORMATS` can match or change:
    how many ``-`` ``/`` ``:`` it has (%Y %m %d %H %I %M %S read digits or a space, %p the C
    locale's AM/PM: the gateway never sets LC_TIME), whether it starts with a 4-digit year,
    whether it ends in a digit (not AM/PM) and whether it has the ISO format's ``T`` (which
    strptime, like every literal, reads case-insensitively)."""
    return (
        text.count("-"),
        text.count("/"),
        text.count(":"),
        text[:4].isdecimal(),
        text[-1:].isdecimal(),
        "T" in text or "t" in text,
    )


#: shape -> the formats of :data:`_LOCAL_TIME_FORMATS` that can read a text of that shape (the
#: shape of what each writes), in their order. Why: ``strptime`` keeps only five compiled
#: formats, so trying all 25 on every record compiled each again every time (most of a CDR's
#: cost); a format of another shape would fail anyway.
_FORMATS_BY_SHAPE: Final[dict[tuple[object, ...], tuple[str, ...]]] = {}
for _fmt in _LOCAL_TIME_FORMATS:
    _shape = _time_shape(datetime(2022, 12, 28, 13, 45, 56).strftime(_fmt))
    _FORMATS_BY_SHAPE[_shape] = (*_FORMATS_BY_SHAPE.get(_shape, ()), _fmt)
del _fmt, _shape


#: ``uid`` and recording file names start with the PBX-local ``YYYYMMDDHHMMSS`` (manual line
#: 13728: uid ``20220614111928CC54A`` for ``time`` 06/14/2022 11:19:28; line 13735: the file of
#: that call ``20220614111933-1655176768.0-...``, written from the answer on).
_LOCAL_STAMP = re.compile(r"^(\d{14})")
#: A live call id is ``<unix start of the call>.<sequence>`` (manual line 17503 vs 17507).
_EXACT_SLACK: Final = timedelta(seconds=2)
_CALL_SLACK: Final = timedelta(seconds=60)
_LONGEST_CALL: Final = timedelta(days=1)

_PATH_SEPARATORS = re.compile(r"[/\\]")


@dataclass(frozen=True, slots=True)
class _StartEvidence:
    """What else says when a CDR started: the ``uid``'s stamp (exact), a window from the
    recording (started within the call), and the call id (a leg starts at or after its call,
    within a day). The call id is UTC where the rest is PBX-local, so it is compared with the
    start's wall clock at any offset the PBX can have (the one its calls showed, once known):
    a wrong configured zone must not change which reading a record admits."""

    exact: datetime | None = None
    low: datetime | None = None
    high: datetime | None = None
    call_start: datetime | None = None
    tz: ZoneInfo | None = None
    pbx_offset: timedelta | None = None

    @property
    def any(self) -> bool:
        return (
            self.exact is not None
            or self.low is not None
            or self.high is not None
            or self.call_start is not None
        )

    def admits(self, start: datetime) -> bool:
        if self.exact is not None and abs(start - self.exact) > _EXACT_SLACK:
            return False
        if self.low is not None and start < self.low:
            return False
        if self.high is not None and start > self.high:
            return False
        if self.call_start is None or self.tz is None:
            return True
        seen = zonecheck.wall_offset(start.astimezone(self.tz), self.call_start)
        earliest, latest = (
            (self.pbx_offset, self.pbx_offset)
            if self.pbx_offset is not None
            else (zonecheck.EARLIEST, zonecheck.LATEST)
        )
        return earliest - _CALL_SLACK <= seen <= latest + _LONGEST_CALL


def _local_stamp(value: str | None, tz: ZoneInfo) -> datetime | None:
    """``20220614111928...`` (PBX-local) -> aware UTC, or None.

    Read by slicing where ``strptime(stamp, "%Y%m%d%H%M%S")`` (a tenth as fast) would read the
    same: on 14 ASCII digits it reads each field as two digits (a shorter reading never spans
    them all) and datetime() rejects what it would; other digits it reads in some places only.
    """
    match = _LOCAL_STAMP.match(_PATH_SEPARATORS.split(value)[-1]) if value else None
    if match is None:
        return None
    stamp = match.group(1)
    try:
        if not stamp.isascii():
            local = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=tz)
            return local.astimezone(UTC)
        local = datetime(
            int(stamp[:4]),
            int(stamp[4:6]),
            int(stamp[6:8]),
            int(stamp[8:10]),
            int(stamp[10:12]),
            int(stamp[12:14]),
            tzinfo=tz,
        )
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _start_evidence(
    ctx: NormalizeContext,
    *,
    uid: str | None = None,
    call_id: str | None = None,
    recording: str | None = None,
    duration_s: int | None = None,
) -> _StartEvidence:
    tz = ctx.tz
    recorded = _local_stamp(recording, tz)
    low = high = None
    if recorded is not None:
        try:
            lasted = _LONGEST_CALL
            if duration_s and duration_s > 0:
                lasted = timedelta(seconds=duration_s)
            low = recorded - lasted - _CALL_SLACK
        except OverflowError:  # a duration of millennia bounds nothing: no lower bound
            low = None
        high = recorded + _CALL_SLACK
    return _StartEvidence(
        exact=_local_stamp(uid, tz),
        low=low,
        high=high,
        call_start=zonecheck.call_started(call_id),
        tz=tz,
        pbx_offset=_pbx_offset(ctx),
    )


def _pbx_offset(ctx: NormalizeContext) -> timedelta | None:
    """The PBX's UTC offset its link confirmed from earlier calls (``zonecheck``), if any."""
    found = ctx.memory.get(zonecheck.MEMORY_KEY)
    return found if isinstance(found, timedelta) else None


def _readings(text: str, tz: ZoneInfo, display_format: str | None) -> dict[datetime, str]:
    """Every instant ``text`` can mean in a display format the PBX offers (the configured
    one first), with the first format that gave it."""
    found: dict[datetime, str] = {}
    formats = _FORMATS_BY_SHAPE.get(_time_shape(text), ())
    if display_format:
        formats = (display_format, *formats)
    for fmt in formats:
        try:
            instant = datetime.strptime(text, fmt).replace(tzinfo=tz).astimezone(UTC)
        except (ValueError, OverflowError):
            continue
        found.setdefault(instant, fmt)
    return found


def _start_time(
    value: Any, tz: ZoneInfo, display_format: str | None, evidence: _StartEvidence
) -> datetime | None:
    """PBX-local wall-clock text in the display format (no zone) -> aware UTC.

    Never a silent guess: a text only one format reads is that instant; otherwise the
    configured display format decides unless the ``uid`` / call id / recording contradict it,
    and the reading they admit wins; with no format configured, they pick the one reading they
    admit, or give the start themselves (the ``uid``). A text that stays ambiguous raises
    :class:`_Invalid` with the readings; a missing or unreadable one is None (or the ``uid``'s).
    """
    text = " ".join(value.split()) if isinstance(value, str) else ""
    readings = _readings(text, tz, display_format) if text else {}
    if len(readings) == 1:
        return next(iter(readings))
    if not readings:
        return evidence.exact
    configured = next((at for at, fmt in readings.items() if fmt == display_format), None)
    fits = [at for at in readings if evidence.admits(at)] if evidence.any else []
    if configured is not None and (configured in fits or not fits):
        return configured
    if len(fits) == 1:
        return fits[0]
    if evidence.exact is not None:
        return evidence.exact
    local = ", ".join(at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") for at in readings)
    raise _Invalid(
        f"time {text!r} is ambiguous (could be {local}) and nothing in the record decides:"
        " set the PBX's display format (pbxs[].cdr_time_format)"
    )
