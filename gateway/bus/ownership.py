"""The owned-PBX life cycle: a PBX's link runs only while this instance owns it.

Taking a PBX (its lease won, or no leases at all) continues from the last owner's state, starts
its link under a supervisor and then takes its commands; giving it up is the reverse, in the
shutdown order: stop taking its commands and finish those taken, close its link, hand its state
over (the watermark and the facts the link keeps) for the next owner. The lease itself belongs
to :class:`~gateway.bus.lease.LeaseManager`, which calls :meth:`PbxOwnership.take` and
:meth:`PbxOwnership.give_up`.

The set of PBXs is not fixed: :meth:`add`, :meth:`remove` and :meth:`replace` change one PBX
without touching any other (its link, its token and its command lane stay as they are).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.bus.consumer import CommandConsumer
from gateway.bus.journal import CommandJournal
from gateway.bus.lease import LeaseManager
from gateway.bus.policy import CommandPolicy, command_policy
from gateway.bus.publisher import EventPublisher
from gateway.bus.shared_state import SharedState
from gateway.connectors.base import Connector
from gateway.connectors.link import describe
from gateway.logging import get_logger
from gateway.runtime.backoff import Backoff
from gateway.runtime.statestore import StateStore, TenantState
from gateway.runtime.supervisor import supervise
from gateway.settings_models import PbxSettings

#: State is shared as soon as it changes (a CDR's facts at once, the watermark about once a
#: second), but bursts are coalesced: at most one share per this many seconds.
SHARE_STATE_MIN_INTERVAL_S = 0.1
#: How long one PBX's shared state may take to push or to read. Generous: when hundreds of
#: links start at once (a NATS connection, stream and consumer each for XSwitch) the event loop
#: is busy for seconds, and a read given up starts the PBX without its previous owner's state.
STATE_TIMEOUT_S = 15.0

#: Builds a PBX's connector from its settings and its slice of the state store.
ConnectorFactory = Callable[[PbxSettings, TenantState], Connector]


class PbxOwnership:
    """The configured PBXs, their connectors and state, and the links of those owned here."""

    def __init__(
        self,
        pbxs: list[PbxSettings],
        build: ConnectorFactory,
        *,
        store: StateStore,
        publisher: EventPublisher,
        shared: SharedState | None = None,
    ) -> None:
        self._build = build
        self._store = store
        self._publisher = publisher
        self._shared = shared
        self.consumer: CommandConsumer | None = None
        self.journal: CommandJournal | None = None
        self.leases: LeaseManager | None = None
        self.pbxs: dict[str, PbxSettings] = {}
        self.states: dict[str, TenantState] = {}
        #: tenant -> connector, shared with the command consumer (changed in place)
        self.connectors: dict[str, Connector] = {}
        #: tenant -> command policy, shared with the command consumer (changed in place)
        self.policies: dict[str, CommandPolicy] = {}
        self._links: dict[str, asyncio.Task[None]] = {}
        self._owned_since: dict[str, str] = {}
        self._share_failing: set[str] = set()
        # One change at a time per PBX: a lease won or lost while a reload restarts it waits.
        self._locks: dict[str, asyncio.Lock] = {}
        self.closing = False
        self._log = get_logger("app")
        for pbx in pbxs:
            self.states[pbx.tenant] = TenantState(store, pbx.tenant)
        for pbx in pbxs:
            self._configure(pbx)

    def _configure(self, pbx: PbxSettings) -> None:
        state = self.states.get(pbx.tenant)
        if state is None:
            state = self.states[pbx.tenant] = TenantState(self._store, pbx.tenant)
        self.pbxs[pbx.tenant] = pbx
        self.connectors[pbx.tenant] = self._build(pbx, state)
        self.policies[pbx.tenant] = command_policy(pbx)

    @property
    def owned(self) -> set[str]:
        """Tenants whose PBX link runs in this instance."""
        return set(self._links)

    def owned_since(self, tenant: str) -> str | None:
        return self._owned_since.get(tenant)

    def owned_connector(self, tenant: str) -> Connector | None:
        if tenant not in self._links:
            return None
        return self.connectors.get(tenant)

    def links(self) -> list[dict[str, Any]]:
        """The health of each owned PBX link, in configuration order."""
        return [
            {**c.health(), "owned_since": self._owned_since.get(c.tenant)}
            for c in self.connectors.values()
            if c.tenant in self._links
        ]

    # --- taking and giving up ----------------------------------------------------------------

    def _lock(self, tenant: str) -> asyncio.Lock:
        return self._locks.setdefault(tenant, asyncio.Lock())

    async def take(self, tenant: str) -> None:
        """This instance owns the PBX now: continue from the last owner's state, run its link,
        then take its commands."""
        async with self._lock(tenant):
            await self._take(tenant)

    async def give_up(self, tenant: str) -> None:
        """Stop taking the PBX's commands, finish those taken, close its link, and leave its
        state for the next owner."""
        async with self._lock(tenant):
            await self._give_up(tenant)

    async def _take(self, tenant: str) -> None:
        if tenant in self._links or self.closing or tenant not in self.connectors:
            return  # (a lease won while stopping is given back with the others)
        await self._adopt_shared_state(tenant)
        self._owned_since[tenant] = datetime.now(UTC).isoformat()
        self._links[tenant] = asyncio.create_task(self._own(tenant), name=f"pbx-{tenant}")
        if self.consumer is not None:
            await self.consumer.add_tenant(tenant)

    async def _give_up(self, tenant: str) -> None:
        if self.consumer is not None:
            await self.consumer.remove_tenant(tenant)
        task = self._links.pop(tenant, None)
        self._owned_since.pop(tenant, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self._share_state(tenant)

    async def give_up_all(self) -> None:
        """Every owned PBX at once: with many PBXs (and a broker away) one after the other
        would take N times the state hand-over's timeout."""
        gave_up = await asyncio.gather(
            *(self.give_up(tenant) for tenant in list(self._links)), return_exceptions=True
        )
        for failure in (g for g in gave_up if isinstance(g, BaseException)):
            self._log.warning("give_up_failed", error=f"{type(failure).__name__}: {failure}")

    # --- the configured set changing ---------------------------------------------------------

    def add(self, pbx: PbxSettings) -> None:
        """A PBX joins the configuration; it runs once :meth:`take` is called (its lease)."""
        if pbx.tenant in self.pbxs:
            raise ValueError(f"PBX {pbx.tenant!r} is configured already")
        self._configure(pbx)

    async def remove(self, tenant: str) -> bool:
        """The PBX leaves the configuration: given up if owned here, then forgotten (its local
        state stays in the store). True if this instance owned it."""
        async with self._lock(tenant):
            owned = tenant in self._links
            await self._give_up(tenant)
            self.pbxs.pop(tenant, None)
            self.connectors.pop(tenant, None)
            self.policies.pop(tenant, None)
            self.states.pop(tenant, None)
            self._share_failing.discard(tenant)
        self._locks.pop(tenant, None)
        return owned

    async def replace(self, pbx: PbxSettings) -> None:
        """The PBX's settings changed: if owned, its link stops (in the shutdown order) and
        starts again with the new settings, the lease staying held throughout."""
        async with self._lock(pbx.tenant):
            owned = pbx.tenant in self._links
            await self._give_up(pbx.tenant)
            self._configure(pbx)
            if owned:
                await self._take(pbx.tenant)
        self._log.info("pbx_restarted", tenant=pbx.tenant, owned=owned)

    async def join(self, pbxs: list[PbxSettings]) -> None:
        """PBXs added to the configuration: their command queues declared (commands wait
        there), the shared ledger followed for them. Taking them is the caller's: through the
        leases, or :meth:`take` without leases."""
        for pbx in pbxs:
            self.add(pbx)
            if self.consumer is not None:
                await self.consumer.declare(pbx.tenant)
        if pbxs and self.journal is not None:
            await self.journal.add_tenants([p.tenant for p in pbxs])

    async def drop(self, tenant: str) -> bool:
        """A PBX removed from the configuration, in the shutdown order: no longer announced
        nor tried, given up (commands drained, link closed, state handed over), its lease given
        back; its waiting commands are answered when no other instance still lists it (else
        that instance takes it over). True if this instance owned it."""
        vendor = self.pbxs[tenant].vendor
        held = await self.leases.forget(tenant) if self.leases is not None else False
        owned = await self.remove(tenant) or held
        if self.leases is not None:
            await self.leases.release(tenant)
        if self.consumer is not None:
            elsewhere = self.leases is not None and self.leases.configured_elsewhere(tenant)
            if (owned or self.leases is None) and not elsewhere:
                await self.consumer.retire(tenant, vendor)
            else:
                self.consumer.forget(tenant)
        self._log.info("pbx_removed", tenant=tenant, was_owned=owned)
        return owned

    # --- running one PBX ---------------------------------------------------------------------

    async def _own(self, tenant: str) -> None:
        """The PBX link (restarted on failure) and the prompt hand-over of its state."""
        connector = self.connectors[tenant]
        pbx = self.pbxs[tenant]
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                supervise(
                    f"{tenant}-link", _bind_run(connector, self._publisher), Backoff(pbx.backoff)
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
        if self._shared is None or tenant not in self.states:
            return
        try:
            await self._shared.push(tenant, self.states[tenant].snapshot(), timeout=STATE_TIMEOUT_S)
        except Exception as exc:  # best effort: the local copy is still there
            if tenant not in self._share_failing:  # one warning per outage, not one a second
                self._share_failing.add(tenant)
                self._log.warning("state_share_failed", tenant=tenant, error=describe(exc))
        else:
            self._share_failing.discard(tenant)

    async def _adopt_shared_state(self, tenant: str) -> None:
        if self._shared is None:
            return
        try:
            async with asyncio.timeout(STATE_TIMEOUT_S):
                shared = await self._shared.pull(tenant)
        except Exception as exc:
            self._log.warning("state_fetch_failed", tenant=tenant, error=describe(exc))
            return
        if shared is not None:
            taken = self.states[tenant].merge(*shared)
            self._log.info("state_adopted", tenant=tenant, keys=taken)


def _bind_run(connector: Connector, publisher: EventPublisher) -> Any:
    async def work() -> None:
        await connector.run(publisher.submit)

    return work
