"""The fake PBX's webhook: ``POST /webhooks/fakepbx/{tenant}/webhook`` with a call frame."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from aiohttp import web

from gateway.sdk import NormalizeContext, VendorRoutes
from tests.fakepbx.normalize import normalize


def routes(ctx: VendorRoutes) -> Iterable[web.AbstractRouteDef]:
    async def webhook(request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        pbx = ctx.pbxs.get(tenant)
        if pbx is None:
            return web.json_response({"error": f"unknown tenant {tenant!r}"}, status=404)
        text = (await request.read()).decode("utf-8", errors="replace")
        nctx = NormalizeContext(tenant, "fakepbx", pbx.zone, datetime.now(UTC), pbx.include_raw)
        events = normalize(text, nctx)
        refused = [e.data["error"] for e in events if e.type == "gateway.rejected"]
        if refused:
            return web.json_response({"error": f"unreadable call frame: {refused[0]}"}, status=400)
        for event in events:
            await ctx.emit(event)
        return web.json_response({"accepted": [e.id for e in events]}, status=202)

    return [web.post("/{tenant}/webhook", webhook)]
