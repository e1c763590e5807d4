"""The Meiqia client against the simulator (real sockets): Bearer token, error bodies mapped to
result codes, 429 with Retry-After."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from gateway.connectors.http_answers import retry_after_s
from gateway.connectors.meiqia.client import (
    MeiqiaAuthRejected,
    MeiqiaClient,
    MeiqiaRateLimited,
    error_of,
)
from gateway.schema.commands import CommandFailed, ErrorCode
from gateway.sim.meiqia.server import MeiqiaSimulator
from tests.meiqia.helpers import pbx_for


async def test_the_token_is_sent_as_bearer(client: MeiqiaClient, msim: MeiqiaSimulator) -> None:
    rows = await client.get("sips")
    assert [r["sip"] for r in rows] == ["8001", "8002", "8003", "8004", "8005", "8006"]
    assert msim.requests["sips"] == 1 and client.refused is None


async def test_a_refused_token_is_forbidden_and_remembered(
    client: MeiqiaClient, msim: MeiqiaSimulator
) -> None:
    old = msim.token
    msim.revoke_token()
    with pytest.raises(MeiqiaAuthRejected) as info:
        await client.get("sips")
    assert info.value.code is ErrorCode.FORBIDDEN and info.value.vendor_code == "Unauthenticated"
    assert "token已失效" in info.value.message and old not in info.value.message
    assert client.refused == "401 Unauthenticated: token已失效"


async def test_an_unregistered_seat_is_failed_with_the_vendor_message(
    client: MeiqiaClient, msim: MeiqiaSimulator
) -> None:
    """The document's own example: ``Unauthenticated`` / ``坐席未注册`` (HTTP 401 in the
    simulator) is the agent's phone, not the token."""
    with pytest.raises(CommandFailed) as info:
        await client.post("callout", {"agent_id": 5, "callee": "13800000000"})
    assert not isinstance(info.value, MeiqiaAuthRejected)
    assert (info.value.code, info.value.message, info.value.vendor_code) == (
        ErrorCode.FAILED,
        "坐席未注册",
        "Unauthenticated",
    )
    assert client.refused is None


@pytest.mark.parametrize(
    ("path", "body", "code", "vendor_code"),
    [
        ("callout", {"agent_id": 99, "callee": "138"}, ErrorCode.NOT_FOUND, "NotFound"),
        ("callout", {"callee": "138"}, ErrorCode.INVALID, "InvalidArgument"),
        (
            "callout",
            {"agent_id": 1, "callee": "1", "user_data": "x" * 101},
            ErrorCode.INVALID,
            "InvalidArgument",
        ),
        ("records", {"start_time": "yesterday"}, ErrorCode.INVALID, "InvalidArgument"),
        ("no_such_endpoint", {}, ErrorCode.NOT_FOUND, "NotFound"),
    ],
)
async def test_errors_map_to_result_codes(
    client: MeiqiaClient, path: str, body: dict[str, Any], code: ErrorCode, vendor_code: str
) -> None:
    with pytest.raises(CommandFailed) as info:
        await client.post(path, body)
    assert (info.value.code, info.value.vendor_code) == (code, vendor_code)
    assert info.value.retryable is False


async def test_429_carries_retry_after_and_is_waited_out(
    client: MeiqiaClient, msim: MeiqiaSimulator
) -> None:
    msim.rate_limit(1, retry_after_s=1)
    with pytest.raises(MeiqiaRateLimited) as info:
        await client.get("sips")
    assert info.value.retry_after_s == 1.0 and info.value.retryable
    assert (
        info.value.code is ErrorCode.UNAVAILABLE and info.value.vendor_code == "ResourceExhausted"
    )
    msim.rate_limit(1, retry_after_s=1)
    started = time.monotonic()
    rows = await client.request("GET", "sips", retries=1)
    assert len(rows) == 6
    assert time.monotonic() - started >= 1.0  # Retry-After honoured (plus jitter)
    statuses = [status for _t, path, status in msim.log if path == "sips"]
    assert statuses == [429, 429, 200]


async def test_a_429_is_not_waited_past_the_deadline(
    client: MeiqiaClient, msim: MeiqiaSimulator
) -> None:
    msim.rate_limit(1, retry_after_s=30)
    with pytest.raises(MeiqiaRateLimited):
        await client.request("GET", "sips", retries=3, deadline=time.monotonic() + 5)
    assert msim.requests["sips"] == 1


