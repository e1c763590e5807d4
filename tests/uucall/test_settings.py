"""The settings of a UUCall account (every bad field listed at start-up), and the connector they
build: which sources it polls, and its link state."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from gateway.connectors.plugin import LinkResources
from gateway.connectors.uucall.connector import UucallConnector
from gateway.connectors.uucall.settings import UucallPbxSettings
from gateway.runtime.resources import SharedResources
from gateway.runtime.statestore import StateStore, StoreSlice
from gateway.schema.events import CloudEvent
from gateway.settings import RecoverySettings, load_settings
from gateway.sim.uucall.rest import UucallSimulator
from tests.conftest import wait_for
from tests.uucall.helpers import pbx_for

POLL_KEYS = ("account_poll_s", "cashlog_poll_s", "bill_poll_s", "oplog_poll_s", "notice_poll_s")
BASE: dict[str, Any] = {
    "tenant": "acme-fin",
    "vendor": "uucall",
    "uid": "10001",
    "uid_name": "acme",
    "secret": "tok",
}


def test_defaults() -> None:
    pbx = UucallPbxSettings(**BASE)
    assert pbx.base_url == "http://cloud.uucall.cn/rest"
    assert (pbx.auth, pbx.auth_header, pbx.minor_unit) == ("header", "Authorization", 100)
    assert pbx.low_balance_threshold is None and pbx.download_dir is None
    assert pbx.poll_intervals() == {
        "account": 60.0,
        "cashlog": 300.0,
        "bill": 600.0,
        "oplog": 60.0,
        "notice": 300.0,
    }
    assert pbx.read_secret() == "tok" and "tok" not in repr(pbx)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"auth": "none"}, "auth: none takes no secret"),
        ({"auth": "basic"}, "needs a username"),
        ({"username": "u"}, "only used with auth: basic"),
        ({"secret": None}, "exactly one of secret"),
        ({"secret_env": "UUCALL_NOT_SET_ANYWHERE"}, "exactly one of secret"),
        ({"minor_unit": 3}, "must be one of 1, 10, 100"),
        ({"uid": "abc"}, "uid"),
        ({"auth_header": "Bad Header"}, "auth_header"),
        ({"base_url": "ftp://x"}, "base_url"),
        (dict.fromkeys(POLL_KEYS, 0), "poll at least one source"),
    ],
)
def test_bad_settings(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as bad:
        UucallPbxSettings(**{**BASE, **change})
    assert message in str(bad.value)


def test_secret_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("from-file\n")
    no_secret = {k: v for k, v in BASE.items() if k != "secret"}
    assert UucallPbxSettings(**no_secret, secret_file=tmp_path / "token").read_secret() == (
        "from-file"
    )
    monkeypatch.setenv("UU_TOKEN", "from-env")
    assert UucallPbxSettings(**no_secret, secret_env="UU_TOKEN").read_secret() == "from-env"
    none = UucallPbxSettings(**no_secret, auth="none")
    assert none.read_secret() == ""


def test_a_config_file_lists_every_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "pbxs:\n  - {tenant: a, vendor: uucall, uid: x1, uid_name: a, auth: basic, secret: s,"
        " minor_unit: 7}\n"
    )
    with pytest.raises(Exception) as bad:
        load_settings(path)
    text = str(bad.value)
    assert "pbxs.0.uid" in text and "pbxs.0.minor_unit" in text


async def test_a_source_turned_off_is_not_polled(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """An account that may not read the operation log (403) would stop that poller and show
    the link ``blocked``: with ``oplog_poll_s: 0`` it is never read and the link is up."""
    uusim.forbidden.add("/power/oplog")
    pbx = pbx_for(
        uusim,
        oplog_poll_s=0,
        account_poll_s=0.2,
        cashlog_poll_s=0.2,
        bill_poll_s=0.2,
        notice_poll_s=0.2,
    )
    db = StateStore(tmp_path / "state.sqlite3")
    store = StoreSlice(db, "uucall:acme:")
    resources = LinkResources(http_session, store, RecoverySettings(), SharedResources())
    connector = UucallConnector(pbx, resources)
    sent: list[CloudEvent] = []

    async def emit(event: CloudEvent) -> None:
        sent.append(event)

    task = asyncio.create_task(connector.run(emit))
    try:
        await wait_for(lambda: connector.link.value == "connected", timeout=10)
        await wait_for(lambda: len(uusim.calls("GET", "/power/notice")) >= 3, timeout=10)
        assert not uusim.calls("GET", "/power/oplog")
        assert connector.link_state.state == "connected"
        assert not [e for e in sent if e.type == "account.audit"]
        assert {e.type for e in sent} >= {"account.balance_changed", "account.bill"}
        health = connector.health()
        assert set(health["last_polls"]) == {"account", "cashlog", "bill", "notice"}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        db.close()
    assert connector.link.value == "stopped"
