"""UUCall cloud REST simulator: every path of seed 000 on a real loopback socket.

Why: ``gateway sim uucall`` / ``gateway demo --vendor uucall`` and the tests need a service that
answers like the document: ``<base_url>/rest/...`` with the documented methods (another method
on a documented path is ``405``), query parameters as strings (``page``, ``pageSize``, ``uid``,
``uidName``, ``time`` = ``yyyy-MM``, ``startTime`` = ``yyyy-MM-dd HH:mm:ss``), the section 3
models field for field, ``201`` with no content for the ``POST`` writes and ``200`` with none
for ``PUT`` / ``DELETE``, and every response code the document lists:

* ``401`` without the credentials of the chosen auth setting (``header``: the header
  ``auth_header`` must hold ``token``; ``basic``: ``username`` / ``password``; ``none``);
* ``403`` for another enterprise's ``uid`` / ``uidName``, or a path in ``forbidden``;
* ``405`` for an undocumented method on a documented path (no ``DELETE /power/roleuser/{id}``,
  no ``POST /power/subuser``: sub-accounts are created through ``/power/roleuser``);
* ``424`` when a dependency refuses (a role still assigned, a name or account already taken);
* ``429`` with ``Retry-After`` (whole seconds) from a token bucket (``rate_limit`` requests a
  second, ``burst``), or for the next requests after ``storm()``;
* ``500`` when scripted (``script()``) or at random (``error_rate``), and ``400`` for a
  malformed parameter.

The document shows no envelope for lists: ``envelope="bare"`` answers a JSON array (and a single
object for one record), ``envelope="data"`` wraps them as ``{"data": ..., "total", "page",
"pageSize"}``. The vendor's wiki wraps every answer, writes included, in HTTP 200
``{"Result": "success", "Code": 0, "Data": ...}``: ``envelope="wiki"`` answers that way,
``envelope="wiki-lower"`` with the keys in lower case. With a wiki envelope and
``errors_in_body``, the refusals the wiki has a code for are answered as it shows them, HTTP
200 ``{"Result": "FAILED", "Code": n, "Data": "<message>"}`` (:data:`BODY_CODES`); ``failure()``
builds such a body for ``script()``. ``string_numbers`` sends every integer as a string
(tolerance tests). Amounts are int64 in fen; ``ChargeBill``'s are doubles (halves of a fen),
as the document types them.

``auth="signed"`` checks the wiki's per-request signature (see
``gateway/connectors/uucall/signing.py``): ``Authorization`` = base64 of
``<account_id>:<yyyyMMddHHmmss>``, the query parameter ``sig`` = upper-case MD5 of
``account_id + token + timestamp``, the header ``appid``, and the header ``timestamp`` naming
the same instant; a timestamp more than ``sign_window_s`` away from the simulator's clock is
refused. ``signed`` counts the signed requests accepted and refused (by reason). The wiki's
base path is ``/uucall_restapi/rest`` (``base_path``).

Data changes over time (``tick()``; every ``tick_s`` once started): sub-accounts consume, so
the balance falls and the month's bills grow; below ``recharge_below`` a recharge arrives (a
cash log entry), so the balance crosses ``low_mark`` downwards and recovers; new operation log
entries and edited or new notices appear. Every write through the API is logged in the
operation log too.

Test controls: ``received`` (each request: method, path, query, body, status, when),
``requests`` (per ``METHOD path``), ``script()``, ``storm()``, ``forbidden``, and the data
tables themselves.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import csv
import hashlib
import io
import json
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from aiohttp import web

from gateway.logging import get_logger
from gateway.sim.http import serve

log = get_logger("sim.uucall")

BASE_PATH: Final = "/rest"
#: The base path of the vendor's wiki.
WIKI_BASE_PATH: Final = "/uucall_restapi/rest"
ENVELOPES: Final = ("bare", "data", "wiki", "wiki-lower")
AUTHS: Final = ("header", "basic", "none", "signed")
#: HTTP refusals -> the wiki's failure code, when errors travel in the body (``errors_in_body``):
#: 5 passport, 6 power, 2 no such method, 100 invalid parameter, 3 request limit, 4 unknown,
#: 1 the service's own error.
BODY_CODES: Final = {401: 5, 403: 6, 404: 1, 405: 2, 400: 100, 424: 1, 429: 3, 500: 4}
SIGN_STAMP: Final = "%Y%m%d%H%M%S"
MONTH: Final = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
STAMP: Final = "%Y-%m-%d %H:%M:%S"
DEFAULT_PAGE_SIZE: Final = 10
#: CustomApplication rows: id -> (name, parent id).
APPS: Final = {
    1: ("呼叫中心", 0),
    2: ("通话记录", 1),
    3: ("录音", 1),
    4: ("报表", 0),
    5: ("计费", 0),
    6: ("充值", 5),
    7: ("系统管理", 0),
}
OPERATIONS: Final = ("登录系统", "导出通话记录", "修改坐席状态", "查看账单", "下载录音")

Handler = Callable[["Call"], Awaitable[Any]]
_NOT_JSON: Final = object()


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived, and the status it got."""

    method: str
    path: str  # below the base path, e.g. /account/cashlog
    query: dict[str, str]
    body: Any
    status: int
    at: float  # monotonic, when it arrived