def test_the_wait_has_jitter_and_a_cap(client: MeiqiaClient) -> None:
    exc = MeiqiaRateLimited("x", 2.0, "429")
    waits = {client.wait_for(exc) for _ in range(50)}
    assert all(2.0 <= w <= 2.0 * 1.2 for w in waits) and len(waits) > 1
    assert client.wait_for(MeiqiaRateLimited("x", 10_000.0, "429")) <= 300 * 1.2
    assert 1.0 <= client.wait_for(MeiqiaRateLimited("x", None, "429"), fallback_s=1.0) <= 1.2


@pytest.mark.parametrize(
    ("status", "body", "write", "code", "retryable"),
    [
        (403, {"error": {"code": "PermissionDenied", "message": "no"}}, False, "forbidden", False),
        (422, {"error": {"message": "bad"}}, True, "invalid", False),
        (409, {"error": {"code": "AlreadyExists", "message": "dup"}}, True, "conflict", False),
        (500, {"error": {"code": "Internal", "message": "oops"}}, False, "unavailable", True),
        (500, {"error": {"code": "Internal", "message": "oops"}}, True, "failed", False),
        (502, {}, True, "failed", False),  # a proxy may have passed the dial on: never twice
        (502, {}, False, "unavailable", True),
        (503, {}, True, "unavailable", True),
        (418, {}, False, "failed", False),
    ],
)
async def test_status_mapping(
    http: aiohttp.ClientSession,
    msim: MeiqiaSimulator,
    status: int,
    body: dict[str, Any],
    write: bool,
    code: str,
    retryable: bool,
) -> None:
    client = MeiqiaClient(http, pbx_for(msim, "map"))
    failure = client._failure("callout", status, body, None, write=write)
    assert (failure.code.value, failure.retryable) == (code, retryable)
    assert not isinstance(failure, MeiqiaAuthRejected)


def test_a_503_with_retry_after_is_a_pause() -> None:
    settings = pbx_for(MeiqiaSimulator(), "x", base_url="http://127.0.0.1:9")
    client = MeiqiaClient(None, settings)  # type: ignore[arg-type]
    failure = client._failure("records", 503, {}, 7.0, write=False)
    assert isinstance(failure, MeiqiaRateLimited) and failure.retry_after_s == 7.0
    assert isinstance(client._failure("records", 500, {}, 3.0, write=False), MeiqiaRateLimited)
    written = client._failure("callout", 500, {}, 3.0, write=True)  # may have been done
    assert not isinstance(written, MeiqiaRateLimited) and written.code is ErrorCode.FAILED


def test_helpers() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412470.0) == 10.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None
    assert error_of({"error": {"code": "Unauthenticated", "message": "坐席未注册"}}) == (
        "Unauthenticated",
        "坐席未注册",
    )
    assert error_of({"error": "plain"}) == (None, "plain")
    assert error_of([1]) == (None, None)


async def test_an_unreachable_host_is_unavailable(http: aiohttp.ClientSession) -> None:
    sim = MeiqiaSimulator()
    client = MeiqiaClient(http, pbx_for(sim, "x", base_url="http://127.0.0.1:9"))
    with pytest.raises(CommandFailed) as info:
        await client.post("callout", {"agent_id": 1, "callee": "1"})
    assert info.value.code is ErrorCode.UNAVAILABLE and info.value.retryable


async def test_a_record_the_list_moved_onto_the_next_page_is_read_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Newest first: a call that ends while the pages are read pushes a record onto the next
    page. It is kept once (by ``call_uuid``), and ``total`` counts records, not rows read."""
    settings = pbx_for(MeiqiaSimulator(), "x", base_url="http://127.0.0.1:9")
    client = MeiqiaClient(None, settings)  # type: ignore[arg-type]
    pages = {1: ["a", "b"], 2: ["b", "c"], 3: []}
    asked: list[dict[str, Any]] = []

    async def post(path: str, body: dict[str, Any], *, write: bool = True) -> Any:
        asked.append(body)
        rows = [{"call_uuid": u} for u in pages[body["page_index"]]]
        return {"data": rows, "total": 3}

    monkeypatch.setattr(client, "post", post)
    rows, total = await client.list_all("records", {"x": 1}, page_size=2, max_pages=10)
    assert [r["call_uuid"] for r in rows] == ["a", "b", "c"] and total == 3
    assert asked == [{"x": 1, "page_index": p, "page_size": 2} for p in (1, 2)]
