"""The fake PBX link on the SDK's bases: a WebSocket (:class:`PushLink`) and a record poller
(a :class:`Poller` overriding ``poll``) sharing one link state; ``call.dial`` goes to
``POST /dial``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp

from gateway.sdk import (
    Backoff,
    BaseConnector,
    CommandFailed,
    CommandModel,
    ErrorCode,
    LinkResources,
    Part,
    PollDeferred,
    Poller,
    PollResult,
    PollStopped,
    PushLink,
    Watermark,
)
from tests.fakepbx.normalize import normalize, record_events
from tests.fakepbx.settings import FakePbxSettings


class Refused(Exception):
    """The fake PBX answered 401."""


class RecordsPoller(Poller):
    """``GET /records?after=<seq>``: the records after the cursor."""

    def __init__(self, connector: FakePbxConnector, pbx: FakePbxSettings, **options: Any) -> None:
        super().__init__("records", connector.link_state, **options)
        self._connector = connector
        self._pbx = pbx

    async def poll(self, cursor: Any) -> PollResult:
        after = int(cursor or 0)
        async with self._connector.http.get(
            f"{self._pbx.base_url}/records",
            params={"after": str(after)},
            headers=self._connector.headers(),
        ) as response:
            if response.status == 401:
                raise Refused()
            response.raise_for_status()
            records = (await response.json())["records"]
        ctx = self.state.ctx()
        events = [event for record in records for event in record_events(record, ctx)]
        newest = max([after, *(r.get("seq", 0) for r in records if isinstance(r, dict))])
        return PollResult(events, cursor=newest, records=len(records))

    def refusal(self, exc: Exception) -> PollStopped | PollDeferred | None:
        if isinstance(exc, Refused):
            return PollStopped("auth_failed", "the PBX refused the token")
        return None


class FakePbxConnector(BaseConnector):
    vendor = "fakepbx"

    def __init__(self, pbx: FakePbxSettings, resources: LinkResources) -> None:
        super().__init__(pbx, resources)
        self._pbx = pbx
        self.http = resources.http
        self.push: PushLink[aiohttp.ClientWebSocketResponse] = PushLink(
            self.link_state,
            Watermark(resources.store),
            Backoff(pbx.backoff),
            connect=self._connect,
            serve=self._serve,
        )
        self.poller = RecordsPoller(
            self,
            pbx,
            store=resources.store,
            interval_s=pbx.poll_interval_s,
            backoff=Backoff(pbx.backoff),
            timeout_s=10,
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._pbx.secret()}"}

    def tasks(self) -> dict[str, Part]:
        return {"ws": self.push.run, "records": self.poller.run}

    # --- the WebSocket -----------------------------------------------------------------------

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        return await self.http.ws_connect(
            f"{self._pbx.base_url}/events", headers=self.headers(), heartbeat=10
        )

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                self.link_state.received()
                for event in normalize(message.data, self.link_state.ctx()):
                    await self.link_state.send(event)
                    self.push.mark(datetime.now(UTC), event)
            return f"closed by PBX (code {ws.close_code})"
        finally:
            await ws.close()

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
            async with self.http.post(
                f"{self._pbx.base_url}{path}", json=body, headers=self.headers()
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

    def health_details(self) -> dict[str, Any]:
        return {"cursor": self.poller.cursor}