@dataclass(slots=True)
class Call:
    """What a handler sees of one request."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    match: dict[str, str]


@dataclass(slots=True)
class _Scripted:
    status: int | None
    body: Any
    headers: dict[str, str]
    delay_s: float


@dataclass(slots=True)
class Reply:
    """A handler's answer other than plain JSON: a status without content, or a file."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class UucallSimulator:
    """A fake UUCall cloud (see the module docstring). ``start()`` serves it on ``host:port``
    (0: ephemeral) and sets ``base_url`` (``http://host:port/rest``)."""

    def __init__(
        self,
        *,
        uid: str = "10001",
        uid_name: str = "uucall-demo",
        auth: str = "header",
        auth_header: str = "Authorization",
        token: str = "sim-token",
        username: str = "gateway",
        password: str = "sim-password",
        account_id: str = "ff8080813c37da53013c804f8072007c",
        app_id: str = "sim-app",
        sign_window_s: float = 3000.0,
        base_path: str = BASE_PATH,
        seed: int | None = None,
        envelope: str = "bare",
        errors_in_body: bool = False,
        string_numbers: bool = False,
        rate_limit: float = 50.0,
        burst: int = 100,
        tick_s: float = 0.0,
        low_mark: int = 20000,
        recharge_below: int = 8000,
        recharge_amount: int = 40000,
        balance: int = 26000,
        error_rate: float = 0.0,
        tz: str = "Asia/Shanghai",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if auth not in AUTHS:
            raise ValueError(f"auth must be one of {', '.join(AUTHS)}")
        if envelope not in ENVELOPES:
            raise ValueError(f"envelope must be one of {', '.join(ENVELOPES)}")
        if errors_in_body and not envelope.startswith("wiki"):
            raise ValueError("errors_in_body needs a wiki envelope")
        if not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", base_path):
            raise ValueError("base_path must look like /rest or /uucall_restapi/rest")
        self.uid = uid
        self.uid_name = uid_name
        self.auth = auth
        self.auth_header = auth_header
        self.token = token
        self.username = username
        self.password = password
        self.account_id = account_id
        self.app_id = app_id
        self.sign_window_s = sign_window_s
        self.base_path = base_path
        self.envelope = envelope
        self.errors_in_body = errors_in_body
        #: Signed requests: ``accepted`` and, by reason, the refused ones (``auth="signed"``).
        self.signed: Counter[str] = Counter()
        self.string_numbers = string_numbers
        self.rate_limit = rate_limit
        self.burst = burst
        self.tick_s = tick_s
        self.low_mark = low_mark
        self.recharge_below = recharge_below
        self.recharge_amount = recharge_amount
        #: Share of authorised requests answered 500 at random (a flaky service).
        self.error_rate = error_rate
        self.tz = ZoneInfo(tz)
        self._clock = clock
        self._rng = random.Random(seed)
        self.base_url = ""
        self.received: list[Received] = []
        self.requests: Counter[str] = Counter()
        #: Paths (below ``/rest``, as sent) answered 403 whatever the credentials.
        self.forbidden: set[str] = set()
        self.ticks = 0
        self._scripts: dict[tuple[str, str], deque[_Scripted]] = {}
        self._storm: deque[str] = deque()
        self._tokens = float(burst)
        self._refilled = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._routes = self._route_table()
        self._seed_data(balance)

    # --- data ----------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def month(self, offset: int = 0) -> str:
        """The current month (``offset`` 0) or one before (-1) in the service's time zone."""
        today = datetime.fromtimestamp(self._clock(), self.tz)
        year, month = today.year, today.month + offset
        while month < 1:
            year, month = year - 1, month + 12
        return f"{year:04d}-{month:02d}"

    def _seed_data(self, balance: int) -> None:
        now = self.now_ms()
        day = 86_400_000
        uid = int(self.uid)
        self.account: dict[str, Any] = {
            "balance": balance,
            "overdraft": 10000,
            "name": f"{self.uid_name} 计费账户",
            "state": 1,
            "account": 50000 + uid % 10000,
            "note": "",
            "advance": 0,
            "consume": 1_250_000,
        }
        self.cashlog: dict[int, dict[str, Any]] = {}
        for n, days_ago in enumerate((60, 45, 31, 20, 12, 5, 2), start=1):
            self.cashlog[n] = {
                "id": n,
                "account_time": now - days_ago * day,
                "money": 50000 if n % 2 else 100000,
                "type": 1 if n % 3 else 2,
                "note": "在线充值" if n % 3 else "对公转账",
                "serial_number": f"SN{20240000 + n:08d}",
            }
        self.roles: dict[int, dict[str, Any]] = {
            1: {"uid": uid, "id": 1, "level": 1, "name": "管理员"},
            2: {"uid": uid, "id": 2, "level": 2, "name": "坐席"},
            3: {"uid": uid, "id": 3, "level": 2, "name": "班长"},
            4: {"uid": uid, "id": 4, "level": 3, "name": "访客"},
        }
        self.role_apps: dict[int, set[int]] = {
            1: set(APPS),
            2: {1, 2},
            3: {1, 2, 3, 4},
            4: {4},
        }
        self.subusers: dict[int, dict[str, Any]] = {}
        self.user_role: dict[int, int] = {}
        self.user_apps: dict[int, set[int]] = {}
        for n in range(1, 7):
            ident = 100 + n
            self.subusers[ident] = {
                "uid": uid,
                "state": 2 if n == 5 else 1,
                "login_ip": 3232235777 + n,
                "password": "******",
                "history_online_count": 10 * n,
                "id": ident,
                "createtime": now - (90 - n) * day,
                "jobnumber": f"A{n:03d}",
                "history_online_time": 3600 * n,
                "login_time": now - n * 3_600_000,
                "login_server": "cloud.uucall.cn",
                "email": f"agent{n:02d}@example.com",
                "name": f"坐席{n:02d}",
                "account": f"agent{n:02d}",
                "mphone": f"1380000{n:04d}",
                "dept": "销售部" if n % 2 else "客服部",
                "login_version": 3,
                "bind_ext": 8000 + n,
                "note": "",
                "login_os_info": "Windows 10",
            }
            self.user_role[ident] = 1 if n == 1 else (3 if n == 2 else 2)
            self.user_apps[ident] = set(self.role_apps[self.user_role[ident]])
        self.notices: dict[int, dict[str, Any]] = {
            1: {
                "uid": uid,
                "createtime": now - 30 * day,
                "content": "系统将于周日凌晨维护。",
                "id": 1,
                "title": "系统维护通知",
                "targets": "101,102,103,104,105,106",
            },
            2: {
                "uid": uid,
                "createtime": now - 3_600_000,
                "content": "本月话费账单已生成，请及时查看。",
                "id": 2,
                "title": "账单提醒",
                "targets": "101,102",
            },
        }
        self.oplog: dict[int, dict[str, Any]] = {}
        for n, minutes_ago in enumerate((3000, 240, 90, 30, 5), start=1):
            self.oplog[n] = {
                "uid": uid,
                "id": n,
                "time": now - minutes_ago * 60_000,
                "opdescribe": OPERATIONS[n % len(OPERATIONS)],
                "subUserName": f"agent{n:02d}",
            }
        # bills: month -> sub-account -> amounts (Decimal fen, halves), plus daily details
        self.bills: dict[str, dict[str, dict[str, Decimal]]] = {}
        self.daily: dict[tuple[str, str], dict[int, dict[str, int]]] = {}
        for offset, users in ((-1, range(1, 7)), (0, range(1, 5))):
            month = self.month(offset)
            for n in users:
                account = f"agent{n:02d}"
                for day_no in (1, 2, 3):
                    self._use(month, account, day_no, 400 + 37 * n, 120 + 11 * n, half=n % 2 == 1)
        self.baserate = [
            {"name": "市话", "ruleId": 1, "chargeUnit": "60秒"},
            {"name": "国内长途", "ruleId": 2, "chargeUnit": "60秒"},
            {"name": "国际", "ruleId": 3, "chargeUnit": "6秒"},
        ]
        self.funrate = [
            {"name": "录音存储", "nextRateTime": now + 30 * day, "chargeUnit": "月"},
            {"name": "短信", "nextRateTime": now + 30 * day, "chargeUnit": "条"},
        ]
        self.hirerate = [
            {"name": "坐席租用", "nextRateTime": now + 15 * day, "chargeUnit": "月"},
            {"name": "号码租用", "nextRateTime": now + 15 * day, "chargeUnit": "月"},
        ]
        self.giftrate = [
            {
                "id": n,
                "expirationTime": now + (30 * n) * day,
                "giftTime": 60_000 * n,
                "name": f"时长卡{n}",
                "state": "1" if n < 3 else "2",
                "effectiveTime": now - day,
                "ruleGiftTime": 100_000 * n,
                "notie": "",
            }
            for n in range(1, 4)
        ]

    def _use(
        self, month: str, account: str, day_no: int, basic: int, function: int, *, half: bool
    ) -> int:
        """``account`` consumed ``basic`` + ``function`` fen on ``day_no`` of ``month``."""
        bill = self.bills.setdefault(month, {}).setdefault(
            account, {"basicBill": Decimal(0), "functionBill": Decimal(0)}
        )
        bill["basicBill"] += Decimal(basic) + (Decimal("0.5") if half else 0)
        bill["functionBill"] += Decimal(function)
        day = self.daily.setdefault((month, account), {}).setdefault(
            day_no,
            {"seat": 0, "callin": 0, "callout": 0, "intvoice": 0, "sms": 0, "function": 0},
        )
        day["seat"] += basic // 4
        day["callin"] += basic // 4
        day["callout"] += basic - 3 * (basic // 4)
        day["intvoice"] += basic // 8
        day["sms"] += 0
        day["function"] += function
        return basic + function

    # --- what changes over time ----------------------------------------------------------------

    def tick(self) -> None:
        """One step of the service's life (see the module docstring)."""
        self.ticks += 1
        today = datetime.fromtimestamp(self._clock(), self.tz)
        month = self.month()
        spent = 0
        active = [u for u in self.subusers.values() if u["state"] == 1]
        for user in self._rng.sample(active, k=min(len(active), 2)):
            basic = self._rng.randint(300, 900)
            function = self._rng.randint(0, 300)
            spent += self._use(
                month, user["account"], today.day, basic, function, half=self._rng.random() < 0.5
            )
        self.consume(spent)
        if self.account["balance"] < self.recharge_below:
            self.recharge(self.recharge_amount)
        if self.ticks % 3 == 0:
            who = self._rng.choice(list(self.subusers.values()))["account"]
            self.add_oplog(who, self._rng.choice(OPERATIONS))
        if self.ticks % 5 == 0 and self.notices:
            ident = self._rng.choice(sorted(self.notices))
            self.edit_notice(
                ident, f"{self.notices[ident]['content'].split(' (')[0]} (更新 {self.ticks})"
            )
        if self.ticks % 13 == 0:
            self.add_notice(f"公告 {self.ticks}", "新功能已上线。", "101,102,103")

    def consume(self, amount: int) -> None:
        self.account["balance"] -= amount
        self.account["consume"] += amount

    def recharge(self, amount: int, *, kind: int = 1, note: str = "在线充值") -> dict[str, Any]:
        """A recharge: a new cash log entry, and the balance up."""
        ident = max(self.cashlog, default=0) + 1
        entry = {
            "id": ident,
            "account_time": self.now_ms(),
            "money": amount,
            "type": kind,
            "note": note,
            "serial_number": f"SN{20240000 + ident:08d}",
        }
        self.cashlog[ident] = entry
        self.account["balance"] += amount
        return entry

    def add_oplog(self, who: str, what: str) -> dict[str, Any]:
        ident = max(self.oplog, default=0) + 1
        entry = {
            "uid": int(self.uid),
            "id": ident,
            "time": self.now_ms(),
            "opdescribe": what,
            "subUserName": who,
        }
        self.oplog[ident] = entry
        return entry

    def add_notice(self, title: str, content: str, targets: str) -> dict[str, Any]:
        ident = max(self.notices, default=0) + 1
        notice = {
            "uid": int(self.uid),
            "createtime": self.now_ms(),
            "content": content,
            "id": ident,
            "title": title,
            "targets": targets,
        }
        self.notices[ident] = notice
        return notice

    def edit_notice(self, ident: int, content: str) -> None:
        self.notices[ident]["content"] = content

    def bill_usage(self, account: str, basic: int, function: int = 0) -> None:
        """``account`` consumed this month: its bill grows, the balance falls."""
        today = datetime.fromtimestamp(self._clock(), self.tz)
        self.consume(self._use(self.month(), account, today.day, basic, function, half=False))

    # --- lifecycle -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", self.base_path + "/{tail:.*}", self._dispatch)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._runner is not None:
            return self.base_url
        self._runner, root = await serve(self.app(), host, port)
        self.base_url = root + self.base_path
        if self.tick_s > 0:
            self._ticker = asyncio.create_task(self._tick_loop(), name="uucall-sim-ticks")
        return self.base_url

    async def stop(self) -> None:
        """Close the listener and the ticks; safe to call twice."""
        task, self._ticker = self._ticker, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.tick()
            except Exception:  # a simulator bug must not end the changes silently
                log.exception("tick_failed")

    # --- test controls -------------------------------------------------------------------------

    def script(
        self,
        method: str,
        path: str,
        *,
        status: int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
        times: int = 1,
    ) -> None:
        """The next ``times`` authorised requests of ``method path`` (as sent, below
        ``/rest``) wait ``delay_s`` and are answered ``status`` with ``body`` (default
        ``{"code", "message"}``); ``status=None`` lets the real handler answer after the
        delay. An error the wiki's way is ``status=200, body=failure(code, message)``."""
        queue = self._scripts.setdefault((method.upper(), path), deque())
        for _ in range(times):
            queue.append(_Scripted(status, body, dict(headers or {}), delay_s))

    def storm(self, count: int, retry_after: str = "1") -> None:
        """The next ``count`` requests, whatever they are, answer 429 with this Retry-After."""
        self._storm.extend([retry_after] * count)

    def failure(self, code: int, message: str) -> dict[str, Any]:
        """A failure as the wiki shows it, in this simulator's key case."""
        if self.envelope == "wiki-lower":
            return {"result": "failed", "code": code, "data": message}
        return {"Result": "FAILED", "Code": code, "Data": message}

    def calls(self, method: str, path: str) -> list[Received]:
        return [r for r in self.received if r.method == method and r.path == path]

    # --- dispatch ------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        method = request.method
        path = "/" + request.match_info["tail"].strip("/")
        query = dict(request.query)
        self.requests[f"{method} {path}"] += 1
        raw = await request.read()
        body: Any = None
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = _NOT_JSON
        status = 500
        try:
            response = await self._answer(request, method, path, query, body)
            status = response.status
            return response
        except Refused as exc:
            status = exc.status
            if self.errors_in_body and exc.status in BODY_CODES:
                status = 200
                body_ = self.failure(BODY_CODES[exc.status], exc.message)
                return web.json_response(body_, status=200, dumps=_dumps)
            return web.json_response(
                {"code": exc.status, "message": exc.message}, status=exc.status, dumps=_dumps
            )
        finally:
            shown = None if body is _NOT_JSON else body
            self.received.append(Received(method, path, query, shown, status, arrived))

    async def _answer(
        self, request: web.Request, method: str, path: str, query: dict[str, str], body: Any
    ) -> web.StreamResponse:
        limited = self._rate_limited()
        if limited is not None:
            if self.errors_in_body:
                body_ = self.failure(BODY_CODES[429], "too many requests")
                return web.json_response(body_, status=200, dumps=_dumps)
            return web.json_response(
                {"code": 429, "message": "too many requests"},
                status=429,
                headers={"Retry-After": limited},
                dumps=_dumps,
            )
        self._check_auth(request, query)
        handler, match = self._route(method, path)
        if path in self.forbidden:
            raise Refused(403, "forbidden")
        if self.error_rate > 0 and self._rng.random() < self.error_rate:
            raise Refused(500, "internal error (simulated)")
        scripted = self._next_script(method, path)
        if scripted is not None and scripted.delay_s > 0:
            await asyncio.sleep(scripted.delay_s)
        if scripted is not None and scripted.status is not None:
            answer = scripted.body
            if answer is None:
                answer = {"code": scripted.status, "message": f"scripted {scripted.status}"}
            return web.json_response(
                answer, status=scripted.status, headers=scripted.headers, dumps=_dumps
            )
        if body is _NOT_JSON:
            raise Refused(400, "the body is not JSON")
        result = await handler(Call(method, path, query, body, match))
        if isinstance(result, Reply) and self.envelope.startswith("wiki") and not result.body:
            # the wiki answers every operation, writes too, with HTTP 200 and an envelope
            return web.json_response(self._wrap(None), status=200, dumps=_dumps)
        if isinstance(result, Reply):
            return web.Response(
                status=result.status,
                body=result.body,
                content_type=result.content_type,
                headers=result.headers,
            )
        return web.json_response(self._wire(result), status=200, dumps=_dumps)

    def _rate_limited(self) -> str | None:
        """The Retry-After of a 429 (a storm first, then the token bucket), or None."""
        if self._storm:
            return self._storm.popleft()
        if self.rate_limit <= 0:
            return None
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate_limit)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return str(max(1, math.ceil((1 - self._tokens) / self.rate_limit)))

    def _check_auth(self, request: web.Request, query: dict[str, str]) -> None:
        if self.auth == "none":
            return
        if self.auth == "signed":
            problem = self._signature_problem(request, query.pop("sig", None))
            self.signed[problem or "accepted"] += 1
            if problem is not None:
                raise Refused(401, f"signature refused: {problem}")
            return
        if self.auth == "header":
            if request.headers.get(self.auth_header) != self.token:
                raise Refused(401, "unauthorized")
            return
        given = request.headers.get("Authorization", "")
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if given != f"Basic {expected}":
            raise Refused(401, "unauthorized")

    def _signature_problem(self, request: web.Request, sig: str | None) -> str | None:
        """Why a signed request is refused (a short reason), or None when it is good."""
        given = request.headers.get("Authorization", "")
        try:
            decoded = base64.b64decode(given, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return "authorization_not_base64"
        account, _, stamp = decoded.partition(":")
        if account != self.account_id:
            return "wrong_account"
        try:
            at = datetime.strptime(stamp, SIGN_STAMP).replace(tzinfo=self.tz)
        except ValueError:
            return "bad_timestamp"
        if abs(at.timestamp() - self._clock()) > self.sign_window_s:
            return "stale_timestamp"
        if request.headers.get("appid") != self.app_id:
            return "wrong_appid"
        header_stamp = request.headers.get("timestamp")
        if header_stamp is not None and header_stamp != at.strftime(STAMP):
            return "timestamp_mismatch"
        expected = hashlib.md5(
            f"{self.account_id}{self.token}{stamp}".encode(), usedforsecurity=False
        ).hexdigest()
        if sig is None:
            return "no_sig"
        if sig != expected.upper():
            return "wrong_sig"
        return None

    def _route(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for route_method, pattern, handler in self._routes:
            found = pattern.fullmatch(path)
            if found is None:
                continue
            if route_method == method:
                return handler, found.groupdict()
            allowed = True
        if allowed:
            raise Refused(405, f"method {method} not allowed on {path}")
        raise Refused(404, f"no such API: {path}")

    def _next_script(self, method: str, path: str) -> _Scripted | None:
        queue = self._scripts.get((method, path))
        return queue.popleft() if queue else None

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        table: list[tuple[str, str, Handler]] = [
            ("GET", "/account/cashlog", self._cashlog),
            ("GET", "/account/chargebill", self._chargebill),
            ("GET", "/account/chargebill/basicbill", self._basicbill),
            ("GET", "/account/chargebill/funbill", self._funbill),
            ("GET", "/account/file/chargebill", self._file_chargebill),
            ("GET", "/account/file/chargebill/basicbill", self._file_basicbill),
            ("GET", "/account/file/chargebill/funbill", self._file_funbill),
            ("GET", "/account/{uid}", self._account),
            ("GET", "/account/{uid}/baserate", self._baserate),
            ("GET", "/account/{uid}/funrate", self._funrate),
            ("GET", "/account/{uid}/giftrate", self._giftrate),
            ("GET", "/account/{uid}/hirerate", self._hirerate),
            ("GET", "/power/notice", self._notice_list),
            ("POST", "/power/notice", self._notice_create),
            ("GET", "/power/notice/{noticeId}", self._notice_get),
            ("PUT", "/power/notice/{noticeId}", self._notice_update),
            ("DELETE", "/power/notice/{noticeId}", self._notice_delete),
            ("GET", "/power/oplog", self._oplog),
            ("GET", "/power/role", self._role_list),
            ("POST", "/power/role", self._role_create),
            ("GET", "/power/role/auth/{roleId}", self._role_auth_get),
            ("PUT", "/power/role/auth/{roleId}", self._role_auth_update),
            ("PUT", "/power/role/{roleId}", self._role_update),
            ("DELETE", "/power/role/{roleId}", self._role_delete),
            ("GET", "/power/roleuser", self._roleuser_list),
            ("POST", "/power/roleuser", self._roleuser_create),
            ("GET", "/power/roleuser/{subUserId}", self._roleuser_get),
            ("PUT", "/power/roleuser/{subUserId}", self._roleuser_update),
            ("GET", "/power/subuser", self._subuser_list),
            ("GET", "/power/subuser/auth/{subUserId}", self._subuser_auth_get),
            ("PUT", "/power/subuser/auth/{subUserId}", self._subuser_auth_update),
            ("GET", "/power/subuser/{subUserId}", self._subuser_get),
            ("PUT", "/power/subuser/{subUserId}", self._subuser_update),
            ("DELETE", "/power/subuser/{subUserId}", self._subuser_delete),
        ]
        return [(m, re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", p)), h) for m, p, h in table]

    #: The documented paths, as ``METHOD path`` (for tests and the CLI banner).
    @property
    def paths(self) -> list[str]:
        return [f"{m} {p.pattern}" for m, p, _ in self._routes]

    # --- helpers -------------------------------------------------------------------------------

    def _wire(self, value: Any) -> Any:
        """Decimal amounts as JSON numbers (a double), integers as strings if asked."""
        if isinstance(value, dict):
            return {k: self._wire(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._wire(v) for v in value]
        if isinstance(value, Decimal):
            return float(value)  # halves of a fen: exact in binary
        if self.string_numbers and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    def _wrap(self, data: Any) -> dict[str, Any]:
        """A success in the wiki's envelope (``envelope`` is ``wiki`` or ``wiki-lower``)."""
        if self.envelope == "wiki-lower":
            return {"result": "success", "code": 0, "data": data}
        return {"Result": "success", "Code": 0, "Data": data}

    def _one(self, item: dict[str, Any]) -> Any:
        if self.envelope.startswith("wiki"):
            return self._wrap(item)
        return {"data": item} if self.envelope == "data" else item

    def _many(self, items: list[dict[str, Any]]) -> Any:
        if self.envelope.startswith("wiki"):
            return self._wrap(items)
        return {"data": items, "total": len(items)} if self.envelope == "data" else items

    def _page(self, items: list[dict[str, Any]], query: dict[str, str]) -> Any:
        page = _int_param(query, "page", 1)
        size = _int_param(query, "pageSize", DEFAULT_PAGE_SIZE)
        if page < 1 or not 1 <= size <= 1000:
            raise Refused(400, "page must be 1 or more, pageSize 1-1000")
        chunk = items[(page - 1) * size : page * size]
        if self.envelope.startswith("wiki"):
            return self._wrap(chunk)
        if self.envelope == "data":
            return {"data": chunk, "total": len(items), "page": page, "pageSize": size}
        return chunk

    def _check_uid(self, query: dict[str, str], required: bool = True) -> None:
        uid = query.get("uid")
        if uid is None:
            if required:
                raise Refused(400, "uid is required")
            return
        if uid != self.uid:
            raise Refused(403, f"uid {uid} is not this account's")

    def _check_uid_name(self, query: dict[str, str]) -> None:
        name = query.get("uidName")
        if not name:
            raise Refused(400, "uidName is required")
        if name != self.uid_name:
            raise Refused(403, f"uidName {name} is not this account's")

    def _check_path_uid(self, call: Call) -> None:
        if call.match["uid"] != self.uid:
            raise Refused(403, f"uid {call.match['uid']} is not this account's")

    def _month(self, query: dict[str, str]) -> str:
        month = query.get("time") or self.month()
        if not MONTH.match(month):
            raise Refused(400, f"time {month!r} is not yyyy-MM")
        return month

    @staticmethod
    def _id(value: str, what: str) -> int:
        if not value.isdigit():
            raise Refused(400, f"{what} {value!r} is not an id")
        return int(value)

    def _body(self, call: Call) -> dict[str, Any]:
        if not isinstance(call.body, dict):
            raise Refused(400, "a JSON object body is required")
        return call.body

    def _logged(self, what: str) -> None:
        """A write through the API shows in the operation log (as the API user)."""
        self.add_oplog("api", what)

    # --- account -------------------------------------------------------------------------------

    async def _cashlog(self, call: Call) -> Any:
        self._check_uid(call.query)
        items = sorted(self.cashlog.values(), key=lambda e: (-e["account_time"], -e["id"]))
        return self._page(items, call.query)

    def _bill_rows(self, month: str, account: str | None) -> list[dict[str, Any]]:
        rows = []
        for name, amounts in sorted(self.bills.get(month, {}).items()):
            if account and name != account:
                continue
            rows.append(
                {
                    "total": amounts["basicBill"] + amounts["functionBill"],
                    "time": month,
                    "basicBill": amounts["basicBill"],
                    "subUserName": name,
                    "functionBill": amounts["functionBill"],
                }
            )
        return rows

    async def _chargebill(self, call: Call) -> Any:
        self._check_uid_name(call.query)
        month = self._month(call.query)
        return self._page(self._bill_rows(month, call.query.get("account")), call.query)

    def _detail_key(self, query: dict[str, str]) -> tuple[str, str]:
        self._check_uid_name(query)
        account = query.get("subUserName")
        if not account:
            raise Refused(400, "subUserName is required")
        if account not in {u["account"] for u in self.subusers.values()}:
            raise Refused(404, f"no sub-account {account}")
        return self._month(query), account

    def _basic_rows(self, month: str, account: str) -> list[dict[str, Any]]:
        days = self.daily.get((month, account), {})
        rows = []
        for day_no, d in sorted(days.items()):
            symbol = int(month.replace("-", "")) * 100 + day_no
            total = d["seat"] + d["callin"] + d["callout"] + d["intvoice"] + d["sms"]
            rows.append(
                {
                    "total": total,
                    "day_seat": d["seat"],
                    "id": symbol * 1000 + int(account[-2:]),
                    "daily_symbol": symbol,
                    "day_callin": d["callin"],
                    "day_callout": d["callout"],
                    "day_intvoice": d["intvoice"],
                    "day_sms": d["sms"],
                }
            )
        return rows

    def _fun_rows(self, month: str, account: str) -> list[dict[str, Any]]:
        rows = []
        for day_no, d in sorted(self.daily.get((month, account), {}).items()):
            symbol = int(month.replace("-", "")) * 100 + day_no
            rows.append(
                {
                    "day_account": d["function"],
                    "id": symbol * 1000 + int(account[-2:]),
                    "daily_symbol": symbol,
                    "name": "录音存储",
                }
            )
        return rows

    async def _basicbill(self, call: Call) -> Any:
        return self._page(self._basic_rows(*self._detail_key(call.query)), call.query)

    async def _funbill(self, call: Call) -> Any:
        return self._page(self._fun_rows(*self._detail_key(call.query)), call.query)

    def _csv(self, rows: list[dict[str, Any]], name: str) -> Reply:
        out = io.StringIO()
        fields = list(rows[0]) if rows else ["total"]
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\r\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: format(v, "f") if isinstance(v, Decimal) else v for k, v in row.items()}
            )
        return Reply(
            200,
            ("\ufeff" + out.getvalue()).encode("utf-8"),
            "text/csv",
            {"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def _file_chargebill(self, call: Call) -> Any:
        self._check_uid_name(call.query)
        month = self._month(call.query)
        return self._csv(
            self._bill_rows(month, call.query.get("account")), f"chargebill-{month}.csv"
        )

    async def _file_basicbill(self, call: Call) -> Any:
        month, account = self._detail_key(call.query)
        return self._csv(self._basic_rows(month, account), f"basicbill-{account}-{month}.csv")

    async def _file_funbill(self, call: Call) -> Any:
        """The document answers this download with ``FunBill`` JSON (section 2.7.4)."""
        month, account = self._detail_key(call.query)
        body = _dumps(self._wire(self._many(self._fun_rows(month, account)))).encode()
        return Reply(200, body, "application/json")

    async def _account(self, call: Call) -> Any:
        self._check_path_uid(call)
        return self._one(dict(self.account))

    async def _baserate(self, call: Call) -> Any:
        self._check_path_uid(call)
        self._check_uid(call.query, required=False)  # documented as a query parameter too
        return self._many(self.baserate)

    async def _funrate(self, call: Call) -> Any:
        self._check_path_uid(call)
        self._check_uid(call.query, required=False)
        return self._many(self.funrate)

    async def _giftrate(self, call: Call) -> Any:
        self._check_path_uid(call)
        return self._page(self.giftrate, call.query)

    async def _hirerate(self, call: Call) -> Any:
        self._check_path_uid(call)
        self._check_uid(call.query, required=False)
        return self._many(self.hirerate)

    # --- notices -------------------------------------------------------------------------------

    async def _notice_list(self, call: Call) -> Any:
        self._check_uid(call.query)
        items = [n for _, n in sorted(self.notices.items())]
        if call.query.get("id"):
            items = [n for n in items if str(n["id"]) == call.query["id"]]
        if call.query.get("title"):
            items = [n for n in items if call.query["title"] in n["title"]]
        return self._many(items)

    def _notice(self, call: Call) -> dict[str, Any]:
        self._check_uid(call.query)
        ident = self._id(call.match["noticeId"], "noticeId")
        if ident not in self.notices:
            raise Refused(404, f"no notice {ident}")
        return self.notices[ident]

    async def _notice_create(self, call: Call) -> Any:
        body = self._body(call)
        missing = [f for f in ("uid", "createtime", "content", "title", "targets") if f not in body]
        if missing:
            raise Refused(400, f"missing {', '.join(missing)}")
        if str(body["uid"]) != self.uid:
            raise Refused(403, "uid is not this account's")
        notice = self.add_notice(str(body["title"]), str(body["content"]), str(body["targets"]))
        notice["createtime"] = int(body["createtime"])
        self._logged(f"新增公告 {notice['id']}")
        return Reply(201)

    async def _notice_get(self, call: Call) -> Any:
        return self._one(self._notice(call))

    async def _notice_update(self, call: Call) -> Any:
        notice = self._notice(call)
        body = self._body(call)
        for name in ("title", "content", "targets"):
            if name in body:
                notice[name] = str(body[name])
        self._logged(f"修改公告 {notice['id']}")
        return Reply(200)

    async def _notice_delete(self, call: Call) -> Any:
        notice = self._notice(call)
        del self.notices[notice["id"]]
        self._logged(f"删除公告 {notice['id']}")
        return Reply(200)

    # --- operation log -------------------------------------------------------------------------

    def _stamp_ms(self, query: dict[str, str], name: str) -> int | None:
        value = query.get(name)
        if not value:
            return None
        try:
            local = datetime.strptime(value, STAMP).replace(tzinfo=self.tz)
        except ValueError:
            raise Refused(400, f"{name} {value!r} is not yyyy-MM-dd HH:mm:ss") from None
        return int(local.timestamp() * 1000)

    async def _oplog(self, call: Call) -> Any:
        self._check_uid(call.query)
        start = self._stamp_ms(call.query, "startTime")
        end = self._stamp_ms(call.query, "endTime")
        items = []
        # .get: a test may plant an entry that lacks documented fields
        newest_first = sorted(
            self.oplog.values(), key=lambda e: (-e.get("time", 0), -int(e.get("id") or 0))
        )
        for entry in newest_first:
            if start is not None and entry.get("time", 0) < start:
                continue
            if end is not None and entry.get("time", 0) > end:
                continue
            if call.query.get("id") and str(entry.get("id")) != call.query["id"]:
                continue
            who = call.query.get("subUserName")
            if who and entry.get("subUserName") != who:
                continue
            items.append(entry)
        return self._many(items)

    # --- roles ---------------------------------------------------------------------------------

    def _role(self, call: Call) -> dict[str, Any]:
        ident = self._id(call.match["roleId"], "roleId")
        if ident not in self.roles:
            raise Refused(404, f"no role {ident}")
        return self.roles[ident]

    async def _role_list(self, call: Call) -> Any:
        self._check_uid(call.query)
        name = call.query.get("name")
        return self._many(
            [r for _, r in sorted(self.roles.items()) if not name or name in r["name"]]
        )

    async def _role_create(self, call: Call) -> Any:
        self._check_uid(call.query)
        name = call.query.get("name")
        if not name:
            raise Refused(400, "name is required")
        body = self._body(call)
        if any(r["name"] == name for r in self.roles.values()):
            raise Refused(424, f"role name {name} exists")
        ident = max(self.roles, default=0) + 1
        self.roles[ident] = {
            "uid": int(self.uid),
            "id": ident,
            "level": int(body.get("level") or 2),
            "name": name,
        }
        self.role_apps[ident] = set()
        self._logged(f"新增角色 {name}")
        return Reply(201)

    async def _role_update(self, call: Call) -> Any:
        role = self._role(call)
        body = self._body(call)
        if "name" in body:
            role["name"] = str(body["name"])
        if "level" in body:
            role["level"] = int(body["level"])
        self._logged(f"修改角色 {role['id']}")
        return Reply(200)

    async def _role_delete(self, call: Call) -> Any:
        role = self._role(call)
        users = [u for u, r in self.user_role.items() if r == role["id"]]
        if users:
            raise Refused(424, f"role {role['id']} is assigned to {len(users)} sub-accounts")
        del self.roles[role["id"]]
        self.role_apps.pop(role["id"], None)
        self._logged(f"删除角色 {role['id']}")
        return Reply(200)

    def _apps(self, ids: set[int], pid: int | None = None) -> list[dict[str, Any]]:
        return [
            {"uid": int(self.uid), "id": i, "name": APPS[i][0], "pid": APPS[i][1]}
            for i in sorted(ids)
            if pid is None or APPS[i][1] == pid
        ]

    def _app_ids(self, query: dict[str, str], name: str) -> set[int]:
        text = query.get(name) or ""
        ids = set()
        for part in text.split(","):
            if not part.strip():
                continue
            ident = self._id(part.strip(), name)
            if ident not in APPS:
                raise Refused(400, f"{name}: no application {ident}")
            ids.add(ident)
        return ids

    async def _role_auth_get(self, call: Call) -> Any:
        self._check_uid(call.query)
        return self._many(self._apps(self.role_apps[self._role(call)["id"]]))

    async def _role_auth_update(self, call: Call) -> Any:
        role = self._role(call)
        allow, deny = (self._app_ids(call.query, n) for n in ("authAppIds", "unAuthAppIds"))
        self.role_apps[role["id"]] = (self.role_apps[role["id"]] | allow) - deny
        self._logged(f"修改角色权限 {role['id']}")
        return Reply(200)

    # --- sub-accounts --------------------------------------------------------------------------

    def _subuser(self, call: Call) -> dict[str, Any]:
        ident = self._id(call.match["subUserId"], "subUserId")
        if ident not in self.subusers:
            raise Refused(404, f"no sub-account {ident}")
        return self.subusers[ident]

    def _roleuser(self, user: dict[str, Any]) -> dict[str, Any]:
        role = self.roles.get(self.user_role.get(user["id"], 0))
        return {
            "id": user["id"],
            "jobnumber": user["jobnumber"],
            "name": user["name"],
            "state": user["state"],
            "account": user["account"],
            "roleName": role["name"] if role else "",
        }

    async def _roleuser_list(self, call: Call) -> Any:
        self._check_uid(call.query)
        q = call.query
        items = []
        for _, user in sorted(self.subusers.items()):
            row = self._roleuser(user)
            if q.get("name") and q["name"] not in row["name"]:
                continue
            if q.get("subUserName") and q["subUserName"] != row["account"]:
                continue
            if q.get("roleName") and q["roleName"] != row["roleName"]:
                continue
            if q.get("jobnumber") and q["jobnumber"] != row["jobnumber"]:
                continue
            if q.get("state") and q["state"] != str(row["state"]):
                continue
            items.append(row)
        return self._page(items, q)

    async def _roleuser_create(self, call: Call) -> Any:
        q = call.query
        missing = [n for n in ("password", "name", "account") if not q.get(n)]
        if missing:
            raise Refused(400, f"missing {', '.join(missing)}")
        if len(q["password"].encode()) > 15:
            raise Refused(400, "password longer than 15 bytes")
        self._body(call)
        if any(u["account"] == q["account"] for u in self.subusers.values()):
            raise Refused(424, f"account {q['account']} exists")
        role_id = self._id(q["roleId"], "roleId") if q.get("roleId") else 2
        if role_id not in self.roles:
            raise Refused(400, f"no role {role_id}")
        ident = max(self.subusers, default=100) + 1
        now = self.now_ms()
        self.subusers[ident] = {
            "uid": int(self.uid),
            "state": 1,
            "password": "******",
            "id": ident,
            "createtime": now,
            "jobnumber": q.get("jobnumber", ""),
            "name": q["name"],
            "account": q["account"],
        }
        self.user_role[ident] = role_id
        use_template = q.get("roleEnble", "1") == "1"
        self.user_apps[ident] = set(self.role_apps[role_id]) if use_template else set()
        self._logged(f"新增子帐号 {q['account']}")
        return Reply(201)

    async def _roleuser_get(self, call: Call) -> Any:
        return self._one(self._roleuser(self._subuser(call)))

    async def _roleuser_update(self, call: Call) -> Any:
        user = self._subuser(call)
        body = self._body(call)
        if "roleName" in body:
            role = next((r for r in self.roles.values() if r["name"] == body["roleName"]), None)
            if role is None:
                raise Refused(400, f"no role named {body['roleName']}")
            self.user_role[user["id"]] = role["id"]
        for name in ("jobnumber", "name", "account"):
            if name in body:
                user[name] = str(body[name])
        if "state" in body:
            user["state"] = int(body["state"])
        self._logged(f"修改子帐号角色 {user['id']}")
        return Reply(200)

    async def _subuser_list(self, call: Call) -> Any:
        self._check_uid(call.query)
        q = call.query
        items = []
        for _, user in sorted(self.subusers.items()):
            if q.get("id") and q["id"] != str(user["id"]):
                continue
            if q.get("name") and q["name"] not in user["name"]:
                continue
            if q.get("bind_ext") and q["bind_ext"] != str(user.get("bind_ext", "")):
                continue
            if q.get("jobnumber") and q["jobnumber"] != user.get("jobnumber"):
                continue
            if q.get("account") and q["account"] != user["account"]:
                continue
            if q.get("state") and q["state"] != str(user["state"]):
                continue
            items.append(user)
        return self._many(items)

    async def _subuser_get(self, call: Call) -> Any:
        return self._one(self._subuser(call))

    async def _subuser_update(self, call: Call) -> Any:
        user = self._subuser(call)
        body = self._body(call)
        for name in ("name", "email", "mphone", "dept", "jobnumber", "note", "password"):
            if name in body:
                user[name] = "******" if name == "password" else str(body[name])
        for name in ("state", "bind_ext"):
            if name in body:
                user[name] = int(body[name])
        self._logged(f"修改子帐号 {user['id']}")
        return Reply(200)

    async def _subuser_delete(self, call: Call) -> Any:
        user = self._subuser(call)
        del self.subusers[user["id"]]
        self.user_role.pop(user["id"], None)
        self.user_apps.pop(user["id"], None)
        self._logged(f"删除子帐号 {user['account']}")
        return Reply(200)

    async def _subuser_auth_get(self, call: Call) -> Any:
        user = self._subuser(call)
        pid = self._id(call.query["pid"], "pid") if call.query.get("pid") else None
        return self._many(self._apps(self.user_apps.get(user["id"], set()), pid))

    async def _subuser_auth_update(self, call: Call) -> Any:
        user = self._subuser(call)
        allow, deny = (self._app_ids(call.query, n) for n in ("authAppIds", "unAuthAppIds"))
        self.user_apps[user["id"]] = (self.user_apps.get(user["id"], set()) | allow) - deny
        self._logged(f"修改子帐号权限 {user['id']}")
        return Reply(200)


def _int_param(query: dict[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    if not value.strip().lstrip("-").isdigit():
        raise Refused(400, f"{name} {value!r} is not a number")
    return int(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
