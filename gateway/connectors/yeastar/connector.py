"""The Yeastar link: token, WebSocket subscription, heartbeat, reconnect, token handover.

One reconnect loop per PBX. On a token refresh the new subscription is opened before the old one
is closed; frames both sockets deliver during the overlap are passed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from gateway.connectors.base import Emit
from gateway.connectors.link import BaseConnector, Part, PushLink, describe
from gateway.connectors.plugin import LinkResources
from gateway.connectors.watermark import Gap
from gateway.connectors.yeastar.auth import Token, YeastarAuth
from gateway.connectors.yeastar.client import TOKEN_EXPIRED, YeastarClient
from gateway.connectors.yeastar.commands import YeastarCommands
from gateway.connectors.yeastar.metrics import FRAMES_DEDUPED, PBX_UTC_OFFSET, TIMEZONE_MISMATCH
from gateway.connectors.yeastar.normalize import normalize_frame
from gateway.connectors.yeastar.recovery import YeastarRecovery
from gateway.connectors.yeastar.settings import ALL_YEASTAR_TOPICS, YeastarPbxSettings
from gateway.connectors.yeastar.watermark import YeastarWatermark
from gateway.connectors.yeastar.zonecheck import MEMORY_KEY, ZoneCheck, ZoneVerdict
from gateway.logging import get_logger
from gateway.runtime.backoff import Backoff
from gateway.runtime.dedupe import OverlapDeduper
from gateway.runtime.http_client import tls_context
from gateway.schema.commands import CommandModel
from gateway.schema.events import CloudEvent, ConnectionState

HEARTBEAT = "heartbeat"
HEARTBEAT_ANSWER = "heartbeat response"


class SubscribeRefused(Exception):
    """The PBX answered the topic list with a non-zero errcode."""

    def __init__(self, errcode: Any, errmsg: Any) -> None:
        super().__init__(f"{errcode} {errmsg}")
        self.errcode = errcode


class _Subscription:
    """One WebSocket: reads frames, sends heartbeats, notices a dead peer."""

    def __init__(
        self,
        ws: ClientConnection,
        *,
        generation: int,
        token: Token,
        on_frame: Any,
        heartbeat_interval_s: float,
        heartbeat_timeout_s: float,
    ) -> None:
        self.ws = ws
        self.generation = generation
        self.token = token
        self._on_frame = on_frame
        self._interval = heartbeat_interval_s
        self._timeout = heartbeat_timeout_s
        self._answered = asyncio.Event()
        self.closed = asyncio.Event()
        self.reason = "closed"
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._read(), name=f"ws-read-{self.generation}"),
            asyncio.create_task(self._heartbeat(), name=f"ws-heartbeat-{self.generation}"),
        ]

    async def close(self, reason: str) -> None:
        if not self.closed.is_set():
            self.reason = reason
        self.closed.set()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message == HEARTBEAT_ANSWER:
                    self._answered.set()
                    continue
                await self._on_frame(self.generation, message)
            reason = (
                f"closed by PBX (code {self.ws.close_code}, {self.ws.close_reason or 'no reason'})"
            )
        except websockets.ConnectionClosed as exc:
            reason = f"connection lost ({exc})"
        self.reason = reason
        self.closed.set()

    async def _heartbeat(self) -> None:
        """The PBX drops sockets idle for 60 s; a missing answer means the peer is gone."""
        while True:
            await asyncio.sleep(self._interval)
            self._answered.clear()
            try:
                await self.ws.send(HEARTBEAT)
                async with asyncio.timeout(self._timeout):
                    await self._answered.wait()
            except (TimeoutError, websockets.ConnectionClosed):
                self.reason = "no heartbeat response"
                self.closed.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.close(), 2)
                return


class YeastarConnector(BaseConnector):
    """One Yeastar PBX: the token, the subscribed WebSocket, commands and gap recovery."""

    vendor = "yeastar"

    def __init__(self, pbx: YeastarPbxSettings, resources: LinkResources) -> None:
        super().__init__(pbx, resources)
        self._recovery_settings = resources.recovery
        self._pbx = pbx
        self.client = YeastarClient(
            resources.http,
            pbx.base_url,
            user_agent=pbx.user_agent,
            verify_tls=pbx.verify_tls,
            timeout_s=pbx.request_timeout_s,
        )
        self.auth = YeastarAuth(
            self.client,
            tenant=pbx.tenant,
            client_id=pbx.client_id,
            secret=pbx.secret,
            backoff=Backoff(pbx.backoff),
            on_state=self.link_state.set,
            refresh_at=pbx.refresh_at,
            max_auth_failures=pbx.max_auth_failures,
            blocked_retry_s=pbx.blocked_retry_s,
        )
        self.commands = YeastarCommands(
            self.client,
            self.auth,
            tz=pbx.zone,
            cdr_time_format=pbx.cdr_time_format,
            tenant=pbx.tenant,
            include_raw=pbx.include_raw,
        )
        self.recovery = YeastarRecovery(
            self.client,
            self.auth,
            tenant=pbx.tenant,
            tz=pbx.zone,
            cdr_time_format=pbx.cdr_time_format,
            settings=resources.recovery,
        )
        self.watermark = YeastarWatermark(resources.store, barrier=self.link_state.sync)
        self._push: PushLink[_Subscription] = PushLink(
            self.link_state,
            self.watermark,
            Backoff(pbx.backoff),
            connect=self._connect,
            serve=self._hold,
            recover=self._recover,
            on_connect_error=self._connect_failed,
        )
        self._dedupe = OverlapDeduper()
        self.zone_check = ZoneCheck(pbx.zone)
        #: What this PBX accepts: the configured ids, less newer ones it refused.
        self._topics = list(pbx.topics)
        self._zone_warned = False
        self._generation = 0
        self._connecting: Token | None = None
        self._log = get_logger("yeastar.connector").bind(tenant=pbx.tenant)

    # --- public ----------------------------------------------------------------------------

    def tasks(self) -> dict[str, Part]:
        return {"auth": self.auth.run, "link": self._push.run}

    async def run(self, emit: Emit) -> None:
        try:
            await super().run(emit)
        finally:  # once the link is reported stopped: the token is of no use any more
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.auth.revoke()), 2)

    async def execute(self, command: CommandModel) -> dict[str, Any]:
        """Run one command on the PBX; raises ``CommandFailed``."""
        return await self.commands.execute(command)

    def health_details(self) -> dict[str, Any]:
        left = self.auth.expires_in_s()
        expires = datetime.now(UTC) + timedelta(seconds=left) if left is not None else None
        verdict = self.zone_check.verdict
        zone: dict[str, Any] = {}
        if verdict is not None:
            zone["pbx_utc_offset_s"] = int(verdict.pbx_offset.total_seconds())
            if verdict.mismatch:
                zone["timezone_warning"] = verdict.message()
        return {
            "token_expires_at": expires.isoformat(timespec="seconds") if expires else None,
            **zone,
        }

    @property
    def state(self) -> ConnectionState | None:
        return self.link_state.state

    # --- the link: connect, hold, recover --------------------------------------------------

    async def _connect(self) -> _Subscription:
        self._connecting = await self.auth.wait_token()
        return await self._open(self._connecting)

    async def _connect_failed(self, exc: BaseException) -> None:
        """The PBX refused the token the socket was opened with: get a new one first."""
        if self._connecting is not None and _is_auth_refusal(exc):
            await self.auth.force_refresh(self._connecting.access_token)

    async def _recover(self, gap: Gap, end: datetime) -> int:
        if not self._recovery_settings.enabled:
            return 0
        calls = self.watermark.calls

        async def emit(event: CloudEvent) -> None:  # re-read calls keep their direction too
            await self.link_state.send(calls.direct(event))

        result = await self.recovery.recover(gap, end, emit, self.watermark.cdrs, calls)
        if result.open_calls is not None:
            self.watermark.calls.reset(result.open_calls)
        if result.errors:
            self._log.warning("recovery_incomplete", errors=result.errors)
        return result.published

    async def _hold(self, sub: _Subscription) -> str:
        """Serve ``sub`` until it dies, moving to each new token without a blind spot."""
        tried = sub.token.version
        try:
            while True:
                next_token = asyncio.create_task(self.auth.wait_token(newer_than=tried))
                died = asyncio.create_task(sub.closed.wait())
                try:
                    await asyncio.wait({next_token, died}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    next_token.cancel()
                    died.cancel()
                if sub.closed.is_set():
                    return sub.reason
                token = next_token.result()
                tried = token.version
                self._dedupe.begin(sub.generation, self._generation + 1)
                try:
                    new = await self._open(token)
                except Exception as exc:  # keep the old socket; it serves until its token ends
                    self._dedupe.end()
                    self._log.warning("handover_failed", error=describe(exc))
                    continue
                self._log.info("token_handover", old=sub.generation, new=new.generation)
                old, sub = sub, new
                try:
                    await asyncio.sleep(self._pbx.handover_grace_s)
                    await old.close("token handover")
                finally:
                    self._dedupe.end()
        finally:
            await sub.close("link stopping")

    async def _open(self, token: Token) -> _Subscription:
        self._generation += 1
        generation = self._generation
        ws = await websockets.connect(
            self.client.subscribe_url(token.access_token),
            user_agent_header=self.client.user_agent,
            ssl=_ws_ssl(self._pbx.base_url, self._pbx.verify_tls, self._pbx.ca_file),
            ping_interval=None,  # the PBX speaks its own text heartbeat
            open_timeout=self._pbx.request_timeout_s,
            close_timeout=2,
            max_size=2**22,
            # Frames buffered before reading pauses (TCP back-pressure on the PBX): the default 16
            # paused and resumed the socket all through a burst of call events. 128 covers a
            # burst (a 50 ms stall at 2,000 frames/s) and bounds the memory (x max_size).
            max_queue=128,
        )
        try:
            try:
                await self._subscribe(ws, generation, self._topics)
            except SubscribeRefused as exc:
                older = [t for t in self._topics if t in ALL_YEASTAR_TOPICS]
                if _errcode_value(exc.errcode) == TOKEN_EXPIRED or older == self._topics:
                    raise
                # Firmware that predates the newer ids refuses the whole list: subscribe to
                # the manual's ids and keep to them on this PBX (it refuses them every time).
                self._log.warning(
                    "subscription_narrowed",
                    errcode=exc.errcode,
                    refused=[t for t in self._topics if t not in older],
                )
                self._topics = older
                await self._subscribe(ws, generation, self._topics)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
            raise
        sub = _Subscription(
            ws,
            generation=generation,
            token=token,
            on_frame=self._on_frame,
            heartbeat_interval_s=self._pbx.heartbeat_interval_s,
            heartbeat_timeout_s=self._pbx.heartbeat_timeout_s,
        )
        sub.start()
        self._log.info("subscribed", generation=generation, topics=len(self._topics))
        return sub

    async def _subscribe(self, ws: ClientConnection, generation: int, topics: list[int]) -> None:
        await ws.send(orjson.dumps({"topic_list": topics}).decode())
        async with asyncio.timeout(self._pbx.request_timeout_s):
            while True:
                message = await ws.recv()
                answer = _control_answer(message)
                if answer is None:  # an event racing the answer: keep it
                    await self._on_frame(generation, message)
                    continue
                if answer.get("errcode") != 0:
                    raise SubscribeRefused(answer.get("errcode"), answer.get("errmsg"))
                return

    # --- frames and states -----------------------------------------------------------------

    async def _on_frame(self, generation: int, message: str | bytes) -> None:
        self.link_state.received()
        now = datetime.now(UTC)
        if self._dedupe.is_copy(generation, message):
            FRAMES_DEDUPED.labels(self.tenant).inc()
            return
        answer = _control_answer(message)
        if answer is not None:
            self._log.info(
                "pbx_answer",
                generation=generation,
                errcode=answer.get("errcode"),
                errmsg=answer.get("errmsg"),
            )
            return
        events = normalize_frame(
            message, self.link_state.ctx(), display_format=self._pbx.cdr_time_format
        )
        for event in events:  # always one, maybe rejected
            if event.type == "cdr.created":
                self._check_zone(event)
            event = self.watermark.calls.direct(event)  # the direction its call was shown to have
            await self.link_state.send_live(event)
            # Only once the event is spooled (the watermark syncs the spool before it persists):
            # a crash in between then repeats it, never skips it.
            self._push.mark(now, event)

    def _check_zone(self, event: CloudEvent) -> None:
        """Each live CDR tells the PBX's real UTC offset when its leg began the call; once a
        few agree, the normalizer compares with it and a configured zone that disagrees is
        reported (one warning per PBX, the status page and a gauge)."""
        started = event.data.get("started_at")
        try:
            started_at = datetime.fromisoformat(started) if isinstance(started, str) else None
        except ValueError:
            return
        verdict = self.zone_check.observe(event.data.get("call_id"), started_at)
        if verdict is not None:
            self._zone_verdict(verdict)

    def _zone_verdict(self, verdict: ZoneVerdict) -> None:
        self.link_state.memory.set(MEMORY_KEY, verdict.pbx_offset)
        PBX_UTC_OFFSET.labels(self.tenant).set(verdict.pbx_offset.total_seconds())
        TIMEZONE_MISMATCH.labels(self.tenant).set(1 if verdict.mismatch else 0)
        if verdict.mismatch and not self._zone_warned:
            self._zone_warned = True
            self._log.warning(
                "pbx_timezone_mismatch",
                configured=verdict.configured_zone,
                detail=verdict.message(),
            )


def _control_answer(message: str | bytes) -> dict[str, Any] | None:
    """A reply to our own request (``errcode`` without an event ``type``), not an event."""
    if not message or (message[:1] not in ("{", b"{")):
        return None
    found = "errcode" in message if isinstance(message, str) else b"errcode" in message
    if not found:
        return None  # an event: not parsed twice (the normalizer reads it)
    try:
        body = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict) and "errcode" in body and "type" not in body:
        return body
    return None


def _is_auth_refusal(exc: BaseException) -> bool:
    """Only 10004 TOKEN EXPIRED is about the token (manual line 18516, 表 388): 10002/10003 say
    the PBX does not serve this API version, and a new token would not change that."""
    if isinstance(exc, websockets.InvalidStatus):
        errcode = _errcode(exc.response.body)
        if errcode is not None:
            return errcode == TOKEN_EXPIRED
        return exc.response.status_code in (401, 403)
    if isinstance(exc, SubscribeRefused):
        return _errcode_value(exc.errcode) == TOKEN_EXPIRED
    return False


def _errcode(body: bytes | bytearray | None) -> int | None:
    """The ``errcode`` of a refused handshake's JSON body, if it has one."""
    try:
        answer = orjson.loads(body or b"")
    except orjson.JSONDecodeError:
        return None
    return _errcode_value(answer.get("errcode")) if isinstance(answer, dict) else None


def _errcode_value(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _ws_ssl(base_url: str, verify: bool, ca_file: Path | None = None) -> ssl.SSLContext | None:
    if not base_url.startswith("https"):
        return None
    context = tls_context(ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
