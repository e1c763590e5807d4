"""The REST client against the simulator: authentication settings, every response code the
document lists (401, 403, 405, 424, 429, 500), list envelopes and pagination."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime

import aiohttp
import pytest

from gateway.connectors.http_answers import retry_after_s
from gateway.connectors.uucall.client import (
    AuthRefused,
    RateLimited,
    UucallClient,
    record,
    rows,
)
from gateway.schema.commands import CommandFailed, ErrorCode
from gateway.sim.uucall.rest import UucallSimulator
from tests.uucall.helpers import make_sim, pbx_for


class FakeTime:
    """A monotonic clock the client's sleeps move forward (so Retry-After costs no time)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


def fake_client(
    sim: UucallSimulator, http: aiohttp.ClientSession, fake: FakeTime, **overrides: object
) -> UucallClient:
    return UucallClient(http, pbx_for(sim, **overrides), clock=fake.clock, sleep=fake.sleep)


# --- authentication --------------------------------------------------------------------------


async def test_header_auth(uu: UucallClient, uusim: UucallSimulator) -> None:
    answer = await uu.get("/account/10001")
    assert answer["balance"] == 26000
    assert uusim.received[-1].status == 200


async def test_basic_and_no_auth(http_session: aiohttp.ClientSession) -> None:
    basic = make_sim(auth="basic", username="fin", password="pw-1")
    none = make_sim(auth="none")
    await basic.start()
    await none.start()
    try:
        assert (await UucallClient(http_session, pbx_for(basic)).get("/account/10001"))[
            "state"
        ] == 1
        assert (await UucallClient(http_session, pbx_for(none)).get("/account/10001"))["state"] == 1
        wrong = UucallClient(http_session, pbx_for(basic, secret="pw-2"))
        with pytest.raises(AuthRefused) as refused:
            await wrong.get("/account/10001")
        assert refused.value.status == 401 and refused.value.code is ErrorCode.FORBIDDEN
    finally:
        await basic.stop()
        await none.stop()


