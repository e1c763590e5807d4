"""What a vendor's REST answer means for a command, the same for every vendor.

Vendors differ in their error bodies (read by their own clients); the HTTP status underneath
means the same everywhere, and so must the result code a consumer sees and whether the gateway
may send the command again: a write is sent again only where the server says it did not run it.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from datetime import UTC
from typing import Final

from gateway.schema.commands import CommandFailed, ErrorCode

#: Statuses whose request the server did not run (408 it never read it whole; 429 and 503 it
#: refused it). 502 and 504 come from a proxy that may have passed the request on: a write
#: answered so may have happened.
NOT_RUN: Final = frozenset({408, 429, 503})


def status_failure(
    status: int,
    message: str,
    *,
    write: bool,
    vendor_code: str | int | None = None,
    otherwise: ErrorCode = ErrorCode.FAILED,
) -> CommandFailed:
    """An HTTP error status -> the neutral failure (``vendor_code`` defaults to the status).

    400/422 invalid, 403 forbidden, 404/410 not_found, 405/501 unsupported, 409 conflict;
    :data:`NOT_RUN` unavailable and retryable; other 5xx retryable for a read, ``failed``
    ("may have been made") for a write; anything else ``otherwise``."""
    code = status if vendor_code is None else vendor_code
    if status in (400, 422):
        return CommandFailed(ErrorCode.INVALID, message, vendor_code=code)
    if status == 403:
        return CommandFailed(ErrorCode.FORBIDDEN, message, vendor_code=code)
    if status in (404, 410):
        return CommandFailed(ErrorCode.NOT_FOUND, message, vendor_code=code)
    if status in (405, 501):
        return CommandFailed(ErrorCode.UNSUPPORTED, message, vendor_code=code)
    if status == 409:
        return CommandFailed(ErrorCode.CONFLICT, message, vendor_code=code)
    if status in NOT_RUN or (status >= 500 and not write):
        return CommandFailed(ErrorCode.UNAVAILABLE, message, vendor_code=code, retryable=True)
    if status >= 500:
        return CommandFailed(
            ErrorCode.FAILED, f"{message}; the change may have been made", vendor_code=code
        )
    return CommandFailed(otherwise, message, vendor_code=code)


def retry_after_s(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` (RFC 9110 10.2.3): delay-seconds (decimals tolerated) or an HTTP date,
    as seconds from ``now``; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT ("-0000" parses without a zone)
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())
