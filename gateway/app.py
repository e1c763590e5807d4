"""Wiring: builds every component from Settings, runs them in one TaskGroup, drains in order."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiohttp
from aio_pika.abc import AbstractRobustConnection

from gateway.bus.consumer import CommandConsumer
from gateway.bus.idempotency import CommandLedger
from gateway.bus.journal import CommandJournal
from gateway.bus.lease import LeaseManager, default_instance_id
from gateway.bus.outbox import Outbox
from gateway.bus.publisher import EventPublisher
from gateway.bus.shared_state import SharedState
from gateway.bus.topology import CommandNames
from gateway.connectors.base import Connector
from gateway.connectors.plugin import LinkResources, VendorPlugin, VendorRoutes
from gateway.connectors.registry import command_catalog, plugins
from gateway.logging import get_logger
from gateway.runtime.backoff import Backoff
from gateway.runtime.resources import SharedResources
from gateway.runtime.statestore import StateStore, StoreSlice, TenantState
from gateway.runtime.supervisor import supervise
from gateway.settings import BackoffSettings, PbxSettings, Settings, redact_url
from gateway.web.server import WebServer


async def connect_bus(url: str, stop: asyncio.Event | None = None) -> AbstractRobustConnection:
    """Connect to RabbitMQ, waiting with backoff while it is not there yet."""
    log = get_logger("bus")
    backoff = Backoff(BackoffSettings(initial_s=0.5, max_s=10))
    while True:
        try:
            return await aio_pika.connect_robust(
                url, client_properties={"connection_name": "pbx-gateway"}
            )
        except (OSError, aio_pika.exceptions.AMQPError) as exc:
            delay = backoff.next_delay()
            log.warning(
                "bus_unreachable", url=redact_url(url), error=str(exc), retry_in_s=round(delay, 2)
            )
            if stop is not None and stop.is_set():
                raise
            await asyncio.sleep(delay)


#: State is shared as soon as it changes (a CDR's facts at once, the watermark about once a
#: second), but bursts are coalesced: at most one share per this many seconds.
SHARE_STATE_MIN_INTERVAL_S = 0.1


class GatewayApp:
    """Builds every component from Settings and runs a PBX only while this instance owns it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connectors: list[Connector] = []
        self.publisher: EventPublisher | None = None
        self.outbox: Outbox | None = None
        self.consumer: CommandConsumer | None = None
        self.ledger: CommandLedger | None = None
        self.journal: CommandJournal | None = None
        self._share_failing: set[str] = set()
        self.store: StateStore | None = None
        self.web: WebServer | None = None
        self.leases: LeaseManager | None = None
        self.shared: SharedState | None = None
        self.states: dict[str, TenantState] = {}
        self._links: dict[str, asyncio.Task[None]] = {}
        self._owned_since: dict[str, str] = {}
        self._connection: AbstractRobustConnection | None = None
        self.resources = SharedResources()
        self._log = get_logger("app")

    @property
    def owned(self) -> set[str]:
        """Tenants whose PBX link runs in this instance."""
        return set(self._links)

    def status(self) -> dict[str, Any]:
        links = [
            {**c.health(), "owned_since": self._owned_since.get(c.tenant)}
            for c in self.connectors
            if c.tenant in self._links
        ]
        bus_up = self._connection is not None and not self._connection.is_closed
        return {
            "ready": bus_up and all(link["state"] == "connected" for link in links),
            "instance": self.leases.instance_id if self.leases else None,
            "time": datetime.now(UTC).isoformat(),
            "bus": {
                "connected": bus_up,
                "backlog": self.publisher.backlog if self.publisher else 0,
            },
            "links": links,
        }

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set, then shut down in the documented order."""
        s = self.settings
        url = s.bus.url.get_secret_value()
        self._connection = await connect_bus(url, stop)
        # No cookie jar: one session serves every PBX, and tenants of a SaaS vendor share a host.
        session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        lease_task: asyncio.Task[None] | None = None
        try:
            self.outbox = Outbox(
                s.state_dir / "outbox.sqlite3",
                max_events=s.outbox.max_events,
                max_age_s=s.outbox.max_age_s,
                warn_at=s.outbox.warn_at,
            )
            self.publisher = EventPublisher(
                self._connection,
                s.bus.events_exchange,
                outbox=self.outbox,
                window=s.bus.confirm_window,
                retry_interval_s=s.bus.reconnect_interval_s,
            )
            await self.publisher.start()
            self.store = StateStore(s.state_dir / "state.sqlite3")
            self.shared = SharedState(self._connection)
            self.states = {pbx.tenant: TenantState(self.store, pbx.tenant) for pbx in s.pbxs}
            vendors = plugins()
            self.connectors = [
                self._build_connector(vendors[pbx.vendor], pbx, session) for pbx in s.pbxs
            ]
            if s.commands.enabled:
                ledger_file = s.state_dir / "commands.sqlite3"
                self.ledger = CommandLedger(ledger_file, s.commands.result_ttl_s)
                names = CommandNames(s.commands.exchange)
                if s.commands.shared_ledger:
                    self.journal = CommandJournal(
                        self._connection, names, retention_s=s.commands.result_ttl_s
                    )
                self.consumer = CommandConsumer(
                    self._connection,
                    names,
                    {c.tenant: c for c in self.connectors},
                    self.ledger,
                    self.publisher,
                    journal=self.journal,
                    catalog=command_catalog(),
                    supported={name: p.commands for name, p in vendors.items()},
                    prefetch=s.commands.prefetch,
                    execute_timeout_s=s.commands.execute_timeout_s,
                    drain_timeout_s=s.commands.drain_timeout_s,
                )
                await self.consumer.start()
            if s.http.enabled:
                self.web = WebServer(
                    self.status, s.http.host, s.http.port, self._vendor_routes(vendors)
                )
                await self.web.start()
            if s.lease.enabled and self.connectors:
                self.leases = LeaseManager(
                    url,
                    [c.tenant for c in self.connectors],
                    instance_id=s.lease.instance_id or default_instance_id(),
                    on_acquired=self._take,
                    on_lost=self._give_up,
                    heartbeat_s=s.lease.heartbeat_s,
                    member_timeout_s=s.lease.member_timeout_s,
                    acquire_interval_s=s.lease.acquire_interval_s,
                )
                lease_task = asyncio.create_task(self.leases.run(), name="leases")
            else:
                for connector in self.connectors:
                    await self._take(connector.tenant)
            self._log.info(
                "gateway_started",
                pbxs=[p.tenant for p in s.pbxs],
                instance=self.leases.instance_id if self.leases else None,
                bus=redact_url(url),
                http_port=self.web.port if self.web else None,
            )
            if started is not None:
                started.set()
            await stop.wait()
        finally:
            await self._shutdown(lease_task, session)

    def _build_connector(
        self, plugin: VendorPlugin, pbx: PbxSettings, session: aiohttp.ClientSession
    ) -> Connector:
        resources = LinkResources(
            http=session,
            store=StoreSlice(self.states[pbx.tenant], f"{pbx.vendor}:{pbx.tenant}:"),
            recovery=self.settings.recovery,
            shared=self.resources,
        )
        connector = plugin.connector(pbx, resources)
        if connector.vendor != plugin.name or connector.tenant != pbx.tenant:
            raise RuntimeError(
                f"plugin {plugin.name!r} built a connector for {connector.vendor!r}"
                f" / {connector.tenant!r}, not for {pbx.vendor!r} / {pbx.tenant!r}"
            )
        return connector

    def _vendor_routes(self, vendors: dict[str, VendorPlugin]) -> dict[str, list[Any]]:
        """Each plugin's HTTP routes (webhooks), by vendor name."""
        assert self.publisher is not None
        routes: dict[str, list[Any]] = {}
        for name, plugin in vendors.items():
            if plugin.routes is None:
                continue
            pbxs = {p.tenant: p for p in self.settings.pbxs if p.vendor == name}
            context = VendorRoutes(pbxs, self.publisher.submit, self._owned_connector)
            routes[name] = list(plugin.routes(context))
        return routes

    def _owned_connector(self, tenant: str) -> Connector | None:
        if tenant not in self._links:
            return None
        return next((c for c in self.connectors if c.tenant == tenant), None)

    async def _take(self, tenant: str) -> None:
        """This instance owns the PBX now: continue from the last owner's state, run its link,
        then take its commands."""
        if tenant in self._links:
            return
        await self._adopt_shared_state(tenant)
        self._owned_since[tenant] = datetime.now(UTC).isoformat()
        self._links[tenant] = asyncio.create_task(self._own(tenant), name=f"pbx-{tenant}")
        if self.consumer is not None:
            await self.consumer.add_tenant(tenant)

    async def _give_up(self, tenant: str) -> None:
        """Stop taking the PBX's commands, finish those taken, close its link, and leave its
        state for the next owner."""
        if self.consumer is not None:
            await self.consumer.remove_tenant(tenant)
        task = self._links.pop(tenant, None)
        self._owned_since.pop(tenant, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self._share_state(tenant)

    async def _own(self, tenant: str) -> None:
        """The PBX link (restarted on failure) and the prompt hand-over of its state."""
        connector = next(c for c in self.connectors if c.tenant == tenant)
        pbx = next(p for p in self.settings.pbxs if p.tenant == tenant)
        assert self.publisher is not None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                supervise(
                    f"{tenant}-link", _bind_run(connector, self.publisher), Backoff(pbx.backoff)
                ),
                name=f"connector-{tenant}",
            )
            tg.create_task(self._share_when_changed(tenant), name=f"state-{tenant}")

    async def _share_when_changed(self, tenant: str) -> None:
        state = self.states[tenant]
        while True:
            await state.changed.wait()
            state.changed.clear()
            await self._share_state(tenant)
            await asyncio.sleep(SHARE_STATE_MIN_INTERVAL_S)

    async def _share_state(self, tenant: str) -> None:
        if self.shared is None:
            return
        try:
            async with asyncio.timeout(5):
                await self.shared.push(tenant, self.states[tenant].snapshot())
        except Exception as exc:  # best effort: the local copy is still there
            if tenant not in self._share_failing:  # one warning per outage, not one a second
                self._share_failing.add(tenant)
                self._log.warning("state_share_failed", tenant=tenant, error=str(exc))
        else:
            self._share_failing.discard(tenant)

    async def _adopt_shared_state(self, tenant: str) -> None:
        if self.shared is None:
            return
        try:
            async with asyncio.timeout(5):
                shared = await self.shared.pull(tenant)
        except Exception as exc:
            self._log.warning("state_fetch_failed", tenant=tenant, error=str(exc))
            return
        if shared is not None:
            taken = self.states[tenant].merge(*shared)
            self._log.info("state_adopted", tenant=tenant, keys=taken)

    async def _shutdown(
        self, lease_task: asyncio.Task[None] | None, session: aiohttp.ClientSession
    ) -> None:
        """Stop taking commands and finish in-flight ones, close the PBX links and give the
        leases back, flush the publisher, then close the channels and the connection."""
        self._log.info("gateway_stopping")
        if self.consumer is not None:
            await self.consumer.stop()
        if self.journal is not None:
            await self.journal.close()
        for tenant in list(self._links):
            await self._give_up(tenant)
        if lease_task is not None:
            lease_task.cancel()
            await asyncio.gather(lease_task, return_exceptions=True)
        if self.web is not None:  # before the outbox closes: no webhook may find it closed
            await self.web.stop()
        if self.publisher is not None:
            await self.publisher.stop(timeout=self.settings.shutdown_timeout_s)
        if self.outbox is not None:
            self.outbox.close()  # what is unconfirmed stays spooled for the next start
        await self.resources.close()
        await session.close()
        if self.shared is not None:
            await self.shared.close()
        if self.ledger is not None:
            self.ledger.close()
        if self.store is not None:
            self.store.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._log.info("gateway_stopped")


def _bind_run(connector: Connector, publisher: EventPublisher) -> Any:
    async def work() -> None:
        await connector.run(publisher.submit)

    return work
