"""Wiring: builds every component from Settings, runs them, and shuts them down in order.

The components: the broker connection (:class:`~gateway.bus.connection.BusLink`), the durable
outbox and the publisher, the state store and its shared copy, the command consumer (and the
shared ledger), the owned-PBX life cycle (:class:`~gateway.bus.ownership.PbxOwnership`), the
leases, the HTTP listeners and the readiness report (:mod:`gateway.app.readiness`). Shutdown is
the reverse of the start, as an exit stack unwinds it: stop taking commands, finish in-flight
ones, give the PBXs up (links closed, state handed over), drop the leases, stop HTTP, flush the
publisher, then close the spool, the stores and the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.app.readiness import Readiness
from gateway.app.reload import (
    ConfigDiff,
    ConfigReloader,
    ReloadRefused,
    diff,
    fingerprints,
    named_files,
    new_salt,
)
from gateway.bus.connection import BusLink, connect_bus
from gateway.bus.consumer import CommandConsumer
from gateway.bus.idempotency import CommandLedger
from gateway.bus.journal import CommandJournal
from gateway.bus.lease import LeaseManager, default_instance_id
from gateway.bus.outbox import Outbox
from gateway.bus.ownership import PbxOwnership
from gateway.bus.publisher import EventPublisher
from gateway.bus.shared_state import SharedState
from gateway.bus.topology import CommandNames
from gateway.connectors.base import Connector
from gateway.connectors.plugin import LinkResources, VendorPlugin, VendorRoutes
from gateway.connectors.registry import command_catalog, plugins
from gateway.logging import get_logger
from gateway.runtime.http_client import pbx_session
from gateway.runtime.metrics import BUS_UP
from gateway.runtime.resources import SharedResources
from gateway.runtime.shutdown import on_shutdown, sync_step
from gateway.runtime.sqlite import private_dir
from gateway.runtime.statestore import StateStore, StoreSlice, TenantState
from gateway.schema.events import CloudEvent
from gateway.settings import PbxSettings, Settings, load_settings, redact_url
from gateway.web.server import AdminAuth, ListenError, WebServer

__all__ = ["GatewayApp", "StartError"]

#: Addresses only this host reaches: a single listener there exposes nothing.
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class StartError(Exception):
    """The gateway cannot start for a reason the operator can fix (one line, no traceback)."""


class GatewayApp:
    """Builds every component from Settings and runs a PBX only while this instance owns it."""

    def __init__(
        self,
        settings: Settings,
        config_path: Path | None = None,
        *,
        load: Callable[[Path], Settings] = load_settings,
        watch_poll_s: float = 0.5,
        watch_settle_s: float = 0.5,
    ) -> None:
        """With ``config_path`` (the file ``settings`` were read from), the configuration is
        reloaded when the file changes and on :meth:`request_reload` (SIGHUP)."""
        self.settings = settings
        self.bus = BusLink(settings.bus.url.get_secret_value())
        self._salt = new_salt()
        self._applied = fingerprints(settings, self._salt)
        self.reloader: ConfigReloader | None = None
        if config_path is not None:
            self.reloader = ConfigReloader(
                config_path,
                load,
                self.apply,
                watch_files=lambda: named_files(self.settings),
                poll_s=watch_poll_s,
                settle_s=watch_settle_s,
            )
        self.readiness = Readiness(
            self.bus, config=self.reloader.report if self.reloader else ConfigReloader.unwatched
        )
        self._route_pbxs: dict[str, dict[str, PbxSettings]] = {}
        self._reload_task: asyncio.Task[None] | None = None
        self.publisher: EventPublisher | None = None
        self.outbox: Outbox | None = None
        self.consumer: CommandConsumer | None = None
        self.ledger: CommandLedger | None = None
        self.journal: CommandJournal | None = None
        self.store: StateStore | None = None
        self.web: WebServer | None = None
        self.ownership: PbxOwnership | None = None
        self._sessions: dict[str, aiohttp.ClientSession] = {}  # PBXs' own (a ca_file of theirs)
        self._session: aiohttp.ClientSession | None = None
        self.leases: LeaseManager | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._web_stopped = False
        self.shared: SharedState | None = None
        self.resources = SharedResources()
        self._log = get_logger("app")
        self.phase = "starting"  # -> running -> stopping -> stopped

    @property
    def owned(self) -> set[str]:
        """Tenants whose PBX link runs in this instance."""
        return self.ownership.owned if self.ownership else set()

    @property
    def _connection(self) -> Any:
        """The main broker connection (None before it is made)."""
        return self.bus.connection

    @property
    def connectors(self) -> list[Connector]:
        return list(self.ownership.connectors.values()) if self.ownership else []

    @property
    def states(self) -> dict[str, TenantState]:
        return self.ownership.states if self.ownership else {}

    def status(self) -> dict[str, Any]:
        return self.readiness.report(self.phase, self.settings.pbxs)

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        """HTTP first (``/healthz`` answers, ``/readyz`` says why not ready while the broker is
        away), then the bus and the PBXs; ``stop`` ends it cleanly at any phase, start-up
        included, then shuts down in the documented order."""
        started = started if started is not None else asyncio.Event()
        BUS_UP.set_function(self.bus.gauge)
        if self.settings.http.enabled:
            await self._listen()
        serving = asyncio.create_task(self._serve(stop, started), name="gateway-serve")
        waiter = asyncio.create_task(stop.wait(), name="gateway-stop-wait")
        try:
            await asyncio.wait({serving, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not serving.done() and not started.is_set():
                serving.cancel()  # stopped during start-up: its exit stack shuts down
            await asyncio.wait({serving})
            if not serving.cancelled():
                serving.result()  # a real failure propagates
        finally:
            waiter.cancel()
            if not serving.done():  # this task was cancelled from outside
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)
            await self._stop_web()  # start-up failed before the ordered shutdown stopped it

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
            header_timeout_s=http.header_timeout_s,
            config=self.config_fingerprints,
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
        """Connect, build and run until ``stop`` is set; the exit stack then shuts down in the
        reverse order of the start (each step's failure logged, the next steps still taken)."""
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self._stopped)
            try:
                await self._start(stack)
                self.phase = "running"
                started.set()
                await stop.wait()
            finally:
                self.phase = "stopping"
                if self.ownership is not None:
                    self.ownership.closing = True  # a lease won now is given back with the rest
                self._log.info("gateway_stopping")

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        s = self.settings
        url = s.bus.url.get_secret_value()
        self._session = pbx_session()
        on_shutdown(stack, "session_close_failed", self._close_sessions)
        connection = await self.bus.connect(s.bus.reconnect_interval_s)
        on_shutdown(stack, "bus_close_failed", connection.close, quiet=True)
        private_dir(s.state_dir)
        self.store = StateStore(s.state_dir / "state.sqlite3")
        on_shutdown(stack, "store_close_failed", sync_step(self.store.close))
        self.shared = SharedState(connection, s.bus.queue_type)
        on_shutdown(stack, "shared_close_failed", self.shared.close)
        on_shutdown(stack, "resources_close_failed", self.resources.close)
        self.outbox = Outbox(
            s.state_dir / "outbox.sqlite3",
            max_events=s.outbox.max_events,
            max_age_s=s.outbox.max_age_s,
            warn_at=s.outbox.warn_at,
        )
        outbox = self.outbox
        on_shutdown(  # what is unconfirmed stays spooled for the next start
            stack, "outbox_close_failed", sync_step(outbox.close), staged=lambda: outbox.staged
        )
        self.publisher = EventPublisher(
            connection,
            s.bus.events_exchange,
            outbox=self.outbox,
            window=s.bus.confirm_window,
            retry_interval_s=s.bus.reconnect_interval_s,
            coalesce_s=s.bus.coalesce_ms / 1000,
        )
        publisher = self.publisher
        await publisher.start()
        on_shutdown(
            stack, "publisher_stop_failed", lambda: publisher.stop(timeout=s.shutdown_timeout_s)
        )
        on_shutdown(stack, "http_stop_failed", self._stop_web)  # before the outbox closes
        self.readiness.publisher, self.readiness.outbox = self.publisher, self.outbox
        self.ownership = PbxOwnership(
            list(s.pbxs),
            self._build_connector,
            store=self.store,
            publisher=self.publisher,
            shared=self.shared,
        )
        self.readiness.ownership = self.ownership
        ownership = self.ownership
        if s.lease.enabled and s.pbxs:
            self._make_leases([p.tenant for p in s.pbxs])
        on_shutdown(stack, "leases_stop_failed", self._stop_leases)
        on_shutdown(stack, "give_up_failed", ownership.give_up_all)
        if s.commands.enabled:
            await self._start_commands(stack)
        if self.leases is not None:
            self._lease_task = asyncio.create_task(self.leases.run(), name="leases")
        else:
            for tenant in list(ownership.connectors):
                await ownership.take(tenant)
        if self.reloader is not None:
            self._reload_task = asyncio.create_task(self.reloader.run(), name="config-watch")
            on_shutdown(stack, "config_watch_stop_failed", self._stop_reloads)
        self._log.info(
            "gateway_started",
            pbxs=[p.tenant for p in s.pbxs],
            instance=self.leases.instance_id if self.leases else None,
            bus=redact_url(url),
            http_port=self.web.port if self.web else None,
        )

    async def _start_commands(self, stack: contextlib.AsyncExitStack) -> None:
        s = self.settings
        assert self.ownership is not None and self.publisher is not None
        self.ledger = CommandLedger(s.state_dir / "commands.sqlite3", s.commands.result_ttl_s)
        on_shutdown(stack, "ledger_close_failed", sync_step(self.ledger.close))
        names = CommandNames(s.commands.exchange)
        if s.commands.shared_ledger:
            # A connection of its own: RabbitMQ closes a whole connection on some stream
            # errors (its leader moving), and that must not stop event publishing.
            ledger_connection = await connect_bus(
                s.bus.url.get_secret_value(),
                reconnect_interval_s=s.bus.reconnect_interval_s,
                name="pbx-gateway ledger",
            )
            on_shutdown(stack, "bus_close_failed", ledger_connection.close, quiet=True)
            self.journal = CommandJournal(
                ledger_connection, names, retention_s=s.commands.result_ttl_s
            )
            on_shutdown(stack, "ledger_close_failed", self.journal.close)
        vendors = plugins()
        assert self.bus.connection is not None
        self.consumer = CommandConsumer(
            self.bus.connection,
            names,
            self.ownership.connectors,
            self.ledger,
            self.publisher,
            journal=self.journal,
            catalog=command_catalog(),
            supported={name: p.commands for name, p in vendors.items()},
            policies=self.ownership.policies,
            require_user_id=s.commands.require_user_id,
            reply_prefixes=s.commands.reply_queue_prefixes,
            prefetch=s.commands.prefetch,
            execute_timeout_s=s.commands.execute_timeout_s,
            drain_timeout_s=s.commands.drain_timeout_s,
            queue_type=s.bus.queue_type,
        )
        consumer = self.consumer
        on_shutdown(stack, "commands_stop_failed", consumer.stop)
        await consumer.start()
        self.ownership.consumer, self.ownership.journal = consumer, self.journal

    def _make_leases(self, tenants: list[str]) -> LeaseManager:
        s = self.settings
        assert self.ownership is not None
        self.leases = LeaseManager(
            s.bus.url.get_secret_value(),
            tenants,
            instance_id=s.lease.instance_id or default_instance_id(),
            on_acquired=self.ownership.take,
            on_lost=self.ownership.give_up,
            heartbeat_s=s.lease.heartbeat_s,
            member_timeout_s=s.lease.member_timeout_s,
            acquire_interval_s=s.lease.acquire_interval_s,
        )
        self.readiness.instance = self.leases.instance_id
        self.ownership.leases = self.leases
        return self.leases

    # --- reload ------------------------------------------------------------------------------

    def request_reload(self) -> None:
        """Read the configuration file again (SIGHUP)."""
        if self.reloader is not None:
            self.reloader.request()
        else:
            self._log.warning(
                "config_reload_ignored", detail="started without --config: nothing to read again"
            )

    def config_fingerprints(self) -> dict[str, Any]:
        """The running configuration as ``/config.json`` serves it: no value, no secret."""
        generation = self.reloader.record.generation if self.reloader else 1
        return {**self._applied, "generation": generation}

    async def apply(self, new: Settings) -> ConfigDiff:
        """Apply a validated configuration PBX by PBX (:class:`PbxOwnership` starts and stops
        each alone); refused, nothing changed, when a setting read once at start changed."""
        fresh = fingerprints(new, self._salt)
        changes = diff(self._applied, fresh)
        refusal = changes.refusal()
        if refusal is not None:
            raise ReloadRefused(refusal)
        if self.phase != "running" or self.ownership is None:
            raise ReloadRefused(f"the gateway is {self.phase}: reload once it runs")
        ownership, by_tenant = self.ownership, {p.tenant: p for p in new.pbxs}
        old_sessions = [
            self._sessions.pop(t) for t in changes.removed + changes.changed if t in self._sessions
        ]
        results = await asyncio.gather(
            *(ownership.drop(t) for t in changes.removed),
            *(ownership.replace(by_tenant[t]) for t in changes.changed),
            return_exceptions=True,
        )
        for session in old_sessions:
            await session.close()
        for failure in (r for r in results if isinstance(r, BaseException)):
            raise failure
        await ownership.join([by_tenant[t] for t in changes.added])
        self.settings, self._applied = new, fresh
        for vendor, pbxs in self._route_pbxs.items():  # the webhooks' view, changed in place
            pbxs.clear()
            pbxs.update({p.tenant: p for p in new.pbxs if p.vendor == vendor})
        if changes.added and not self.settings.lease.enabled:
            for tenant in changes.added:
                await ownership.take(tenant)
        elif changes.added and self.leases is None:  # the first PBXs of an instance
            self._lease_task = asyncio.create_task(
                self._make_leases(changes.added).run(), name="leases"
            )
        elif changes.added and self.leases is not None:
            await self.leases.add(changes.added)
        return changes

    async def _stop_reloads(self) -> None:
        if self._reload_task is not None:
            self._reload_task.cancel()
            await asyncio.gather(self._reload_task, return_exceptions=True)

    async def _stopped(self) -> None:
        self.phase = "stopped"
        self._log.info("gateway_stopped")

    async def _stop_leases(self) -> None:
        task = self._lease_task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _stop_web(self) -> None:
        if self.web is not None and not self._web_stopped:
            self._web_stopped = True
            await self.web.stop()

    async def _close_sessions(self) -> None:
        if self._session is not None:
            await self._session.close()
        for own in self._sessions.values():
            await own.close()
        self._sessions.clear()

    def _build_connector(self, pbx: PbxSettings, state: TenantState) -> Connector:
        plugin = plugins()[pbx.vendor]
        assert self._session is not None
        session = self._session
        if pbx.ca_file is not None:  # its own session: the CA is trusted for this PBX only
            session = pbx_session(pbx.ca_file)
            self._sessions[pbx.tenant] = session
        resources = LinkResources(
            http=session,
            store=StoreSlice(state, f"{pbx.vendor}:{pbx.tenant}:"),
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
            self._route_pbxs[name] = pbxs  # (changed in place by a reload)
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
        return self.ownership.owned_connector(tenant) if self.ownership else None
