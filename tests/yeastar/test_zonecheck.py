"""A PBX whose time zone is left at the default (UTC) or set wrong in the gateway.

Sources:
- manual ``/work/shared/seeds/003_9e6f105ee0641e0c.txt`` line 17503 / 17507 (30012 example):
  call id ``1651057476.362`` and ``time_start`` ``2022-04-27 19:04:36`` on a PBX in China
  (+08:00): the call id carries the PBX's own Unix time of the call's start, the start text its
  local wall clock (tests/fixtures/yeastar/30012_internal_cdr.json).
- Yeastar help center, "(30026) Agent Ringing Timeout" and "(30025) Agent Auto Pause"
  (https://help.yeastar.com/en/p-series-cloud-edition/developer-guide/event-agent-ringing-timeout.html):
  call ids of the same ``<unix>.<sequence>`` shape (``1713151497.32``).
- IANA tz database: every UTC offset in use is a whole quarter hour (Asia/Kathmandu +05:45,
  America/St_Johns -03:30, Pacific/Chatham +12:45), between -12:00 and +14:00.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from prometheus_client import REGISTRY

from gateway.connectors.yeastar import zonecheck
from gateway.connectors.yeastar.connector import YeastarConnector
from gateway.connectors.yeastar.normalize import normalize_cdr_record, normalize_frame
from gateway.schema.events import NormalizeContext, StreamMemory
from tests.conftest import wait_for
from tests.integration.fixtures import pbx_settings, running_gateway

FIXTURE = Path(__file__).parents[1] / "fixtures" / "yeastar" / "30012_internal_cdr.json"
AT = datetime(2024, 1, 1, tzinfo=UTC)


def _ctx(zone: str, memory: StreamMemory | None = None) -> NormalizeContext:
    return NormalizeContext(
        tenant="t",
        vendor="yeastar",
        tz=ZoneInfo(zone),
        received_at=AT,
        memory=memory or StreamMemory(),
    )


def _cdr(**changes: object) -> str:
    frame = orjson.loads(FIXTURE.read_bytes())["frame"]
    msg = {**orjson.loads(frame["msg"]), **changes}
    return orjson.dumps({**frame, "msg": orjson.dumps(msg).decode()}).decode()


@pytest.mark.parametrize(
    "configured", ["Asia/Shanghai", "UTC", "America/New_York", "Asia/Kathmandu", "Pacific/Chatham"]
)
def test_a_wrong_zone_does_not_change_what_the_manuals_cdr_proves(configured: str) -> None:
    """The manual's internal CDR began its call (start == call id second at +08:00): whatever
    zone the gateway is told, its direction is ``internal``; only the start instant moves."""
    (event,) = normalize_frame(_cdr(), _ctx(configured))
    assert event.type == "cdr.created"
    assert event.data["direction"] == "internal"
    assert event.data["leg_direction"] == "internal"
    local = datetime(2022, 4, 27, 19, 4, 36, tzinfo=ZoneInfo(configured))
    assert event.data["started_at"] == local.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("configured", ["Asia/Shanghai", "UTC", "America/New_York"])
def test_a_later_leg_proves_nothing_in_any_zone(configured: str) -> None:
    """A leg that starts 37 s after its call began (a forwarded leg) is no zone's call start."""
    (event,) = normalize_frame(_cdr(time_start="2022-04-27 19:05:13"), _ctx(configured))
    assert event.data["direction"] == "unknown"
    assert event.data["leg_direction"] == "internal"


def test_the_confirmed_offset_rules_out_a_leg_a_whole_hour_later() -> None:
    """Before the link has seen the PBX's offset, any offset a PBX can have is admitted; once
    it has (``zonecheck.MEMORY_KEY``), only that one (or the configured zone's) proves."""
    memory = StreamMemory()
    memory.set(zonecheck.MEMORY_KEY, timedelta(hours=8))
    first, later = _cdr(), _cdr(time_start="2022-04-27 20:04:36")  # exactly +1 h
    assert normalize_frame(first, _ctx("UTC", memory))[0].data["direction"] == "internal"
    assert normalize_frame(later, _ctx("UTC", memory))[0].data["direction"] == "unknown"
    assert normalize_frame(later, _ctx("UTC"))[0].data["direction"] == "internal"  # not known yet


def test_an_ambiguous_date_is_read_the_same_in_a_wrong_zone() -> None:
    """cdr/list ``time`` whose day and month can swap (03/04): the call id decides between
    them in any configured zone, not only in the right one."""
    record = {
        "time": "04/03/2024 09:15:00",  # 3 April or 4 March, PBX at +08:00
        "uid": None,
        "call_from": "2005",
        "call_to": "2002",
        "call_type": "Internal",
        "disposition": "ANSWERED",
        "call_id": str(int(datetime(2024, 4, 3, 1, 15, tzinfo=UTC).timestamp())) + ".7",
    }
    for configured in ("Asia/Shanghai", "UTC", "America/Los_Angeles", "Asia/Tokyo"):
        (event,) = normalize_cdr_record(record, _ctx(configured), display_format=None)
        assert event.type == "cdr.created", event.data
        local = datetime.fromisoformat(event.data["started_at"]).astimezone(ZoneInfo(configured))
        assert (local.month, local.day) == (4, 3)
        assert event.data["direction"] == "internal"


