"""The gateway's HTTP listeners.

* **admin** (operators; loopback by default): /healthz (alive), /readyz (bus and every PBX link
  up, or why not), /metrics, the status page (``/``, ``/status``) and its data
  (``/status.json``); optionally behind a bearer token or HTTP basic (:class:`AdminAuth`).
* **public** (the one to expose to PBX platforms): each vendor plugin's own routes (webhooks)
  under ``/webhooks/<name>/`` and nothing else; any other path is one JSON 404.

The single-listener layout of earlier versions (``http.host`` / ``http.port``) mounts the
vendor routes on the admin listener instead (``public`` None)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.web.deadline import SlowClients, protocol_factory
from gateway.web.page import PAGE
from gateway.web.status import StatusBoard

Status = Callable[[], dict[str, Any]]
VendorRoutes = Mapping[str, Iterable[web.AbstractRouteDef]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Paths served without credentials: liveness says nothing; /readyz then only ready or not.
OPEN_PATHS: Final = frozenset({"/healthz", "/readyz"})
WEBHOOKS_PREFIX: Final = "/webhooks/"
#: The public listener's answer for anything that is not a webhook route.
NOT_FOUND: Final = {"error": "not found"}
#: Seconds a connection has to send a request's headers (``http.header_timeout_s``).
DEFAULT_HEADER_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class AdminAuth:
    """Credentials the admin listener asks for: a bearer token, HTTP basic, or either."""

    bearer: str | None = None
    basic: tuple[str, str] | None = None

    def __bool__(self) -> bool:
        return self.bearer is not None or self.basic is not None

    def allows(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries these credentials (constant time)."""
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and self.bearer is not None:
            return hmac.compare_digest(value.encode(), self.bearer.encode())
        if scheme.lower() == "basic" and self.basic is not None:
            try:
                given = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return False
            user, password = self.basic
            return hmac.compare_digest(given, f"{user}:{password}".encode())
        return False

    def challenge(self) -> str:
        return 'Basic realm="gateway", charset="UTF-8"' if self.basic else 'Bearer realm="gateway"'


def _auth_middleware(auth: AdminAuth, status: Status) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/healthz" or path.startswith(WEBHOOKS_PREFIX):  # webhooks carry signatures
            return await handler(request)
        if auth.allows(request.headers.get("Authorization")):
            return await handler(request)
        if path == "/readyz":  # a probe: the status code and nothing more
            ready = bool(status()["ready"])
            return web.json_response({"ready": ready}, status=200 if ready else 503)
        return web.json_response(
            {"error": "credentials required"},
            status=401,
            headers={"WWW-Authenticate": auth.challenge()},
        )

    return check


