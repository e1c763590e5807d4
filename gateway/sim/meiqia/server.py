"""Meiqia unified call OpenAPI simulator: every endpoint of seed 001 on a real loopback socket.

Why: ``gateway sim meiqia`` / ``gateway demo --vendor meiqia`` and the tests need a call center
that answers like the document: paths under ``/unified-api/call/openapi/ent/v1/``, a permanent
``Authorization: Bearer`` token (401 ``Unauthenticated`` for any other), success as HTTP 200
and failure as another status with ``{"error": {"code", "message"}}`` (gRPC status names),
the document's request and answer fields.

What it plays:

* ``callout``: agents 1-4 have a registered seat; agent 5 exists but has none, so it gets the
  document's own failure, ``Unauthenticated`` / ``坐席未注册`` (with HTTP 401: the trap is that
  it is not a token problem). ``user_data`` over 100 characters, a missing ``agent_id`` or
  ``callee`` and an unknown ``trunk_number`` are ``InvalidArgument`` (400), an unknown agent
  ``NotFound`` (404). A placed call rings, maybe talks, ends; its record appears in ``records``
  ``record_delay_s`` after it ended (every ``late_every``-th call three times later, so it
  lands behind a window the gateway has already read). A callee ending in 1 does not answer
  (``被叫未接``), one ending in 2 leaves the agent's phone unanswered (``主叫未接``).
* ``records``: filters ``start_time`` (the call started at or after it) and ``end_time`` (it
  ended at or before it), RFC 3339; also ``agent_id(s)``, ``call_types``, ``call_uuid``,
  ``customer_phone``, ``states``, ``trunk_number``; newest first, ``page_index`` from 1,
  ``page_size`` (default 20) silently capped at ``max_page_size`` (100), ``total``.
* ``sips``: the seats (``occupied`` y/n, ``expiration_at``, ``password``), filtered by
  ``agent_id`` and ``occupied``; ``sip_bind_agent`` binds one; background churn
  (``seat_change_s``) frees, occupies and renews seats.
* ``rule_outnumber_group`` and ``agent/outnumber_group``: the numbers and dynamic groups.
* Background calls (``calls_per_second``) of every ``call_type`` / ``states`` of the document.
* 429 bursts: ``rate_limit(n, retry_after_s)`` (or every ``burst_every_s``) answers the next
  ``n`` requests ``ResourceExhausted`` with ``Retry-After``.
* A webhook sender (:mod:`.webhooks`) posting signed ``cdr.hangup`` deliveries when calls end.

Test controls: ``rate_limit``, ``revoke_token``, ``requests`` (per path), ``served_records``
(records returned by ``records``), ``callouts``, ``place_call``, ``webhooks``.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

from gateway.logging import get_logger
from gateway.sim.http import serve
from gateway.sim.meiqia.webhooks import WebhookSender

log = get_logger("sim.meiqia")

API: Final = "/unified-api/call/openapi/ent/v1/"
USER_DATA_MAX: Final = 100
OUTBOUND: Final = "外呼"
INBOUND: Final = "来电"
#: The document's ``states`` by ``call_type``.
OUTBOUND_STATES: Final = ("接听", "主叫未接", "被叫未接")
INBOUND_STATES: Final = ("接听", "ivr", "队列放弃", "振铃未接")
CITIES: Final = ("北京", "上海", "广州", "深圳", "杭州", "成都")


class Refused(Exception):
    """An error answer: HTTP ``status`` with ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(slots=True)
class Agent:
    id: int
    name: str
    registered: bool = True


@dataclass(slots=True)
class Seat:
    sip: str
    password: str
    agent_id: int | None
    expiration_at: datetime

    @property
    def occupied(self) -> bool:
        return self.agent_id is not None


@dataclass(order=True, slots=True)
class Call:
    """A call in the simulated center; ``record`` is its row once listed."""

    ends_at: float  # time.time()
    uuid: str = field(compare=False)
    record: dict[str, Any] = field(compare=False)
    visible_at: float = field(compare=False, default=0.0)
    hung_up: bool = field(compare=False, default=False)


