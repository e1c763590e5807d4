"""Slow request headers (slowloris) on the HTTP listeners: a connection that has not completed
its request headers within ``http.header_timeout_s`` of opening, or of its previous response,
is closed; trickling bytes does not extend it. Keep-alive and slow handlers are not cut, and
other clients are served meanwhile. Real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from gateway.settings import HttpSettings
from gateway.web.deadline import HEADER_TIMEOUTS
from gateway.web.server import WebServer
from tests.conftest import wait_for

TIMEOUT_S = 2.0


def status() -> dict[str, Any]:
    return {"ready": True, "reasons": [], "pbxs": []}


async def hook(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"tenant": request.match_info["tenant"]})


async def slow_hook(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "0")))  # a handler that takes its time
    return web.json_response({"slow": True})


@contextlib.asynccontextmanager
async def serving(timeout_s: float = TIMEOUT_S) -> AsyncIterator[WebServer]:
    server = WebServer(
        status,
        "127.0.0.1",
        0,
        {"meiqia": [web.post("/{tenant}", hook), web.get("/slow/x", slow_hook)]},
        public=("127.0.0.1", 0),
        header_timeout_s=timeout_s,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def trickle(writer: asyncio.StreamWriter, data: bytes, every_s: float) -> None:
    """Send ``data`` a byte at a time (a slowloris client), until the server hangs up."""
    with contextlib.suppress(ConnectionError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every_s)


async def closed_after(reader: asyncio.StreamReader, started: float, bound: float) -> float:
    """Seconds from ``started`` until the server closed the connection (EOF or reset)."""
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), bound) == b""
    return time.monotonic() - started


def timeouts(listener: str) -> float:
    return HEADER_TIMEOUTS.labels(listener=listener)._value.get()


SLOW_HEAD = (
    b"POST /webhooks/meiqia/acme HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n{}"
)


@pytest.mark.parametrize("listener", ["public", "admin"])
async def test_slow_headers_are_closed_within_the_bound_while_others_are_served(
    listener: str,
) -> None:
    with capture_logs() as logs:
        await _three_slowloris_and_a_client(listener)
    lines = [e for e in logs if e["event"] == "http_header_timeout"]
    assert len(lines) == 1  # once per source, not once per connection
    assert lines[0]["listener"] == listener and lines[0]["source"] == "127.0.0.1"


async def _three_slowloris_and_a_client(listener: str) -> None:
    async with serving() as server:
        port = server.public_port if listener == "public" else server.port
        before = timeouts(listener)
        started = time.monotonic()
        readers, writers, tasks = [], [], []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            readers.append(reader)
            writers.append(writer)
            tasks.append(asyncio.ensure_future(trickle(writer, SLOW_HEAD, every_s=1.0)))
        # Meanwhile an ordinary client is served, on both listeners.
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.public_port}/webhooks/meiqia/acme"
            async with session.post(url, data=b"{}") as resp:
                assert resp.status == 200
            async with session.get(f"http://127.0.0.1:{server.port}/readyz") as resp:
                assert resp.status == 200
        took = [await closed_after(r, started, TIMEOUT_S + 5) for r in readers]
        assert all(TIMEOUT_S - 0.1 <= t <= TIMEOUT_S + 3 for t in took), took
        for task, writer in zip(tasks, writers, strict=True):
            task.cancel()
            writer.close()
        assert timeouts(listener) == before + 3


async def test_keep_alive_is_kept_and_the_deadline_restarts_after_each_response() -> None:
    async with serving() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.public_port)
        request = (
            b"POST /webhooks/meiqia/acme HTTP/1.1\r\nHost: gateway\r\nContent-Length: 2\r\n\r\n{}"
        )
        for n in range(4):  # 4 requests over one connection, 1 s apart: 3 s > the bound
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            length = next(h for h in head.split(b"\r\n") if h.startswith(b"Content-Length"))
            await reader.readexactly(int(length.split(b":")[1]))
            answered = time.monotonic()
            if n < 3:
                await asyncio.sleep(1.0)  # an idle keep-alive client, under the bound
        # Idle after its last response: closed once the bound has passed since that response.
        took = await closed_after(reader, answered, TIMEOUT_S + 5)
        assert TIMEOUT_S - 0.1 <= took <= TIMEOUT_S + 3
        writer.close()


async def test_a_handler_slower_than_the_bound_is_not_cut() -> None:
    async with serving(timeout_s=0.5) as server:
        url = f"http://127.0.0.1:{server.public_port}/webhooks/meiqia/slow/x?s=1.5"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200 and await resp.json() == {"slow": True}


async def test_a_connection_that_sends_nothing_is_closed() -> None:
    async with serving(timeout_s=0.5) as server:
        before = timeouts("admin")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        took = await closed_after(reader, time.monotonic(), 5)
        assert took < 2
        await wait_for(lambda: timeouts("admin") == before + 1, timeout=2)
        writer.close()


def test_the_header_timeout_is_a_setting() -> None:
    assert HttpSettings().header_timeout_s == 10.0
    assert HttpSettings(header_timeout_s=3).header_timeout_s == 3.0
    with pytest.raises(ValueError):
        HttpSettings(header_timeout_s=0)
