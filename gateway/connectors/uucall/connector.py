"""The UUCall link: five pollers (balance, cash log, bills, operation log, notices) sharing one
:class:`LinkState`, and the administration commands over REST."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.connectors.base import Emit
from gateway.connectors.link import LinkState
from gateway.connectors.plugin import LinkResources
from gateway.connectors.uucall.client import UucallClient
from gateway.connectors.uucall.commands import COMMAND_NAMES, execute_rest
from gateway.connectors.uucall.downloads import Downloads
from gateway.connectors.uucall.pollers import AccountPollers
from gateway.connectors.uucall.settings import UucallPbxSettings
from gateway.runtime.backoff import Backoff
from gateway.schema.commands import CommandFailed, CommandModel, ErrorCode

VENDOR = "uucall"


class UucallConnector:
    """One enterprise account. The link is ``connected`` while every poller's last poll
    succeeded (it shows the worst of them); commands are taken meanwhile."""

    vendor = VENDOR

    def __init__(self, pbx: UucallPbxSettings, resources: LinkResources) -> None:
        self.tenant = pbx.tenant
        self._pbx = pbx
        self.state = LinkState(pbx.tenant, VENDOR, pbx.zone, include_raw=pbx.include_raw)
        self.link = self.state.link
        self.client = UucallClient(resources.http, pbx, backoff=Backoff(pbx.backoff))
        self.pollers = AccountPollers(self.client, pbx, resources.store, self.state)
        self.downloads = (
            Downloads(pbx.download_dir, pbx.max_download_bytes) if pbx.download_dir else None
        )

    async def run(self, emit: Emit) -> None:
        self.state.attach(emit)
        try:
            async with asyncio.TaskGroup() as tg:
                for name in self.pollers.enabled:
                    tg.create_task(
                        self.pollers.pollers[name].run(), name=f"{self.tenant}-poll-{name}"
                    )
        finally:
            await self.state.stopped()

    async def execute(self, command: CommandModel) -> dict[str, Any]:
        if command.command in COMMAND_NAMES:
            return await execute_rest(self.client, self._pbx, command, self.downloads)
        raise CommandFailed(ErrorCode.UNSUPPORTED, f"UUCall cannot do {command.command!r}")

    def health(self) -> dict[str, Any]:
        polls = {
            name: poller.last_success.isoformat() if poller.last_success else None
            for name, poller in self.pollers.pollers.items()
            if name in self.pollers.enabled
        }
        return self.state.health(last_polls=polls, rate_limited=self.client.rate_limited)
