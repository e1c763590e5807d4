"""The fake PBX: a WebSocket of call frames, a polled record list with overlap, a dial endpoint.

* ``GET /events`` (WebSocket): JSON text frames
  ``{"kind": "call", "id": "c1", "state": "ringing", "from": "2001", "to": "2002", "at": <unix>}``
  sent by :meth:`FakePbxSimulator.push`; :meth:`FakePbxSimulator.drop` closes every socket.
* ``GET /records?after=<seq>``: every record with ``seq > after``, plus the record ``after``
  itself again (when ``after > 0``): overlapping windows, so the poller must de-duplicate.
* ``POST /dial`` (``Authorization: Bearer <token>``, else 401): ``{"call_id": "d<n>"}``.
* ``POST /command/<name>``: 404 for anything else (counted, like every request, per path).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import orjson
from aiohttp import WSMsgType, web

from gateway.sdk import DemoOptions
from tests.fakepbx.settings import FakePbxSettings

DEFAULT_TOKEN = "fake-token"


class FakePbxSimulator:
    #: base_url -> running simulator, so a test holding only settings can look at its counters.
    _running: ClassVar[dict[str, FakePbxSimulator]] = {}

    def __init__(
        self, token: str = DEFAULT_TOKEN, calls_per_second: float = 0.0, seed: int | None = None
    ) -> None:
        self.token = token
        self.calls_per_second = calls_per_second
        self._rng = random.Random(seed)
        self.records: list[dict[str, Any]] = []
        self.dials: list[dict[str, Any]] = []
        self.requests: Counter[str] = Counter()  # path -> requests
        self.overlaps = 0  # /records answers that repeated a record already served
        self.ws_connections = 0  # sockets ever opened
        self.sockets: set[web.WebSocketResponse] = set()
        self._calls = 0
        self._runner: web.AppRunner | None = None
        self._traffic: asyncio.Task[None] | None = None
        self.port = 0

    @classmethod
    def at(cls, base_url: str) -> FakePbxSimulator:
        return cls._running[base_url]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application(middlewares=[self._count])
        app.add_routes(
            [
                web.get("/events", self._events),
                web.get("/records", self._records),
                web.post("/dial", self._dial),
                web.post("/command/{name}", self._no_such_command),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._running[self.base_url] = self
        if self.calls_per_second > 0:
            self._traffic = asyncio.create_task(self._generate(), name="fakepbx-traffic")

    async def stop(self) -> None:
        self._running.pop(self.base_url, None)
        if self._traffic is not None:
            self._traffic.cancel()
            await asyncio.gather(self._traffic, return_exceptions=True)
        await self.drop()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- test controls -----------------------------------------------------------------------

    async def push(self, frame: dict[str, Any] | str) -> int:
        """Send one text frame to every connected socket; how many got it."""
        text = frame if isinstance(frame, str) else orjson.dumps(frame).decode()
        sent = 0
        for ws in list(self.sockets):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(text)
                sent += 1
        return sent

    async def drop(self) -> None:
        """Close every socket (the gateway sees the PBX go away)."""
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close()

    def add_record(
        self, call_id: str, caller: str = "2001", callee: str = "2002", talk: int = 5
    ) -> dict[str, Any]:
        record = {
            "seq": len(self.records) + 1,
            "call_id": call_id,
            "caller": caller,
            "callee": callee,
            "started": int(time.time()) - talk,
            "talk": talk,
        }
        self.records.append(record)
        return record

    async def call(self, call_id: str, caller: str = "2001", callee: str = "2002") -> None:
        """One whole call: ringing, answered, ended frames, then its record."""
        for state in ("ringing", "answered", "ended"):
            await self.push(frame(call_id, state, caller, callee))
        self.add_record(call_id, caller, callee, talk=self._rng.randint(0, 60))

    async def _generate(self) -> None:
        while True:
            await asyncio.sleep(1 / self.calls_per_second)
            self._calls += 1
            await self.call(f"g{self._calls}", f"20{self._rng.randint(10, 99)}", "2002")

    # --- handlers ----------------------------------------------------------------------------

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests[request.path] += 1
        return await handler(request)

    async def _events(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws_connections += 1
        self.sockets.add(ws)
        try:
            async for message in ws:  # the gateway sends nothing; read until it closes
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            self.sockets.discard(ws)
        return ws

    async def _records(self, request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            return web.json_response({"error": "after must be an integer"}, status=400)
        found = [r for r in self.records if r["seq"] > after or (after > 0 and r["seq"] == after)]
        if after > 0 and any(r["seq"] == after for r in found):
            self.overlaps += 1
        return web.json_response({"records": found})

    async def _dial(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "bad token"}, status=401)
        body = await request.json()
        self.dials.append(body)
        return web.json_response({"call_id": f"d{len(self.dials)}"})

    async def _no_such_command(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "no such command"}, status=404)


def frame(
    call_id: str, state: str, caller: str = "2001", callee: str = "2002", at: float | None = None
) -> dict[str, Any]:
    """A WebSocket (or webhook) frame as the fake PBX sends it."""
    return {
        "kind": "call",
        "id": call_id,
        "state": state,
        "from": caller,
        "to": callee,
        "at": int(time.time()) if at is None else at,
    }


# --- gateway sim fakepbx / gateway demo --vendor fakepbx --------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=8099, help="listen port (0 = ephemeral)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="bearer token of POST /dial")
    parser.add_argument(
        "--calls-per-second", type=float, default=0.0, help="background call rate (0 = none)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for traffic")


async def serve(args: argparse.Namespace) -> None:
    sim = FakePbxSimulator(args.token, args.calls_per_second, args.seed)
    await sim.start(args.host, args.port)
    print(f"fake PBX simulator on {sim.base_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


@contextlib.asynccontextmanager
async def demo(options: DemoOptions) -> AsyncIterator[FakePbxSettings]:
    sim = FakePbxSimulator(calls_per_second=options.calls_per_second, seed=options.seed)
    await sim.start()
    try:
        yield FakePbxSettings(
            tenant=options.tenant, vendor="fakepbx", base_url=sim.base_url, token=sim.token
        )
    finally:
        await sim.stop()
