"""Errors with HTTP 200: ``{"Result": "FAILED", "Code": n, "Data": "<message>"}`` is a failed
request carrying the service's message. A poll fails (the link state says why, the metric
counts the code), a command answers ``failed`` (or the neutral code of a listed ``Code``) with
``vendor_code``; it is never data and never ``gateway.rejected``.

Sources (copied into ``tests/fixtures/uucall/wiki_revision.json``):

* 账户充值, revision diff oldid=87: "FAILED / 1 / 错误描述 // 自定义错误" for
  ``GET /account/{uid}`` and ``GET /account/cashlog``, "其中相应结果HTTP Code为200":
  http://112.5.128.48:9988/index.php?diff=cur&oldid=87&title=%E8%B4%A6%E6%88%B7%E5%85%85%E5%80%BC
* 二维码拨号, diff 164/80: the table of failure codes 1-6 and 100-102:
  http://112.5.128.48:9988/index.php?diff=164&oldid=80&title=%E4%BA%8C%E7%BB%B4%E7%A0%81%E6%8B%A8%E5%8F%B7
* 通话记录: ``failed`` in lower case:
  http://112.5.128.48:9988/index.php/%E9%80%9A%E8%AF%9D%E8%AE%B0%E5%BD%95
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.connectors.polling import PollDeferred, PollStopped
from gateway.connectors.uucall.client import AuthRefused, RateLimited, UucallClient, VendorFailed
from gateway.connectors.uucall.commands import execute_rest
from gateway.connectors.uucall.downloads import Downloads
from gateway.connectors.uucall.envelope import VENDOR_CODES
from gateway.connectors.uucall.metrics import VENDOR_ERRORS
from gateway.runtime.statestore import StateStore, StoreSlice
from gateway.schema.commands import CommandFailed, ErrorCode
from gateway.sim.uucall.rest import UucallSimulator
from tests.conftest import wait_for
from tests.uucall.helpers import TOKEN, make_sim, pbx_for
from tests.uucall.test_commands import parse
from tests.uucall.test_downloads import names
from tests.uucall.test_pollers import Watched

WIKI = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures/uucall/wiki_revision.json").read_text()
)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateStore]:
    store = StateStore(tmp_path / "state.sqlite3")
    yield store
    store.close()


@pytest.fixture(params=["wiki", "wiki-lower"])
async def wikisim(request: pytest.FixtureRequest) -> AsyncIterator[UucallSimulator]:
    sim = make_sim(envelope=request.param, errors_in_body=True)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def counted(tenant: str, label: str) -> float:
    return VENDOR_ERRORS.labels(tenant, label)._value.get()


def test_every_code_of_the_wiki_is_mapped() -> None:
    listed = {code for _, code, _ in WIKI["error_codes"]["rows"]}
    assert listed == set(VENDOR_CODES)
    for _, code, text in WIKI["error_codes"]["rows"]:
        assert text.replace("RAPI_ESULT", "API_RESULT").startswith(VENDOR_CODES[code].name)


async def test_a_failed_poll_says_why(
    wikisim: UucallSimulator, http_session: aiohttp.ClientSession, db: StateStore
) -> None:
    """The wiki's own example failure: code 1 with its description in ``Data``."""
    _, code, _ = WIKI["envelope_table"]["rows"][1]
    watched = Watched(wikisim, http_session, StoreSlice(db, "uucall:acme:"), tenant="acme-err")
    before = counted("acme-err", "1")
    wikisim.script("GET", "/account/10001", status=200, body=wikisim.failure(code, "账户不存在"))
    with pytest.raises(VendorFailed) as failed:
        await watched.pollers.poll_once("account")
    error = failed.value
    assert (error.code, error.vendor_code) == (ErrorCode.FAILED, "1")
    assert "账户不存在" in error.message
    assert counted("acme-err", "1") == before + 1

    wikisim.script("GET", "/account/10001", status=200, body=wikisim.failure(code, "账户不存在"))
    poller = watched.pollers.pollers["account"]
    task = asyncio.create_task(poller.run())
    try:
        await wait_for(lambda: watched.state.state == "disconnected", timeout=5)
        assert "账户不存在" in (watched.state.reason or "")
        await wait_for(lambda: watched.state.state == "connected", timeout=5)  # the next poll
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not [e for e in watched.sent if e.type == "gateway.rejected"]
    assert [e.type for e in watched.sent if e.type.startswith("account.")] == [
        "account.balance_changed"
    ], "only the good answer's balance"


async def test_failed_cash_log_pages_are_not_entries(
    wikisim: UucallSimulator, http_session: aiohttp.ClientSession, db: StateStore
) -> None:
    watched = Watched(wikisim, http_session, StoreSlice(db, "uucall:acme:"))
    wikisim.script("GET", "/account/cashlog", status=200, body=wikisim.failure(4, "未知错误"))
    with pytest.raises(VendorFailed):
        await watched.pollers.poll_once("cashlog")
    assert watched.pollers.pollers["cashlog"].cursor is None
    assert not [e for e in watched.sent if e.type == "gateway.rejected"]


