"""Webhooks through the running gateway (real HTTP, real RabbitMQ): forged deliveries refused,
counted and logged once; a thousand malformed bodies answered 4xx, the gateway unaffected."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from gateway.app import GatewayApp
from gateway.connectors.meiqia.metrics import WEBHOOKS
from gateway.settings import HttpSettings
from gateway.sim.meiqia.server import MeiqiaSimulator
from gateway.sim.meiqia.webhooks import sign
from tests.conftest import wait_for
from tests.integration.fixtures import Collected, running_gateway
from tests.meiqia.helpers import pbx_for

pytestmark = pytest.mark.integration

HTTP = HttpSettings(enabled=True, host="127.0.0.1", port=0)


def count(tenant: str, result: str) -> float:
    return WEBHOOKS.labels(tenant, result)._value.get()


def connected(got: Collected) -> bool:
    return any(e["data"]["state"] == "connected" for e in got.of_type("gateway.connection"))


@pytest.fixture
async def gateway(
    msim: MeiqiaSimulator, unique: str, collector
) -> AsyncIterator[tuple[GatewayApp, str, str, Collected]]:
    """A gateway taking webhooks for ``m<unique>`` (1 KiB limit); the simulator posts there."""
    tenant = f"m{unique}"
    secret = f"whsec-{unique}"
    got: Collected = await collector(tenant)
    msim.webhooks.secret = secret
    pbx = pbx_for(msim, tenant, webhook_secret=secret, webhook_max_bytes=1024)
    async with running_gateway(pbx, http=HTTP) as app:
        assert app.web is not None
        url = f"http://127.0.0.1:{app.web.port}/webhooks/meiqia/{tenant}"
        await wait_for(lambda: connected(got), timeout=15)
        yield app, tenant, url, got


async def test_forged_deliveries_are_refused_counted_and_logged_once(
    msim: MeiqiaSimulator, gateway: tuple[GatewayApp, str, str, Collected]
) -> None:
    _app, tenant, url, got = gateway
    forged = [
        orjson.dumps(
            {
                "id": f"sub_forged_{n}",
                "event": "cdr.hangup",
                "enterprise_token": "x",
                "created_at": 1714533805,
                "cdr": {"call_uuid": f"forged-{n}", "call_type": "外呼", "states": "接听"},
            }
        )
        for n in range(6)
    ]
    bad, unsigned = count(tenant, "bad_signature"), count(tenant, "unsigned")
    with capture_logs() as logs:
        for body in forged:
            assert await msim.webhooks.post(body, "bad", url=url) == 401
        for body in forged[:3]:
            assert await msim.webhooks.post(body, "none", url=url) == 401
        # both headers sent: Meiqia-Signature (wrong here) is the one that counts
        assert await msim.webhooks.post(forged[0], "bad", header="both", url=url) == 401
    assert count(tenant, "bad_signature") == bad + 7
    assert count(tenant, "unsigned") == unsigned + 3
    refusals = Counter(e["refusal"] for e in logs if e["event"] == "webhook_refused")
    assert refusals == {"bad_signature": 1, "unsigned": 1}  # once per source, not per request
    # a genuine delivery (the help page's header variant) still goes through
    call = msim.place_call("外呼", "接听", agent_id=1)
    await wait_for(lambda: msim.calls[call].hung_up, timeout=10)
    genuine = orjson.dumps(msim.webhooks.envelope(msim.calls[call].record))
    assert await msim.webhooks.post(genuine, "good", header="Meiqia-Sign", url=url) == 200
    await wait_for(lambda: bool(got.of_type("cdr.created")), timeout=10)
    published = {e["data"]["call_id"] for e in got.of_type("cdr.created")}
    assert published == {call}  # nothing of the forged ones


def malformed(
    tenant: str, secret: str, rng: random.Random
) -> list[tuple[str, bytes, dict[str, str], int]]:
    """1,000 bad deliveries, ten kinds: (tenant, body, headers, the status expected)."""

    def signed(body: bytes) -> dict[str, str]:
        return {"Meiqia-Signature": sign(body, secret)}

    cases: list[tuple[str, bytes, dict[str, str], int]] = []
    for n in range(1000):
        kind = n % 10
        junk = rng.randbytes(rng.randrange(1, 200))
        if kind == 0:  # signed, not JSON
            body = b"<xml>" + junk
            cases.append((tenant, body, signed(body), 400))
        elif kind == 1:  # signed, invalid UTF-8
            body = b'{"id": "\xff\xfe' + junk + b'"}'
            cases.append((tenant, body, signed(body), 400))
        elif kind == 2:  # signed JSON, not an object: Meiqia's all the same, taken
            body = orjson.dumps([n, "x"])
            cases.append((tenant, body, signed(body), 200))
        elif kind == 3:  # signed call topic without id or Cdr: taken, published as rejected
            body = orjson.dumps({"event": "cdr.hangup", "n": n})
            cases.append((tenant, body, signed(body), 200))
        elif kind == 4:  # signed, empty
            cases.append((tenant, b"", signed(b""), 400))
        elif kind == 5:  # unsigned
            body = orjson.dumps({"id": f"d{n}", "event": "cdr.hangup"})
            cases.append((tenant, body, {}, 401))
        elif kind == 6:  # wrong signature
            body = orjson.dumps({"id": f"d{n}", "event": "cdr.hangup"})
            cases.append((tenant, body, {"Meiqia-Signature": sign(body, "guess")}, 401))
        elif kind == 7:  # garbage in the header
            cases.append((tenant, junk, {"Meiqia-Sign": junk.hex()[:60] or "00"}, 401))
        elif kind == 8:  # over the size limit
            body = b"x" * (1025 + rng.randrange(4000))
            cases.append((tenant, body, signed(body), 413))
        else:  # a tenant that does not exist
            body = orjson.dumps({"id": f"d{n}", "event": "cdr.hangup"})
            cases.append((f"no-such-{n}", body, signed(body), 404))
    return cases


async def test_a_thousand_malformed_bodies_get_clear_answers_and_the_gateway_goes_on(
    msim: MeiqiaSimulator, gateway: tuple[GatewayApp, str, str, Collected]
) -> None:
    app, tenant, url, got = gateway
    base = url.rsplit("/", 1)[0]
    cases = malformed(tenant, msim.webhooks.secret, random.Random(11))
    limit = asyncio.Semaphore(50)
    answers: list[tuple[int, int, Any]] = []

    async def send(session: aiohttp.ClientSession, case: Any) -> None:
        target, body, headers, expected = case
        async with limit, session.post(f"{base}/{target}", data=body, headers=headers) as resp:
            answers.append((expected, resp.status, await resp.json()))

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(send(session, case) for case in cases))
    assert len(answers) == 1000
    assert [(e, s) for e, s, _ in answers if e != s] == []
    assert Counter(s for _e, s, _b in answers) == {
        400: 300,
        200: 200,
        401: 300,
        413: 100,
        404: 100,
    }
    assert all(isinstance(b.get("error"), str) and b["error"] for _e, s, b in answers if s != 200)
    # the gateway goes on: healthy, still connected, a genuine delivery is published
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{app.web.port}/readyz") as resp:  # type: ignore[union-attr]
            assert resp.status == 200
            assert (await resp.json())["links"][0]["state"] == "connected"
    call = msim.place_call("来电", "接听")
    await wait_for(lambda: msim.calls[call].hung_up, timeout=10)
    genuine = orjson.dumps(msim.webhooks.envelope(msim.calls[call].record))
    assert await msim.webhooks.post(genuine, "good", url=url) == 200
    await wait_for(lambda: bool(got.of_type("cdr.created")), timeout=10)
    assert [e["data"]["call_id"] for e in got.of_type("cdr.created")] == [call]
    # a refused delivery publishes nothing; a signed one is never lost (a 4xx would make
    # Meiqia deliver it for ever): the call topics without a Cdr are published as rejected
    await wait_for(lambda: len(got.of_type("gateway.rejected")) == 100, timeout=10)
    await wait_for(lambda: len(got.of_type("vendor.unknown")) == 100, timeout=10)


async def test_a_thin_webhook_is_completed_from_the_record(
    msim: MeiqiaSimulator, unique: str, collector
) -> None:
    """A signed ``cdr.hangup`` whose Cdr holds only the call id is published with the call's
    ``records`` record (direction, disposition, ``user_data``) found by ``call_uuid``: the
    first reading of a call names it for good, so it must be the full one."""
    tenant = f"m{unique}"
    secret = f"whsec-{unique}"
    got: Collected = await collector(tenant)
    msim.webhooks.secret = secret
    pbx = pbx_for(msim, tenant, webhook_secret=secret, records_poll_interval_s=3600)
    async with running_gateway(pbx, http=HTTP) as app:
        assert app.web is not None
        url = f"http://127.0.0.1:{app.web.port}/webhooks/meiqia/{tenant}"
        await wait_for(lambda: connected(got), timeout=15)
        call = msim.place_call("外呼", "接听", agent_id=1, user_data="crm-7")
        await wait_for(lambda: any(r["call_uuid"] == call for r in msim.records()), timeout=15)
        thin = {
            "id": f"sub_thin_{unique}",
            "event": "cdr.hangup",
            "enterprise_token": "x",
            "created_at": int(time.time()),
            "cdr": {"call_uuid": call},
        }
        assert await msim.webhooks.post(orjson.dumps(thin), "good", url=url) == 200
        await wait_for(lambda: bool(got.of_type("cdr.created")), timeout=15)
    (cdr,) = got.of_type("cdr.created")
    assert cdr["data"]["call_id"] == call
    assert (cdr["data"]["direction"], cdr["data"]["disposition"]) == ("outbound", "answered")
    assert cdr["data"]["user_data"] == "crm-7"
