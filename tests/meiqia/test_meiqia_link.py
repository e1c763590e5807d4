"""The Meiqia link through the real gateway and RabbitMQ: webhooks and polling publishing each
call once, the cursor across a restart, a 429 storm, a refused token."""

from __future__ import annotations

import json
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.connectors.meiqia.metrics import WEBHOOKS
from gateway.connectors.meiqia.normalize import record_event
from gateway.runtime.metrics import POLLS
from gateway.settings import HttpSettings
from gateway.sim.meiqia.server import MeiqiaSimulator
from tests.conftest import wait_for
from tests.integration.fixtures import Collected, running_gateway
from tests.meiqia.helpers import ctx, pbx_for

pytestmark = pytest.mark.integration

CALLS = 8


def connected(got: Collected) -> bool:
    return any(e["data"]["state"] == "connected" for e in got.of_type("gateway.connection"))


def cdr_ids(got: Collected) -> list[str]:
    return [e["data"]["call_id"] for e in got.of_type("cdr.created")]


async def test_webhook_and_polling_see_every_call_and_it_is_published_once(
    msim: MeiqiaSimulator, unique: str, collector, command_bus
) -> None:
    """Calls dialled through the bus; each is delivered by signed webhooks (every one twice:
    the same delivery again or the same call under a new delivery id, some after a forged
    copy; every fourth lost on the way) and read by the records poll in several overlapping
    windows, some records listed late. The lost ones are delivered at last, after polling
    published them. Each call is published exactly once, under the id its record has."""
    tenant = f"m{unique}"
    secret = f"whsec-{unique}"
    got: Collected = await collector(tenant)
    msim.webhooks.secret = secret
    msim.webhooks.duplicates = 1.0
    msim.webhooks.bad_signatures = 0.5
    msim.webhooks.drop_every = 4
    msim.record_delay_s, msim.late_every = 0.6, 3
    pbx = pbx_for(msim, tenant, webhook_secret=secret)
    http = HttpSettings(enabled=True, host="127.0.0.1", port=0)
    async with running_gateway(pbx, commands=command_bus.settings, http=http) as app:
        assert app.web is not None
        await msim.webhooks.target(f"http://127.0.0.1:{app.web.port}/webhooks/meiqia/{tenant}")
        await wait_for(lambda: connected(got), timeout=15)
        placed = []
        for n in range(CALLS):
            args = {"agent_id": 1 + n % 4, "callee": f"1380000{n:04d}", "user_data": f"lead-{n}"}
            result = await command_bus.call(tenant, "call.dial", args)
            assert result["ok"] is True, result
            placed.append(result["result"]["call_id"])
        # both paths saw every call: its webhooks were answered, its record was polled ...
        await wait_for(
            lambda: msim.webhooks.idle() and all(msim.served_records[u] >= 1 for u in placed),
            timeout=30,
        )
        # ... and polled again by a later, overlapping window
        seen = Counter({u: msim.served_records[u] for u in placed})
        await wait_for(lambda: all(msim.served_records[u] > seen[u] for u in placed), timeout=15)
        await wait_for(lambda: len(cdr_ids(got)) >= CALLS, timeout=15)
        # the lost deliveries arrive at last (new delivery ids): acknowledged, not published
        duplicates = WEBHOOKS.labels(tenant, "duplicate")
        before = duplicates._value.get()
        lost = list(msim.webhooks.dropped)
        for call in lost:
            body = orjson.dumps(msim.webhooks.envelope(msim.calls[call].record))
            assert await msim.webhooks.post(body, "good", retry=True) == 200
        assert duplicates._value.get() == before + len(lost)
    cdrs = got.of_type("cdr.created")
    assert sorted(cdr_ids(got)) == sorted(placed)  # each call once
    for event in cdrs:
        record = msim.calls[event["data"]["call_id"]].record
        assert event["id"] == record_event(record, ctx(tenant)).id
        assert event["data"]["user_data"] == record["user_data"]
        assert event["data"]["direction"] == "outbound"
    by_webhook = [e["data"]["call_id"] for e in cdrs if e["vendorevent"] == "cdr.hangup"]
    by_polling = [e["data"]["call_id"] for e in cdrs if e["vendorevent"] == "records"]
    assert sorted(by_polling) == sorted(lost) and len(by_webhook) == CALLS - len(lost)
    stats = msim.webhooks.stats
    delivered = CALLS - stats["dropped"]
    assert stats["calls"] == CALLS and stats["dropped"] == len(lost) == CALLS // 4
    assert stats["same_id_again"] + stats["new_id_again"] == delivered
    assert stats["status_200"] == 2 * delivered + len(lost)
    assert stats["status_401"] == stats["forged"] > 0
    counts = {
        "calls placed (call.dial through the bus)": len(placed),
        "webhook POSTs sent (first + repeats + forged + late)": stats["sent"],
        "  delivery ids sent by the simulator, calls whose delivery was lost": (
            stats["deliveries"],
            stats["dropped"],
        ),
        "  lost ones delivered late (after polling), acknowledged as duplicates": len(lost),
        "  repeats: same delivery id / same call, new id": (
            stats["same_id_again"],
            stats["new_id_again"],
        ),
        "  forged (bad signature, answered 401)": stats["forged"],
        "records polled (times a record of these calls was returned)": sum(
            msim.served_records[u] for u in placed
        ),
        "cdr.created published": len(cdrs),
        "  first seen by webhook / by polling": (
            sum(e["vendorevent"] == "cdr.hangup" for e in cdrs),
            sum(e["vendorevent"] == "records" for e in cdrs),
        ),
    }
    print("\nwebhook + polling counts:", json.dumps(counts, ensure_ascii=False, indent=2))


