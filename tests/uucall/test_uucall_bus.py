"""UUCall through the real gateway and RabbitMQ: polling finds each change exactly once across
a restart and a new instance; every command over the bus; a 429 storm backs off and loses
nothing; a bill download lands once with the right SHA-256, a traversal is refused."""

from __future__ import annotations

import hashlib
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.connectors.uucall.commands import COMMAND_NAMES, ENDPOINTS
from gateway.connectors.uucall.pollers import POLLERS
from gateway.connectors.uucall.settings import UucallPbxSettings
from gateway.sim.uucall.rest import UucallSimulator
from tests.conftest import wait_for
from tests.integration.fixtures import EVERY_COMMAND, Collected, running_gateway
from tests.uucall.helpers import make_sim, pbx_for
from tests.uucall.test_commands import CASES, INVALID

pytestmark = pytest.mark.integration

FAST_POLLS = {
    "account_poll_s": 0.3,
    "cashlog_poll_s": 0.3,
    "bill_poll_s": 0.3,
    "oplog_poll_s": 0.3,
    "notice_poll_s": 0.3,
}
PATHS = {
    "account": "/account/10001",
    "cashlog": "/account/cashlog",
    "bill": "/account/chargebill",
    "oplog": "/power/oplog",
    "notice": "/power/notice",
}


def bus_pbx(sim: UucallSimulator, tenant: str, **overrides: Any) -> UucallPbxSettings:
    return pbx_for(sim, tenant, **{**FAST_POLLS, **overrides})


def connected(got: Collected) -> int:
    return sum(e["data"]["state"] == "connected" for e in got.of_type("gateway.connection"))


def stopped(got: Collected) -> int:
    return sum(
        e["data"]["reason"] == "link stopped by the gateway"
        for e in got.of_type("gateway.connection")
    )


def facts(got: Collected) -> list[dict[str, Any]]:
    return [e for e in got.events if e["type"].startswith("account.")]


def facts_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"].startswith("account.")]


