"""XSwitch XCC REST simulator: the management API of seed 002 on a real loopback socket.

Why: ``gateway sim xswitch`` / ``gateway demo --vendor xswitch`` and the tests need a PBX that
answers like the document: ``POST /api/xcc/...`` with JSON bodies, the user token in a ``token``
header (401 without a valid one, tokens that expire after ``token_ttl_s`` so re-authentication
is exercised), the document's answers (``page``, ``row_count``, ``page_count``, string ids, its
example records as the initial data) and its inconsistencies, accepted as the document shows
them: ``/api/xcc/hostlines/*`` beside ``/api/xcc/hotlines/*`` (lines 1060, 1098, 1128, 1150),
``/api/xcc/ivr/list`` beside ``/api/xcc/ivrs/list`` (line 765), ``offwork`` beside ``offday``
(line 684), ids and counts as strings or numbers, flags as ``1``/``"1"``/``"true"``.

The document shows no error answer; the simulator answers the HTTP status with
``{"code": <status>, "message": ...}``, the shape of the auth answer's ``"code": 200`` (line 23):
400 for a bad parameter (e.g. an unknown queue strategy), 401 for the token, 404 for an
unknown id or path, 409 for a name or number that must be unique (lines 315, 711).

Configuration changes over time (``mutate()``; every ``mutate_every_s``, or after
``start_mutations(every_s)``) so the
gateway's config polling finds something. Test controls: ``expire_tokens()``,
``reject_tokens``, ``script()`` (a scripted answer or a delay for the next requests of a path),
``requests`` (per path as sent) and ``received`` (every request with its body).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final, Literal

from aiohttp import web

from gateway.sim.http import serve

log = logging.getLogger(__name__)

API: Final = "/api/xcc/"
#: Paths as the document sometimes spells them -> the path they mean.
ALIASES: Final = {
    "hostlines/list": "hotlines/list",
    "hostlines/get": "hotlines/get",
    "hostlines/add": "hotlines/add",
    "hostlines/set": "hotlines/set",
    "hostlines/del": "hotlines/del",
    "ivr/list": "ivrs/list",
}
#: Lines 302-310.
STRATEGIES: Final = (
    "ring-all",
    "longest-idle-agent",
    "round-robin",
    "top-down",
    "agent-with-least-talk-time",
    "agent-with-fewest-calls",
    "sequentially-by-agent-order",
    "random",
    "ring-progressively",
)
QUEUE_ACTIONS: Final = (
    "overflow_capacity_action",
    "wait_timeout_action",
    "wait_timeout_without_agent_action",
)
OBJECTS: Final = ("extension", "queue", "ivr", "hotline")
ACTIONS: Final = ("added", "changed", "removed")
DEFAULT_PAGE_SIZE: Final = 20  # not documented, except hotlines
HOTLINE_PAGE_SIZE: Final = 200  # "支持分页,默认 200" (line 988)
_STAMP: Final = "%Y-%m-%d %H:%M:%S"

Answer = Any  # a JSON object or array


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived: the path as sent, its body, the status answered."""

    path: str
    body: Any
    status: int


@dataclass(frozen=True, slots=True)
class Mutation:
    """What ``mutate()`` did: ``object`` (extension|queue|ivr|hotline), ``action``
    (added|changed|removed) and the id of the top-level object (an IVR sub-menu's root)."""

    object: str
    action: str
    id: str


@dataclass(slots=True)
class _Scripted:
    status: int | None  # None: the real handler answers (after the delay)
    body: Any
    delay_s: float


# --- the document's records (initial data) -------------------------------------------------------


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # FreeSWITCH's a1-hash is MD5


def _extension(i: int) -> dict[str, str]:
    """Extensions 1000-1021: 22 rows, ``page_count`` 11 at ``page_size`` 2 (lines 130-131);
    1000 and 1001 are lines 83-127, 1009 is line 152's ``id`` 236."""
    extn = str(1000 + i)
    ident = "236" if extn == "1009" else str(191 + i)
    stamp = "2020-01-19 15:39:28" if extn == "1009" else "2020-01-17 14:11:55"
    record = {
        "ha1": _md5(f"{extn}:xswitch.cn:sim-{extn}"),
        "ha1b": _md5(f"{extn}@xswitch.cn:xswitch.cn:sim-{extn}"),
        "user_id": str(179 + i),
        "cid_number": "",
        "vm_password": "",
        "description": "",
        "id": ident,
        "display_order": "0",
        "context": "default",
        "extn": extn,
        "domain": "xswitch.cn",
        "deleted_at": "",
        "updated_at": stamp,
        "cid_name": "",
        "created_at": stamp,
        "name": f"Ext_{extn}",
        "type": "SIP",
        "weblogin_disabled": "0",
        "disabled": "0",
        "sync_enabled": "0",
        "priority": "99",
    }
    documented = {
        "1000": ("6295cecf17ab7943e802b4d539252d4e", "cfd07ab9643b1a6afbf5cd0965bdd7c1"),
        "1001": ("056cba6fb5f991cc9112f592ba5e65e4", "6238501df8a36fe9ee9cbb4855b651e1"),
        "1009": ("69308ceaa676774f78ba67357de11ebf", "302066ca86ca4b631baf38c056a77275"),
    }
    if extn in documented:
        record["ha1"], record["ha1b"] = documented[extn]
    return record