def _in_flight_cap(limit: int) -> Any:
    """At most ``limit`` requests handled at once; one more is answered 503 at once."""
    handling = 0

    @web.middleware
    async def cap(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal handling
        if handling >= limit:
            return web.json_response(
                {"error": "too many requests in progress; deliver again"},
                status=503,
                headers={"Retry-After": "5"},
            )
        handling += 1
        try:
            return await handler(request)
        finally:
            handling -= 1

    return cap


@web.middleware
async def _uniform_not_found(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every path that is no webhook route answers the same, whatever exists elsewhere."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return web.json_response(NOT_FOUND, status=404)


def _mount(app: web.Application, vendor_routes: VendorRoutes | None) -> None:
    for vendor, routes in (vendor_routes or {}).items():
        sub = web.Application()
        sub.add_routes(list(routes))
        app.add_subapp(f"{WEBHOOKS_PREFIX}{vendor}/", sub)


def build_web_app(
    status: Status,
    vendor_routes: VendorRoutes | None = None,
    board: StatusBoard | None = None,
    auth: AdminAuth | None = None,
    config: Status | None = None,
) -> web.Application:
    """The admin listener's app; with ``vendor_routes``, the single-listener layout; with
    ``config``, ``/config.json`` serves the running configuration's fingerprints (no secret,
    no value: what ``gateway config check --against`` compares a file with)."""
    board = board if board is not None else StatusBoard(status)

    async def page(_: web.Request) -> web.Response:
        return web.Response(
            text=PAGE, content_type="text/html", headers={"Cache-Control": "no-store"}
        )

    async def status_json(_: web.Request) -> web.Response:
        return web.json_response(
            board.snapshot(), headers={"Cache-Control": "no-store"}, dumps=_dumps
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        body = status()
        return web.json_response(body, status=200 if body["ready"] else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def config_json(_: web.Request) -> web.Response:
        if config is None:
            return web.json_response(NOT_FOUND, status=404)
        return web.json_response(config(), headers={"Cache-Control": "no-store"}, dumps=_dumps)

    middlewares = [_auth_middleware(auth, status)] if auth else []
    app = web.Application(middlewares=middlewares)
    app.add_routes(
        [
            web.get("/", page),
            web.get("/status", page),
            web.get("/status.json", status_json),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
            web.get("/config.json", config_json),
        ]
    )
    _mount(app, vendor_routes)
    return app


def build_public_app(
    vendor_routes: VendorRoutes | None, max_in_flight: int = 256
) -> web.Application:
    """The public listener's app: the vendor routes under ``/webhooks/<name>/`` only, at most
    ``max_in_flight`` requests at once (a flood of slow bodies holds bounded memory)."""
    app = web.Application(middlewares=[_in_flight_cap(max_in_flight), _uniform_not_found])
    _mount(app, vendor_routes)
    return app


class Listener:
    """One app served on one address; ``port`` is the one bound (``0`` picks a free one).

    Each connection must complete a request's headers within ``header_timeout_s`` of its
    opening or of its previous response (:mod:`gateway.web.deadline`), else it is closed."""

    def __init__(
        self,
        name: str,
        app: web.Application,
        host: str,
        port: int,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.host = host
        self.wanted_port = port
        self.header_timeout_s = header_timeout_s
        self.slow = SlowClients(name)
        self._runner = web.AppRunner(app, access_log=None)
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self) -> None:
        await self._runner.setup()
        server = self._runner.server
        assert server is not None  # set by setup()
        try:
            self._server = await asyncio.get_running_loop().create_server(
                protocol_factory(server, self.header_timeout_s, self.slow),
                self.host,
                self.wanted_port,
                backlog=128,
            )
        except BaseException:
            await self._runner.cleanup()
            raise
        sockets = self._server.sockets
        self.port = sockets[0].getsockname()[1] if sockets else self.wanted_port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()  # no new connections; the runner ends the open ones
        await self._runner.cleanup()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


class ListenError(OSError):
    """A listener could not bind; ``listener`` names it (``admin`` or ``public``)."""

    def __init__(self, listener: Listener, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.listener = listener


class WebServer:
    """The admin listener and, unless the single-listener layout is used, the public one."""

    def __init__(
        self,
        status: Status,
        host: str,
        port: int,
        vendor_routes: VendorRoutes | None = None,
        *,
        public: tuple[str, int] | None = None,
        auth: AdminAuth | None = None,
        max_in_flight: int = 256,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        config: Status | None = None,
    ) -> None:
        self.board = StatusBoard(status)
        single = public is None
        admin_app = build_web_app(
            status, vendor_routes if single else None, self.board, auth, config
        )
        self.admin = Listener("admin", admin_app, host, port, header_timeout_s)
        self.public = (
            None
            if public is None
            else Listener(
                "public",
                build_public_app(vendor_routes, max_in_flight),
                *public,
                header_timeout_s,
            )
        )
        self.port: int | None = None
        self.public_port: int | None = None

    @property
    def listeners(self) -> list[Listener]:
        return [self.admin] if self.public is None else [self.admin, self.public]

    async def start(self) -> None:
        started: list[Listener] = []
        for listener in self.listeners:
            try:
                await listener.start()
            except OSError as exc:
                for other in started:
                    await other.stop()
                raise ListenError(listener, exc) from exc
            started.append(listener)
        self.port = self.admin.port
        self.public_port = self.public.port if self.public else None
        self.board.start()

    async def stop(self) -> None:
        await self.board.stop()
        for listener in reversed(self.listeners):
            await listener.stop()


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()
