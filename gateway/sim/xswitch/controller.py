"""A business controller beside the gateway, as XCC deployments run one (``docs/ctrl.md``
``EnableApp``): it reads ``cn.xswitch.ctrl`` in a queue group shared by the controllers, and
``Accept``s some of the calls it sees start (``docs/sdk.md``: "收到 START 后，一般都需要先执行
Accept() 对呼叫进行接管"). From then on the node sends that call's events only to the
controller's own subject ``cn.xswitch.ctrl.<ctrl_uuid>`` (``tboy/tboy.go``: ``controller :=
"cn.xswitch.ctrl." + channel.CtrlUuid``), where the gateway can only observe them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import nats
import orjson
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg

from gateway.logging import get_logger

log = get_logger("sim.xswitch.controller")

CTRL = "cn.xswitch.ctrl"
NODE = "cn.xswitch.node"


class BusinessController:
    """Accepts every ``accept_every``-th call it sees start; ``accepted`` lists their uuids."""

    def __init__(
        self,
        nats_url: str,
        *,
        prefix: str = "",
        command_prefix: str = "",
        ctrl_uuid: str = "app.acd.sim-controller",
        accept_every: int = 2,
        on_accept: Callable[[str], None] | None = None,
    ) -> None:
        self.nats_url = nats_url
        self.prefix = prefix
        self.command_prefix = command_prefix
        self.ctrl_uuid = ctrl_uuid  # dotted, as XCC's own apps name theirs (app.acd ...)
        self.accept_every = max(1, accept_every)
        self.on_accept = on_accept
        self.accepted: list[str] = []
        self._seen = 0
        self._nc: Nats | None = None

    async def start(self) -> None:
        self._nc = await nats.connect(self.nats_url, name=f"xswitch-sim-{self.ctrl_uuid}")
        await self._nc.subscribe(self.prefix + CTRL, queue="controllers", cb=self._on_event)

    async def stop(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None

    async def _on_event(self, msg: Msg) -> None:
        try:
            body = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return
        params = body.get("params") if isinstance(body, dict) else None
        if body.get("method") != "Event.Channel" or not isinstance(params, dict):
            return
        if params.get("state") != "START":
            return
        self._seen += 1
        if self._seen % self.accept_every:
            return
        uuid, node = str(params.get("uuid")), str(params.get("node_uuid") or "")
        request = {
            "jsonrpc": "2.0",
            "id": f"accept-{uuid}",
            "method": "XNode.Accept",
            "params": {"ctrl_uuid": self.ctrl_uuid, "uuid": uuid},
        }
        subject = self.command_prefix + (f"{NODE}.{node}" if node else NODE)
        assert self._nc is not None
        try:
            await self._nc.request(subject, orjson.dumps(request), timeout=2)
        except Exception as exc:  # the node went away: the call stays on the shared subject
            log.warning("sim.accept_failed", uuid=uuid, error=str(exc))
            return
        self.accepted.append(uuid)
        if self.on_accept is not None:
            self.on_accept(uuid)


__all__ = ["BusinessController"]