def _queue(ident: int) -> dict[str, Any]:
    """Queues 12-17: six rows, page 2 of 5 is line 278's ``testapi6`` (lines 274-292)."""
    return {
        "cti_template": "callcenter",
        "strategy": "random",
        "id": ident,  # a number here, a string in the add answer (line 362): as documented
        "name": f"testapi{ident - 11}",
        "greeting": "local_stream://moh",
        "server_ip": "172.18.0.5",
        "updated_at": "2020-02-27 00:04:57",
        "moh_sound": "local_stream://moh",
        "auto_record": 0,
        "created_at": "2020-02-27 00:04:57",
    }


_IVR_BLANK: Final = {
    "digits": "",
    "media_file": "",
    "repeat_timeout": "",
    "repeat_prompts": "",
    "deleted_at": "",
    "numbers": "",
    "business_type": "",
    "timeout": "",
    "transfer_time": "",
    "timeout_enable": "0",
    "record": "close",
    "voice_type": "file",
}


def _ivr(
    ident: str,
    parent: str,
    level: str,
    name: str,
    nbr: str,
    type_: str,
    extn: str,
    created: str,
    updated: str,
) -> dict[str, str]:
    return {
        **_IVR_BLANK,
        "id": ident,
        "parent_id": parent,
        "level": level,
        "name": name,
        "nbr": nbr,
        "type": type_,
        "call_extn_allowed": extn,
        "created_at": created,
        "updated_at": updated,
    }


def _ivrs() -> dict[str, dict[str, str]]:
    """Lines 822-921 (IVR 1 and its menus 2, 8, 9) and line 774's top-level IVR 3."""
    rows = [
        _ivr(
            "1",
            "",
            "0",
            "总部",
            "11111",
            "transfer",
            "1",
            "2020-03-03 15:57:06",
            "2020-03-03 15:57:06",
        ),
        _ivr(
            "2",
            "1",
            "1",
            "莱山一",
            "111122222",
            "top",
            "0",
            "2020-03-03 16:00:27",
            "2020-03-03 16:38:16",
        ),
        _ivr(
            "3",
            "",
            "0",
            "总部2",
            "22222",
            "next",
            "1",
            "2020-03-03 16:00:53",
            "2020-03-03 16:00:53",
        ),
        _ivr(
            "8",
            "1",
            "1",
            "莱山2",
            "111122221111",
            "transfer",
            "1",
            "2020-03-03 17:42:03",
            "2020-03-03 17:48:24",
        ),
        _ivr(
            "9",
            "8",
            "2",
            "烟大1",
            "111122221111",
            "transfer",
            "1",
            "2020-03-03 17:49:20",
            "2020-03-03 17:49:20",
        ),
    ]
    return {row["id"]: row for row in rows}


def _hotline(ident: int) -> dict[str, str]:
    """Hotlines 1-8: eight rows, four pages of two (line 1013); 1 and 2 are lines 1017-1040,
    3 is line 1064."""
    documented = {
        1: ("1111,2222,3333,4444", "12345", "work", "1", "2020-02-29 22:19:33"),
        2: ("111", "11111", "work", "0", "2020-02-29 22:20:34"),
        3: ("777", "1111", "holiday", "0", "2020-03-03 21:23:03"),
    }
    numbers, nbr, period, enabled, stamp = documented.get(
        ident, (str(8000 + ident), f"4000{ident}", "off", "0", "2020-03-04 09:00:00")
    )
    return {
        "type": "only",
        "numbers": numbers,
        "updated_at": stamp,
        "id": str(ident),
        "nbr": nbr,
        "period_type": period,
        "created_at": stamp,
        "period_enable": enabled,
        "description": "",
        "deleted_at": "",
    }


def _work_times() -> dict[str, dict[str, str]]:
    """Lines 544-569."""
    rows = [
        ("1", "1", "18:00:00", "2020-03-03 15:09:15", "2020-03-03 15:09:15"),
        ("4", "2", "19:00:00", "2020-03-03 20:21:35", "2020-03-03 15:30:55"),
        ("6", "5", "19:00:00", "2020-03-03 21:56:51", "2020-03-03 21:53:33"),
    ]
    return {
        ident: {
            "weekday": weekday,
            "end_time": end,
            "id": ident,
            "updated_at": updated,
            "start_time": "08:00:00",
            "created_at": created,
        }
        for ident, weekday, end, updated, created in rows
    }


def _offdays() -> dict[str, dict[str, str]]:
    """Lines 614-622 (no ``name``, though ``add`` takes one)."""
    return {
        "2": {
            "end_date": "03-03 20:00:00",
            "updated_at": "2020-03-03 20:52:16",
            "start_date": "03-03 08:00:00",
            "created_at": "2020-03-03 20:49:40",
            "id": "2",
        }
    }


# --- parameter checks --------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _flag(value: Any, name: str) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    text = str(value).strip().lower()
    if text in ("1", "true"):
        return "1"
    if text in ("0", "false", ""):
        return "0"
    raise _Refused(400, f"{name} must be 1/0 or true/false, not {value!r}")


