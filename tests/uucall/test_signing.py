"""``auth: signed``: the per-request signature of UUCall's API wiki, checked by the simulator.

Sources:

* UUCall wiki, 首页 / 接口说明 (the headers every request carries: ``appid``, ``timestamp``,
  ``Authorization``; base path ``/uucall_restapi/rest/``):
  http://112.5.128.48:9988/index.php/%E9%A6%96%E9%A1%B5 and the example request of 账户充值
  (diff oldid=87), whose ``Authorization`` decodes to ``ff8080813c37da53013c804f8072007c:
  2013020115..`` (an account id, a colon, a ``yyyyMMddHHmmss`` timestamp; the wiki ends it
  with the placeholder ``ABCDE``):
  http://112.5.128.48:9988/index.php?diff=cur&oldid=87&title=%E8%B4%A6%E6%88%B7%E5%85%85%E5%80%BC
* docs.ucpaas.com 隐号通话 (the rule: ``sig`` = upper-case MD5 of account id + token +
  ``yyyyMMddHHmmss``, ``Authorization`` = base64 of account id + ``:`` + the same timestamp):
  http://docs.ucpaas.com/doku.php?do=export_raw&id=%E9%9A%90%E5%8F%B7%E9%80%9A%E8%AF%9D%3Ahome_yhthzn
  and its Client 充值 example, ``Authorization:ZTAzYmM5...Mjk1MA=`` for account
  ``e03bc9106c6ed0eaebfce8c368fdcd48`` at ``20140623182950``:
  http://docs.ucpaas.com/doku.php?id=client%E8%B4%A6%E5%8F%B7%E5%85%85%E5%80%BC&rev=1421837041
* GitHub lilong9298/UCPAAS, src/UCPAAS/Model/UCPAASSetting.cs (GetAuthorization,
  SigParameter: ``ToString("X2")`` of MD5(accountSid + Token + timestap)), and
  iccb1013/Jade.Net, Yuntongxun/CCPRestSDK/CCPRestSDK.cs (the same scheme).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from gateway.connectors.uucall.client import AuthRefused, UucallClient
from gateway.connectors.uucall.settings import UucallPbxSettings
from gateway.connectors.uucall.signing import authorization, sig, sign
from gateway.sim.uucall.rest import WIKI_BASE_PATH, UucallSimulator
from tests.uucall.helpers import TOKEN, make_sim, pbx_for

WIKI = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures/uucall/wiki_revision.json").read_text()
)
SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_the_published_authorization_example() -> None:
    assert (
        authorization("e03bc9106c6ed0eaebfce8c368fdcd48", "20140623182950")
        == "ZTAzYmM5MTA2YzZlZDBlYWViZmNlOGMzNjhmZGNkNDg6MjAxNDA2MjMxODI5NTA="
    )


def test_the_wiki_example_is_this_scheme() -> None:
    """The wiki's header is the same encoding up to its placeholder: account id, colon,
    ``2013020115`` and the next digit of ``yyyyMMddHHmmss``."""
    example = WIKI["request_example"]["headers"]["Authorization"]
    ours = authorization("ff8080813c37da53013c804f8072007c", "20130201150000")
    assert example[:59] == ours[:59]
    assert base64.b64decode(example[:56]).decode() == "ff8080813c37da53013c804f8072007c:201302011"


def test_sig_is_the_upper_case_md5_of_account_token_timestamp() -> None:
    value = sig("e03bc9106c6ed0eaebfce8c368fdcd48", "token-1", "20140623182950")
    expected = hashlib.md5(b"e03bc9106c6ed0eaebfce8c368fdcd48token-120140623182950").hexdigest()
    assert value == expected.upper() and len(value) == 32
    assert value != sig("e03bc9106c6ed0eaebfce8c368fdcd48", "token-2", "20140623182950")


def test_one_instant_in_both_formats() -> None:
    signature = sign("acc", "tok", datetime(2016, 3, 11, 0, 0, 0, tzinfo=SHANGHAI))
    assert signature.timestamp == "20160311000000"
    assert signature.header_timestamp == "2016-03-11 00:00:00"  # the wiki's header example
    assert signature.headers("app-1") == {
        "Authorization": authorization("acc", "20160311000000"),
        "appid": "app-1",
        "timestamp": "2016-03-11 00:00:00",
    }


@pytest.fixture
async def signed_sim() -> UucallSimulator:
    sim = make_sim(
        auth="signed",
        account_id="8a216da86276486901629af327dd0e43",
        app_id="8a216da86276486901629af3283a0e4a",
        base_path=WIKI_BASE_PATH,
        envelope="wiki",
        errors_in_body=True,
    )
    await sim.start()
    yield sim
    await sim.stop()


async def test_signed_requests_are_accepted(
    signed_sim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    assert signed_sim.base_url.endswith("/uucall_restapi/rest")
    client = UucallClient(http_session, pbx_for(signed_sim))
    assert (await client.get("/account/10001"))["balance"] == signed_sim.account["balance"]
    await client.list_all("/account/cashlog", {"uid": "10001"}, page_size=3)
    assert signed_sim.signed == {"accepted": 4}
    assert "sig" not in signed_sim.received[-1].query, "sig is the signature, not a parameter"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"secret": "another-token"}, "wrong_sig"),
        ({"account_id": "ff8080813c37da53013c804f8072007c"}, "wrong_account"),
        ({"app_id": "another-app"}, "wrong_appid"),
    ],
)
async def test_wrong_credentials_are_refused(
    signed_sim: UucallSimulator,
    http_session: aiohttp.ClientSession,
    overrides: dict[str, str],
    reason: str,
) -> None:
    client = UucallClient(http_session, pbx_for(signed_sim, **overrides))
    with pytest.raises(AuthRefused) as refused:
        await client.get("/account/10001")
    assert (refused.value.status, refused.value.vendor_code) == (401, "5")
    assert signed_sim.signed == {reason: 1}


async def test_a_stale_timestamp_is_refused(http_session: aiohttp.ClientSession) -> None:
    """The service's clock two hours ahead: the signature's timestamp is out of its window."""
    sim = make_sim(auth="signed", clock=lambda: time.time() + 7200)
    await sim.start()
    try:
        with pytest.raises(AuthRefused):
            await UucallClient(http_session, pbx_for(sim)).get("/account/10001")
        assert sim.signed == {"stale_timestamp": 1}
    finally:
        await sim.stop()


async def test_no_secret_is_logged_or_shown(
    signed_sim: UucallSimulator, http_session: aiohttp.ClientSession
) -> None:
    settings = pbx_for(signed_sim)
    client = UucallClient(http_session, settings)
    signed_sim.script(
        "GET",
        "/power/role",
        status=200,
        body=signed_sim.failure(1, f"{TOKEN} / {signed_sim.account_id}"),
    )
    signed_sim.storm(1, retry_after="0")
    with capture_logs() as logs:
        await client.get("/account/10001")
        with pytest.raises(Exception) as failed:
            await client.get("/power/role", {"uid": "10001"})
    shown = json.dumps(logs, default=str) + str(failed.value) + repr(settings)
    shown += settings.model_dump_json()
    for secret in (TOKEN, signed_sim.account_id, signed_sim.app_id):
        assert secret not in shown


def test_signed_settings() -> None:
    base = {
        "tenant": "t",
        "vendor": "uucall",
        "uid": "1225",
        "uid_name": "acme",
        "auth": "signed",
        "secret": "tok",
        "base_url": "http://192.168.2.1:2888/uucall_restapi/rest",
    }
    good = UucallPbxSettings(**base, account_id="ff8080813c37da53013c804f8072007c", app_id="a1")
    assert good.auth == "signed" and "ff8080" not in repr(good)
    for bad, why in (
        ({"app_id": "a1"}, "needs account_id"),
        ({"account_id": "x1"}, "needs app_id"),
        ({"account_id": "x 1", "app_id": "a1"}, "account_id must be"),
        ({"account_id": "x1", "app_id": "a1", "username": "u"}, "only used with auth: basic"),
    ):
        with pytest.raises(ValidationError, match=why):
            UucallPbxSettings(**base, **bad)
    with pytest.raises(ValidationError, match="only used with auth: signed"):
        UucallPbxSettings(**{**base, "auth": "header"}, account_id="x1")
