"""HTTP layer of call control and queue agents: parameter rules and response bodies.

Why: the manual's parameter tables (required / type / allowed values) are what a client gets
wrong, so each endpoint validates like the PBX does (40002 PARAMETER ERROR listing every bad
field) before :class:`CallControl` or :class:`AgentBoard` changes anything, and answers with the
manual's response body (``call_id``, ``parking_slot``, ``data``...).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.sim.yeastar.agents import AgentBoard
from gateway.sim.yeastar.control import CallControl, ControlError
from gateway.sim.yeastar.traffic import EXTENSIONS

Body = dict[str, Any]
ControlHandler = Callable[[Mapping[str, Any]], Awaitable[Body]]
_NUMBER = re.compile(r"^[0-9*#+]{1,32}$")
_IDS = re.compile(r"^\d+(,\d+)*$")
CHANNEL_COMMANDS = ("hold", "unhold", "mute", "unmute", "record_start", "record_pause")


class Params:
    """Reads one request's parameters and collects every invalid one for a single 40002."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        self.bad: list[dict[str, Any]] = []

    def _missing(self, name: str) -> None:
        self.bad.append({"field": name, "validation_type": "required"})

    def _invalid(self, name: str, value: Any) -> None:
        self.bad.append({"field": name, "value": str(value)})

    def text(self, name: str, required: bool = True) -> str:
        """A String parameter ("" when absent and optional)."""
        value = self.raw.get(name)
        if value is None or value == "":
            if required:
                self._missing(name)
            return ""
        if not isinstance(value, str):
            self._invalid(name, value)
            return ""
        return value

    def number(self, name: str, required: bool = True, extension: bool = False) -> str:
        value = self.text(name, required)
        if value and (not _NUMBER.match(value) or (extension and value not in EXTENSIONS)):
            self._invalid(name, value)
            return ""
        return value

    def choice(self, name: str, options: tuple[str, ...], required: bool = True) -> str:
        value = self.text(name, required)
        if value and value not in options:
            self._invalid(name, value)
            return ""
        return value

    def integer(self, name: str, lo: int, hi: int | None, required: bool = False) -> int | None:
        """An Integer parameter: a JSON number or, in a query string, its digits."""
        value = self.raw.get(name)
        if value is None or value == "":
            if required:
                self._missing(name)
            return None
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self._invalid(name, value)
            return None
        if value < lo or (hi is not None and value > hi):
            self._invalid(name, value)
            return None
        return value

    def ids(self, name: str, required: bool = True) -> list[int] | None:
        """Comma-separated ids ("92,85")."""
        value = self.text(name, required)
        if not value:
            return None
        if not _IDS.match(value.replace(" ", "")):
            self._invalid(name, value)
            return None
        return [int(part) for part in value.replace(" ", "").split(",")]

    def check(self) -> None:
        if self.bad:
            raise ControlError(40002, invalid_param_list=self.bad)


def _ok(**extra: Any) -> Body:
    return {"errcode": 0, "errmsg": "SUCCESS", **extra}


