"""Operational endpoints: /healthz (alive), /readyz (bus and every PBX link up, or why not),
/metrics, the status page (``/``, ``/status``) and its data (``/status.json``); and each vendor
plugin's own routes (webhooks) under ``/webhooks/<name>/``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.web.page import PAGE
from gateway.web.status import StatusBoard

Status = Callable[[], dict[str, Any]]


def build_web_app(
    status: Status,
    vendor_routes: Mapping[str, Iterable[web.AbstractRouteDef]] | None = None,
    board: StatusBoard | None = None,
) -> web.Application:
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

    app = web.Application()
    app.add_routes(
        [
            web.get("/", page),
            web.get("/status", page),
            web.get("/status.json", status_json),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
        ]
    )
    for vendor, routes in (vendor_routes or {}).items():
        sub = web.Application()
        sub.add_routes(list(routes))
        app.add_subapp(f"/webhooks/{vendor}/", sub)
    return app


class WebServer:
    def __init__(
        self,
        status: Status,
        host: str,
        port: int,
        vendor_routes: Mapping[str, Iterable[web.AbstractRouteDef]] | None = None,
    ) -> None:
        self.board = StatusBoard(status)
        self._runner = web.AppRunner(
            build_web_app(status, vendor_routes, self.board), access_log=None
        )
        self._host = host
        self._port = port
        self.port: int | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        # a TCPSite serves with loop.create_server, whose Server has .sockets (aiohttp types
        # the attribute as the AbstractServer, which has not)
        server = cast(asyncio.Server | None, site._server)
        sockets = server.sockets if server else []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        self.board.start()

    async def stop(self) -> None:
        await self.board.stop()
        await self._runner.cleanup()


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()
