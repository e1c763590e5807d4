"""Readers for vendor payload fields that tolerate real PBXs' drift from their manuals.

PBXs send numbers as strings, ``" "`` for empty, ``null`` where a manual shows a value, and
unbounded integers: every normalizer reads fields through these, so all vendors agree on what
"missing" means.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

MAX_INT: Final = 2**63 - 1  # beyond this orjson cannot serialize the event


def text(value: Any) -> str | None:
    """Strip blanks; ``" "`` (a PBX's "empty"), booleans and non-scalars -> None."""
    if isinstance(value, str):  # the usual case first: this runs for every field read
        return value.strip() or None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return str(value)


def integer(value: Any) -> int | None:
    """Integers arrive as numbers or numeric strings; anything else (or absurd) -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip()) if "." in value else int(value.strip())
        except (ValueError, OverflowError):
            return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, int) and abs(value) <= MAX_INT:
        return value
    return None


def first(msg: Mapping[str, Any], *keys: str) -> str | None:
    """First non-blank value among field-name variants (``ip_address`` / ``ip_addresses`` ...)."""
    for key in keys:
        found = text(msg.get(key))
        if found is not None:
            return found
    return None


_SEPARATORS: Final = re.compile(r"[\s_\-]+")


def token(value: Any) -> str:
    """Case/separator-insensitive key for vendor enums (``NO ANSWER`` == ``no_answer``)."""
    found = text(value)
    return _token(found) if found else ""


@functools.lru_cache(maxsize=1024)
def _token(found: str) -> str:
    """Remembered: a vendor's enums are a few words, read for every member of every report."""
    return _SEPARATORS.sub("", found).upper()


def canonical(value: Any) -> str:
    """Key-sorted JSON of a vendor object, so the same fact hashes to the same event id."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # e.g. huge ints
        return repr(value)


def unix_time(value: Any) -> datetime | None:
    """Seconds since the epoch (number or numeric string); 0, absurd or missing -> None."""
    seconds = integer(value)
    if not seconds or seconds <= 0:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def safe_text(value: str | bytes) -> str:
    """Text that always serializes: undecodable bytes and lone surrogates are replaced."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if value.isascii():  # nothing to replace (and the check is free: CPython knows it)
        return value
    return value.encode("utf-8", errors="replace").decode("utf-8")
