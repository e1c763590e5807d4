"""The Yeastar normalizer's shortcuts read times exactly as ``datetime.strptime`` does.

Why: CDR times are read by trying only the display formats whose *shape* fits the text, and
``uid`` / recording stamps by slicing; both must accept and reject exactly what ``strptime``
would (tests/contract/test_output_pinned.py pins the events themselves).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.connectors.yeastar.normalize.times import (
    _FORMATS_BY_SHAPE,
    _LOCAL_TIME_FORMATS,
    _local_stamp,
    _time_shape,
)

_PIECES = (
    "2022",
    "0427",
    "12",
    "1",
    "04",
    "31",
    "7",
    "00",
    "59",
    "61",
    "٢٠٢٢",  # Arabic-Indic digits: strptime's \d reads them too
    "-",
    "/",
    ":",
    " ",
    "  ",
    "T",
    "t",
    "AM",
    "pm",
    " PM",
    "x",
    ".",
)


def _strptime_reads(text: str, fmt: str) -> bool:
    try:
        datetime.strptime(text, fmt)
    except ValueError:
        return False
    return True


def _texts() -> list[str]:
    rng = random.Random(13814)
    texts = []
    start = datetime(1999, 1, 1)
    for _ in range(3000):  # what the formats write, and near misses of it
        at = start + timedelta(seconds=rng.randrange(40 * 365 * 86400))
        text = at.strftime(rng.choice(_LOCAL_TIME_FORMATS))
        texts.append(text)
        i = rng.randrange(len(text))
        texts.append(text[:i] + rng.choice(_PIECES) + text[i + 1 :])
        texts.append(text.replace(" ", rng.choice((" ", "T", "t", "  "))).lower())
    for _ in range(3000):  # anything built of the pieces
        texts.append("".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 12))))
    texts += ["2022-04- 7 10:00:00", "04/ 7/2022 10:00 am", "2022-04-27t19:04:36"]
    return [" ".join(t.split()) for t in texts if t.strip()]


def test_a_text_is_tried_in_every_format_strptime_reads_it_in() -> None:
    read_somehow = 0
    for text in _texts():
        tried = _FORMATS_BY_SHAPE.get(_time_shape(text), ())
        for fmt in _LOCAL_TIME_FORMATS:
            if _strptime_reads(text, fmt):
                read_somehow += 1
                assert fmt in tried, (text, fmt)
    assert read_somehow > 3000


def _stamps() -> list[str]:
    rng = random.Random(13728)
    stamps = ["20220614111928", "20220230000000", "00000101000000", "٢٠٢٢٠٦١٤١١١٩٢٨"]
    stamps += ["٢٠٢٢0614111928", "2022061٤111928", "20220614111٩28", "202206141119٢٨"]
    for _ in range(5000):
        year, *rest = (
            rng.randint(0, 9999),
            rng.choice((rng.randint(0, 99), rng.randint(1, 12))),
            rng.choice((rng.randint(0, 99), rng.randint(1, 31))),
            rng.choice((rng.randint(0, 99), rng.randint(0, 23))),
            rng.choice((rng.randint(0, 99), rng.randint(0, 59))),
            rng.choice((rng.randint(0, 99), rng.randint(0, 61))),
        )
        stamps.append(f"{year:04d}" + "".join(f"{n:02d}" for n in rest))
    return stamps


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai"])
def test_a_stamp_is_read_as_strptime_reads_it(zone: str) -> None:
    tz = ZoneInfo(zone)
    for stamp in _stamps():
        try:
            want = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=tz).astimezone(UTC)
        except (ValueError, OverflowError):
            want = None
        assert _local_stamp(f"rec/{stamp}-1.wav", tz) == want, stamp
