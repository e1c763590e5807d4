"""Events past 30026: ids of newer firmware, and a PBX that refuses them.

Sources (Yeastar help center, P-Series Cloud Edition developer guide):
- (30029) Agent Status Changed:
  https://help.yeastar.com/en/p-series-cloud-edition/developer-guide/event-agent-status-changed.html
  (zh-cn: .../zh-cn/p-series-cloud-edition/developer-guide/event-agent-status-changed.html);
  its example, ``msg`` an object, queue ``queue-6402``: pinned below as published.
- (30034) / (30035) / (30036) System Event Notification (Information / Warning / Alert):
  https://help.yeastar.com/en/p-series-cloud-edition/developer-guide/event-system-event-notification-information.html
  (…-warning.html, …-alert.html). No gateway type fits them: vendor.unknown with the frame.
  (The page's example breaks ``event_content`` over raw newlines, which JSON cannot carry; a
  frame has them escaped, as here.)
- S-Series API "QueueAgentRingNoAnswerTimeout": ``queue`` is "the function name (Queue) and the
  queue number" (``queue-6700``):
  https://help.yeastar.com/en/s-series-developer-v2/api-v2/event-queueagentringnoanswertimeout.html
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from gateway.connectors.yeastar.connector import YeastarConnector
from gateway.connectors.yeastar.normalize import normalize_frame
from gateway.connectors.yeastar.settings import ALL_YEASTAR_TOPICS, NEWER_YEASTAR_TOPICS
from gateway.schema.events import NormalizeContext
from tests.conftest import wait_for
from tests.integration.fixtures import pbx_settings, running_gateway

CTX = NormalizeContext(
    tenant="t", vendor="yeastar", tz=ZoneInfo("UTC"), received_at=datetime(2024, 1, 1, tzinfo=UTC)
)

AGENT_STATUS_EXAMPLE = {
    "type": 30029,
    "sn": "3631A2124788",
    "msg": {
        "queue_number": "queue-6402",
        "agent_number": "1002",
        "status": "Paused",
        "reason": "Lunch",
    },
}

SYSTEM_EVENT_WARNING = {
    "type": 30035,
    "sn": "365XXXXXXXXXXUUG",
    "msg": {
        "event_name": "sip_trunk_disconnect",
        "event_type": "telephony",
        "event_level": "warn",
        "event_content": "The PBX failed to connect or register to the account trunk: 89-Inbound"
        " at 2026/01/16 09:57:30 due to Unreachable.\nNow the extensions may not be able to call"
        " through this trunk.\nPlease log into your PBX to check as soon as possible.\nPBX Name:"
        " PBX-CRM\nPBX SN: 365XXXXXXXXXXUUG",
        "create_time": "2026/01/16 15:00:49",
    },
}


def test_agent_status_changed_is_an_agent_queue_status() -> None:
    (event,) = normalize_frame(orjson.dumps(AGENT_STATUS_EXAMPLE), CTX)
    assert event.type == "agent.queue_status"
    assert event.vendorevent == "30029"
    assert event.subject == "1002"
    assert event.data == {
        "extension": "1002",
        "queue": "6402",
        "logged_in": None,
        "paused": True,
        "pause_reason": "Lunch",
        "call_state": None,
    }


def test_an_undocumented_agent_status_is_published_unknown() -> None:
    frame = {
        **AGENT_STATUS_EXAMPLE,
        "msg": orjson.dumps({"agent_number": "1002", "status": "Wrapping"}).decode(),
    }
    (event,) = normalize_frame(orjson.dumps(frame), CTX)
    assert event.type == "agent.queue_status"
    assert event.data["paused"] is None and event.data["queue"] is None


@pytest.mark.parametrize("code", [30034, 30035, 30036, 30027, 30028])
def test_other_newer_ids_stay_vendor_unknown(code: int) -> None:
    (event,) = normalize_frame(orjson.dumps({**SYSTEM_EVENT_WARNING, "type": code}), CTX)
    assert event.type == "vendor.unknown"
    assert event.data["event"] == str(code)
    assert event.data["raw"]["msg"]["event_name"] == "sip_trunk_disconnect"


def test_the_default_subscription_names_the_newer_ids() -> None:
    from gateway.connectors.yeastar.settings import YeastarPbxSettings

    settings = YeastarPbxSettings(
        tenant="t", vendor="yeastar", base_url="http://pbx", client_id="c", client_secret="s"
    )
    assert settings.topics == [*ALL_YEASTAR_TOPICS, *NEWER_YEASTAR_TOPICS]


@pytest.mark.integration
@pytest.mark.parametrize("firmware", ["v1.0", "newer"])
async def test_a_pbx_refusing_newer_ids_is_subscribed_without_them(
    sim_factory, collector, unique, firmware: str, capsys
) -> None:
    """An older PBX refuses the whole topic list (errcode 40002): the link subscribes again
    without the newer ids and stays up; a newer one takes them and sends 30029."""
    sim = await sim_factory(firmware=firmware, trap_rate=0.0)
    tenant = f"t{unique}"
    collected = await collector(tenant)
    async with running_gateway(pbx_settings(sim, tenant)) as app:
        connector = app.connectors[0]
        assert isinstance(connector, YeastarConnector)
        await wait_for(lambda: connector.state == "connected")
        await asyncio.wait_for(sim.run_traffic(calls=2, concurrency=2), 30)
        if firmware == "newer":
            await sim.agent_status_changed("2001", "6402")
            await wait_for(lambda: bool(collected.of_type("agent.queue_status")), timeout=10)
            (event,) = collected.of_type("agent.queue_status")
            assert event["data"]["queue"] == "6402" and event["data"]["paused"] is True
        await wait_for(lambda: bool(collected.of_type("cdr.created")), timeout=10)
        assert connector.state == "connected"
    logged = capsys.readouterr()
    narrowed = [
        line for line in (logged.out + logged.err).splitlines() if "subscription_narrowed" in line
    ]
    assert len(narrowed) == (1 if firmware == "v1.0" else 0)
