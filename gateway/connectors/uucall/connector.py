"""The UUCall link: five pollers (balance, cash log, bills, operation log, notices) sharing one
link state, and the administration commands over REST."""

from __future__ import annotations

from typing import Any

from gateway.connectors.link import BaseConnector, Part
from gateway.connectors.plugin import LinkResources
from gateway.connectors.uucall.client import UucallClient
from gateway.connectors.uucall.commands import COMMAND_NAMES, execute_rest
from gateway.connectors.uucall.downloads import Downloads
from gateway.connectors.uucall.pollers import AccountPollers
from gateway.connectors.uucall.settings import UucallPbxSettings
from gateway.runtime.backoff import Backoff
from gateway.schema.commands import CommandFailed, CommandModel, ErrorCode

VENDOR = "uucall"


class UucallConnector(BaseConnector):
    """One enterprise account. The link is ``connected`` while every poller's last poll
    succeeded (it shows the worst of them); commands are taken meanwhile."""

    vendor = VENDOR

    def __init__(self, pbx: UucallPbxSettings, resources: LinkResources) -> None:
        super().__init__(pbx, resources)
        self._pbx = pbx
        self.client = UucallClient(resources.http, pbx, backoff=Backoff(pbx.backoff))
        self.pollers = AccountPollers(self.client, pbx, resources.store, self.link_state)
        self.downloads = (
            Downloads(pbx.download_dir, pbx.max_download_bytes) if pbx.download_dir else None
        )

    def tasks(self) -> dict[str, Part]:
        return {f"poll-{name}": self.pollers.pollers[name].run for name in self.pollers.enabled}

    async def execute(self, command: CommandModel) -> dict[str, Any]:
        if command.command in COMMAND_NAMES:
            return await execute_rest(self.client, self._pbx, command, self.downloads)
        raise CommandFailed(ErrorCode.UNSUPPORTED, f"UUCall cannot do {command.command!r}")

    def health_details(self) -> dict[str, Any]:
        polls = {
            name: poller.last_success.isoformat() if poller.last_success else None
            for name, poller in self.pollers.pollers.items()
            if name in self.pollers.enabled
        }
        return {"last_polls": polls, "rate_limited": self.client.rate_limited}
