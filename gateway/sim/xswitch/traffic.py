"""The simulated XSwitch node on NATS: publishes call flows, answers ``XNode.*`` requests.

Subjects (``ctrl/ctrl.go``, ``ctrl/channel.go``, ``docs/channel.md``): events to
``<prefix>cn.xswitch.ctrl``, CDRs to ``<prefix>cn.xswitch.ctrl.event.cdr`` or
``cn.xswitch.cdr``; the node takes requests on ``cn.xswitch.node`` and
``cn.xswitch.node.<node-uuid>`` (with the controller's ``to-`` prefix in multi-tenant
set-ups). ``XNode.Hangup`` answers like ``tboy/tboy.go`` ``Hangup``: ``{"code": 200,
"message": "OK"}``, or ``{"code": 400, "message": "can not locate session"}`` for a channel
it does not have, then publishes the leg's CDR and ``DESTROY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any
from zoneinfo import ZoneInfo

import nats
import orjson
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg

from gateway.logging import get_logger
from gateway.sim.xswitch.flows import CDR, CTRL, KINDS, FlowBuilder, Leg

log = get_logger("sim.xswitch.nats")

NODE = "cn.xswitch.node"


class XccNodeSimulator:
    """One node: ``publish_calls`` for whole calls, ``open_call`` for a call that lasts until
    ``XNode.Hangup``, and a background rate (``calls_per_second``)."""

    def __init__(
        self,
        nats_url: str = "nats://127.0.0.1:4222",
        *,
        prefix: str = "",
        command_prefix: str = "",
        node_uuid: str = "xswitch-node-1",
        calls_per_second: float = 0.0,
        seed: int | None = None,
        tz: str = "Asia/Shanghai",
        talk_s: tuple[int, int] = (5, 90),
    ) -> None:
        self.nats_url = nats_url
        self.prefix = prefix
        self.command_prefix = command_prefix
        self.node_uuid = node_uuid
        self.calls_per_second = calls_per_second
        self.talk_s = talk_s
        self.rng = random.Random(seed)
        self.builder = FlowBuilder(node_uuid=node_uuid, tz=ZoneInfo(tz), seed=seed)
        self.published: list[tuple[str, bytes]] = []
        self.hangups: list[dict[str, Any]] = []
        self._live: dict[str, tuple[Leg, Leg | None]] = {}
        self._nc: Nats | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        #: channel uuid -> the controller that accepted its call (XNode.Accept)
        self.owners: dict[str, str] = {}
        #: how long a START waits for a controller's Accept before the call goes on (0: no
        #: controller is expected)
        self.accept_wait_s = 0.0
        self._accepts: dict[str, asyncio.Event] = {}

    async def start(self) -> None:
        self._nc = await nats.connect(self.nats_url, name=f"xswitch-sim-{self.node_uuid}")
        for subject in (NODE, f"{NODE}.{self.node_uuid}"):
            await self._nc.subscribe(self.command_prefix + subject, cb=self._on_request)
        if self.calls_per_second > 0:
            self._tasks.append(asyncio.create_task(self._traffic(), name="xswitch-sim-traffic"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None

    # --- publishing --------------------------------------------------------------------------

    def _route(self, subject: str, body: dict[str, Any]) -> str:
        """A call a controller accepted is reported only to that controller's own subject."""
        if subject != CTRL:
            return subject
        params = body.get("params") or {}
        uuid = str(params.get("uuid") or "")
        owner = self.owners.get(uuid) or self.owners.get(str(params.get("peer_uuid") or ""))
        if owner is None:
            return subject
        self.owners[uuid] = owner  # the callee leg follows its caller's controller
        return f"{CTRL}.{owner}"

    async def _publish(self, subject: str, body: dict[str, Any]) -> bytes:
        assert self._nc is not None, "start() first"
        data = orjson.dumps(body)
        subject = self._route(subject, body)
        await self._nc.publish(self.prefix + subject, data)
        self.published.append((self.prefix + subject, data))
        params = body.get("params") or {}
        if self.accept_wait_s > 0 and params.get("state") == "START":
            # the node parks a new call until a controller takes it (or the wait is over)
            accepted = self._accepts.setdefault(str(params.get("uuid")), asyncio.Event())
            await self._nc.flush()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.accept_wait_s):
                    await accepted.wait()
        return data

    async def _flush(self) -> list[bytes]:
        """Publish what the builder queued, in order, at once."""
        bodies = [await self._publish(subject, body) for _, subject, body in self.builder.take()]
        assert self._nc is not None
        await self._nc.flush()
        return bodies

    async def publish_calls(self, kinds: tuple[str, ...] = KINDS) -> list[bytes]:
        """Whole calls, one per kind, published in order; returns the bodies sent."""
        async with self._lock:
            for kind in kinds:
                self.builder.call(kind)
            return await self._flush()

    async def open_call(self) -> tuple[str, str]:
        """An inbound call answered by an extension that stays up: (a-leg uuid, b-leg uuid)."""
        async with self._lock:
            b = self.builder
            a = b.leg("inbound", "0555010203", "88880000", "public")
            b.state(a, "START")
            callee = b.leg("outbound", a.cid_number, "1001", "default", peer=a.uuid)
            b.state(callee, "CALLING")
            b.state(callee, "RINGING")
            b.tick()
            b.state(callee, "ANSWERED")
            b.state(a, "ANSWERED")
            b.state(a, "BRIDGE")
            self._live[a.uuid] = (a, callee)
            self._live[callee.uuid] = (callee, a)
            await self._flush()
            return a.uuid, callee.uuid

    async def _traffic(self) -> None:
        """Calls at ``calls_per_second`` (Poisson), each played in real time, overlapping."""
        calls: set[asyncio.Task[None]] = set()
        try:
            while True:
                await asyncio.sleep(self.rng.expovariate(self.calls_per_second))
                call = asyncio.create_task(self._play(self.rng.choice(KINDS)))
                calls.add(call)
                call.add_done_callback(calls.discard)
        finally:
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)

    async def _play(self, kind: str) -> None:
        builder = FlowBuilder(
            node_uuid=self.node_uuid,
            tz=self.builder.tz,
            seed=self.rng.getrandbits(64),
            start=int(time.time()),
        )
        builder.talk_s = self.talk_s
        builder.call(kind)
        for due, subject, body in builder.take():
            await asyncio.sleep(max(0.0, due - time.time()))
            try:
                await self._publish(subject, body)
            except Exception as exc:  # a NATS hiccup must not end the simulator
                log.warning("sim.publish_failed", error=str(exc))

    # --- requests ----------------------------------------------------------------------------

    async def _on_request(self, msg: Msg) -> None:
        try:
            request = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return
        method = request.get("method")
        params = request.get("params") or {}
        if method == "XNode.Hangup":
            result = await self._hangup(params)
        elif method == "XNode.Accept":
            uuid = str(params.get("uuid") or "")
            self.owners[uuid] = str(params.get("ctrl_uuid") or "")
            self._accepts.setdefault(uuid, asyncio.Event()).set()
            result = {"code": 200, "message": "OK", "uuid": uuid}
        else:
            result = {"code": 404, "message": f"Unsupported Method {method}"}
        result["node_uuid"] = self.node_uuid
        answer = {"jsonrpc": "2.0", "id": request.get("id"), "result": result}
        reply = msg.reply or f"{self.prefix}{CTRL}.{params.get('ctrl_uuid', '')}"
        assert self._nc is not None
        await self._nc.publish(reply, orjson.dumps(answer))

    async def _hangup(self, params: dict[str, Any]) -> dict[str, Any]:
        uuid = str(params.get("uuid") or "")
        self.hangups.append(params)
        async with self._lock:
            pair = self._live.pop(uuid, None)
            if pair is None:
                return {"code": 400, "message": "can not locate session", "uuid": uuid}
            leg, peer = pair
            b = self.builder
            b.tick()
            cause = str(params.get("cause") or "NORMAL_CLEARING")
            b.destroy(leg, cause, leg_name="a" if leg.direction == "inbound" else "b")
            if peer is not None and self._live.pop(peer.uuid, None) is not None:
                b.destroy(
                    peer, "NORMAL_CLEARING", leg_name="a" if peer.direction == "inbound" else "b"
                )
            await self._flush()
        return {"code": 200, "message": "OK", "uuid": uuid}


__all__ = ["CDR", "CTRL", "NODE", "XccNodeSimulator"]