def kinds(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(
        f"{e['type']}:{e['data']['action']}" if "action" in e["data"] else e["type"] for e in events
    )


async def polled_again(sim: UucallSimulator, times: int = 2, timeout: float = 15) -> None:
    """Every poller has polled ``times`` more times from now (so it found what there was)."""
    marks = {name: len(sim.calls("GET", path)) for name, path in PATHS.items()}
    await wait_for(
        lambda: all(len(sim.calls("GET", PATHS[n])) >= marks[n] + times for n in marks),
        timeout=timeout,
    )


async def test_each_change_once_across_a_restart_and_a_new_instance(
    uusim: UucallSimulator, unique: str, collector
) -> None:
    """Run 1 publishes the first poll; run 2 (a restart, same state_dir) publishes only what
    changed while it was down; run 3 (another instance: an empty state_dir, the cursors adopted
    from RabbitMQ) likewise. No fact twice, each poller's gap reported."""
    tenant = f"u{unique}"
    got: Collected = await collector(tenant)
    pbx = bus_pbx(uusim, tenant)
    home = Path(tempfile.mkdtemp(prefix="uucall-run-"))

    async def run(state_dir: Path) -> list[dict[str, Any]]:
        before = len(got.events)
        stops = stopped(got)
        async with running_gateway(pbx, state_dir=state_dir):
            await wait_for(lambda: connected(got) > stops, timeout=15)
            await polled_again(uusim)
        await wait_for(lambda: stopped(got) > stops, timeout=15)  # everything published is in
        return got.events[before:]

    first = await run(home)
    assert kinds(facts_of(first)) == {
        "account.balance_changed": 1,
        "account.recharged": 2,
        "account.bill:created": 10,
        "account.audit": 5,
        "account.notice:created": 1,
    }

    uusim.recharge(30000)
    uusim.add_oplog("agent03", "导出通话记录")
    uusim.edit_notice(1, "维护改到周六。")
    second = await run(home)
    assert kinds(facts_of(second)) == {
        "account.balance_changed": 1,
        "account.recharged": 1,
        "account.audit": 1,
        "account.notice:changed": 1,
    }
    gaps = [e for e in second if e["type"] == "gateway.gap"]
    assert len(gaps) == len(POLLERS) and sum(g["data"]["recovered"] for g in gaps) == 4

    uusim.bill_usage("agent05", 900, 30)
    uusim.add_notice("新公告", "内容", "101")
    other = Path(tempfile.mkdtemp(prefix="uucall-other-"))
    third = await run(other)
    assert kinds(facts_of(third)) == {
        "account.balance_changed": 1,
        "account.bill:created": 1,
        "account.notice:created": 1,
    }
    ids = [e["id"] for e in facts(got)]
    assert len(ids) == len(set(ids)) == 19 + 4 + 3


async def test_every_command_through_the_bus(
    uusim: UucallSimulator, unique: str, collector, command_bus, tmp_path: Path
) -> None:
    """Each ``uucall.*`` command once over ``pbx.commands``: it reaches its operation and
    comes back ``ok``; invalid arguments are answered ``invalid`` without a request and
    dead-lettered; a contract command UUCall cannot do is ``unsupported``."""
    assert {c[0] for c in CASES} == set(COMMAND_NAMES)
    tenant = f"u{unique}"
    got: Collected = await collector(tenant)
    pbx = bus_pbx(uusim, tenant, download_dir=tmp_path, **dict.fromkeys(FAST_POLLS, 30.0))
    pbx = pbx.model_copy(update={"command_policy": EVERY_COMMAND})  # sensitive ones included
    async with running_gateway(pbx, commands=command_bus.settings):
        await wait_for(lambda: connected(got) >= 1, timeout=15)
        for command, args, path, query, body in CASES:
            method = command_method(command)
            before = len(uusim.calls(method, path))
            result = await command_bus.call(tenant, command, args)
            assert result["ok"] is True, (command, result)
            sent = uusim.calls(method, path)[before:]
            assert sent and sent[-1].body == body, command
            assert {
                k: v for k, v in sent[-1].query.items() if k not in ("page", "pageSize")
            } == query
        requests = len(uusim.received)
        for command, args, _field in INVALID:
            result = await command_bus.call(tenant, command, args)
            assert result["ok"] is False and result["error"]["code"] == "invalid", result
        assert [r.path for r in uusim.received[requests:]] == [
            r.path for r in uusim.received[requests:] if r.path in PATHS.values()
        ], "only the pollers' requests: no invalid command reached the service"
        dead = await command_bus.dead_letters(len(INVALID))
        assert len(dead) == len(INVALID)
        dial = await command_bus.call(tenant, "call.dial", {"caller": "101", "callee": "102"})
        assert dial["ok"] is False and dial["error"]["code"] == "unsupported"


def command_method(command: str) -> str:
    return ENDPOINTS[command].split()[0]


async def test_a_429_storm_backs_off_and_loses_nothing(unique: str, collector) -> None:
    sim = make_sim()
    await sim.start()
    try:
        tenant = f"u{unique}"
        got: Collected = await collector(tenant)
        pbx = bus_pbx(sim, tenant, rate_limit_retries=1)
        async with running_gateway(pbx):
            await wait_for(lambda: len(facts(got)) >= 19, timeout=15)
            await polled_again(sim, times=1)
            storm_from = len(sim.received)
            sim.storm(12, retry_after="1")
            sim.recharge(12345)
            sim.add_oplog("agent02", "登录系统")
            sim.edit_notice(2, "账单已更新。")
            await wait_for(lambda: len(facts(got)) >= 19 + 4, timeout=30)
            await polled_again(sim)
        storm = sim.received[storm_from:]
        limited = [r for r in storm if r.status == 429]
        assert len(limited) == 12
        for answer in limited:  # nothing was sent while a Retry-After held (what was on its
            # way when the 429 was answered arrives at once)
            inside = [r for r in storm if answer.at + 0.3 < r.at < answer.at + 0.9]
            assert not inside, (answer, inside)
        new = kinds(facts(got)[19:])
        assert new == {
            "account.balance_changed": 1,
            "account.recharged": 1,
            "account.audit": 1,
            "account.notice:changed": 1,
        }
        ids = [e["id"] for e in facts(got)]
        assert len(ids) == len(set(ids))
        states = [e["data"]["state"] for e in got.of_type("gateway.connection")]
        assert "auth_failed" not in states and "blocked" not in states
    finally:
        await sim.stop()


async def test_a_download_lands_once_and_a_traversal_is_invalid(
    uusim: UucallSimulator, unique: str, collector, command_bus, tmp_path: Path
) -> None:
    tenant = f"u{unique}"
    got: Collected = await collector(tenant)
    folder = tmp_path / "bills"
    pbx = bus_pbx(uusim, tenant, download_dir=folder, **dict.fromkeys(FAST_POLLS, 30.0))
    month = uusim.month(-1)
    async with running_gateway(pbx, commands=command_bus.settings):
        await wait_for(lambda: connected(got) >= 1, timeout=15)
        args = {"time": month}
        command_id = await command_bus.publish(tenant, "uucall.chargebill.download", args)
        result = await command_bus.result(command_id)
        assert result["ok"] is True, result
        again = await command_bus.call(
            tenant, "uucall.chargebill.download", args, command_id=command_id
        )
        assert again["result"] == result["result"], "the same id: answered, not run again"
        downloads = uusim.calls("GET", "/account/file/chargebill")
        assert len(downloads) == 1

        for bad in ({"file_name": "../evil.csv"}, {"account": "../../etc", "time": month}):
            refused = await command_bus.call(tenant, "uucall.chargebill.download", bad)
            assert refused["ok"] is False and refused["error"]["code"] == "invalid", refused
        assert len(uusim.calls("GET", "/account/file/chargebill")) == 1

    saved = result["result"]
    path = Path(saved["path"])
    assert path.parent == folder.resolve() and path.name == f"chargebill_{month}.csv"
    content = read_bytes(path)
    assert saved["sha256"] == hashlib.sha256(content).hexdigest()
    assert saved["size"] == len(content) > 0
    assert listing(folder) == [path.name]
    assert not exists(tmp_path / "evil.csv")
    assert await served_bill(uusim, month) == content
    assert (
        content.decode("utf-8-sig").splitlines()[0]
        == "total,time,basicBill,subUserName,functionBill"
    )


def read_bytes(path: Path) -> bytes:
    return path.read_bytes()


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def exists(path: Path) -> bool:
    return path.exists()


async def served_bill(sim: UucallSimulator, month: str) -> bytes:
    """The bytes the simulator serves for a month's charge bill, fetched directly."""
    async with aiohttp.ClientSession() as http:
        async with http.get(
            sim.base_url + "/account/file/chargebill",
            params={"uidName": sim.uid_name, "time": month},
            headers={"Authorization": sim.token},
        ) as response:
            assert response.status == 200
            return await response.read()