async def test_401_is_auth_refused_and_the_secret_never_shows(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    client = UucallClient(http_session, pbx_for(uusim, secret="not-the-token"))
    with pytest.raises(AuthRefused) as refused:
        await client.get("/account/10001")
    error = refused.value
    assert (error.code, error.vendor_code, error.status) == (ErrorCode.FORBIDDEN, "401", 401)
    assert "401 authentication refused" in error.message
    assert "not-the-token" not in error.message
    assert client.auth_rejections == 1
    with pytest.raises(AuthRefused):
        await client.get("/account/10001")
    assert client.auth_rejections == 2
    assert len(uusim.received) == 2, "a 401 is not retried"


async def test_403_forbidden(uu: UucallClient, uusim: UucallSimulator) -> None:
    uusim.forbidden.add("/power/oplog")
    with pytest.raises(AuthRefused) as refused:
        await uu.get("/power/oplog", {"uid": "10001"})
    assert (refused.value.code, refused.value.status) == (ErrorCode.FORBIDDEN, 403)
    with pytest.raises(AuthRefused):
        await uu.get("/account/99999")  # another enterprise


# --- the documented response codes -----------------------------------------------------------


async def test_405_is_unsupported(uu: UucallClient) -> None:
    with pytest.raises(CommandFailed) as failed:
        await uu.request("DELETE", "/power/roleuser/101")
    assert (failed.value.code, failed.value.vendor_code) == (ErrorCode.UNSUPPORTED, "405")
    assert not failed.value.retryable


async def test_424_is_failed_with_the_body(uu: UucallClient, uusim: UucallSimulator) -> None:
    with pytest.raises(CommandFailed) as failed:
        await uu.request("DELETE", "/power/role/2")
    assert failed.value.code is ErrorCode.FAILED and failed.value.vendor_code == "424"
    assert "role 2 is assigned to 4 sub-accounts" in failed.value.message
    uusim.script("GET", "/account/10001", status=424, body={"error": {"code": "X9", "why": "db"}})
    with pytest.raises(CommandFailed) as scripted:
        await uu.get("/account/10001")
    assert '"why": "db"' in scripted.value.message, "the whole body when it has no message"


async def test_429_waits_retry_after_then_succeeds(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    fake = FakeTime()
    client = fake_client(uusim, http_session, fake)
    uusim.storm(2, retry_after="3")
    assert (await client.get("/account/10001"))["balance"] == 26000
    assert fake.slept == [3.0, 3.0], "each 429's Retry-After is waited out"
    assert [r.status for r in uusim.received] == [429, 429, 200]
    assert client.rate_limited == 2


async def test_429_holds_back_every_request_of_the_client(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    fake = FakeTime()
    client = fake_client(uusim, http_session, fake, rate_limit_retries=0)
    uusim.storm(1, retry_after="4")
    with pytest.raises(RateLimited) as limited:
        await client.get("/account/cashlog", {"uid": "10001"})
    assert limited.value.retry_after_s == 4.0 and limited.value.retryable
    assert limited.value.code is ErrorCode.UNAVAILABLE and limited.value.vendor_code == "429"
    await client.get("/power/notice", {"uid": "10001"})  # another path waits too
    assert fake.slept == [4.0]


async def test_429_retries_run_out(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    fake = FakeTime()
    client = fake_client(uusim, http_session, fake, rate_limit_retries=2, max_retry_after_s=2.0)
    uusim.storm(5, retry_after="600")
    with pytest.raises(RateLimited) as limited:
        await client.get("/account/10001")
    assert limited.value.retry_after_s == 2.0, "capped at max_retry_after_s"
    assert len(uusim.received) == 3 and fake.slept == [2.0, 2.0]


async def test_429_writes_are_sent_again(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    """A 429 was not run: a write may be sent again after waiting."""
    fake = FakeTime()
    client = fake_client(uusim, http_session, fake)
    uusim.storm(1, retry_after="1")
    answer = await client.request("DELETE", "/power/notice/1", {"uid": "10001"})
    assert answer.status == 200 and 1 not in uusim.notices
    assert [r.status for r in uusim.calls("DELETE", "/power/notice/1")] == [429, 200]


def test_retry_after_forms() -> None:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_s(date, now=lambda: now.timestamp()) == 30.0
    assert retry_after_s("7") == 7.0
    assert retry_after_s("0.5") == 0.5
    assert retry_after_s("-3") == 0.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None


async def test_500_reads_are_retried_with_backoff(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    fake = FakeTime()
    client = fake_client(uusim, http_session, fake)
    uusim.script("GET", "/account/10001", status=500, times=2)
    assert (await client.get("/account/10001"))["balance"] == 26000
    assert [r.status for r in uusim.received] == [500, 500, 200]
    assert len(fake.slept) == 2 and all(s > 0 for s in fake.slept)
    uusim.script("GET", "/account/10001", status=500, times=3)
    with pytest.raises(CommandFailed) as failed:
        await client.get("/account/10001")
    assert (failed.value.code, failed.value.vendor_code) == (ErrorCode.UNAVAILABLE, "500")
    assert failed.value.retryable


async def test_500_writes_are_never_sent_again(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    fake = FakeTime()
    client = fake_client(uusim, http_session, fake)
    uusim.script("PUT", "/power/role/3", status=500, times=3)
    with pytest.raises(CommandFailed) as failed:
        await client.request("PUT", "/power/role/3", body={"id": 3, "level": 1})
    assert failed.value.code is ErrorCode.FAILED and not failed.value.retryable
    assert "may have been made" in failed.value.message
    assert len(uusim.calls("PUT", "/power/role/3")) == 1 and fake.slept == []


async def test_a_write_without_an_answer_is_timeout(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    client = UucallClient(http_session, pbx_for(uusim, request_timeout_s=0.2))
    uusim.script("PUT", "/power/role/3", delay_s=1.0)
    with pytest.raises(CommandFailed) as failed:
        await client.request("PUT", "/power/role/3", body={"id": 3, "level": 1})
    assert failed.value.code is ErrorCode.TIMEOUT


async def test_unreachable_is_unavailable(http_session: aiohttp.ClientSession) -> None:
    sim = make_sim()
    await sim.start()
    settings = pbx_for(sim)
    await sim.stop()
    with pytest.raises(CommandFailed) as failed:
        await UucallClient(http_session, settings).request("DELETE", "/power/role/4")
    assert failed.value.code is ErrorCode.UNAVAILABLE and failed.value.retryable


# --- answers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ([{"id": 1}, 5, {"id": 2}], [{"id": 1}, {"id": 2}]),
        ({"data": [{"id": 1}], "total": 1}, [{"id": 1}]),
        ({"data": {"list": [{"id": 3}], "total": 1}}, [{"id": 3}]),
        ({"rows": None}, []),
        ({"data": {"id": 4}}, [{"id": 4}]),
        ({"id": 5, "balance": 1}, [{"id": 5, "balance": 1}]),
        (None, []),
        ("text", []),
    ],
)
def test_rows_of_any_envelope(answer: object, expected: list[dict[str, int]]) -> None:
    assert rows(answer) == expected


def test_record_of_a_single_answer() -> None:
    assert record({"data": {"balance": 1}}) == {"balance": 1}
    assert record([]) is None


async def test_decimals_never_floats(uu: UucallClient) -> None:
    bills = await uu.get("/account/chargebill", {"uidName": "uucall-demo"})
    halves = [b["basicBill"] for b in bills if isinstance(b["basicBill"], Decimal)]
    assert halves and all(isinstance(b["total"], Decimal | int) for b in bills)
    assert not any(isinstance(v, float) for b in bills for v in b.values())


@pytest.mark.parametrize("envelope", ["bare", "data"])
async def test_list_all_reads_every_page(
    envelope: str, http_session: aiohttp.ClientSession
) -> None:
    sim = make_sim(envelope=envelope, string_numbers=envelope == "data")
    await sim.start()
    try:
        client = UucallClient(http_session, pbx_for(sim))
        found = await client.list_all("/account/cashlog", {"uid": "10001"}, page_size=3)
        assert [int(r["id"]) for r in found] == [7, 6, 5, 4, 3, 2, 1]
        pages = [r.query["page"] for r in sim.received]
        assert pages == ["1", "2", "3"]
        sim.received.clear()
        stopped = await client.list_all(
            "/account/cashlog", {"uid": "10001"}, page_size=3, stop=lambda page: True
        )
        assert len(stopped) == 3 and len(sim.received) == 1
    finally:
        await sim.stop()


async def test_list_all_stops_at_the_total(http_session: aiohttp.ClientSession) -> None:
    sim = make_sim(envelope="data")
    await sim.start()
    try:
        client = UucallClient(http_session, pbx_for(sim))
        found = await client.list_all("/account/cashlog", {"uid": "10001"}, page_size=7)
        assert len(found) == 7 and len(sim.received) == 1, "total 7 reached: no empty page"
    finally:
        await sim.stop()


async def test_list_all_refuses_a_partial_list(uu: UucallClient) -> None:
    with pytest.raises(CommandFailed) as failed:
        await uu.list_all("/account/cashlog", {"uid": "10001"}, page_size=2, max_pages=2)
    assert failed.value.code is ErrorCode.FAILED and "not all read" in failed.value.message


async def test_a_header_of_another_name(http_session: aiohttp.ClientSession) -> None:
    sim = make_sim(auth_header="X-UU-Token", token="tok-42")
    await sim.start()
    try:
        named = UucallClient(http_session, pbx_for(sim))
        assert (await named.get("/account/10001"))["account"] == 50001
        default = UucallClient(http_session, pbx_for(sim, auth_header="Authorization"))
        with pytest.raises(AuthRefused):
            await default.get("/account/10001")
        assert [r.status for r in sim.received] == [200, 401]
    finally:
        await sim.stop()