def _int(value: Any, name: str, default: int | None = None) -> int:
    if value is None or value == "":
        if default is None:
            raise _Refused(400, f"{name} is required")
        return default
    if isinstance(value, bool):
        raise _Refused(400, f"{name} must be a number")
    try:
        return int(str(value).strip())
    except ValueError:
        raise _Refused(400, f"{name} must be a number, not {value!r}") from None


def _required(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None or _text(value).strip() == "":
        raise _Refused(400, f"{name} is required")
    return _text(value).strip()


def _one_of(body: dict[str, Any], name: str, allowed: tuple[str, ...]) -> None:
    if name in body and body[name] is not None and _text(body[name]) not in allowed:
        raise _Refused(400, f"invalid {name} {body[name]!r}: one of {', '.join(allowed)}")


def _clock_time(value: Any, name: str) -> str:
    """``08:00:00``; line 485's ``08:00:0`` is accepted too (one digit seconds)."""
    text = _text(value).strip()
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise _Refused(400, f"{name} must look like 08:00:00, not {value!r}")
    hour, minute, second = map(int, parts)
    if hour > 23 or minute > 59 or second > 59:
        raise _Refused(400, f"{name} {value!r} is not a time of day")
    return f"{hour:02d}:{minute:02d}:{second:02d}"


def _month_day(value: Any, name: str) -> str:
    text = _text(value).strip()
    try:
        datetime.strptime(f"2000-{text}", "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise _Refused(400, f"{name} must look like 03-03 00:00:00, not {value!r}") from None
    return text


def _queue_action(value: Any, name: str) -> str:
    """An object, or JSON text of one (line 329 "格式为 json"); stored as JSON text."""
    action = value
    if isinstance(value, str):
        try:
            action = json.loads(value)
        except ValueError:
            raise _Refused(400, f"{name} is not JSON: {value!r}") from None
    if not isinstance(action, dict) or action.get("action") not in ("hangup", "transfer"):
        raise _Refused(400, f'{name} must be {{"action": "hangup"|"transfer", ...}}')
    if action["action"] == "transfer" and (
        action.get("type") not in ("queue", "number", "voicemail") or not action.get("data")
    ):
        raise _Refused(400, f"{name}: a transfer needs type queue/number/voicemail and data")
    return json.dumps(action, ensure_ascii=False, separators=(",", ":"))


def _sort_key(value: Any) -> tuple[int, Any]:
    text = _text(value)
    return (0, int(text)) if text.isdigit() else (1, text)


# --- the simulator -----------------------------------------------------------------------------

Handler = Callable[[dict[str, Any]], Answer]


class XccRestSimulator:
    """A fake XCC REST API (see the module docstring).

    ``app()`` is the aiohttp application (for a test client or another server); ``start()``
    serves it on ``host:port`` (0: an ephemeral port) and sets ``base_url``; ``stop()`` closes
    it. ``announce_expiry`` puts the token lifetime in the auth answer's ``expires`` (the
    document shows ``0``, line 25: clients then learn of an expiry from a 401 only).
    """

    _running: ClassVar[dict[str, XccRestSimulator]] = {}

    def __init__(
        self,
        dev_key: str = "sim-dev-key",
        token_ttl_s: float = 3600.0,
        seed: int | None = None,
        *,
        mutate_every_s: float = 0.0,
        announce_expiry: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dev_key = dev_key
        self.token_ttl_s = token_ttl_s
        self.mutate_every_s = mutate_every_s
        self.announce_expiry = announce_expiry
        self._clock = clock
        self._rng = random.Random(seed)
        self.base_url = ""
        #: Requests per path, as sent (``/api/xcc/hostlines/get`` apart from ``hotlines``).
        self.requests: Counter[str] = Counter()
        self.received: list[Received] = []
        #: Refuse every token (a server that lost its sessions): tests of "re-auth once".
        self.reject_tokens = False
        self.tokens_issued = 0
        self.mutations: list[Mutation] = []
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._scripts: dict[str, deque[_Scripted]] = {}
        self._last_stamp = datetime.now().replace(microsecond=0)
        self._runner: web.AppRunner | None = None
        self._mutator: asyncio.Task[None] | None = None
        self.extensions = {r["id"]: r for r in map(_extension, range(22))}
        self._passwords = {r["id"]: f"sim-{r['extn']}" for r in self.extensions.values()}
        self.queues: dict[int, dict[str, Any]] = {i: _queue(i) for i in range(12, 18)}
        self.work_times = _work_times()
        self.offdays = _offdays()
        self.ivrs = _ivrs()
        self.hotlines = {str(i): _hotline(i) for i in range(1, 9)}
        self.nodes = [{"ip": "192.168.1.7", "name": "fs1"}]  # line 470
        self._routes: dict[str, Handler] = {
            "sessions/getExtnToken": self._extn_token,
            "extensions/list": self._extension_list,
            "extensions/get": self._extension_get,
            "extensions/add": self._extension_add,
            "extensions/set": self._extension_set,
            "extensions/del": self._extension_del,
            "queues/list": self._queue_list,
            "queues/add": self._queue_add,
            "queues/set": self._queue_set,
            "queues/del": self._queue_del,
            "freeswitch/list": lambda body: list(self.nodes),
            "timeDef/list": self._timedef_list,
            "timeDef/add": self._timedef_add,
            "timeDef/set": self._timedef_set,
            "timeDef/del": self._timedef_del,
            "ivrs/list": self._ivr_list,
            "ivrs/get": self._ivr_get,
            "ivrs/add": self._ivr_add,
            "ivrs/set": self._ivr_set,
            "ivrs/del": self._ivr_del,
            "hotlines/list": self._hotline_list,
            "hotlines/get": self._hotline_get,
            "hotlines/add": self._hotline_add,
            "hotlines/set": self._hotline_set,
            "hotlines/del": self._hotline_del,
        }

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def at(cls, base_url: str) -> XccRestSimulator:
        """The running simulator serving ``base_url`` (for probes in tests)."""
        return cls._running[base_url.rstrip("/")]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post(API + "{tail:.+}", self._dispatch)
        app.cleanup_ctx.append(self._background)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port``; returns (and sets) ``base_url``."""
        if self._runner is not None:
            return self.base_url
        self._runner, self.base_url = await serve(self.app(), host, port)
        self._running[self.base_url] = self
        return self.base_url

    async def stop(self) -> None:
        """Close the listener and the mutation task; safe to call twice."""
        runner, self._runner = self._runner, None
        self._running.pop(self.base_url, None)
        await self.stop_mutations()
        if runner is not None:
            await runner.cleanup()

    async def _background(self, app: web.Application) -> AsyncIterator[None]:
        """The periodic configuration changes live as long as the application."""
        if self.mutate_every_s > 0:
            self.start_mutations(self.mutate_every_s)
        yield
        await self.stop_mutations()

    def start_mutations(self, every_s: float) -> None:
        """``mutate()`` every ``every_s`` seconds from now on (until ``stop_mutations``)."""
        self.mutate_every_s = every_s
        if self._mutator is not None and not self._mutator.done():
            return  # the running loop reads the new interval
        self._mutator = asyncio.create_task(self._mutation_loop(), name="xcc-sim-mutations")

    async def stop_mutations(self) -> None:
        task, self._mutator = self._mutator, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _mutation_loop(self) -> None:
        while True:
            await asyncio.sleep(self.mutate_every_s)
            try:
                self.mutate()
            except Exception:  # a simulator bug must not end the changes silently
                log.exception("mutation failed")

    # --- test controls -----------------------------------------------------------------------

    @property
    def tokens(self) -> list[str]:
        """The user tokens issued so far (expired ones too)."""
        return list(self._tokens)

    @property
    def auth_requests(self) -> int:
        return self.requests[API + "sessions/auth"]

    def expire_tokens(self) -> None:
        """Every token issued so far is expired from now on."""
        now = self._clock()
        self._tokens = {token: now for token in self._tokens}

    def script(
        self,
        path: str,
        *,
        status: int | None = None,
        body: Any = None,
        delay_s: float = 0.0,
        times: int = 1,
    ) -> None:
        """The next ``times`` authorised requests of ``path`` (as sent, or the path it means)
        wait ``delay_s`` and are answered ``status`` with ``body`` (default
        ``{"code": status, "message": ...}``); ``status=None`` lets the real handler answer
        after the delay."""
        key = path.removeprefix(API).strip("/")
        queue = self._scripts.setdefault(key, deque())
        for _ in range(times):
            queue.append(_Scripted(status, body, delay_s))

    def calls(self, path: str) -> list[Received]:
        """The requests of ``path`` (as sent), in order."""
        return [r for r in self.received if r.path == path]

    # --- dispatch -----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        path = request.path
        self.requests[path] += 1
        raw = request.match_info["tail"].strip("/")
        name = ALIASES.get(raw, raw)
        body: Any = None
        status, answer = 500, {}
        try:
            try:
                body = await request.json() if request.can_read_body else {}
            except ValueError:
                raise _Refused(400, "the body is not JSON") from None
            if not isinstance(body, dict):
                raise _Refused(400, "the body must be a JSON object")
            if name == "sessions/auth":
                status, answer = 200, self._auth(body)
            else:
                handler = self._routes.get(name)
                if handler is None:
                    raise _Refused(404, f"no such API: {path}")
                self._check_token(request.headers.get("token"))
                scripted = self._next_script(raw, name)
                if scripted is not None and scripted.delay_s > 0:
                    await asyncio.sleep(scripted.delay_s)
                if scripted is not None and scripted.status is not None:
                    status = scripted.status
                    answer = scripted.body
                    if answer is None:
                        answer = {"code": status, "message": f"scripted {status}"}
                else:
                    status, answer = 200, handler(body)
        except _Refused as exc:
            status, answer = exc.status, {"code": exc.status, "message": exc.message}
        finally:
            self.received.append(Received(path, body, status))
        return web.json_response(answer, status=status, dumps=_dumps)

    def _next_script(self, raw: str, name: str) -> _Scripted | None:
        for key in (raw, name):
            queue = self._scripts.get(key)
            if queue:
                return queue.popleft()
        return None

    def _check_token(self, token: str | None) -> None:
        if not token:
            raise _Refused(401, "token required")
        expires = self._tokens.get(token)
        if expires is None:
            raise _Refused(401, "invalid token")
        if self._clock() >= expires or self.reject_tokens:
            raise _Refused(401, "token expired")

    def _auth(self, body: dict[str, Any]) -> Answer:
        """Lines 9-28."""
        dev_key = body.get("dev_key")
        if not dev_key:
            raise _Refused(400, "dev_key is required")
        if dev_key != self.dev_key:
            raise _Refused(401, "invalid dev_key")
        token = str(uuid.uuid4())
        ttl = self.token_ttl_s
        self._tokens[token] = self._clock() + ttl if ttl > 0 else math.inf
        self.tokens_issued += 1
        expires = int(ttl) if self.announce_expiry and math.isfinite(ttl) and ttl > 0 else 0
        return {
            "code": 200,
            "user_id": "4",
            "expires": expires,
            "sip_port": "25060",
            "token": token,
        }

    def _extn_token(self, body: dict[str, Any]) -> Answer:
        """Lines 30-51."""
        extn = _required(body, "extn")
        for record in self.extensions.values():
            if record["extn"] == extn:
                return {
                    "extn_id": record["id"],
                    "token": str(uuid.uuid4()),
                    "domain": record["domain"],
                }
        raise _Refused(404, f"no extension {extn}")

    # --- helpers ----------------------------------------------------------------------------

    def _stamp(self) -> str:
        """Now, strictly later than the last stamp (two changes in a second still differ)."""
        now = datetime.now().replace(microsecond=0)
        self._last_stamp = max(now, self._last_stamp + timedelta(seconds=1))
        return self._last_stamp.strftime(_STAMP)

    @staticmethod
    def _page(
        rows: list[dict[str, Any]], body: dict[str, Any], default_size: int = DEFAULT_PAGE_SIZE
    ) -> Answer:
        """``page``/``page_size``/``sort_field``/``sort_order`` in, ``page``, ``data``,
        ``row_count``, ``page_count`` out (lines 65-132); ``data`` is null on an empty page."""
        page = max(1, _int(body.get("page"), "page", 1))
        size = _int(body.get("page_size"), "page_size", default_size)
        if size < 1:
            raise _Refused(400, "page_size must be 1 or more")
        field = body.get("sort_field") or "id"
        order = body.get("sort_order") or "ascend"
        if order not in ("ascend", "descend"):
            raise _Refused(400, f"invalid sort_order {order!r}: ascend or descend")
        if rows and field not in rows[0]:
            raise _Refused(400, f"invalid sort_field {field!r}")
        rows = sorted(rows, key=lambda r: _sort_key(r.get(field)), reverse=order == "descend")
        chunk = rows[(page - 1) * size : page * size]
        return {
            "page": page,
            "data": chunk or None,
            "row_count": len(rows),
            "page_count": math.ceil(len(rows) / size),
        }

    @staticmethod
    def _find(table: dict[Any, Any], body: dict[str, Any], what: str, key: type = str) -> Any:
        ident = body.get("id")
        if ident is None or _text(ident).strip() == "":
            raise _Refused(400, "id is required")
        try:
            wanted = key(_text(ident).strip())
        except ValueError:
            raise _Refused(400, f"id must be a number, not {ident!r}") from None
        if wanted not in table:
            raise _Refused(404, f"no {what} {ident}")
        return wanted

    @staticmethod
    def _next_id(table: dict[Any, Any]) -> int:
        return max((int(k) for k in table), default=0) + 1

    # --- extensions (lines 53-247) ------------------------------------------------------------

    def _extension_list(self, body: dict[str, Any]) -> Answer:
        rows = list(self.extensions.values())
        field, key = body.get("search_field"), body.get("search_key")
        if field is not None and key is not None:
            if field not in _extension(0):
                raise _Refused(400, f"invalid search_field {field!r}")
            rows = [r for r in rows if _text(key) in r.get(field, "")]
        return self._page(rows, body)

    def _extension_get(self, body: dict[str, Any]) -> Answer:
        """The ``get`` form differs from the list's (lines 152-170): numbers, ``login``."""
        record = self.extensions[self._find(self.extensions, body, "extension")]
        numbers = ("id", "user_id", "sync_enabled", "disabled", "weblogin_disabled")
        kept = (
            "domain",
            "extn",
            "updated_at",
            "ha1",
            "created_at",
            "name",
            "priority",
            "ha1b",
            "display_order",
            "context",
            "type",
        )
        answer: dict[str, Any] = {k: int(record[k]) for k in numbers}
        answer.update({k: record[k] for k in kept})
        answer["login"] = record["extn"]
        return answer

    def _set_password(self, record: dict[str, str], password: str) -> None:
        extn, domain = record["extn"], record["domain"]
        self._passwords[record["id"]] = password
        record["ha1"] = _md5(f"{extn}:{domain}:{password}")
        record["ha1b"] = _md5(f"{extn}@{domain}:{domain}:{password}")

    def _extension_fields(self, record: dict[str, str], body: dict[str, Any]) -> None:
        _one_of(body, "type", ("SIP", "VERTO", "TEL"))
        for name in ("name", "type", "cid_number", "cid_name", "context", "domain"):
            if body.get(name) is not None:
                record[name] = _text(body[name])
        if body.get("password") is not None:
            self._set_password(record, _required(body, "password"))

    def _extension_add(self, body: dict[str, Any]) -> Answer:
        """Lines 196-219."""
        extn = _required(body, "extn")
        _required(body, "password")
        if any(r["extn"] == extn for r in self.extensions.values()):
            raise _Refused(409, f"extension {extn} exists")
        ident = str(self._next_id(self.extensions))
        stamp = self._stamp()
        record = {
            **_extension(0),
            "id": ident,
            "extn": extn,
            "name": extn,
            "user_id": str(self._next_id({r["user_id"]: 0 for r in self.extensions.values()})),
            "created_at": stamp,
            "updated_at": stamp,
        }
        self._extension_fields(record, body)
        self.extensions[ident] = record
        return {"id": ident}

    def _extension_set(self, body: dict[str, Any]) -> Answer:
        """Lines 225-247."""
        ident = self._find(self.extensions, body, "extension")
        record = dict(self.extensions[ident])
        self._extension_fields(record, body)
        record["updated_at"] = self._stamp()
        self.extensions[ident] = record
        return {"id": ident}

    def _extension_del(self, body: dict[str, Any]) -> Answer:
        ident = self._find(self.extensions, body, "extension")
        del self.extensions[ident]
        self._passwords.pop(ident, None)
        return {"id": ident}

    # --- queues (lines 249-445) ---------------------------------------------------------------

    def _queue_list(self, body: dict[str, Any]) -> Answer:
        rows = list(self.queues.values())
        if body.get("name"):
            rows = [r for r in rows if _text(body["name"]) in r["name"]]
        return self._page(rows, body)

    def _queue_fields(self, record: dict[str, Any], body: dict[str, Any]) -> None:
        _one_of(body, "strategy", STRATEGIES)
        for name in ("description", "moh_sound", "greeting", "strategy", "server_ip"):
            if body.get(name) is not None:
                record[name] = _text(body[name])
        for name in ("notify_position", "notify_agent_answer"):
            if body.get(name) is not None:
                record[name] = _flag(body[name], name) == "1"
        for name in (
            "notify_position_interval",
            "retain_agent",
            "agent_timeout",
            "wait_timeout",
            "wait_timeout_without_agent",
            "capacity",
        ):
            if body.get(name) is not None:
                record[name] = _int(body[name], name)
        for name in QUEUE_ACTIONS:
            if body.get(name) is not None:
                record[name] = _queue_action(body[name], name)

    def _queue_add(self, body: dict[str, Any]) -> Answer:
        """Lines 298-362: ``name`` unique, one of the nine strategies."""
        name = _required(body, "name")
        if any(r["name"] == name for r in self.queues.values()):
            raise _Refused(409, f"queue {name} exists")
        ident = self._next_id(self.queues)
        stamp = self._stamp()
        record: dict[str, Any] = {
            **_queue(ident),
            "name": name,
            "created_at": stamp,
            "updated_at": stamp,
            "strategy": "ring-all",
        }
        self._queue_fields(record, body)
        self.queues[ident] = record
        return {"id": str(ident)}

    def _queue_set(self, body: dict[str, Any]) -> Answer:
        """Lines 390-445."""
        ident = self._find(self.queues, body, "queue", int)
        record = dict(self.queues[ident])
        self._queue_fields(record, body)
        record["updated_at"] = self._stamp()
        self.queues[ident] = record
        return {"id": str(ident)}

    def _queue_del(self, body: dict[str, Any]) -> Answer:
        ident = self._find(self.queues, body, "queue", int)
        del self.queues[ident]
        return {"id": str(ident)}

    # --- time definitions (lines 472-696) ------------------------------------------------------

    def _timedefs(self, body: dict[str, Any]) -> tuple[str, dict[str, dict[str, str]]]:
        kind = body.get("type")
        if kind == "work_time":
            return kind, self.work_times
        if kind in ("offday", "offwork"):  # line 684 says offwork, its example offday
            return "offday", self.offdays
        raise _Refused(400, f"invalid type {kind!r}: work_time or offday")

    def _timedef_list(self, body: dict[str, Any]) -> Answer:
        _, table = self._timedefs(body)
        return [table[k] for k in sorted(table, key=int)]

    def _timedef_fields(self, kind: str, record: dict[str, str], body: dict[str, Any]) -> None:
        if kind == "work_time":
            if body.get("weekday") is not None:
                weekday = _int(body["weekday"], "weekday")
                if not 1 <= weekday <= 7:
                    raise _Refused(400, "weekday must be 1-7")
                record["weekday"] = str(weekday)
            for name in ("start_time", "end_time"):
                if body.get(name) is not None:
                    record[name] = _clock_time(body[name], name)
        else:
            if body.get("name") is not None:
                record["name"] = _text(body["name"])
            for name in ("start_date", "end_date"):
                if body.get(name) is not None:
                    record[name] = _month_day(body[name], name)

    def _timedef_add(self, body: dict[str, Any]) -> Answer:
        kind, table = self._timedefs(body)
        needed = (
            ("weekday", "start_time", "end_time")
            if kind == "work_time"
            else ("name", "start_date", "end_date")
        )
        for name in needed:
            _required(body, name)
        ident = str(max(self._next_id(self.work_times), self._next_id(self.offdays)))
        stamp = self._stamp()
        record = {"id": ident, "created_at": stamp, "updated_at": stamp}
        self._timedef_fields(kind, record, body)
        table[ident] = record
        return {"id": ident}

    def _timedef_set(self, body: dict[str, Any]) -> Answer:
        kind, table = self._timedefs(body)
        ident = self._find(table, body, kind)
        record = dict(table[ident])
        self._timedef_fields(kind, record, body)
        record["updated_at"] = self._stamp()
        table[ident] = record
        return {"id": ident}

    def _timedef_del(self, body: dict[str, Any]) -> Answer:
        kind, table = self._timedefs(body)
        ident = self._find(table, body, kind)
        del table[ident]
        return {"id": ident}

    # --- IVRs (lines 698-980) ------------------------------------------------------------------

    def _ivr_list(self, body: dict[str, Any]) -> Answer:
        """Top-level IVRs only (line 745)."""
        rows = [r for r in self.ivrs.values() if r["level"] == "0"]
        if body.get("name"):
            rows = [r for r in rows if _text(body["name"]) in r["name"]]
        return self._page(rows, body)

    def ivr_tree(self, ident: str) -> dict[str, Any]:
        """An IVR with every menu below it in ``ivrs`` (lines 822-921)."""
        children = sorted(
            (r for r in self.ivrs.values() if r["parent_id"] == ident), key=lambda r: int(r["id"])
        )
        return {**self.ivrs[ident], "ivrs": [self.ivr_tree(c["id"]) for c in children]}

    def _ivr_get(self, body: dict[str, Any]) -> Answer:
        return [self.ivr_tree(self._find(self.ivrs, body, "IVR"))]

    def _ivr_fields(self, record: dict[str, str], body: dict[str, Any]) -> None:
        _one_of(body, "type", ("transfer", "next", "prev", "top"))
        _one_of(body, "voice_type", ("file",))
        _one_of(body, "record", ("close", "miss", "all"))
        _one_of(body, "business_type", ("order", "memory", "ringall", "queue"))
        for name in (
            "name",
            "nbr",
            "type",
            "voice_type",
            "media_file",
            "record",
            "business_type",
            "numbers",
            "digits",
        ):
            if body.get(name) is not None:
                record[name] = _text(body[name])
        for name in ("repeat_timeout", "repeat_prompts", "transfer_time", "timeout"):
            if body.get(name) is not None:
                record[name] = str(_int(body[name], name))
        for name in ("call_extn_allowed", "timeout_enable"):
            if body.get(name) is not None:
                record[name] = _flag(body[name], name)

    def _ivr_add(self, body: dict[str, Any]) -> Answer:
        """Lines 706-741: ``name`` unique; a sub-menu names an existing parent."""
        name = _required(body, "name")
        if any(r["name"] == name for r in self.ivrs.values()):
            raise _Refused(409, f"IVR {name} exists")
        level = _int(body.get("level"), "level", 0)
        parent = _text(body.get("parent_id")).strip()
        if parent and parent not in self.ivrs:
            raise _Refused(400, f"parent_id {parent} is not an IVR")
        if bool(parent) != (level > 0):
            raise _Refused(400, "a sub-menu needs parent_id and level 1 or more")
        ident = str(self._next_id(self.ivrs))
        stamp = self._stamp()
        record = _ivr(ident, parent, str(level), name, "", "transfer", "0", stamp, stamp)
        self._ivr_fields(record, body)
        self.ivrs[ident] = record
        return {"id": ident}

    def _ivr_set(self, body: dict[str, Any]) -> Answer:
        """Lines 949-980: answers ``{}``."""
        ident = self._find(self.ivrs, body, "IVR")
        name = body.get("name")
        if name is not None and any(
            r["name"] == _text(name) and r["id"] != ident for r in self.ivrs.values()
        ):
            raise _Refused(409, f"IVR {name} exists")
        record = dict(self.ivrs[ident])
        self._ivr_fields(record, body)
        record["updated_at"] = self._stamp()
        self.ivrs[ident] = record
        return {}

    def _ivr_del(self, body: dict[str, Any]) -> Answer:
        """Lines 927-943: the menus below go too; answers ``{}``."""
        ident = self._find(self.ivrs, body, "IVR")
        doomed, stack = set(), [ident]
        while stack:
            current = stack.pop()
            doomed.add(current)
            stack.extend(r["id"] for r in self.ivrs.values() if r["parent_id"] == current)
        for key in doomed:
            del self.ivrs[key]
        return {}

    # --- hotlines (lines 982-1154) ------------------------------------------------------------

    def _hotline_list(self, body: dict[str, Any]) -> Answer:
        rows = list(self.hotlines.values())
        if body.get("nbr"):
            rows = [r for r in rows if _text(body["nbr"]) in r["nbr"]]
        return self._page(rows, body, HOTLINE_PAGE_SIZE)

    def _hotline_get(self, body: dict[str, Any]) -> Answer:
        return dict(self.hotlines[self._find(self.hotlines, body, "hotline")])

    def _hotline_fields(self, record: dict[str, str], body: dict[str, Any]) -> None:
        _one_of(body, "type", ("only", "ringall", "ivr", "queue"))
        _one_of(body, "period_type", ("work", "holiday", "off"))
        for name in ("nbr", "type", "period_type", "numbers", "description"):
            if body.get(name) is not None:
                record[name] = _text(body[name])
        if body.get("period_enable") is not None:
            record["period_enable"] = _flag(body["period_enable"], "period_enable")

    def _hotline_add(self, body: dict[str, Any]) -> Answer:
        """Lines 1081-1104."""
        nbr = _required(body, "nbr")
        if any(r["nbr"] == nbr for r in self.hotlines.values()):
            raise _Refused(409, f"hotline {nbr} exists")
        ident = str(self._next_id(self.hotlines))
        stamp = self._stamp()
        record = {
            **_hotline(0),
            "id": ident,
            "nbr": nbr,
            "numbers": "",
            "period_type": "work",
            "created_at": stamp,
            "updated_at": stamp,
        }
        self._hotline_fields(record, body)
        self.hotlines[ident] = record
        return {"id": ident}

    def _hotline_set(self, body: dict[str, Any]) -> Answer:
        """Lines 1110-1132: answers ``{}``."""
        ident = self._find(self.hotlines, body, "hotline")
        record = dict(self.hotlines[ident])
        self._hotline_fields(record, body)
        record["updated_at"] = self._stamp()
        self.hotlines[ident] = record
        return {}

    def _hotline_del(self, body: dict[str, Any]) -> Answer:
        ident = self._find(self.hotlines, body, "hotline")
        del self.hotlines[ident]
        return {}

    # --- configuration that changes over time ------------------------------------------------

    def _tables(self) -> dict[str, dict[Any, dict[str, Any]]]:
        top_ivrs = {k: v for k, v in self.ivrs.items() if v["level"] == "0"}
        return {
            "extension": self.extensions,
            "queue": self.queues,
            "ivr": top_ivrs,
            "hotline": self.hotlines,
        }

    def mutate(
        self,
        object: Literal["extension", "queue", "ivr", "hotline"] | None = None,
        action: Literal["added", "changed", "removed"] | None = None,
    ) -> Mutation:
        """Add, change or remove one configuration object (random where not given), as an
        administrator would; the last object of a kind is never removed (one is added)."""
        kind: str = object or self._rng.choice(OBJECTS)
        act: str = action or self._rng.choice(ACTIONS)
        table = self._tables()[kind]
        if (act == "removed" and len(table) <= 1) or not table:
            act = "added"
        n = len(self.mutations) + 1
        ident = self._rng.choice(sorted(table, key=int)) if table else None
        if act == "added":
            ident = self._add(kind, n)
        elif act == "changed":
            self._change(kind, ident, n)
        else:
            self._remove(kind, ident)
        mutation = Mutation(kind, act, str(ident))
        self.mutations.append(mutation)
        return mutation

    def _add(self, kind: str, n: int) -> str:
        if kind == "extension":
            extn = max(int(r["extn"]) for r in self.extensions.values()) + 1
            body: dict[str, Any] = {
                "extn": str(extn),
                "password": f"sim-{extn}",
                "name": f"Ext_{extn}",
            }
            return str(self._extension_add(body)["id"])
        if kind == "queue":
            strategy = self._rng.choice(STRATEGIES)
            return str(self._queue_add({"name": f"simqueue{n}", "strategy": strategy})["id"])
        if kind == "ivr":
            return str(
                self._ivr_add(
                    {"name": f"sim-ivr-{n}", "level": 0, "nbr": f"7{n:04d}", "type": "next"}
                )["id"]
            )
        nbr = f"95{n:04d}"
        while any(r["nbr"] == nbr for r in self.hotlines.values()):
            nbr += "0"
        return str(self._hotline_add({"nbr": nbr, "type": "only", "numbers": "1000"})["id"])

    def _change(self, kind: str, ident: Any, n: int) -> None:
        if kind == "extension":
            self._extension_set({"id": ident, "cid_name": f"changed {n}"})
        elif kind == "queue":
            current = self.queues[ident]["strategy"]
            strategy = self._rng.choice([s for s in STRATEGIES if s != current])
            self._queue_set({"id": ident, "strategy": strategy})
        elif kind == "ivr":
            below = [r["id"] for r in self.ivrs.values() if r["parent_id"] == ident]
            target = self._rng.choice(below) if below and self._rng.random() < 0.5 else ident
            self._ivr_set({"id": target, "media_file": f"changed-{n}.wav"})
        else:
            self._hotline_set({"id": ident, "description": f"changed {n}"})

    def _remove(self, kind: str, ident: Any) -> None:
        remove = {
            "extension": self._extension_del,
            "queue": self._queue_del,
            "ivr": self._ivr_del,
            "hotline": self._hotline_del,
        }[kind]
        remove({"id": ident})

    def touch(self, kind: Literal["extension", "queue", "ivr", "hotline"], ident: str) -> None:
        """Save an object unchanged: only its ``updated_at`` moves."""
        table = self._tables()[kind]
        key = int(ident) if kind == "queue" else ident
        table[key]["updated_at"] = self._stamp()


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