async def test_cursor_and_deduplication_survive_a_restart(
    msim: MeiqiaSimulator, unique: str, collector, tmp_path: Path
) -> None:
    """Records only (no webhooks). A restart reads the overlap again (the first calls are
    returned again) but publishes only what is new; seat changes likewise: the first poll is
    the baseline, a restart announces only the change made while it was down."""
    tenant = f"m{unique}"
    got: Collected = await collector(tenant)
    msim.late_every = 2  # every second record is listed three times later
    pbx = pbx_for(msim, tenant)
    first = [msim.place_call("外呼", "接听", agent_id=1) for _ in range(2)]
    first.append(msim.place_call("来电", "队列放弃"))
    async with running_gateway(pbx, state_dir=tmp_path):
        await wait_for(lambda: len(cdr_ids(got)) == 3, timeout=20)
        await wait_for(lambda: msim.requests["sips"] >= 1, timeout=10)  # the baseline is read
        msim.seats["8006"].agent_id = 5
        await wait_for(lambda: len(got.of_type("agent.seat")) == 1, timeout=10)
    served = {u: msim.served_records[u] for u in first}
    second = [msim.place_call("来电", "ivr"), msim.place_call("外呼", "被叫未接", agent_id=2)]
    msim.seats["8005"].agent_id = 3  # changed while nobody watched
    await wait_for(lambda: len(msim.records()) == 5, timeout=15)
    async with running_gateway(pbx, state_dir=tmp_path):
        await wait_for(lambda: len(cdr_ids(got)) == 5, timeout=20)
        await wait_for(lambda: all(msim.served_records[u] > served[u] for u in first), timeout=10)
        await wait_for(lambda: len(got.of_type("agent.seat")) == 2, timeout=10)
        await wait_for(
            lambda: any(e["data"]["recovered"] == 2 for e in got.of_type("gateway.gap")),
            timeout=10,
        )
    assert sorted(cdr_ids(got)) == sorted(first + second)
    seats = [(e["subject"], e["data"]["changes"]) for e in got.of_type("agent.seat")]
    assert seats == [("8006", ["occupied", "agent"]), ("8005", ["occupied", "agent"])]
    assert len({e["id"] for e in got.events}) == len(got.events)


async def test_a_429_storm_backs_off_and_loses_nothing(
    msim: MeiqiaSimulator, unique: str, collector
) -> None:
    """Bursts of three 429s with ``Retry-After: 1`` every two seconds: each poller waits at
    least that long before its next request, the link stays connected, and every call is
    published once."""
    tenant = f"m{unique}"
    got: Collected = await collector(tenant)
    pbx = pbx_for(msim, tenant, records_poll_interval_s=0.2, seats_poll_interval_s=0.2)
    placed = [msim.place_call("外呼", "接听", agent_id=1 + n % 4) for n in range(6)]
    async with running_gateway(pbx):
        await wait_for(lambda: connected(got), timeout=15)
        msim.burst_retry_after_s, msim.burst_size, msim.burst_every_s = 1, 3, 2.0
        placed += [msim.place_call("来电", "接听") for _ in range(6)]
        await wait_for(lambda: sum(s == 429 for _t, _p, s in msim.log) >= 9, timeout=20)
        placed += [msim.place_call("来电", "振铃未接") for _ in range(4)]
        await wait_for(lambda: len(cdr_ids(got)) >= len(placed), timeout=30)
        msim.burst_every_s = 0.0
    assert sorted(cdr_ids(got)) == sorted(placed)
    refused = 0
    for path in ("records", "sips"):
        timeline = [(t, s) for t, p, s in msim.log if p == path]
        for (at, status), (next_at, _) in pairwise(timeline):
            if status == 429:
                refused += 1
                assert next_at - at >= 1.0, f"{path}: asked again {next_at - at:.2f} s after a 429"
    assert refused >= 9
    states = [e["data"]["state"] for e in got.of_type("gateway.connection")]
    assert states[0] == "connected" and "disconnected" not in states[:-1]  # a pause, no outage


async def test_a_refused_token_stops_polling_with_auth_failed(
    msim: MeiqiaSimulator, unique: str, collector
) -> None:
    """The token is permanent and the gateway never asks for one: a 401 publishes
    ``auth_failed`` with the reason and stops both pollers until the settings change."""
    tenant = f"m{unique}"
    got: Collected = await collector(tenant)
    pbx = pbx_for(msim, tenant)
    stopped = POLLS.labels(tenant, "meiqia", "stopped")

    def failed() -> list[dict[str, Any]]:
        return [e for e in got.of_type("gateway.connection") if e["data"]["state"] == "auth_failed"]

    async with running_gateway(pbx) as app:
        await wait_for(lambda: connected(got), timeout=15)
        msim.revoke_token()
        await wait_for(lambda: bool(failed()) and stopped._value.get() == 2, timeout=10)
        requests = msim.requests["records"] + msim.requests["sips"]
        with pytest.raises(TimeoutError):  # ten poll intervals: nothing is asked any more
            await wait_for(
                lambda: msim.requests["records"] + msim.requests["sips"] > requests, timeout=3
            )
        [link] = app.status()["links"]
        assert link["state"] == "auth_failed" and link["token_refused"] is True
    [event] = failed()
    reason = event["data"]["reason"]
    assert "refused the access token" in reason and "token已失效" in reason
    assert "never requests a new one" in reason and msim.token not in reason
