"""The HTTP status of a vendor's REST answer means the same for every vendor."""

from __future__ import annotations

import pytest

from gateway.connectors.http_answers import NOT_RUN, retry_after_s, status_failure
from gateway.schema.commands import ErrorCode


@pytest.mark.parametrize(
    ("status", "write", "code", "retryable"),
    [
        (400, True, ErrorCode.INVALID, False),
        (422, False, ErrorCode.INVALID, False),
        (403, False, ErrorCode.FORBIDDEN, False),
        (404, True, ErrorCode.NOT_FOUND, False),
        (410, False, ErrorCode.NOT_FOUND, False),
        (405, True, ErrorCode.UNSUPPORTED, False),
        (501, False, ErrorCode.UNSUPPORTED, False),
        (409, True, ErrorCode.CONFLICT, False),
        (408, True, ErrorCode.UNAVAILABLE, True),
        (429, True, ErrorCode.UNAVAILABLE, True),
        (503, True, ErrorCode.UNAVAILABLE, True),
        (500, False, ErrorCode.UNAVAILABLE, True),
        (502, False, ErrorCode.UNAVAILABLE, True),
        (500, True, ErrorCode.FAILED, False),
        (502, True, ErrorCode.FAILED, False),
        (504, True, ErrorCode.FAILED, False),
        (418, True, ErrorCode.FAILED, False),
    ],
)
def test_status_failure(status: int, write: bool, code: ErrorCode, retryable: bool) -> None:
    failure = status_failure(status, "x", write=write)
    assert (failure.code, failure.retryable, failure.vendor_code) == (code, retryable, str(status))


def test_a_write_is_resent_only_where_the_server_did_not_run_it() -> None:
    resent = {s for s in range(400, 600) if status_failure(s, "x", write=True).retryable}
    assert resent == set(NOT_RUN)
    assert "may have been made" in status_failure(504, "dial", write=True).message


def test_otherwise_and_vendor_code() -> None:
    failure = status_failure(
        418, "x", write=False, vendor_code="Teapot", otherwise=ErrorCode.INVALID
    )
    assert (failure.code, failure.vendor_code) == (ErrorCode.INVALID, "Teapot")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:28:00 -0000", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after(value: str | None, seconds: float | None) -> None:
    assert retry_after_s(value, now=lambda: 1445412470.0) == seconds