async def test_passport_and_power_codes_stop_polling(
    wikisim: UucallSimulator, http_session: aiohttp.ClientSession, db: StateStore
) -> None:
    """Code 5 (passport) counts as refused credentials and code 6 (power) as refused
    rights, like 401 and 403: ``max_auth_rejections`` in a row stop the poller."""
    watched = Watched(wikisim, http_session, StoreSlice(db, "uucall:acme:"), max_auth_rejections=2)
    wikisim.script("GET", "/power/oplog", status=200, body=wikisim.failure(5, "passport错误"))
    wikisim.script("GET", "/power/oplog", status=200, body=wikisim.failure(5, "passport错误"))
    with pytest.raises(AuthRefused) as first:
        await watched.pollers.poll_once("oplog")
    assert (first.value.status, first.value.vendor_code) == (401, "5")
    with pytest.raises(PollStopped) as stopped:
        await watched.pollers.poll_once("oplog")
    assert stopped.value.state == "auth_failed" and "passport错误" in stopped.value.reason

    other = Watched(wikisim, http_session, StoreSlice(db, "uucall:b:"), max_auth_rejections=1)
    wikisim.script("GET", "/power/notice", status=200, body=wikisim.failure(6, "无权限"))
    with pytest.raises(PollStopped) as blocked:
        await other.pollers.poll_once("notice")
    assert blocked.value.state == "blocked"


async def test_a_wrong_token_answered_in_the_body_is_auth_refused(
    wikisim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    client = UucallClient(http_session, pbx_for(wikisim, secret="not-the-token"))
    with pytest.raises(AuthRefused) as refused:
        await client.get("/account/10001")
    assert (refused.value.status, refused.value.vendor_code) == (401, "5")
    assert wikisim.received[-1].status == 200
    assert client.auth_rejections == 1


async def test_the_request_limit_code_is_waited_out_then_defers_the_poller(
    wikisim: UucallSimulator, http_session: aiohttp.ClientSession, db: StateStore
) -> None:
    """Code 3 ("请求数达上限") is a 429 in the body: the request was not run, so it is sent
    again after the backoff, ``rate_limit_retries`` times; then the poller is deferred."""
    watched = Watched(wikisim, http_session, StoreSlice(db, "uucall:acme:"), rate_limit_retries=1)
    limit = wikisim.failure(3, "请求数达上限")
    wikisim.script("GET", "/power/notice", status=200, body=limit)
    await watched.pollers.poll_once("notice")
    assert len(wikisim.calls("GET", "/power/notice")) == 2 and watched.client.rate_limited == 1
    wikisim.script("GET", "/power/notice", status=200, body=limit, times=2)
    with pytest.raises(PollDeferred) as deferred:
        await watched.pollers.poll_once("notice")
    assert deferred.value.retry_after_s > 0
    assert isinstance(deferred.value.__cause__, RateLimited)
    assert deferred.value.__cause__.vendor_code == "3"


async def test_commands_answer_failed_with_the_vendor_code(
    wikisim: UucallSimulator, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    settings = pbx_for(wikisim, tenant="acme-cmd")
    client = UucallClient(http_session, settings)
    folder = Downloads(tmp_path, 1 << 20)

    async def run(command: str, args: dict[str, Any]) -> dict[str, Any]:
        return await execute_rest(client, settings, parse(command, args), folder)

    # the simulator's own refusal (a role still assigned), answered in the body: code 1
    with pytest.raises(CommandFailed) as assigned:
        await run("uucall.role.delete", {"roleId": 2})
    error = assigned.value.to_error()
    assert (error.code, error.vendor_code) == (ErrorCode.FAILED, "1")
    assert "assigned" in error.message and wikisim.received[-1].status == 200
    # a listed code maps to its neutral code
    wikisim.script("PUT", "/power/subuser/101", status=200, body=wikisim.failure(100, "参数无效"))
    with pytest.raises(CommandFailed) as invalid:
        await run("uucall.subuser.update", {"subUserId": 101, "dept": "x"})
    assert (invalid.value.code, invalid.value.vendor_code) == (ErrorCode.INVALID, "100")
    # a code the wiki does not list: failed, its metric label bounded
    before = counted("acme-cmd", "other")
    wikisim.script("GET", "/power/role", status=200, body=wikisim.failure(77, "其他错误"))
    with pytest.raises(CommandFailed) as other:
        await run("uucall.role.list", {})
    assert (other.value.code, other.value.vendor_code) == (ErrorCode.FAILED, "77")
    assert counted("acme-cmd", "other") == before + 1


async def test_a_failed_download_writes_nothing(
    wikisim: UucallSimulator, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    settings = pbx_for(wikisim)
    client = UucallClient(http_session, settings)
    command = parse("uucall.chargebill.download", {})
    wikisim.script(
        "GET", "/account/file/chargebill", status=200, body=wikisim.failure(1, "账单未生成")
    )
    with pytest.raises(CommandFailed) as failed:
        await execute_rest(client, settings, command, Downloads(tmp_path, 1 << 20))
    assert failed.value.vendor_code == "1" and "账单未生成" in failed.value.message
    assert names(tmp_path) == []
    saved = await execute_rest(client, settings, command, Downloads(tmp_path, 1 << 20))
    assert names(tmp_path) == [saved["file_name"]] and saved["content_type"] == "text/csv"


async def test_the_secret_never_shows_in_a_vendor_message(
    wikisim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    client = UucallClient(http_session, pbx_for(wikisim))
    wikisim.script(
        "GET", "/power/role", status=200, body=wikisim.failure(1, f"bad token {TOKEN} here")
    )
    with pytest.raises(CommandFailed) as failed:
        await client.get("/power/role", {"uid": "10001"})
    assert TOKEN not in failed.value.message and "***" in failed.value.message