class ControlApi:
    """Endpoint name -> (HTTP method, handler taking the JSON body or query parameters)."""

    def __init__(self, control: CallControl, agents: AgentBoard) -> None:
        self.c = control
        self.a = agents

    def routes(self) -> dict[str, tuple[str, ControlHandler]]:
        routes: dict[str, tuple[str, ControlHandler]] = {
            "call/query": ("GET", self.query),
            "call/dial": ("POST", self.dial),
            "call/accept_inbound": ("POST", self.accept_inbound),
            "call/refuse_inbound": ("POST", self.refuse_inbound),
            "call/listen": ("POST", self.listen),
            "call/park": ("POST", self.park),
            "call/park_status": ("GET", self.park_status),
            "call/transfer": ("POST", self.transfer),
            "call/add_member": ("POST", self.add_member),
            "call/play_prompt": ("POST", self.play_prompt),
            "call/hangup": ("POST", self.hangup),
            "call/record_unpause": ("POST", self._channel("record_unpause")),
            "uacsta_call/accept": ("POST", self._uacsta("accept")),
            "uacsta_call/refuse": ("POST", self._uacsta("refuse")),
            "uacsta_call/hangup": ("POST", self._uacsta("hangup")),
            "queue/call_status": ("GET", self.queue_call_status),
            "queue/agent_status": ("GET", self.queue_agent_status),
            "queue/list": ("GET", self.queue_list),
            "extension/search": ("GET", self.extension_search),
            "queue/agent_login": ("GET", self.queue_agent_login),
            "queue/agent_pause": ("GET", self.queue_agent_pause),
            "agent/login": ("GET", self.agent_login),
            "agent/pause": ("GET", self.agent_pause),
        }
        for name in CHANNEL_COMMANDS:
            routes[f"call/{name}"] = ("POST", self._channel(name))
        return routes

    # ------------------------------------------------------------------ calls
    async def query(self, raw: Mapping[str, Any]) -> Body:
        """By ``call_id``, ``type`` or ``number``: one of the three is required."""
        p = Params(raw)
        call_id = p.text("call_id", required=False)
        kind = p.choice("type", ("inbound", "outbound", "internal"), required=False)
        number = p.number("number", required=False)
        if not (call_id or kind or number) and not p.bad:
            p.text("call_id")
        p.check()
        return _ok(data=self.c.query(call_id=call_id, kind=kind, number=number))

    async def dial(self, raw: Mapping[str, Any]) -> Body:
        p = Params(raw)
        caller = p.number("caller", extension=True)
        callee = p.number("callee")
        p.number("dial_permission", required=False, extension=True)
        p.choice("auto_answer", ("yes", "no"), required=False)
        if caller and callee == caller:
            p.bad.append({"field": "callee", "value": callee})
        p.check()
        return _ok(call_id=await self.c.dial(caller, callee))

    async def accept_inbound(self, raw: Mapping[str, Any]) -> Body:
        p = Params(raw)
        channel = p.text("channel_id")
        p.check()
        return _ok(call_id=await self.c.decide_inbound(channel, "accept"))

    async def refuse_inbound(self, raw: Mapping[str, Any]) -> Body:
        p = Params(raw)
        channel = p.text("channel_id")
        p.check()
        return _ok(call_id=await self.c.decide_inbound(channel, "refuse"))

    async def listen(self, raw: Mapping[str, Any]) -> Body:
        p = Params(raw)
        monitor = p.number("monitor", extension=True)
        channel = p.text("channel_id")
        mode = p.choice("type", ("listen", "whisper", "barge"))
        p.check()
        return _ok(call_id=await self.c.listen(monitor, channel, mode))

    def _channel(self, name: str) -> ControlHandler:
        """hold/unhold/mute/unmute/record_*: a single required ``channel_id``."""

        async def handler(raw: Mapping[str, Any]) -> Body:
            p = Params(raw)
            channel = p.text("channel_id")
            p.check()
            if name in ("hold", "unhold"):
                call_id = await (self.c.hold if name == "hold" else self.c.unhold)(channel)
            elif name in ("mute", "unmute"):
                call_id = await self.c.mute(channel, name == "mute")
            else:
                call_id = await self.c.record(channel, name.removeprefix("record_"))
            return _ok(call_id=call_id)

        return handler

    async def park(self, raw: Mapping[str, Any]) -> Body:
        p = Params(raw)
        channel = p.text("channel_id")
        slot = p.number("parking_slot", required=False)
        p.check()
        call_id, slot = await self.c.park(channel, slot or None)
        return _ok(call_id=call_id, parking_slot=slot)

    async def park_status(self, raw: Mapping[str, Any]) -> Body:
        return _ok(data=self.c.park_status())

    async def transfer(self, raw: Mapping[str, Any]) -> Body:
        """blind: number required; attended: number (step one) or attended_operate (step two)."""
        p = Params(raw)
        kind = p.choice("type", ("blind", "attended"))
        channel = p.text("channel_id")
        number = p.number("number", required=False)
        p.number("dial_permission", required=False, extension=True)
        operate = p.choice(
            "attended_operate", ("abort", "complete", "threeway", "swap"), required=False
        )
        if kind and not number and not (kind == "attended" and operate) and not p.bad:
            p.number("number")
        p.check()
        if kind == "blind":
            call_id = await self.c.transfer_blind(channel, number)
        elif operate:
            call_id = await self.c.transfer_operate(channel, operate)
        else:
            call_id = await self.c.transfer_attended(channel, number)
        return _ok(call_id=call_id)

    async def add_member(self, raw: Mapping[str, Any]) -> Body:
        p = Params(raw)
        channel = p.text("channel_id")
        number = p.number("number")
        p.number("dial_permission", required=False, extension=True)
        p.check()
        return _ok(call_id=await self.c.add_member(channel, number))

    async def play_prompt(self, raw: Mapping[str, Any]) -> Body:
        """Response has no call_id (manual); the prompt call plays in the background."""
        p = Params(raw)
        number = p.number("number")
        prompts = raw.get("prompts")
        if prompts is None or prompts == []:
            p.bad.append({"field": "prompts", "validation_type": "required"})
        elif not isinstance(prompts, list) or not all(isinstance(x, str) and x for x in prompts):
            p.bad.append({"field": "prompts", "value": str(prompts)})
        count = p.integer("count", 1, None)
        permission = p.number("dial_permission", required=False, extension=True)
        p.choice("auto_answer", ("yes", "no"), required=False)
        p.integer("volume", 0, 20)
        if number and number not in EXTENSIONS and not permission and not p.bad:
            p.number("dial_permission")  # an external number needs an outbound-capable ext
        p.check()
        await self.c.play_prompt(number, list(prompts or []), count or 1, permission)
        return _ok()

    async def hangup(self, raw: Mapping[str, Any]) -> Body:
        """``channel_id`` or ``paging_number``; the simulator has no paging groups."""
        p = Params(raw)
        channel = p.text("channel_id", required=False)
        paging = p.number("paging_number", required=False)
        if not channel and not paging and not p.bad:
            p.text("channel_id")
        if paging:
            p.bad.append({"field": "paging_number", "value": paging})
        p.check()
        return _ok(call_id=await self.c.hangup(channel))

    def _uacsta(self, action: str) -> ControlHandler:
        async def handler(raw: Mapping[str, Any]) -> Body:
            p = Params(raw)
            extension = p.number("extension", extension=True)
            uid = p.text("call_id")
            ip = p.text("ip_address")
            p.check()
            await self.c.uacsta_command(action, extension, uid, ip)
            return _ok()

        return handler

    # ----------------------------------------------------------------- agents
    async def queue_call_status(self, raw: Mapping[str, Any]) -> Body:
        p = Params(raw)
        queue_id = p.integer("id", 0, None, required=True)
        p.check()
        return _ok(**self.a.call_status(queue_id or 0))

    async def queue_list(self, raw: Mapping[str, Any]) -> Body:
        p = Params(raw)
        page = p.integer("page", 1, None) or 1
        page_size = p.integer("page_size", 1, None) or 100
        p.check()
        return _ok(**self.a.queue_list(page, page_size))

    async def extension_search(self, raw: Mapping[str, Any]) -> Body:
        p = Params(raw)
        page = p.integer("page", 1, None) or 1
        page_size = p.integer("page_size", 1, None) or 100
        sort_by = p.choice(
            "sort_by",
            ("id", "number", "caller_id_name", "email_addr", "mobile_number", "presence_status"),
            required=False,
        )
        order_by = p.choice("order_by", ("asc", "desc"), required=False)
        search_value = p.text("search_value", required=False)
        p.check()
        return _ok(
            **self.a.extension_search(
                search_value, page, page_size, sort_by or "id", order_by or "asc"
            )
        )

    async def queue_agent_status(self, raw: Mapping[str, Any]) -> Body:
        p = Params(raw)
        queue_id = p.integer("id", 0, None, required=True)
        p.check()
        return _ok(**self.a.agent_status(queue_id or 0))

    @staticmethod
    def _paused(p: Params) -> int:
        """``is_paused`` per the table; the manual's examples send ``is_pause``: both work."""
        name = "is_paused" if p.raw.get("is_paused") not in (None, "") else "is_pause"
        return p.integer(name, 0, 1) or 0

    async def queue_agent_login(self, raw: Mapping[str, Any]) -> Body:
        p = Params(raw)
        ext_ids = p.ids("ext_ids")
        queue_id = p.integer("queue_id", 0, None, required=True)
        operation = p.choice("operation", ("login", "logout"))
        paused = self._paused(p)
        reason = p.text("reason", required=False) or None
        p.check()
        queues = [queue_id or 0]
        self.a.login(ext_ids or [], queues, operation, paused, reason, "ext_ids")
        return _ok()

    async def queue_agent_pause(self, raw: Mapping[str, Any]) -> Body:
        p = Params(raw)
        ext_ids = p.ids("ext_ids")
        queue_id = p.integer("queue_id", 0, None, required=True)
        operation = p.choice("operation", ("pause", "unpause"))
        reason = p.text("reason", required=False) or None
        p.check()
        self.a.pause(ext_ids or [], [queue_id or 0], operation, reason, "ext_ids")
        return _ok()

    async def agent_login(self, raw: Mapping[str, Any]) -> Body:
        p = Params(raw)
        ext_id = p.integer("ext_id", 0, None, required=True)
        queue_ids = p.ids("queue_ids", required=False)
        operation = p.choice("operation", ("login", "logout"))
        paused = self._paused(p)
        reason = p.text("reason", required=False) or None
        p.check()
        self.a.login([ext_id or 0], queue_ids, operation, paused, reason, "ext_id")
        return _ok()

    async def agent_pause(self, raw: Mapping[str, Any]) -> Body:
        p = Params(raw)
        ext_id = p.integer("ext_id", 0, None, required=True)
        queue_ids = p.ids("queue_ids", required=False)
        operation = p.choice("operation", ("pause", "unpause"))
        reason = p.text("reason", required=False) or None
        p.check()
        self.a.pause([ext_id or 0], queue_ids, operation, reason, "ext_id")
        return _ok()