def test_a_cdr_list_timestamp_is_compared_as_it_is() -> None:
    """With cdr/list's Unix ``timestamp`` no zone is involved: a leg an hour after its call
    proves nothing, in any zone."""
    began = 1651057476
    record = {
        "timestamp": began + 3600,
        "call_id": f"{began}.362",
        "call_type": "Internal",
        "call_from": "2005",
        "call_to": "2002",
    }
    (event,) = normalize_cdr_record(record, _ctx("UTC"))
    assert event.data["direction"] == "unknown"
    (event,) = normalize_cdr_record({**record, "timestamp": began}, _ctx("UTC"))
    assert event.data["direction"] == "internal"


@pytest.mark.parametrize(
    ("wall", "offset"),
    [
        ("2022-04-27 19:04:36", timedelta(hours=8)),
        ("2022-04-27 11:04:37", timedelta(0)),  # within the slack
        ("2022-04-27 16:49:36", timedelta(hours=5, minutes=45)),  # Asia/Kathmandu
        ("2022-04-27 01:34:36", timedelta(hours=-9, minutes=-30)),  # Pacific/Marquesas
        ("2022-04-27 19:05:13", None),  # 37 s after: a later leg
        ("2022-04-28 03:04:36", None),  # +16:00: no PBX runs there
    ],
)
def test_leg_offset(wall: str, offset: timedelta | None) -> None:
    started_at = datetime.fromisoformat(wall).replace(tzinfo=UTC)
    assert zonecheck.leg_offset("1651057476.362", started_at, ZoneInfo("UTC")) == offset


def test_the_offset_is_confirmed_by_agreeing_samples_only() -> None:
    check = zonecheck.ZoneCheck(ZoneInfo("Asia/Shanghai"))
    utc = ZoneInfo("UTC")

    def leg(call_start: int, delay_s: int = 0) -> tuple[str, datetime]:
        # what the normalizer reads from a PBX at UTC configured as Asia/Shanghai
        wall = datetime.fromtimestamp(call_start + delay_s, utc).replace(tzinfo=None)
        return f"{call_start}.1", wall.replace(tzinfo=ZoneInfo("Asia/Shanghai"))

    assert check.observe(*leg(1700000000)) is None
    assert check.observe(*leg(1700000100, delay_s=900)) is None  # odd one out: a later leg
    assert check.observe(*leg(1700000200)) is None
    assert check.observe(*leg(1700000300)) is None
    verdict = check.observe(*leg(1700000400))
    assert verdict is not None and verdict.mismatch
    assert verdict.pbx_offset == timedelta(0) and verdict.configured_offset == timedelta(hours=8)
    assert "UTC+00:00" in verdict.message() and "Asia/Shanghai is UTC+08:00" in verdict.message()
    assert check.observe(*leg(1700000500)) is None  # unchanged: nothing new to say


@pytest.mark.integration
async def test_a_pbx_left_at_utc_is_reported_once(sim_factory, collector, unique, capsys) -> None:
    """The simulated PBX's clock runs at UTC while the gateway is told Asia/Shanghai: one
    ``pbx_timezone_mismatch`` warning, the status page's link row and the gauges say so, and
    the calls' first legs keep their direction."""
    sim = await sim_factory(tz="UTC", trap_rate=0.0)
    tenant = f"t{unique}"
    collected = await collector(tenant)
    async with running_gateway(pbx_settings(sim, tenant)) as app:
        connector = app.connectors[0]
        assert isinstance(connector, YeastarConnector)
        await wait_for(lambda: connector.state == "connected")
        await asyncio.wait_for(sim.run_traffic(calls=12, concurrency=3), 60)
        await wait_for(lambda: "timezone_warning" in connector.health(), timeout=15)
        health = connector.health()
        assert health["pbx_utc_offset_s"] == 0
        assert "Asia/Shanghai is UTC+08:00" in health["timezone_warning"]
        labels = {"tenant": tenant}
        assert REGISTRY.get_sample_value("gateway_yeastar_timezone_mismatch", labels) == 1
        assert REGISTRY.get_sample_value("gateway_yeastar_pbx_utc_offset_seconds", labels) == 0
        await wait_for(lambda: len(collected.of_type("cdr.created")) >= 12, timeout=15)
    logged = capsys.readouterr()
    lines = (logged.out + logged.err).splitlines()
    warnings = [line for line in lines if "pbx_timezone_mismatch" in line and tenant in line]
    assert len(warnings) == 1
    directions = {e["data"]["direction"] for e in collected.of_type("cdr.created")}
    assert directions - {"unknown"}, "first legs must keep their direction"
