"""Bill downloads: the file lands once, whole, under the folder, with its size and SHA-256; no
name can leave the folder; a failed or oversized download leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import aiohttp
import pytest

from gateway.connectors import registry
from gateway.connectors.uucall.client import UucallClient
from gateway.connectors.uucall.commands import execute_rest
from gateway.connectors.uucall.downloads import Downloads, safe_name
from gateway.schema.commands import CommandFailed, ErrorCode
from gateway.sim.uucall.rest import UucallSimulator
from tests.uucall.helpers import pbx_for


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def content(path: object) -> bytes:
    return Path(str(path)).read_bytes()


async def download(
    sim: UucallSimulator,
    http: aiohttp.ClientSession,
    folder: Path,
    command: str,
    args: dict[str, object],
    max_bytes: int = 1 << 20,
) -> dict[str, object]:
    settings = pbx_for(sim, download_dir=folder)
    parsed = registry.command_catalog().parse(json.dumps({"command": command, "args": args}))
    downloads = Downloads(folder, max_bytes)
    return await execute_rest(UucallClient(http, settings), settings, parsed, downloads)


async def served(
    http: aiohttp.ClientSession, sim: UucallSimulator, path: str, **query: str
) -> bytes:
    """The bytes the simulator serves, fetched directly."""
    async with http.get(
        sim.base_url + path, params=query, headers={"Authorization": sim.token}
    ) as response:
        assert response.status == 200
        return await response.read()


async def test_a_bill_lands_once_with_its_sha256(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    month = uusim.month(-1)
    result = await download(
        uusim, http_session, tmp_path, "uucall.chargebill.download", {"time": month}
    )
    expected = await served(
        http_session, uusim, "/account/file/chargebill", uidName=uusim.uid_name, time=month
    )
    path = Path(str(result["path"]))
    assert path == (tmp_path / f"chargebill_{month}.csv").resolve()
    assert content(path) == expected
    assert result["size"] == len(expected) and result["content_type"] == "text/csv"
    assert result["sha256"] == hashlib.sha256(expected).hexdigest()
    assert names(tmp_path) == [path.name], "no temporary file left"
    assert "agent06" in expected.decode("utf-8-sig")


async def test_detail_bills_and_the_json_one(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    basic = await download(
        uusim,
        http_session,
        tmp_path,
        "uucall.basicbill.download",
        {"subUserName": "agent02", "file_name": "agent02-basic.csv"},
    )
    assert Path(str(basic["path"])).name == "agent02-basic.csv", "the name given, as it is"
    fun = await download(
        uusim, http_session, tmp_path, "uucall.funbill.download", {"subUserName": "agent03"}
    )
    assert Path(str(fun["path"])).name == "funbill_agent03.json", "operation + arguments"
    assert fun["content_type"] == "application/json"
    rows = json.loads(content(fun["path"]))
    assert rows and set(rows[0]) == {"day_account", "id", "daily_symbol", "name"}
    assert names(tmp_path) == sorted([Path(str(basic["path"])).name, Path(str(fun["path"])).name])


async def test_the_same_name_is_replaced_whole(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    args = {"subUserName": "agent01", "file_name": "bill.csv"}
    first = await download(uusim, http_session, tmp_path, "uucall.basicbill.download", args)
    uusim.bill_usage("agent01", 5000)
    second = await download(uusim, http_session, tmp_path, "uucall.basicbill.download", args)
    assert first["path"] == second["path"] and first["sha256"] != second["sha256"]
    assert hashlib.sha256(content(tmp_path / "bill.csv")).hexdigest() == second["sha256"]
    assert names(tmp_path) == ["bill.csv"]


async def test_too_big_leaves_nothing(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    with pytest.raises(CommandFailed) as failed:
        await download(
            uusim, http_session, tmp_path, "uucall.chargebill.download", {}, max_bytes=10
        )
    assert failed.value.code is ErrorCode.FAILED and "max_download_bytes" in failed.value.message
    assert names(tmp_path) == []


async def test_an_error_answer_writes_nothing(
    uusim: UucallSimulator, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    uusim.script("GET", "/account/file/chargebill", status=424, body={"message": "no bill yet"})
    with pytest.raises(CommandFailed) as failed:
        await download(uusim, http_session, tmp_path, "uucall.chargebill.download", {})
    assert failed.value.vendor_code == "424" and "no bill yet" in failed.value.message
    assert names(tmp_path) == []


@pytest.mark.parametrize(
    "name", ["../x.csv", "../../etc/passwd", "a/b.csv", "/etc/passwd", "..", ".", "", "a\\b"]
)
def test_no_name_leaves_the_folder(name: str, tmp_path: Path) -> None:
    with pytest.raises(CommandFailed) as refused:
        Downloads(tmp_path / "bills", 100).target(name)
    assert refused.value.code is ErrorCode.INVALID


def test_a_plain_name_stays_inside(tmp_path: Path) -> None:
    assert Downloads(tmp_path, 100).target("bill.csv") == (tmp_path / "bill.csv").resolve()


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("chargebill_2024-05", "chargebill_2024-05"),
        ("basicbill_../../etc_2024-05", "basicbill_.-.-etc_2024-05"),
        ("..", "download"),
        ("坐席01", "01"),
    ],
)
def test_made_up_names_are_safe(raw: str, safe: str) -> None:
    assert safe_name(raw) == safe
    assert "/" not in safe_name(raw) and ".." not in safe_name(raw)
