"""The public listener under abuse: slow and abandoned bodies, a cap on requests in flight, and a
bounded loopback fuzz run through the running gateway (split listeners, real RabbitMQ): 1,000
malformed and 1,000 forged webhooks plus slow clients (stalled bodies, and headers sent a byte
at a time, each closed within ``http.header_timeout_s``); the gateway ends ready and publishes
only the genuine delivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.connectors.meiqia import webhooks as webhook
from gateway.settings import AdminListenerSettings, HttpSettings, PublicListenerSettings
from gateway.sim.meiqia.server import MeiqiaSimulator
from gateway.sim.meiqia.webhooks import sign
from gateway.web.server import build_public_app
from tests.conftest import wait_for
from tests.integration.fixtures import Collected, running_gateway
from tests.meiqia.helpers import pbx_for
from tests.meiqia.test_meiqia_webhook_gateway import connected, malformed
from tests.meiqia.test_webhooks import Owner, Post, route
from tests.operator.test_http_header_timeout import trickle

__all__ = ["route"]


async def slow_post(port: int, path: str, declared: int, sent: bytes) -> asyncio.StreamWriter:
    """A request whose body never completes: headers, then part of the body, then silence."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    writer.write(head.encode() + sent)
    await writer.drain()
    return writer


async def test_a_slow_body_is_cut_at_the_read_timeout(
    route: tuple[Post, Owner, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    post, owner, unique = route
    monkeypatch.setattr(webhook, "BODY_TIMEOUT_S", 0.5)
    # the fixture's base URL is not exposed: a signed fresh post finds the port through it
    status, _answer, _headers = await post(f"a{unique}", b"{}", {})
    assert status == 401
    port = _port_of(post)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST /webhooks/meiqia/a{unique} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    writer.write(head.encode() + b'{"id":')
    await writer.drain()
    started = time.monotonic()
    line = await asyncio.wait_for(reader.readline(), timeout=5)
    assert line.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 3
    writer.close()
    assert owner.deliveries == []


def _port_of(post: Post) -> int:
    cell = next(c for c in post.__closure__ or () if isinstance(c.cell_contents, str))
    return int(cell.cell_contents.split(":")[2].split("/")[0])


async def test_an_abandoned_body_logs_no_traceback(
    route: tuple[Post, Owner, str], caplog: pytest.LogCaptureFixture
) -> None:
    post, owner, unique = route
    await post(f"a{unique}", b"{}", {})
    port = _port_of(post)
    caplog.set_level(logging.DEBUG)
    for _ in range(20):
        writer = await slow_post(port, f"/webhooks/meiqia/a{unique}", 200_000, b"x" * 1000)
        writer.transport.abort()
    await asyncio.sleep(0)  # let the handlers see the resets
    await wait_for(lambda: True, timeout=1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [] and owner.deliveries == []


async def test_requests_in_flight_are_capped() -> None:
    started = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        started.set()
        await request.read()
        return web.json_response({})

    runner = web.AppRunner(build_public_app({"v": [web.post("/{x}", hold)]}, max_in_flight=2))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    writers = []
    try:
        for _ in range(2):
            writers.append(await slow_post(port, "/webhooks/v/a", 100, b"{"))
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}/webhooks/v/a", data=b"{}") as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    finally:
        for writer in writers:
            writer.transport.abort()
        await runner.cleanup()


@pytest.mark.integration
async def test_fuzz_the_public_listener(msim: MeiqiaSimulator, unique: str, collector) -> None:
    tenant = f"m{unique}"
    secret = f"whsec-{unique}"
    got: Collected = await collector(tenant)
    msim.webhooks.secret = secret
    pbx = pbx_for(msim, tenant, webhook_secret=secret, webhook_max_bytes=1024)
    header_timeout_s = 2.0
    http = HttpSettings(
        admin=AdminListenerSettings(port=0),
        public=PublicListenerSettings(port=0),
        header_timeout_s=header_timeout_s,
    )
    rng = random.Random(7)
    async with running_gateway(pbx, http=http) as app:
        assert app.web is not None and app.web.public_port
        public = f"http://127.0.0.1:{app.web.public_port}"
        await wait_for(lambda: connected(got), timeout=15)
        cases: list[tuple[str, bytes, dict[str, str], int]] = malformed(tenant, secret, rng)
        for n in range(1000):  # forged: well-formed, fresh, signed with a guessed secret
            body = orjson.dumps(
                {
                    "id": f"sub_f_{n}",
                    "event": "cdr.hangup",
                    "created_at": int(time.time()),
                    "cdr": {"call_uuid": f"forged-{n}"},
                }
            )
            cases.append((tenant, body, {"Meiqia-Signature": sign(body, f"guess-{n}")}, 401))
        slow = [
            await slow_post(app.web.public_port, f"/webhooks/meiqia/{tenant}", 1000, b"{")
            for _ in range(50)
        ]
        # Slowloris: headers a byte every 0.5 s; each must be closed within the bound.
        head = f"POST /webhooks/meiqia/{tenant} HTTP/1.1\r\nHost: x\r\nX-Pad: {'a' * 100}\r\n"
        loris_closed: list[float] = []

        async def slowloris() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", app.web.public_port)
            opened = time.monotonic()
            sending = asyncio.ensure_future(trickle(writer, head.encode(), every_s=0.5))
            try:
                with contextlib.suppress(ConnectionError):
                    await asyncio.wait_for(reader.read(), header_timeout_s + 10)
                loris_closed.append(time.monotonic() - opened)
            finally:
                sending.cancel()
                writer.close()

        lorises = [asyncio.ensure_future(slowloris()) for _ in range(50)]
        limit = asyncio.Semaphore(50)
        answers: list[tuple[int, int]] = []

        async def send(session: aiohttp.ClientSession, case: Any) -> None:
            target, body, headers, expected = case
            url = f"{public}/webhooks/meiqia/{target}"
            async with limit, session.post(url, data=body, headers=headers) as resp:
                answers.append((expected, resp.status))

        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(send(session, case) for case in cases))
        took = time.monotonic() - started
        for writer in slow:
            writer.transport.abort()
        await asyncio.gather(*lorises)
        assert [(e, s) for e, s in answers if e != s] == []
        assert len(loris_closed) == 50 and max(loris_closed) < header_timeout_s + 3
        print(
            f"fuzz: {len(answers)} requests in {took:.1f} s: {Counter(s for _, s in answers)};"
            f" 50 slowloris connections closed after {min(loris_closed):.1f}"
            f"-{max(loris_closed):.1f} s"
        )
        async with aiohttp.ClientSession() as session:
            admin = f"http://127.0.0.1:{app.web.port}"
            async with session.get(f"{admin}/readyz") as resp:
                assert resp.status == 200
            async with session.get(f"{public}/readyz") as resp:
                assert resp.status == 404
        call = msim.place_call("来电", "接听")
        await wait_for(lambda: msim.calls[call].hung_up, timeout=10)
        genuine = orjson.dumps(msim.webhooks.envelope(msim.calls[call].record))
        assert (
            await msim.webhooks.post(genuine, "good", url=f"{public}/webhooks/meiqia/{tenant}")
            == 200
        )
        await wait_for(lambda: bool(got.of_type("cdr.created")), timeout=10)
    assert [e["data"]["call_id"] for e in got.of_type("cdr.created")] == [call]
    # A correctly signed but malformed delivery is Meiqia's own: taken (200) and published as
    # gateway.rejected with the reason. Nothing forged or unsigned reaches the bus.
    published = orjson.dumps(got.events).decode()
    assert "forged-" not in published and "guess-" not in published
