"""The XSwitch link: call events over NATS (reconnect, gap, JetStream resume), configuration
polled over REST, management commands over REST and call control over NATS request/reply."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from gateway.connectors.link import BaseConnector, Part, PushLink
from gateway.connectors.plugin import LinkResources
from gateway.connectors.watermark import Gap, Watermark
from gateway.connectors.xswitch.client import XccClient
from gateway.connectors.xswitch.commands import COMMAND_NAMES, execute_rest
from gateway.connectors.xswitch.link import NatsSession, open_session, serve
from gateway.connectors.xswitch.normalize import normalize_message
from gateway.connectors.xswitch.pollers import ConfigPoller
from gateway.connectors.xswitch.settings import NODE_SUBJECT, XSwitchPbxSettings
from gateway.runtime.backoff import Backoff
from gateway.schema.commands import CommandFailed, CommandModel, ErrorCode

VENDOR = "xswitch"


class XSwitchConnector(BaseConnector):
    """One XCC system: a :class:`PushLink` over NATS and the configuration poller share one
    link state (the link shows the worse of the two)."""

    vendor = VENDOR

    def __init__(self, pbx: XSwitchPbxSettings, resources: LinkResources) -> None:
        super().__init__(pbx, resources)
        self._pbx = pbx
        self.session: NatsSession | None = None
        self.push: PushLink[NatsSession] = PushLink(
            self.link_state,
            Watermark(resources.store, barrier=self.link_state.sync),
            Backoff(pbx.backoff),
            connect=self._connect,
            serve=self._serve,
            recover=self._recover,
        )
        self.client = XccClient(resources.http, pbx, backoff=Backoff(pbx.backoff))
        self.config = ConfigPoller(
            self.client,
            resources.store,
            self.link_state,
            interval_s=pbx.config_poll_interval_s,
            backoff=Backoff(pbx.backoff),
        )

    def tasks(self) -> dict[str, Part]:
        return {"nats": self.push.run, "config": self.config.run}

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    # --- NATS ----------------------------------------------------------------------------------

    async def _connect(self) -> NatsSession:
        self.session = await open_session(self._pbx)
        return self.session

    async def _serve(self, session: NatsSession) -> str:
        try:
            return await serve(session, self._handle, sync=self.link_state.sync)
        finally:
            await session.close()

    async def _handle(self, body: bytes, position: str | None) -> None:
        self.link_state.received()
        for event in normalize_message(body, self.link_state.ctx(), position=position):
            await self.link_state.send_live(event)  # on disk before the message is acked (serve)
            self.push.mark(datetime.now(UTC), event)

    async def _recover(self, gap: Gap, end: datetime) -> int:
        """What came back after an interruption of the NATS link: with JetStream, the messages
        the durable consumer kept meanwhile (delivered by the stream itself, in order); and what
        the REST API still shows, the configuration, re-read at once. XCC's REST API keeps no
        call or CDR history, so without JetStream the calls of the gap are lost (and said so)."""
        session = self.session
        kept = session.backlog if session is not None and session.jetstream else 0
        return kept + await self.config.poll_once()

    # --- commands ------------------------------------------------------------------------------

    async def execute(self, command: CommandModel) -> dict[str, Any]:
        if command.command in COMMAND_NAMES:
            return await execute_rest(self.client, command)
        if command.command == "call.hangup":
            return await self._hangup(str(command.args.channel_id))  # type: ignore[attr-defined]
        raise CommandFailed(ErrorCode.UNSUPPORTED, f"XSwitch cannot do {command.command!r}")

    async def _hangup(self, uuid: str) -> dict[str, Any]:
        """``XNode.Hangup`` (``proto/xctrl/xctrl.proto`` ``HangupRequest``: ``ctrl_uuid``,
        ``uuid``, ``cause``, ``flag`` 0 = this leg) to the node that owns the channel."""
        session = self.session
        if session is None or session.nc.is_closed:
            raise CommandFailed(ErrorCode.UNAVAILABLE, "no NATS connection", retryable=True)
        leg = self.link_state.memory.get(f"leg:{uuid}")
        node = leg.get("node") if leg else None
        subject = self._pbx.command_prefix + (f"{NODE_SUBJECT}.{node}" if node else NODE_SUBJECT)
        request = {
            "jsonrpc": "2.0",
            "id": uuid,
            "method": "XNode.Hangup",
            "params": {
                "ctrl_uuid": self._pbx.ctrl_uuid,
                "uuid": uuid,
                "cause": "NORMAL_CLEARING",
                "flag": 0,
            },
        }
        try:
            reply = await session.nc.request(
                subject, orjson.dumps(request), timeout=self._pbx.request_reply_timeout_s
            )
        except NoRespondersError:
            raise CommandFailed(
                ErrorCode.UNAVAILABLE, f"no XSwitch node listens on {subject}", retryable=True
            ) from None
        except NatsTimeout:
            raise CommandFailed(
                ErrorCode.TIMEOUT, f"no answer from {subject} (the outcome is unknown)"
            ) from None
        return _result(reply.data, uuid)

    def health_details(self) -> dict[str, Any]:
        session = self.session
        return {"jetstream": bool(session and session.jetstream)}


def _result(data: bytes, uuid: str) -> dict[str, Any]:
    """A JSON-RPC answer: ``result`` is an ``xctrl.Response`` (``code``, ``message``)."""
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise CommandFailed(ErrorCode.FAILED, "the node's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise CommandFailed(ErrorCode.FAILED, "the node's answer is not an object")
    if answer.get("error"):
        raise CommandFailed(ErrorCode.FAILED, f"XNode.Hangup: {answer['error']}")
    result = answer.get("result")
    if not isinstance(result, dict):
        raise CommandFailed(ErrorCode.FAILED, "the node's answer has no result")
    code = result.get("code")
    if code == 200:
        return {"channel_id": uuid}
    message = str(result.get("message") or "no message")
    if code in (400, 404) and "locate" in message:
        raise CommandFailed(ErrorCode.NOT_FOUND, message, vendor_code=code)
    raise CommandFailed(ErrorCode.FAILED, message, vendor_code=code)
