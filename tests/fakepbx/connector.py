"""The fake PBX link: a WebSocket (:class:`PushLink`) and a record poller (:class:`Poller`)
sharing one :class:`LinkState`; ``call.dial`` goes to ``POST /dial``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp

from gateway.sdk import (
    Backoff,
    CommandFailed,
    CommandModel,
    Emit,
    ErrorCode,
    LinkResources,
    LinkState,
    Poller,
    PollResult,
    PollStopped,
    PushLink,
    Watermark,
)
from tests.fakepbx.normalize import normalize, record_events
from tests.fakepbx.settings import FakePbxSettings


class FakePbxConnector:
    vendor = "fakepbx"

    def __init__(self, pbx: FakePbxSettings, resources: LinkResources) -> None:
        self.tenant = pbx.tenant
        self._pbx = pbx
        self._http = resources.http
        self.state = LinkState(pbx.tenant, self.vendor, pbx.zone, include_raw=pbx.include_raw)
        self.link = self.state.link
        self.push: PushLink[aiohttp.ClientWebSocketResponse] = PushLink(
            self.state,
            Watermark(resources.store),
            Backoff(pbx.backoff),
            connect=self._connect,
            serve=self._serve,
        )
        self.poller = Poller(
            "records",
            self.state,
            resources.store,
            self._poll,
            interval_s=pbx.poll_interval_s,
            backoff=Backoff(pbx.backoff),
            timeout_s=10,
        )

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._pbx.secret()}"}

    async def run(self, emit: Emit) -> None:
        self.state.attach(emit)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.push.run(), name=f"{self.tenant}-ws")
                tg.create_task(self.poller.run(), name=f"{self.tenant}-records")
        finally:
            await self.state.stopped()

    # --- the WebSocket -----------------------------------------------------------------------

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        return await self._http.ws_connect(
            f"{self._pbx.base_url}/events", headers=self._headers(), heartbeat=10
        )

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                self.state.received()
                for event in normalize(message.data, self.state.ctx()):
                    await self.state.send(event)
                    self.push.mark(datetime.now(UTC), event)
            return f"closed by PBX (code {ws.close_code})"
        finally:
            await ws.close()

    # --- the record poller -------------------------------------------------------------------

    async def _poll(self, cursor: Any) -> PollResult:
        after = int(cursor or 0)
        async with self._http.get(
            f"{self._pbx.base_url}/records", params={"after": str(after)}, headers=self._headers()
        ) as response:
            if response.status == 401:
                raise PollStopped("auth_failed", "the PBX refused the token")
            response.raise_for_status()
            records = (await response.json())["records"]
        ctx = self.state.ctx()
        events = [event for record in records for event in record_events(record, ctx)]
        newest = max([after, *(r.get("seq", 0) for r in records if isinstance(r, dict))])
        return PollResult(events, cursor=newest, records=len(records))

    # --- commands and health -----------------------------------------------------------------

    async def execute(self, command: CommandModel) -> dict[str, Any]:
        """``call.dial`` -> ``POST /dial``. Any other command is naively forwarded to
        ``POST /command/<name>`` (which the PBX refuses): if the gateway ever let an undeclared
        command through, the simulator's request counters would show it."""
        body = command.args.model_dump(mode="json", exclude_none=True)
        path = f"/command/{command.command}"
        if command.command == "call.dial":
            if "caller" not in body:
                raise CommandFailed(ErrorCode.INVALID, "the fake PBX dials from a caller")
            path, body = "/dial", {"caller": body["caller"], "callee": body["callee"]}
        try:
            async with self._http.post(
                f"{self._pbx.base_url}{path}", json=body, headers=self._headers()
            ) as response:
                if response.status == 401:
                    raise CommandFailed(ErrorCode.FORBIDDEN, "the PBX refused the token")
                if response.status == 404:
                    raise CommandFailed(ErrorCode.UNSUPPORTED, f"the PBX has no {path}")
                if response.status >= 400:
                    raise CommandFailed(ErrorCode.FAILED, f"HTTP {response.status}")
                answer = await response.json()
        except aiohttp.ClientError as exc:
            raise CommandFailed(ErrorCode.UNAVAILABLE, str(exc), retryable=True) from exc
        return {"call_id": answer["call_id"]}

    def health(self) -> dict[str, Any]:
        return self.state.health(cursor=self.poller.cursor)