def _rfc3339(instant: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(instant, tz).replace(microsecond=0).isoformat()


def _instant(value: Any, name: str) -> float:
    """An RFC 3339 request time (the document's ``date-time``) -> Unix seconds, or 400."""
    if not isinstance(value, str):
        raise Refused(400, "InvalidArgument", f"{name} must be an RFC 3339 date-time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Refused(400, "InvalidArgument", f"{name} is not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise Refused(400, "InvalidArgument", f"{name} has no UTC offset")
    return parsed.timestamp()


def _int(value: Any, name: str, *, required: bool = True) -> int | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refused(400, "InvalidArgument", f"{name} must be an integer")
    return value


def _str_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Refused(400, "InvalidArgument", f"{name} must be an array of strings")
    return value


def _int_list(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise Refused(400, "InvalidArgument", f"{name} must be an array of integers")
    return value


class MeiqiaSimulator:
    """One simulated Meiqia enterprise (call center)."""

    def __init__(
        self,
        *,
        token: str | None = None,
        tz: str = "Asia/Shanghai",
        seed: int | None = None,
        calls_per_second: float = 0.0,
        seat_change_s: float = 0.0,
        record_delay_s: float = 2.0,
        late_every: int = 5,
        ring_s: tuple[float, float] = (0.2, 1.0),
        talk_s: tuple[float, float] = (1.0, 4.0),
        max_page_size: int = 100,
        burst_every_s: float = 0.0,
        burst_size: int = 3,
        burst_retry_after_s: int = 1,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        bad_signatures: float = 0.0,
        duplicates: float = 0.0,
        sign_header: str = "Meiqia-Signature",
        chat_every: int = 0,
    ) -> None:
        self.token = token or secrets.token_hex(16)
        self.enterprise = secrets.token_hex(16)
        self.tz = ZoneInfo(tz)
        self.rng = random.Random(seed)
        self.calls_per_second = calls_per_second
        self.seat_change_s = seat_change_s
        self.record_delay_s = record_delay_s
        self.late_every = late_every
        self.ring_s = ring_s
        self.talk_s = talk_s
        self.max_page_size = max_page_size
        self.burst_every_s = burst_every_s
        self.burst_size = burst_size
        self.burst_retry_after_s = burst_retry_after_s
        self.base_url = ""
        self.agents: dict[int, Agent] = {
            1: Agent(1, "张三"),
            2: Agent(2, "李四"),
            3: Agent(3, "王五"),
            4: Agent(4, "赵六"),
            5: Agent(5, "钱七", registered=False),
        }
        expires = datetime(datetime.now(self.tz).year + 1, 12, 31, 23, 59, 59, tzinfo=self.tz)
        self.seats: dict[str, Seat] = {
            f"800{n}": Seat(f"800{n}", secrets.token_hex(6), n if n <= 4 else None, expires)
            for n in range(1, 7)
        }
        self.numbers: list[dict[str, str]] = [
            {"name": "北京总机", "number": "01088886666"},
            {"name": "上海客服", "number": "02166668888"},
            {"name": "广州热线", "number": "02087654321"},
        ]
        self.groups: list[dict[str, Any]] = [
            {"id": 1, "name": "华北号码组", "numbers": ["01088886666"], "rule_type": 1},
            {
                "id": 2,
                "name": "全国随机",
                "numbers": ["02166668888", "02087654321"],
                "rule_type": 2,
            },
        ]
        self.assignments: dict[int, dict[str, list[Any]]] = {}
        self.calls: dict[str, Call] = {}
        self._pending: list[Call] = []  # heap by end time: calls not hung up yet
        self.callouts: list[dict[str, Any]] = []
        self.requests: Counter[str] = Counter()
        #: Every request: (time.monotonic(), path, status answered).
        self.log: list[tuple[float, str, int]] = []
        self.served_records: Counter[str] = Counter()  # call_uuid -> times returned by records
        self._rate_limited = 0
        self._retry_after = 1
        self._revoked: set[str] = set()
        self._counter = 0
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.webhooks = WebhookSender(
            webhook_url,
            webhook_secret,
            enterprise=self.enterprise,
            rng=self.rng,
            bad_signatures=bad_signatures,
            duplicates=duplicates,
            sign_header=sign_header,
            chat_every=chat_every,
        )

    # --- lifecycle -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", API + "{tail:.+}", self._dispatch)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._runner is not None:
            return self.base_url
        self._runner, self.base_url = await serve(self.app(), host, port)
        await self.webhooks.start()
        self._spawn(self._clock(), "meiqia-sim-clock")
        return self.base_url

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.webhooks.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- test controls ---------------------------------------------------------------------------

    def rate_limit(self, count: int, retry_after_s: int = 1) -> None:
        """Answer the next ``count`` requests 429 with ``Retry-After: retry_after_s``."""
        self._rate_limited = count
        self._retry_after = retry_after_s

    def revoke_token(self) -> str:
        """Requesting a new token invalidates the old (the document): the old one is now
        refused; returns the new one."""
        self._revoked.add(self.token)
        self.token = secrets.token_hex(16)
        return self.token

    def records(self, *, visible_only: bool = True) -> list[dict[str, Any]]:
        now = time.time()
        return [
            c.record
            for c in self.calls.values()
            if c.hung_up and (not visible_only or c.visible_at <= now)
        ]

    # --- calls -----------------------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def place_call(
        self,
        call_type: str,
        states: str,
        *,
        agent_id: int | None = None,
        customer: str | None = None,
        trunk: dict[str, str] | None = None,
        user_data: str | None = None,
        call_uuid: str | None = None,
    ) -> str:
        """Start a call now; it ends after its ring (and talk) time, its record appears
        ``record_delay_s`` later (three times later every ``late_every``-th call)."""
        self._counter += 1
        now = time.time()
        ring = self.rng.uniform(*self.ring_s)
        talk = self.rng.uniform(*self.talk_s) if states == "接听" else 0.0
        queue = self.rng.uniform(0.0, ring) if call_type == INBOUND and states != "ivr" else 0.0
        ends = now + ring + talk
        delay = self.record_delay_s * (
            3 if self.late_every and self._counter % self.late_every == 0 else 1
        )
        trunk = trunk or self.rng.choice(self.numbers)
        agent = self.agents.get(agent_id) if agent_id is not None else None
        if agent is None and states not in ("ivr", "队列放弃"):
            agent = self.agents[self.rng.choice([1, 2, 3, 4])]
        seat = next((s for s in self.seats.values() if agent and s.agent_id == agent.id), None)
        call_uuid = call_uuid or self._uuid()
        customer = customer or f"13{self.rng.randrange(10**9):09d}"
        record: dict[str, Any] = {
            "agent_evaluated": self.rng.choice([0, 0, 3, 4, 5]) if talk else 0,
            "agent_id": agent.id if agent else 0,
            "agent_phone": seat.sip if seat else "",
            "answer_way": "sip" if talk else "",
            "call_type": call_type,
            "call_uuid": call_uuid,
            "customer_attribution": self.rng.choice(CITIES),
            "customer_duration": round(talk),
            "customer_phone": customer,
            "duration": round(ring + talk),
            "end_time": _rfc3339(ends, self.tz),
            "hangup_disposition": self.rng.choice(["客户挂机", "坐席挂机"]) if talk else "系统挂机",
            "queue_wait_time": round(queue),
            "record_path": f"https://recordings.meiqia.example/{call_uuid}.mp3" if talk else "",
            "start_time": _rfc3339(now, self.tz),
            "states": states,
            "trunk_number": trunk["number"],
            "trunk_number_name": trunk["name"],
            "wait_time": round(ring),
            "user_data": user_data or "",
        }
        call = Call(ends, call_uuid, record, visible_at=ends + delay)
        self.calls[call_uuid] = call
        heapq.heappush(self._pending, call)
        return call_uuid

    def _random_call(self) -> None:
        if self.rng.random() < 0.5:
            self.place_call(OUTBOUND, self.rng.choice(OUTBOUND_STATES))
        else:
            self.place_call(INBOUND, self.rng.choice(INBOUND_STATES))

    def _churn_seats(self) -> None:
        """Free an occupied seat, occupy a free one, or renew one (agent 1 keeps its seat)."""
        seats = list(self.seats.values())
        action = self.rng.choice(["free", "occupy", "renew"])
        if action == "free":
            busy = [s for s in seats if s.occupied and s.agent_id != 1]
            if busy:
                self.rng.choice(busy).agent_id = None
                return
        if action in ("free", "occupy"):
            free = [s for s in seats if not s.occupied]
            bound = {s.agent_id for s in seats}
            unbound = [a.id for a in self.agents.values() if a.id not in bound and a.registered]
            if free and unbound:
                self.rng.choice(free).agent_id = self.rng.choice(unbound)
                return
        seat = self.rng.choice(seats)
        seat.expiration_at += timedelta(days=30)

    async def _clock(self) -> None:
        """Ends calls on time (sending their webhooks), places background calls, churns seats,
        starts 429 bursts."""
        tick = 0.05
        next_seats = time.monotonic() + self.seat_change_s
        next_burst = time.monotonic() + self.burst_every_s
        while True:
            await asyncio.sleep(tick)
            now = time.time()
            while self._pending and self._pending[0].ends_at <= now:
                call = heapq.heappop(self._pending)
                call.hung_up = True
                self.webhooks.call_ended(call.record)
            if self.calls_per_second > 0 and self.rng.random() < self.calls_per_second * tick:
                self._random_call()
            if self.seat_change_s > 0 and time.monotonic() >= next_seats:
                next_seats = time.monotonic() + self.seat_change_s
                self._churn_seats()
            if self.burst_every_s > 0 and time.monotonic() >= next_burst:
                next_burst = time.monotonic() + self.burst_every_s
                self.rate_limit(self.burst_size, self.burst_retry_after_s)

    # --- the API ---------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        path = request.match_info["tail"]
        self.requests[path] += 1
        response = await self._answer(request, path)
        self.log.append((time.monotonic(), path, response.status))
        return response

    async def _answer(self, request: web.Request, path: str) -> web.Response:
        try:
            if self._rate_limited > 0:
                self._rate_limited -= 1
                return web.json_response(
                    {"error": {"code": "ResourceExhausted", "message": "请求过于频繁,请稍后再试"}},
                    status=429,
                    headers={"Retry-After": str(self._retry_after)},
                )
            self._authorize(request)
            handler = self._routes().get((request.method, path))
            if handler is None:
                raise Refused(404, "NotFound", f"{request.method} {API}{path} 不存在")
            body: Any = {}
            if request.method == "POST":
                try:
                    body = orjson.loads(await request.read() or b"{}")
                except orjson.JSONDecodeError:
                    raise Refused(400, "InvalidArgument", "请求体不是 JSON") from None
                if not isinstance(body, dict):
                    raise Refused(400, "InvalidArgument", "请求体必须是 JSON 对象")
            answer = handler(body, request.query)
        except Refused as exc:
            return web.json_response(
                {"error": {"code": exc.code, "message": exc.message}}, status=exc.status
            )
        return web.Response(body=orjson.dumps(answer), status=200, content_type="application/json")

    def _authorize(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.strip().encode(), self.token.encode()
        ):
            message = "token已失效" if token.strip() in self._revoked else "无效的 access token"
            raise Refused(401, "Unauthenticated", message)

    def _routes(self) -> dict[tuple[str, str], Callable[[Any, Any], Any]]:
        return {
            ("POST", "callout"): self._callout,
            ("POST", "records"): self._records,
            ("GET", "sips"): self._sips,
            ("POST", "sip_bind_agent"): self._sip_bind,
            ("GET", "rule_outnumber_group"): self._number_groups,
            ("POST", "agent/outnumber_group"): self._assign,
        }

    def _callout(self, body: dict[str, Any], _query: Any) -> dict[str, Any]:
        agent_id = _int(body.get("agent_id"), "agent_id")
        callee = body.get("callee")
        if not isinstance(callee, str) or not callee.strip():
            raise Refused(400, "InvalidArgument", "callee 必填")
        user_data = body.get("user_data")
        if user_data is not None and (
            not isinstance(user_data, str) or len(user_data) > USER_DATA_MAX
        ):
            raise Refused(400, "InvalidArgument", "user_data 最长100字符")
        trunk_number = body.get("trunk_number")
        trunk = None
        if trunk_number is not None:
            trunk = next((n for n in self.numbers if n["number"] == trunk_number), None)
            if trunk is None:
                raise Refused(400, "InvalidArgument", f"外显号码 {trunk_number} 不存在")
        agent = self.agents.get(agent_id or 0)
        if agent is None:
            raise Refused(404, "NotFound", f"客服 {agent_id} 不存在")
        seat = next((s for s in self.seats.values() if s.agent_id == agent.id), None)
        if seat is None or not agent.registered:
            raise Refused(401, "Unauthenticated", "坐席未注册")
        last = callee.strip()[-1]
        states = "被叫未接" if last == "1" else "主叫未接" if last == "2" else "接听"
        call_uuid = self.place_call(
            OUTBOUND,
            states,
            agent_id=agent.id,
            customer=callee.strip(),
            trunk=trunk,
            user_data=user_data,
        )
        self.callouts.append({**body, "uuid": call_uuid})
        return {"uuid": call_uuid}

    def _records(self, body: dict[str, Any], _query: Any) -> dict[str, Any]:
        rows = self.records()
        if "start_time" in body:
            since = _instant(body["start_time"], "start_time")
            rows = [r for r in rows if _instant(r["start_time"], "") >= since]
        if "end_time" in body:
            until = _instant(body["end_time"], "end_time")
            rows = [r for r in rows if _instant(r["end_time"], "") <= until]
        agent = _int(body.get("agent_id"), "agent_id", required=False)
        if agent is not None:
            rows = [r for r in rows if r["agent_id"] == agent]
        if "agent_ids" in body:
            agents = set(_int_list(body["agent_ids"], "agent_ids"))
            rows = [r for r in rows if r["agent_id"] in agents]
        if "call_types" in body:
            types = set(_str_list(body["call_types"], "call_types"))
            rows = [r for r in rows if r["call_type"] in types]
        if "states" in body:
            states = set(_str_list(body["states"], "states"))
            rows = [r for r in rows if r["states"] in states]
        for key in ("call_uuid", "customer_phone", "trunk_number"):
            if key in body:
                rows = [r for r in rows if r[key] == body[key]]
        rows.sort(key=lambda r: (r["start_time"], r["call_uuid"]), reverse=True)  # newest first
        page = _int(body.get("page_index", 1), "page_index") or 1
        size = _int(body.get("page_size", 20), "page_size") or 20
        if page < 1 or size < 1:
            raise Refused(400, "InvalidArgument", "page_index 和 page_size 必须大于0")
        size = min(size, self.max_page_size)
        chosen = rows[(page - 1) * size : page * size]
        for row in chosen:
            self.served_records[row["call_uuid"]] += 1
        return {"data": chosen, "total": len(rows)}

    def _seat_row(self, seat: Seat) -> dict[str, Any]:
        agent = self.agents.get(seat.agent_id) if seat.agent_id is not None else None
        return {
            "agent_id": seat.agent_id or 0,
            "agent_name": agent.name if agent else "",
            "expiration_at": seat.expiration_at.isoformat(),
            "occupied": "y" if seat.occupied else "n",
            "password": seat.password,
            "sip": seat.sip,
        }

    def _sips(self, _body: Any, query: Any) -> list[dict[str, Any]]:
        seats = list(self.seats.values())
        if "agent_id" in query:
            try:
                agent = int(query["agent_id"])
            except ValueError:
                raise Refused(400, "InvalidArgument", "agent_id 必须是整数") from None
            seats = [s for s in seats if s.agent_id == agent]
        if "occupied" in query:
            occupied = query["occupied"]
            if occupied not in ("y", "n"):
                raise Refused(400, "InvalidArgument", "occupied 只能是 y 或 n")
            seats = [s for s in seats if s.occupied == (occupied == "y")]
        return [self._seat_row(s) for s in seats]

    def _sip_bind(self, body: dict[str, Any], _query: Any) -> dict[str, Any]:
        agent_id = _int(body.get("agent_id"), "agent_id")
        sip = body.get("sip")
        if not isinstance(sip, str) or not sip:
            raise Refused(400, "InvalidArgument", "sip 必填")
        seat = self.seats.get(sip)
        if seat is None:
            raise Refused(404, "NotFound", f"sip {sip} 不存在")
        if agent_id not in self.agents:
            raise Refused(404, "NotFound", f"坐席 {agent_id} 不存在")
        for other in self.seats.values():
            if other.agent_id == agent_id:
                other.agent_id = None
        seat.agent_id = agent_id
        return {}

    def _number_groups(self, _body: Any, _query: Any) -> dict[str, Any]:
        return {"groups": self.groups, "numbers": self.numbers}

    def _assign(self, body: dict[str, Any], _query: Any) -> dict[str, Any]:
        for name in ("agent_ids", "group_ids", "numbers"):
            if name not in body:
                raise Refused(400, "InvalidArgument", f"{name} 必填")
        agents = _int_list(body["agent_ids"], "agent_ids")
        groups = _int_list(body["group_ids"], "group_ids")
        numbers = _str_list(body["numbers"], "numbers")
        unknown = [a for a in agents if a not in self.agents]
        if unknown:
            raise Refused(404, "NotFound", f"坐席 {unknown} 不存在")
        known_groups = {g["id"] for g in self.groups}
        if any(g not in known_groups for g in groups):
            raise Refused(404, "NotFound", "号码组不存在")
        known_numbers = {n["number"] for n in self.numbers}
        if any(n not in known_numbers for n in numbers):
            raise Refused(400, "InvalidArgument", "号码不存在")
        for agent in agents:
            self.assignments[agent] = {"group_ids": groups, "numbers": numbers}
        return {}
