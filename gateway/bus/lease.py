"""Which instance owns which PBX, with RabbitMQ as the coordination engine.

Safety: owning a PBX means holding the exclusive queue ``pbx.lease.<tenant>`` on this instance's
lease connection. Only one connection can hold an exclusive queue, and the broker frees it the
moment that connection dies, so two instances never own one PBX (and never hold its token) at
once. When the lease connection drops, the instance has half a member timeout to reconnect and
re-declare its lease queues (a broker closing connections, a blip); after that it stops using
those PBXs, well before another instance may consider them free.

Spread: instances announce themselves, the PBXs they are configured for and those they hold on the
fanout exchange ``pbx.instances``; every instance computes the same assignment from that membership
(rendezvous hashing with a bounded load, so N instances hold about 1/N of the PBXs each). An
instance only tries the PBXs assigned to it, takes any PBX whose assigned owner has not taken it
after a grace period, and hands a PBX back once its assigned owner has been around for a while.

Quiet and safe hand-overs: a PBX another live instance says it holds is not tried at all (each
refused try is an error in the broker's log); a refused try, when nobody said so, is tried again
after a growing pause. A PBX is handed over only to an instance heard from since this one took
it: an instance killed a moment ago still looks like a member until its presence times out, and
must not get anything back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from gateway.bus.connection import connect_first
from gateway.logging import get_logger
from gateway.runtime.metrics import LEASES_HELD
from gateway.settings_models import split_urls

LEASE_PREFIX = "pbx.lease."
PRESENCE_EXCHANGE = "pbx.instances"

Hook = Callable[[str], Awaitable[None]]
#: Pauses between refused tries of a PBX nobody says it holds: from ``acquire_interval_s``,
#: doubling, up to this many member timeouts.
REFUSED_BACKOFF_MAX = 4
#: PBXs whose leases were just taken started at once (their shared state read, links started).
_STARTS_AT_ONCE = 32
#: Lease queues declared in one go (written back to back, one round trip for all): one at a
#: time, thousands of PBXs waited seconds for their leases before the first was started.
_LEASES_AT_ONCE = 64


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _rank(tenant: str, instances: list[str]) -> list[str]:
    return sorted(
        instances, key=lambda i: hashlib.sha256(f"{i}|{tenant}".encode()).digest(), reverse=True
    )


def assign(members: dict[str, frozenset[str]]) -> dict[str, str]:
    """Owner per tenant: rendezvous order, but every instance holds its fair share.

    Plain rendezvous hashing leaves an instance idle surprisingly often with few PBXs (3 instances,
    6 PBXs: one in four times), so each tenant goes to its highest-ranked instance still below its
    share: ``tenants // instances``, plus one for as many instances as the remainder. Deterministic,
    so every instance agrees given the same members.
    """
    tenants = sorted(set().union(*members.values())) if members else []
    base, extra = divmod(len(tenants), len(members)) if members else (0, 0)
    load = dict.fromkeys(members, 0)
    owners: dict[str, str] = {}

    def has_room(instance: str) -> bool:
        return load[instance] < base or (
            load[instance] == base and sum(n > base for n in load.values()) < extra
        )

    for tenant in tenants:
        ranked = _rank(tenant, [i for i, ts in members.items() if tenant in ts])
        owner = next((i for i in ranked if has_room(i)), ranked[0])
        owners[tenant] = owner
        load[owner] += 1
    return owners


class LeaseManager:
    def __init__(
        self,
        url: str,
        tenants: list[str],
        *,
        instance_id: str,
        on_acquired: Hook,
        on_lost: Hook,
        heartbeat_s: float = 1.0,
        member_timeout_s: float = 3.0,
        acquire_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instance_id = instance_id
        self._clock = clock
        self._url = url
        self._tenants = tenants
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._heartbeat_s = heartbeat_s
        self._member_timeout_s = member_timeout_s
        self._acquire_interval_s = acquire_interval_s
        # Others may take a PBX once our presence timed out; stop using it well before that.
        self._grace_s = member_timeout_s / 2
        self._members: dict[str, tuple[float, frozenset[str]]] = {}  # instance -> seen, tenants
        self._first_seen: dict[str, float] = {}
        self._holding: dict[str, frozenset[str]] = {}  # instance -> the PBXs it says it holds
        # What an instance holds is believed while its heartbeats come, not for the whole
        # member timeout: a killed instance's PBXs are tried soon after its last heartbeat.
        self._hold_timeout_s = min(member_timeout_s, 2.5 * heartbeat_s)
        self._free_since: dict[str, float] = {}
        self._acquired_at: dict[str, float] = {}
        self._refused: dict[str, tuple[int, float]] = {}  # tenant -> refusals, next try at
        self._lost_at: float | None = None
        self._last_address = 0
        self._lease_channel: AbstractChannel | None = None
        self._connection: AbstractConnection | None = None
        # Balancing and a change of the configured PBXs never interleave: a PBX removed from
        # the configuration is not taken by a balancing round already under way.
        self._changing = asyncio.Lock()
        self.owned: set[str] = set()
        self._log = get_logger("bus.lease").bind(instance=instance_id)
        # Every instance announces every PBX it is configured for each heartbeat: with
        # thousands of PBXs, rebuilding those sets and the assignment each second was most of
        # an idle instance's CPU. Both are reused while nothing changed.
        self._assigned: tuple[dict[str, frozenset[str]], dict[str, str]] | None = None
        self._own_source: list[str] = list(tenants)  # what _own_tenants was made from
        self._own_tenants = frozenset(tenants)
        self._announced: tuple[frozenset[str], bytes] | None = None

    def assignment(self) -> dict[str, str]:
        """The owner of each PBX among the live instances, this one included."""
        now = self._clock()
        live = {
            instance: tenants
            for instance, (seen, tenants) in self._members.items()
            if now - seen <= self._member_timeout_s
        }
        for gone in [i for i in self._first_seen if i not in live]:
            # back later under the same id: it must settle again before it is handed anything
            del self._first_seen[gone]
        live[self.instance_id] = self._own()
        cached = self._assigned
        # (the sets are the same objects while the members announce the same PBXs)
        if cached is not None and cached[0].keys() == live.keys():
            if all(cached[0][i] is tenants for i, tenants in live.items()):
                return cached[1]
        owners = assign(live)
        self._assigned = (live, owners)
        return owners

    def _own(self) -> frozenset[str]:
        """The PBXs this instance is configured for, as a set (rebuilt when they change)."""
        if self._own_source != self._tenants:
            self._own_source = list(self._tenants)
            self._own_tenants = frozenset(self._tenants)
            self._announced = None
        return self._own_tenants

    def _held_by_others(self, now: float) -> set[str]:
        """PBXs a live instance said, in its last heartbeat, it holds."""
        return {
            tenant
            for instance, held in self._holding.items()
            if instance != self.instance_id
            and now - self._members.get(instance, (float("-inf"),))[0] <= self._hold_timeout_s
            for tenant in held
        }

    async def run(self) -> None:
        """Hold leases until cancelled, riding out short losses of the lease connection."""
        while True:
            connection: AbstractConnection | None = None
            try:
                async with asyncio.timeout(self._connect_budget()):
                    connection = await connect_first(
                        self._addresses(),
                        client_properties={"connection_name": f"lease {self.instance_id}"},
                    )
                self._connection = connection
                await self._reclaim(connection)
                await self._serve(connection)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._lost_at is None:
                    self._lost_at = self._clock()
                    self._log.warning("lease_connection_lost", error=f"{type(exc).__name__}: {exc}")
            finally:
                self._lease_channel = None
                self._connection = None
                if connection is not None and not connection.is_closed:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(connection.close())
            if self._lost_at is not None and self._clock() - self._lost_at >= self._grace_s:
                await self._lose_all()
            await asyncio.sleep(min(self._acquire_interval_s, self._grace_s / 2))

    def _addresses(self) -> list[str]:
        """The broker addresses, starting after the one last used (a cluster: the lease
        connection moves on when it loses its node, as the main connection does)."""
        urls = split_urls(self._url)
        start = (self._last_address + 1) % len(urls) if self._lost_at is not None else 0
        self._last_address = start
        return urls[start:] + urls[:start]

    def _connect_budget(self) -> float:
        """While leases are at risk, never wait past the grace for a connection."""
        if self._lost_at is None or not self.owned:
            return 10.0
        return max(0.05, self._grace_s - (self._clock() - self._lost_at))

    async def _reclaim(self, connection: AbstractConnection) -> None:
        """Back within the grace: take our own leases again at once, before anyone else may."""
        self._lost_at = None
        for tenant in sorted(self.owned):
            if not await self._declare(connection, tenant):
                self.owned.discard(tenant)
                self._log.warning("lease_lost", tenant=tenant, reason="taken while disconnected")
                await self._on_lost(tenant)
        LEASES_HELD.set(len(self.owned))

    async def _serve(self, connection: AbstractConnection) -> None:
        closed = asyncio.Event()
        connection.close_callbacks.add(lambda *_: closed.set())
        channel = await connection.channel()
        presence = await channel.declare_exchange(PRESENCE_EXCHANGE, aio_pika.ExchangeType.FANOUT)
        inbox = await channel.declare_queue(exclusive=True, auto_delete=True)
        await inbox.bind(presence)
        await inbox.consume(self._on_presence, no_ack=True)
        started = self._clock()
        # Presence has a task of its own: taking a thousand PBXs (each started on the spot) may
        # take longer than the member timeout, and other instances must not think us gone.
        heartbeat = asyncio.create_task(self._announce(presence, closed), name="lease-presence")
        try:
            while not closed.is_set():
                # Listen a full member timeout before taking anything, so simultaneous starts
                # spread.
                if self._clock() - started >= self._member_timeout_s:
                    async with self._changing:
                        await self._balance(connection)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._acquire_interval_s):
                        await closed.wait()
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            self._lease_channel = None
        raise ConnectionError("lease connection closed")

    async def _announce(
        self, presence: aio_pika.abc.AbstractExchange, closed: asyncio.Event
    ) -> None:
        while not closed.is_set():
            self._own()  # (forgets the last announcement if the PBXs changed)
            announced = self._announced
            if announced is None or announced[0] != self.owned:
                holds = frozenset(self.owned)
                body = orjson.dumps(
                    {"instance": self.instance_id, "tenants": self._tenants, "holds": sorted(holds)}
                )
                self._announced = announced = (holds, body)
            announcement = announced[1]
            with contextlib.suppress(Exception):  # the connection going: _serve notices
                await presence.publish(
                    aio_pika.Message(announcement, expiration=10), routing_key=""
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._heartbeat_s):
                    await closed.wait()

    async def _on_presence(self, message: AbstractIncomingMessage) -> None:
        with contextlib.suppress(Exception):
            now = self._clock()
            announced = self._announced
            if announced is not None and message.body == announced[1]:
                # our own announcement, as last sent: only the time is news
                self._members[self.instance_id] = (now, self._own())
                self._first_seen.setdefault(self.instance_id, now)
                self._holding[self.instance_id] = announced[0]
                return
            body = orjson.loads(message.body)
            instance = str(body["instance"])
            before = self._members.get(instance)
            tenants = frozenset(map(str, body.get("tenants", [])))
            if before is not None and before[1] == tenants:
                tenants = before[1]  # the same object: the assignment is reused
            self._members[instance] = (now, tenants)
            self._first_seen.setdefault(instance, now)
            if "holds" in body:  # (an older instance does not say: its PBXs are tried)
                self._holding[instance] = frozenset(map(str, body["holds"]))

    # --- the configured PBXs changing (a reload) ----------------------------------------------

    @property
    def tenants(self) -> list[str]:
        return list(self._tenants)

    async def add(self, tenants: list[str]) -> None:
        """PBXs join this instance's configuration: announced from the next heartbeat on, and
        taken by whichever instance the assignment names (this one only if it lists them)."""
        async with self._changing:
            self._tenants = [*self._tenants, *(t for t in tenants if t not in self._tenants)]

    async def forget(self, tenant: str) -> bool:
        """The PBX leaves this instance's configuration: no longer announced nor tried. Its
        lease, if held, stays held until :meth:`release` (the PBX is stopped in between, and
        nobody else may take it meanwhile). True if this instance holds it."""
        async with self._changing:
            self._tenants = [t for t in self._tenants if t != tenant]
            self._free_since.pop(tenant, None)
            self._refused.pop(tenant, None)
            return tenant in self.owned

    async def release(self, tenant: str) -> None:
        """Give the lease of a forgotten PBX back (its link is stopped by then)."""
        async with self._changing:
            if tenant not in self.owned:
                return
            self.owned.discard(tenant)
            self._acquired_at.pop(tenant, None)
            LEASES_HELD.set(len(self.owned))
            self._log.info("lease_released", tenant=tenant, reason="removed from the configuration")
            if self._connection is None or self._connection.is_closed:
                return  # the broker freed it with the connection
            with contextlib.suppress(Exception):
                if self._lease_channel is None or self._lease_channel.is_closed:
                    self._lease_channel = await self._connection.channel()
                await self._lease_channel.queue_delete(f"{LEASE_PREFIX}{tenant}")

    def configured_elsewhere(self, tenant: str) -> bool:
        """Whether another live instance still lists the PBX (its configuration not reloaded
        yet, or different)."""
        now = self._clock()
        return any(
            tenant in tenants
            for instance, (seen, tenants) in self._members.items()
            if instance != self.instance_id and now - seen <= self._member_timeout_s
        )

    async def _balance(self, connection: AbstractConnection) -> None:
        taken: list[str] = []
        try:
            await self._balance_leases(connection, taken)
        finally:
            await self._started(taken)

    async def _started(self, tenants: list[str]) -> None:
        """Start using the PBXs whose leases were just taken, several at once: each start reads
        the PBX's shared state (a broker round trip or two), and one after the other they made a
        start-up with thousands of PBXs last minutes. Only once every lease of the round is
        taken (in batches, :meth:`_declare_many`): started along, they slowed the taking, and
        another instance starting at the same time found the last of this one's PBXs still
        free, took them (after twice the member timeout) and handed them back moments later."""
        if not tenants:
            return
        gate = asyncio.Semaphore(_STARTS_AT_ONCE)

        async def start(tenant: str) -> None:
            async with gate:
                await self._on_acquired(tenant)

        results = await asyncio.gather(*(start(t) for t in tenants), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _balance_leases(self, connection: AbstractConnection, taken: list[str]) -> None:
        now = self._clock()
        owners = self.assignment()
        held = self._held_by_others(now)
        wanted: list[str] = []
        for tenant in self._tenants:
            preferred = owners[tenant]
            if tenant in self.owned:
                if preferred != self.instance_id and self._may_hand_over(tenant, preferred, now):
                    await self._release(connection, tenant, f"handing over to {preferred}")
                continue
            if tenant in held:  # its owner is alive: trying would only be refused
                self._free_since.pop(tenant, None)
                self._refused.pop(tenant, None)
                continue
            if now < self._refused.get(tenant, (0, 0.0))[1]:
                continue
            free_for = now - self._free_since.setdefault(tenant, now)
            if preferred == self.instance_id or free_for >= 2 * self._member_timeout_s:
                wanted.append(tenant)
        for i in range(0, len(wanted), _LEASES_AT_ONCE):
            batch = wanted[i : i + _LEASES_AT_ONCE]
            for tenant, held_now in zip(
                batch, await self._declare_many(connection, batch), strict=True
            ):
                if self._took(tenant, held_now):
                    taken.append(tenant)

    def _may_hand_over(self, tenant: str, preferred: str, now: float) -> bool:
        """Only to an instance that has been around a while and was heard from, recently,
        since this one took the PBX (not one that died just before)."""
        seen = self._members.get(preferred, (float("-inf"),))[0]
        settled = now - self._first_seen.get(preferred, now) >= 2 * self._member_timeout_s
        return (
            settled
            and seen > self._acquired_at.get(tenant, float("inf"))
            and now - seen <= self._hold_timeout_s
        )

    async def _declare(self, connection: AbstractConnection, tenant: str) -> bool:
        """Hold the tenant's exclusive lease queue on this connection; False if someone has it.
        One channel serves every declaration until a refusal closes it (a channel costs the
        broker processes; opening one per PBX made a thousand-PBX start-up slow)."""
        if self._lease_channel is None or self._lease_channel.is_closed:
            self._lease_channel = await connection.channel()
        try:
            await self._lease_channel.declare_queue(f"{LEASE_PREFIX}{tenant}", exclusive=True)
        except aio_pika.exceptions.ChannelClosed:  # RESOURCE_LOCKED: another instance owns it
            self._lease_channel = None
            return False
        return True

    async def _declare_many(self, connection: AbstractConnection, tenants: list[str]) -> list[bool]:
        """:meth:`_declare` for each tenant, in one round trip while nobody refuses: all but the
        last written without waiting for an answer, the last one answered. A refusal closes the
        channel, and which of the batch were held by then is not known: each is then declared
        again on its own (a lease this connection holds already is simply confirmed)."""
        if len(tenants) < 2:
            return [await self._declare(connection, tenant) for tenant in tenants]
        if self._lease_channel is None or self._lease_channel.is_closed:
            self._lease_channel = await connection.channel()
        channel = self._lease_channel
        try:
            underlay: Any = await channel.get_underlay_channel()  # (`nowait` is not in its ABC)
            for tenant in tenants[:-1]:
                await underlay.queue_declare(f"{LEASE_PREFIX}{tenant}", exclusive=True, nowait=True)
            await channel.declare_queue(f"{LEASE_PREFIX}{tenants[-1]}", exclusive=True)
        except (aio_pika.exceptions.ChannelClosed, aiormq.exceptions.ChannelInvalidStateError):
            if self._lease_channel is channel:
                self._lease_channel = None
            return [await self._declare(connection, tenant) for tenant in tenants]
        return [True] * len(tenants)

    def _took(self, tenant: str, taken: bool) -> bool:
        """Record the outcome of a try for the PBX's lease (refused: tried again later)."""
        if not taken:
            self._free_since.pop(tenant, None)
            refusals = self._refused.get(tenant, (0, 0.0))[0] + 1
            pause = min(
                self._acquire_interval_s * 2 ** (refusals - 1),
                REFUSED_BACKOFF_MAX * self._member_timeout_s,
            )
            self._refused[tenant] = (refusals, self._clock() + pause)
            self._log.debug("lease_refused", tenant=tenant, retry_in_s=round(pause, 1))
            return False
        self.owned.add(tenant)
        self._acquired_at[tenant] = self._clock()
        self._free_since.pop(tenant, None)
        self._refused.pop(tenant, None)
        LEASES_HELD.set(len(self.owned))
        self._log.info("lease_acquired", tenant=tenant)
        return True

    async def _release(self, connection: AbstractConnection, tenant: str, reason: str) -> None:
        self.owned.discard(tenant)
        LEASES_HELD.set(len(self.owned))
        self._log.info("lease_released", tenant=tenant, reason=reason)
        await self._on_lost(tenant)  # stop using the PBX before anyone else may take it
        if self._lease_channel is None or self._lease_channel.is_closed:
            self._lease_channel = await connection.channel()
        await self._lease_channel.queue_delete(f"{LEASE_PREFIX}{tenant}")

    async def _lose_all(self) -> None:
        """Every lease went with the connection: stop using every PBX at once (one after the
        other, N slow hand-overs would outlast the grace before others take them)."""
        lost = sorted(self.owned)
        self.owned.clear()
        LEASES_HELD.set(0)
        for tenant in lost:
            self._log.warning("lease_lost", tenant=tenant, reason="lease connection down")
        results = await asyncio.gather(*(self._on_lost(t) for t in lost), return_exceptions=True)
        for tenant, result in zip(lost, results, strict=True):
            if isinstance(result, BaseException):
                self._log.warning("give_up_failed", tenant=tenant, error=repr(result))
