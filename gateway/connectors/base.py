"""What the rest of the gateway knows about a PBX connector (built by a vendor plugin's factory)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from gateway.runtime.watch import Watch
from gateway.schema.commands import CommandModel
from gateway.schema.events import CloudEvent

Emit = Callable[[CloudEvent], Awaitable[None]]
"""Hand one event to the gateway: it is on disk (the outbox) when the awaitable returns."""


class Spool(Protocol):
    """The fast way in for a push link's live messages (group commit): events are taken in
    order without waiting for the disk, and written with every event of the same turn of the
    event loop, before anything is published. A link that persists how far it got (its
    watermark) calls :meth:`sync` first, so what it persists never runs ahead of the disk."""

    def spool(self, event: CloudEvent) -> None: ...

    def sync(self) -> None: ...


class Connector(Protocol):
    tenant: str
    vendor: str
    link: Watch[str]  # "connected" while the PBX can take commands

    async def run(self, emit: Emit) -> None:
        """Keep the PBX link alive and hand every event to ``emit`` until cancelled. Called
        again on the same object after a failure, or when this instance owns the PBX again."""
        ...

    async def execute(self, command: CommandModel) -> dict[str, Any]:
        """Run one validated command on the PBX: the result, or ``CommandFailed``. Only commands
        the plugin declares reach it; the consumer answers the rest ``unsupported``."""
        ...

    def health(self) -> dict[str, Any]:
        """Link state for /readyz and the status page."""
        ...


@runtime_checkable
class WebhookReceiver(Protocol):
    """A connector that takes its vendor's webhook deliveries: the vendor's routes find the
    owner's running link with :meth:`~gateway.connectors.plugin.VendorRoutes.receiver`."""

    async def take_delivery(
        self, envelope: dict[str, Any], delivery: str | None = None
    ) -> tuple[int, bool]:
        """Publish one verified delivery unless it (or what it reports) was published before:
        ``(published, duplicate)``. ``TimeoutError`` when the link cannot take it now (the route
        asks the vendor to deliver again)."""
        ...
