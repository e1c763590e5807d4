"""Yeastar P-Series simulator: the OpenAPI v1.0 HTTP endpoints and the event WebSocket.

Why: users develop against it (``gateway sim yeastar``) and the gateway's tests use it as the PBX,
so it follows the manual's rules strictly: mandatory User-Agent, errcode/errmsg bodies with HTTP
200, token lifetimes, IP blocking after repeated authentication failures, the 60 s idle close of
the WebSocket, closing a socket whose token expires, and the manual's payload inconsistencies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import WSCloseCode, WSMsgType, web

from gateway.sim.yeastar.agents import AgentBoard
from gateway.sim.yeastar.auth import AuthGuard, TokenPair, TokenStore
from gateway.sim.yeastar.cdr import DISPOSITIONS, MAX_PAGE_SIZE, SORT_FIELDS, CdrStore
from gateway.sim.yeastar.control import CallControl, ControlError
from gateway.sim.yeastar.control_api import ControlApi, ControlHandler
from gateway.sim.yeastar.frames import EVENT_IDS, SentFrame, build_frame, dumps, error_body
from gateway.sim.yeastar.traffic import TrafficGenerator

log = logging.getLogger(__name__)

API_VERSION = "v1.0"
# Close codes chosen by the simulator (the manual names none): idle -> 1001, token -> 1008.
IDLE_CLOSE = (WSCloseCode.GOING_AWAY, b"idle timeout")
TOKEN_CLOSE = (WSCloseCode.POLICY_VIOLATION, b"TOKEN EXPIRED")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Ids newer firmware adds (Yeastar help center, P-Series Cloud Edition developer guide).
NEWER_EVENT_IDS: frozenset[int] = frozenset({30029, 30034, 30035, 30036})
FIRMWARES = ("v1.0", "newer")


@dataclass(eq=False)
class _Conn:
    """One subscriber socket: its token, topics and last time the client said anything."""

    ws: web.WebSocketResponse
    token: str
    transport: asyncio.Transport | None
    peer: str
    topics: set[int] = field(default_factory=set)
    last_rx: float = field(default_factory=time.monotonic)
    closing: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=dumps)


class YeastarSimulator:
    """A fake Yeastar P-Series PBX on real loopback sockets (HTTP + WebSocket).

    Call control (call/*, uacsta_call/*, queue and agent endpoints) lives in ``self.control``
    and ``self.agents``: ``auto_hangup_s`` ends controlled calls nobody hangs up,
    ``inbound_control_window_s`` is the accept/refuse window after a 30016, ``inbound_wait``
    makes the generator's monitored-trunk inbound calls wait for that decision,
    ``answer_delay_s`` is how long a dialled callee rings, ``park_time_s`` the parking time.
    """

    def __init__(
        self,
        *,
        client_id: str = "sim-client",
        client_secret: str = "sim-secret",
        access_ttl: float = 1800,
        refresh_ttl: float = 86400,
        idle_timeout: float = 60,
        calls_per_second: float = 0.0,
        seed: int | None = None,
        trap_rate: float = 0.3,
        tz: str = "UTC",
        sn: str = "3631A2124XXX",
        max_auth_failures: int = 5,
        step_delay: float = 0.05,
        auto_hangup_s: float = 30.0,
        inbound_control_window_s: float = 10.0,
        inbound_wait: bool = False,
        answer_delay_s: float = 0.0,
        park_time_s: int = 60,
        firmware: str = "v1.0",
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.idle_timeout = idle_timeout
        self.calls_per_second = calls_per_second
        self.trap_rate = trap_rate
        self.sn = sn
        self.tz = ZoneInfo(tz)
        if firmware not in FIRMWARES:
            raise ValueError(f"firmware must be one of {', '.join(FIRMWARES)}, not {firmware!r}")
        #: ``v1.0``: the manual's ids only (a list naming a newer one is refused, errcode
        #: 40002); ``newer``: also the ids of newer firmware (30029, 30034-30036).
        self.firmware = firmware
        self.event_ids = frozenset(EVENT_IDS) | (NEWER_EVENT_IDS if firmware == "newer" else set())
        self.tokens = TokenStore(access_ttl=access_ttl, refresh_ttl=refresh_ttl)
        self.guard = AuthGuard(max_failures=max_auth_failures)
        self.cdrs = CdrStore(tz=self.tz)
        self.traffic = TrafficGenerator(
            self._emit, self.cdrs, seed=seed, tz=self.tz, sn=sn, step_delay=step_delay
        )
        # Traps draw from their own stream so they never shift the call flows of a seed.
        self._trap_rng = random.Random(None if seed is None else seed + 1)
        self.sent: list[SentFrame] = []
        self.token_requests = 0  # get_token calls (refresh_token calls are counted apart)
        self.refresh_requests = 0
        self.connections_total = 0
        self.base_url = ""
        self._seq = 0
        self._counts: Counter[int] = Counter()
        self._last_text: dict[tuple[int, str], str] = {}
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._routes: dict[str, tuple[str, Handler]] = {
            "get_token": ("POST", self._get_token),
            "refresh_token": ("POST", self._refresh_token),
            "del_token": ("GET", self._del_token),
            "subscribe": ("GET", self._subscribe),
            "cdr/list": ("GET", self._cdr_list),
            "cdr/search": ("GET", self._cdr_search),
        }
        # Call control: commands act on live calls; counted per endpoint once authenticated.
        self.control = CallControl(
            self.traffic,
            self._spawn,
            auto_hangup_s=auto_hangup_s,
            inbound_control_window_s=inbound_control_window_s,
            inbound_wait=inbound_wait,
            answer_delay_s=answer_delay_s,
            park_time_s=park_time_s,
        )
        self.agents = AgentBoard(self.traffic)
        self.control.available_agents = self.agents.available
        self.control_calls: Counter[str] = Counter()
        for endpoint, (method, fn) in ControlApi(self.control, self.agents).routes().items():
            self._routes[endpoint] = (method, self._control_route(endpoint, fn))

    # ------------------------------------------------------------- lifecycle
    @property
    def blocked(self) -> set[str]:
        return self.guard.blocked

    @property
    def auth_failures(self) -> dict[str, int]:
        return self.guard.failures

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1]) if self.base_url else 0

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/openapi/v1.0/subscribe"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind HTTP+WebSocket on ``host:port`` (0 = ephemeral) and start background tasks."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route("*", "/openapi/{version}/{endpoint:.+}", self._dispatch)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0]
        self.base_url = f"http://{host}:{bound[1]}"
        self._spawn(self._watchdog())
        if self.calls_per_second > 0:
            self._spawn(self._traffic_loop())

    async def stop(self) -> None:
        """Cancel every task, drop every socket and close the listener; safe to call twice."""
        runner, self._runner = self._runner, None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        for conn in list(self._conns):
            conn.closing = True
            if conn.transport is not None:
                conn.transport.abort()
        self._conns.clear()
        if runner is not None:
            await runner.cleanup()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Create a task that stop() will cancel (kept in ``_tasks`` until it finishes)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("simulator task failed", exc_info=task.exception())

    # ---------------------------------------------------------- test controls
    async def drop_connections(self) -> int:
        """Abort every WebSocket's TCP connection without a close frame (network drop)."""
        conns = list(self._conns)
        for conn in conns:
            conn.closing = True
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)
        return len(conns)

    def expire_tokens(self) -> None:
        """Every issued access token is expired from now on; sockets opened with one close."""
        self.tokens.expire_all()

    def unblock(self, ip: str | None = None) -> None:
        self.guard.unblock(ip)

    async def run_call(self, flow: str | None = None) -> str:
        """Play one call flow now (random when None) and return its call id."""
        return await self.traffic.run_call(flow)

    async def run_event(self, kind: str | None = None) -> int:
        """Emit one background (non-call) event now; returns its event id."""
        return await self.traffic.run_event(kind)

    async def agent_status_changed(
        self, agent: str, queue: str, status: str = "Paused", reason: str = "Lunch"
    ) -> None:
        """30029 as the help page's example sends it (``msg`` an object, ``queue-<number>``);
        newer firmware only."""
        if self.firmware != "newer":
            raise ValueError("30029 needs firmware='newer'")
        msg = {
            "queue_number": f"queue-{queue}",
            "agent_number": agent,
            "status": status,
            "reason": reason,
        }
        await self._emit(30029, msg, f"agent-{agent}")

    async def run_traffic(self, calls: int, concurrency: int = 4) -> None:
        """Play ``calls`` call flows, each followed by one background event, then return."""
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one() -> None:
            async with sem:
                await self.traffic.run_call()
                await self.traffic.run_event()

        async with asyncio.TaskGroup() as group:
            for _ in range(calls):
                group.create_task(one())

    @property
    def inbound_wait(self) -> bool:
        """When True, generator inbound calls on the monitored trunk wait for accept/refuse."""
        return self.control.inbound_wait

    @inbound_wait.setter
    def inbound_wait(self, value: bool) -> None:
        self.control.inbound_wait = value

    @property
    def no_answer(self) -> set[str]:
        """Extensions that never answer calls made or transferred by call control."""
        return self.control.no_answer

    def call_state(self, call_id: str) -> dict[str, Any] | None:
        """Members, statuses and control state (mute, monitor, recording) of a live call."""
        return self.control.state(call_id)

    def live_calls(self) -> list[dict[str, Any]]:
        """call_state() of every call in progress (generator and controlled)."""
        states = (self.control.state(cid) for cid in list(self.traffic.live))
        return [s for s in states if s is not None]

    async def start_inbound_call(
        self, caller: str | None = None, dest: str | None = None
    ) -> dict[str, str]:
        """One inbound call on the monitored trunk that waits for accept/refuse_inbound.

        Returns ``{"call_id", "channel_id"}`` (the inbound channel named in its 30016).
        """
        return await self.control.start_inbound_call(caller, dest)

    async def start_uacsta_call(
        self, caller: str | None = None, callee: str | None = None
    ) -> dict[str, str]:
        """One internal call ringing an uaCSTA phone, waiting for uacsta_call/*.

        Returns call_id, uacsta_call_id, extension, ip_address and the callee's channel_id.
        """
        return await self.control.start_uacsta_call(caller, callee)

    def stats(self) -> dict[str, Any]:
        return {
            "events": {event: self._counts[event] for event in EVENT_IDS},
            "frames": len(self.sent),
            "connections": len(self._conns),
            "connections_total": self.connections_total,
            "tokens_issued": self.tokens.issued,
            "token_requests": self.token_requests,
            "refresh_requests": self.refresh_requests,
            "cdrs": len(self.cdrs.records),
            "blocked": sorted(self.guard.blocked),
        }

    # ----------------------------------------------------------------- events
    async def _emit(self, event: int, msg: dict[str, Any], entity: str) -> None:
        """Encode one report (maybe with a trap) and send it to the sockets subscribed to it."""
        text, placed, trap = build_frame(
            event, msg, sn=self.sn, rng=self._trap_rng, trap_rate=self.trap_rate
        )
        key = (event, entity)
        if self._last_text.get(key) == text:
            return  # never two byte-identical frames in a row for one entity
        self._last_text[key] = text
        self._seq += 1
        seq = self._seq
        delivered = 0
        for conn in [c for c in self._conns if event in c.topics]:
            if conn.closing or conn.ws.closed:
                continue
            try:
                async with conn.lock:
                    await conn.ws.send_str(text)
                delivered += 1
            except (ConnectionError, RuntimeError) as exc:
                log.debug("send to %s failed: %s", conn.peer, exc)
        self._counts[event] += 1
        self.sent.append(
            SentFrame(
                seq=seq,
                event=event,
                text=text,
                msg=placed,
                time=time.time(),
                subscribers=delivered,
                entity=entity,
                trap=trap,
                payload=msg,
            )
        )

    async def _traffic_loop(self) -> None:
        """Poisson arrivals of call flows (and background events) while running."""
        rng = self.traffic.rng
        while True:
            await asyncio.sleep(rng.expovariate(self.calls_per_second))
            if len(self._tasks) < 64:
                self._spawn(self.traffic.run_call())
            if rng.random() < 0.5:
                self._spawn(self.traffic.run_event())
            if self.firmware == "newer" and self._trap_rng.random() < 0.1:
                paused = self._trap_rng.random() < 0.5
                self._spawn(
                    self.agent_status_changed(
                        str(self._trap_rng.randint(2000, 2010)),
                        "6402",
                        "Paused" if paused else "Unpaused",
                        "Lunch" if paused else "",
                    )
                )

    async def _watchdog(self) -> None:
        """Close sockets idle for ``idle_timeout`` or whose token expired or was deleted."""
        tick = max(0.01, min(0.1, self.idle_timeout / 10))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for conn in list(self._conns):
                if conn.closing:
                    continue
                if now - conn.last_rx >= self.idle_timeout:
                    self._close(conn, *IDLE_CLOSE)
                elif not self.tokens.access_valid(conn.token):
                    self._close(conn, *TOKEN_CLOSE)

    def _close(self, conn: _Conn, code: int, reason: bytes) -> None:
        conn.closing = True
        self._spawn(conn.ws.close(code=code, message=reason))

    # ------------------------------------------------------------------- HTTP
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        """Route ``/openapi/{version}/{endpoint}``: UA, version, endpoint, token checks."""
        endpoint = request.match_info["endpoint"].strip("/")
        is_ws = endpoint == "subscribe"
        if not request.headers.get("User-Agent", "").strip():
            return _json(error_body(10005), status=403 if is_ws else 200)
        if request.match_info["version"] != API_VERSION:
            return _json(error_body(10003))
        route = self._routes.get(endpoint)
        if route is None or route[0] != request.method:
            return _json(error_body(10001))
        if endpoint not in ("get_token", "refresh_token"):
            denied = self._check_token(request.query.get("access_token"))
            if denied is not None:
                return _json(denied, status=401 if is_ws else 200)
        return await route[1](request)

    def _check_token(self, token: str | None) -> dict[str, Any] | None:
        if not token:
            return error_body(10005)
        if not self.tokens.access_valid(token):
            return error_body(10004)
        return None

    @staticmethod
    def _peer(request: web.Request) -> str:
        return request.remote or "unknown"

    async def _read_json(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    def _token_body(self, pair: TokenPair | None = None) -> dict[str, Any]:
        """The manual's success body for get_token / refresh_token."""
        pair = pair or self.tokens.issue()
        access_s, refresh_s = self.tokens.ttl_seconds()
        return {
            "errcode": 0,
            "errmsg": "SUCCESS",
            "access_token_expire_time": access_s,
            "access_token": pair.access_token,
            "refresh_token_expire_time": refresh_s,
            "refresh_token": pair.refresh_token,
        }

    async def _auth_request(
        self, request: web.Request
    ) -> tuple[str, dict[str, Any]] | web.Response:
        """The checks every authentication request passes first: the IP ban, then a JSON body."""
        ip = self._peer(request)
        if self.guard.is_blocked(ip):
            return _json(error_body(70004))
        body = await self._read_json(request)
        if body is None:
            return _json(error_body(40001))
        return ip, body

    async def _get_token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        checked = await self._auth_request(request)
        if isinstance(checked, web.Response):
            return checked
        ip, body = checked
        if body.get("username") != self.client_id or body.get("password") != self.client_secret:
            self.guard.fail(ip)
            return _json(
                error_body(
                    -1, invalid_param_list=[{"field": "username or password", "value": "error"}]
                )
            )
        self.guard.succeed(ip)
        return _json(self._token_body())

    async def _refresh_token(self, request: web.Request) -> web.Response:
        self.refresh_requests += 1
        checked = await self._auth_request(request)
        if isinstance(checked, web.Response):
            return checked
        ip, body = checked
        token = body.get("refresh_token")
        if not isinstance(token, str) or not token:
            return _json(
                error_body(
                    40002,
                    invalid_param_list=[{"field": "refresh_token", "validation_type": "required"}],
                )
            )
        pair = self.tokens.refresh(token)
        if pair is None:
            self.guard.fail(ip)
            return _json(error_body(10004))
        self.guard.succeed(ip)
        return _json(self._token_body(pair))

    async def _del_token(self, request: web.Request) -> web.Response:
        self.tokens.revoke(request.query["access_token"])
        return _json(error_body(0))

    async def _cdr_list(self, request: web.Request) -> web.Response:
        q = request.query
        bad: list[dict[str, Any]] = []
        page = _int_param(q, "page", 1, 1, None, bad)
        size = _int_param(q, "page_size", MAX_PAGE_SIZE, 1, MAX_PAGE_SIZE, bad)
        sort_by = q.get("sort_by", "id")
        if sort_by not in SORT_FIELDS:
            bad.append({"field": "sort_by", "value": sort_by})
        order_by = q.get("order_by", "asc")
        if order_by not in ("asc", "desc"):
            bad.append({"field": "order_by", "value": order_by})
        if bad:
            return _json(error_body(40002, invalid_param_list=bad))
        total, data = self.cdrs.listing(
            page=page, page_size=size, sort_by=sort_by, order_by=order_by
        )
        return _json({"errcode": 0, "errmsg": "SUCCESS", "total_number": total, "data": data})

    async def _cdr_search(self, request: web.Request) -> web.Response:
        q = request.query
        bad: list[dict[str, Any]] = []
        status = q.get("status")
        if status and status not in DISPOSITIONS:
            bad.append({"field": "status", "value": status})
        fuzzy = q.get("enable_fuzzy_search", "0")
        if fuzzy not in ("0", "1"):
            bad.append({"field": "enable_fuzzy_search", "value": fuzzy})
        if bad:
            return _json(error_body(40002, invalid_param_list=bad))
        data = self.cdrs.search(
            start_time=q.get("start_time"),
            end_time=q.get("end_time"),
            call_from=q.get("call_from"),
            call_to=q.get("call_to"),
            status=status,
            fuzzy=fuzzy == "1",
        )
        return _json({"errcode": 0, "errmsg": "SUCCESS", "total_number": len(data), "data": data})

    def _control_route(self, endpoint: str, fn: ControlHandler) -> Handler:
        """Adapt a control handler: JSON body (POST) or query (GET) in, errcode body out."""

        async def handler(request: web.Request) -> web.Response:
            self.control_calls[endpoint] += 1
            params: Mapping[str, Any]
            if request.method == "POST":
                body = await self._read_json(request)
                if body is None:
                    return _json(error_body(40001))
                params = body
            else:
                params = request.query
            try:
                return _json(await fn(params))
            except ControlError as exc:
                return _json(error_body(exc.code, **exc.extra))

        return handler

    # -------------------------------------------------------------- WebSocket
    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        """Upgrade, then handle ``{"topic_list": [...]}`` and ``heartbeat`` messages."""
        ws = web.WebSocketResponse(autoping=True, compress=False, timeout=2.0)
        if not ws.can_prepare(request).ok:
            return _json(
                error_body(
                    40002, invalid_param_list=[{"field": "Upgrade", "validation_type": "required"}]
                )
            )
        transport = request.transport
        await ws.prepare(request)
        conn = _Conn(
            ws=ws,
            token=request.query["access_token"],
            transport=transport,
            peer=self._peer(request),
        )
        self._conns.add(conn)
        self.connections_total += 1
        try:
            async for message in ws:
                conn.last_rx = time.monotonic()
                if message.type == WSMsgType.TEXT:
                    reply = self._on_text(conn, message.data)
                elif message.type == WSMsgType.BINARY:
                    reply = self._on_text(conn, message.data.decode("utf-8", "replace"))
                else:
                    continue
                if not conn.closing:
                    async with conn.lock:
                        await ws.send_str(reply)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("websocket %s ended: %s", conn.peer, exc)
        finally:
            self._conns.discard(conn)
        return ws

    def _on_text(self, conn: _Conn, text: str) -> str:
        """Reply to one client message: heartbeat or a subscription (replaces the topic set)."""
        if text.strip() == "heartbeat":
            return "heartbeat response"
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            return dumps(error_body(40001))
        if not isinstance(body, dict) or not isinstance(body.get("topic_list"), list):
            return dumps(
                error_body(
                    40002,
                    invalid_param_list=[{"field": "topic_list", "validation_type": "required"}],
                )
            )
        topics: set[int] = set()
        bad: list[dict[str, Any]] = []
        for item in body["topic_list"]:
            parts = item.split(",") if isinstance(item, str) else [item]
            for part in parts:
                try:
                    topic = int(str(part).strip()) if not isinstance(part, bool) else -1
                except ValueError:
                    topic = -1
                if topic in self.event_ids:
                    topics.add(topic)
                else:
                    bad.append({"field": "topic_list", "value": str(part)})
        if bad or not topics:
            return dumps(
                error_body(
                    40002,
                    invalid_param_list=bad
                    or [{"field": "topic_list", "validation_type": "required"}],
                )
            )
        conn.topics = topics
        return dumps(error_body(0))


def _int_param(
    q: Any, name: str, default: int, lo: int, hi: int | None, bad: list[dict[str, Any]]
) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        bad.append({"field": name, "value": raw})
        return default
    if value < lo or (hi is not None and value > hi):
        bad.append({"field": name, "value": raw})
        return default
    return value
