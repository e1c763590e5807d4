"""Wiring: builds every component from Settings, runs them in one TaskGroup, drains in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiohttp
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from gateway.bus.connection import connect_failover
from gateway.bus.consumer import CommandConsumer
from gateway.bus.idempotency import CommandLedger
from gateway.bus.journal import CommandJournal
from gateway.bus.lease import LeaseManager, default_instance_id
from gateway.bus.outbox import Outbox
from gateway.bus.policy import command_policy
from gateway.bus.publisher import EventPublisher
from gateway.bus.shared_state import SharedState
from gateway.bus.topology import CommandNames
from gateway.connectors.base import Connector
from gateway.connectors.link import describe
from gateway.connectors.plugin import LinkResources, VendorPlugin, VendorRoutes
from gateway.connectors.registry import command_catalog, plugins
from gateway.logging import get_logger
from gateway.runtime.backoff import Backoff
from gateway.runtime.http_client import pbx_session
from gateway.runtime.metrics import BUS_UP
from gateway.runtime.resources import SharedResources
from gateway.runtime.sqlite import private_dir
from gateway.runtime.statestore import StateStore, StoreSlice, TenantState
from gateway.runtime.supervisor import supervise
from gateway.schema.events import CloudEvent
from gateway.settings import BackoffSettings, PbxSettings, Settings, redact_url, split_urls
from gateway.web.server import AdminAuth, ListenError, WebServer

#: Addresses only this host reaches: a single listener there exposes nothing.
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class StartError(Exception):
    """The gateway cannot start for a reason the operator can fix (one line, no traceback)."""


#: How long one attempt to reach RabbitMQ may take (a host that drops packets never refuses).
BUS_CONNECT_TIMEOUT_S = 10.0


def bus_problem(exc: BaseException, setting: str = "bus.url") -> str:
    """One line saying why RabbitMQ could not be reached, and what to check (``setting``)."""
    if isinstance(exc, aio_pika.exceptions.ProbableAuthenticationError):
        return f"RabbitMQ refused the login: check the user and password in {setting}"
    if isinstance(exc, TimeoutError):
        return f"RabbitMQ did not answer in time: check the host and port in {setting}"
    text = str(exc) or type(exc).__name__
    if "ACCESS_REFUSED" in text or "vhost" in text.lower():
        return f"RabbitMQ refused the connection ({text[:200]}): check {setting}"
    return f"RabbitMQ unreachable ({text[:200]}): is it running, and is {setting} right?"


async def connect_bus(
    url: str,
    on_failure: Callable[[str], None] | None = None,
    *,
    reconnect_interval_s: float = 1.0,
    name: str = "pbx-gateway",
) -> AbstractRobustConnection:
    """Connect to RabbitMQ, waiting with backoff while it is not there yet (one warning line per
    attempt, ``on_failure`` told why). Cancel the caller to stop waiting."""
    log = get_logger("bus")
    backoff = Backoff(BackoffSettings(initial_s=0.5, max_s=10))
    while True:
        try:
            return await connect_failover(  # several addresses: the nodes of a cluster
                split_urls(url),
                client_properties={"connection_name": name},
                timeout=BUS_CONNECT_TIMEOUT_S,
                reconnect_interval=reconnect_interval_s,
            )
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            delay = backoff.next_delay()
            problem = bus_problem(exc)
            log.warning(
                "bus_unreachable", url=redact_url(url), error=problem, retry_in_s=round(delay, 2)
            )
            if on_failure is not None:
                on_failure(problem)
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
        self._sessions: list[aiohttp.ClientSession] = []  # PBXs' own (a ca_file of theirs)
        self.leases: LeaseManager | None = None
        self.shared: SharedState | None = None
        self.states: dict[str, TenantState] = {}
        self._links: dict[str, asyncio.Task[None]] = {}
        self._owned_since: dict[str, str] = {}
        self._connection: AbstractRobustConnection | None = None
        self._ledger_connection: AbstractRobustConnection | None = None
        self.resources = SharedResources()
        self._log = get_logger("app")
        self.phase = "starting"  # -> running -> stopping -> stopped
        self._bus_error: str | None = None  # why the broker could not be reached, if it could not
        self._bus_since = datetime.now(UTC)  # when the broker went up or down (or start-up)

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
        reasons = self._not_ready(bus_up, links)
        return {
            "ready": not reasons,
            "reasons": reasons,
            "phase": self.phase,
            "instance": self.leases.instance_id if self.leases else None,
            "time": datetime.now(UTC).isoformat(),
            "bus": {
                "connected": bus_up,
                "url": redact_url(self.settings.bus.url.get_secret_value()),
                "since": self._bus_since.isoformat(),
                "error": None if bus_up else self._bus_error,
                "backlog": self.publisher.backlog if self.publisher else 0,
                "outbox_events": len(self.outbox) if self.outbox else 0,
                "outbox_oldest_age_s": round(self.outbox.oldest_age_s(), 1) if self.outbox else 0,
            },
            "links": links,
            "pbxs": [
                {
                    "tenant": pbx.tenant,
                    "vendor": pbx.vendor,
                    "owned": pbx.tenant in self._links,
                    "owner": (self.leases.instance_id if self.leases else "this instance")
                    if pbx.tenant in self._links
                    else None,
                }
                for pbx in self.settings.pbxs
            ],
        }

    def _not_ready(self, bus_up: bool, links: list[dict[str, Any]]) -> list[str]:
        """Why this instance is not ready, one line each (empty: ready)."""
        reasons: list[str] = []
        if self.phase != "running":
            reasons.append(f"gateway {self.phase}")
        if not bus_up:
            why = f": {self._bus_error}" if self._bus_error else ""
            reasons.append(f"broker not connected since {self._bus_since.isoformat()}{why}")
        for link in links:
            if link["state"] != "connected":
                reason = f" ({link['reason']})" if link.get("reason") else ""
                reasons.append(
                    f"PBX {link['tenant']} {link['state']} since {link.get('since')}{reason}"
                )
        return reasons

    def _bus_up(self) -> float:
        return 1.0 if self._connection is not None and not self._connection.is_closed else 0.0

    def _bus_failed(self, problem: str) -> None:
        if self._bus_error is None:
            self._bus_since = datetime.now(UTC)
        self._bus_error = problem

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        """HTTP first (``/healthz`` answers, ``/readyz`` says why not ready while the broker is
        away), then the bus and the PBXs; ``stop`` ends it cleanly at any phase, start-up
        included, then shuts down in the documented order."""
        started = started if started is not None else asyncio.Event()
        BUS_UP.set_function(self._bus_up)
        if self.settings.http.enabled:
            await self._listen()
        serving = asyncio.create_task(self._serve(stop, started), name="gateway-serve")
        waiter = asyncio.create_task(stop.wait(), name="gateway-stop-wait")
        try:
            await asyncio.wait({serving, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not serving.done() and not started.is_set():
                serving.cancel()  # stopped during start-up: its `finally` shuts down
            await asyncio.wait({serving})
            if not serving.cancelled():
                serving.result()  # a real failure propagates
        finally:
            waiter.cancel()
            if not serving.done():  # this task was cancelled from outside
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)
            if self.web is not None and self.phase != "stopped":
                await self.web.stop()  # start-up failed before the ordered shutdown stopped it

    async def _listen(self) -> None:
        """The admin listener and the public one (webhooks), or the single one of earlier
        versions; a port that cannot be bound is a start error naming its setting."""
        http = self.settings.http
        host, port = http.admin.host, http.admin.port
        public = None if http.single or not http.public.enabled else http.public
        self.web = WebServer(
            self.status,
            host,
            port,
            self._vendor_routes(plugins()),
            public=(public.host, public.port) if public else None,
            auth=AdminAuth(http.admin.bearer(), http.admin.basic()),
            max_in_flight=http.public.max_in_flight,
        )
        try:
            await self.web.start()
        except ListenError as exc:
            self.web = None
            name = exc.listener.name
            where = f"http.{name}.host / .port"
            raise StartError(
                f"cannot serve HTTP on {exc.listener.host}:{exc.listener.wanted_port} ({name}"
                f" listener): {exc.strerror or exc} (set {where})"
            ) from exc
        for listener in self.web.listeners:
            self._log.info(
                "http_listening", listener=listener.name, host=listener.host, port=listener.port
            )
        if http.single and host not in _LOOPBACK:
            self._log.warning(
                "http_single_listener",
                host=host,
                detail="http.host / http.port serve the status page, /status.json, /metrics"
                " and the webhooks on one port: use http.admin and http.public to expose the"
                " webhooks alone",
            )

    async def _serve(self, stop: asyncio.Event, started: asyncio.Event) -> None:
        """Connect, build and run until ``stop`` is set, then shut down in order."""
        s = self.settings
        url = s.bus.url.get_secret_value()
        session = pbx_session()
        lease_task: asyncio.Task[None] | None = None
        try:
            self._connection = await connect_bus(
                url, on_failure=self._bus_failed, reconnect_interval_s=s.bus.reconnect_interval_s
            )
            self._bus_error, self._bus_since = None, datetime.now(UTC)
            private_dir(s.state_dir)
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
                coalesce_s=s.bus.coalesce_ms / 1000,
            )
            await self.publisher.start()
            self.store = StateStore(s.state_dir / "state.sqlite3")
            self.shared = SharedState(self._connection, s.bus.queue_type)
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
                    # A connection of its own: RabbitMQ closes a whole connection on some stream
                    # errors (its leader moving), and that must not stop event publishing.
                    self._ledger_connection = await connect_bus(
                        url,
                        reconnect_interval_s=s.bus.reconnect_interval_s,
                        name="pbx-gateway ledger",
                    )
                    self.journal = CommandJournal(
                        self._ledger_connection, names, retention_s=s.commands.result_ttl_s
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
                    policies={pbx.tenant: command_policy(pbx) for pbx in s.pbxs},
                    require_user_id=s.commands.require_user_id,
                    reply_prefixes=s.commands.reply_queue_prefixes,
                    prefetch=s.commands.prefetch,
                    execute_timeout_s=s.commands.execute_timeout_s,
                    drain_timeout_s=s.commands.drain_timeout_s,
                    queue_type=s.bus.queue_type,
                )
                await self.consumer.start()
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
            self.phase = "running"
            started.set()
            await stop.wait()
        finally:
            await self._shutdown(lease_task, session)

    def _build_connector(
        self, plugin: VendorPlugin, pbx: PbxSettings, session: aiohttp.ClientSession
    ) -> Connector:
        if pbx.ca_file is not None:  # its own session: the CA is trusted for this PBX only
            session = pbx_session(pbx.ca_file)
            self._sessions.append(session)
        resources = LinkResources(
            http=session,
            store=StoreSlice(self.states[pbx.tenant], f"{pbx.vendor}:{pbx.tenant}:"),
            recovery=self.settings.recovery,
            shared=self.resources,
            spool=self.publisher,
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
        routes: dict[str, list[Any]] = {}
        for name, plugin in vendors.items():
            if plugin.routes is None:
                continue
            pbxs = {p.tenant: p for p in self.settings.pbxs if p.vendor == name}
            context = VendorRoutes(pbxs, self._submit, self._owned_connector)
            routes[name] = list(plugin.routes(context))
        return routes

    async def _submit(self, event: CloudEvent) -> None:
        """A webhook's event; the HTTP server is up before the spool is open, so until then the
        sender is told to come back (503, it retries)."""
        if self.publisher is None or self.phase != "running":
            raise web.HTTPServiceUnavailable(
                text="the gateway is not running yet (or stopping): retry later",
                headers={"Retry-After": "5"},
            )
        await self.publisher.submit(event)

    def _owned_connector(self, tenant: str) -> Connector | None:
        if tenant not in self._links:
            return None
        return next((c for c in self.connectors if c.tenant == tenant), None)

    async def _take(self, tenant: str) -> None:
        """This instance owns the PBX now: continue from the last owner's state, run its link,
        then take its commands."""
        if tenant in self._links or self.phase == "stopping":
            return  # (a lease won while stopping is given back with the others)
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
            await self.shared.push(tenant, self.states[tenant].snapshot(), timeout=15)
        except Exception as exc:  # best effort: the local copy is still there
            if tenant not in self._share_failing:  # one warning per outage, not one a second
                self._share_failing.add(tenant)
                self._log.warning("state_share_failed", tenant=tenant, error=describe(exc))
        else:
            self._share_failing.discard(tenant)

    async def _adopt_shared_state(self, tenant: str) -> None:
        if self.shared is None:
            return
        try:
            async with asyncio.timeout(5):
                shared = await self.shared.pull(tenant)
        except Exception as exc:
            self._log.warning("state_fetch_failed", tenant=tenant, error=describe(exc))
            return
        if shared is not None:
            taken = self.states[tenant].merge(*shared)
            self._log.info("state_adopted", tenant=tenant, keys=taken)

    async def _shutdown(
        self, lease_task: asyncio.Task[None] | None, session: aiohttp.ClientSession
    ) -> None:
        """Stop taking commands and finish in-flight ones, close the PBX links and give the
        leases back, flush the publisher, then close the channels and the connection."""
        self.phase = "stopping"
        self._log.info("gateway_stopping")
        if self.consumer is not None:
            await self.consumer.stop()
        if self.journal is not None:
            await self.journal.close()
        # All at once: with many PBXs (and a broker away) one after the other would take N times
        # the state hand-over's timeout.
        gave_up = await asyncio.gather(
            *(self._give_up(tenant) for tenant in list(self._links)), return_exceptions=True
        )
        for failure in (g for g in gave_up if isinstance(g, BaseException)):
            self._log.warning("give_up_failed", error=f"{type(failure).__name__}: {failure}")
        if lease_task is not None:
            lease_task.cancel()
            await asyncio.gather(lease_task, return_exceptions=True)
        if self.web is not None:  # before the outbox closes: no webhook may find it closed
            await self.web.stop()
        if self.publisher is not None:
            await self.publisher.stop(timeout=self.settings.shutdown_timeout_s)
        if self.outbox is not None:
            try:
                self.outbox.close()  # what is unconfirmed stays spooled for the next start
            except Exception as exc:  # the rest of the shutdown must still happen
                self._log.error("outbox_close_failed", error=str(exc), staged=self.outbox.staged)
        await self.resources.close()
        await session.close()
        for own in self._sessions:
            await own.close()
        self._sessions.clear()
        if self.shared is not None:
            await self.shared.close()
        if self.ledger is not None:
            self.ledger.close()
        if self.store is not None:
            self.store.close()
        for connection in (self._ledger_connection, self._connection):
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()
        self.phase = "stopped"
        self._log.info("gateway_stopped")


def _bind_run(connector: Connector, publisher: EventPublisher) -> Any:
    async def work() -> None:
        await connector.run(publisher.submit)

    return work
