"""Lease decisions without a broker: no tries against a live holder, back-off after a refusal,
no hand-over to an instance that has not been heard from since the PBX was taken."""

from __future__ import annotations

from typing import Any

import aio_pika
import orjson

from gateway.bus.lease import LEASE_PREFIX, LeaseManager


class Locks:
    """Exclusive lease queues as the broker keeps them; every refusal counted (each one is a
    ``resource_locked`` error in the broker's log)."""

    def __init__(self) -> None:
        self.holders: dict[str, str] = {}
        self.refused = 0

    def connection(self, instance: str) -> Any:
        locks = self

        class Channel:
            """A refusal closes the channel; declarations written without waiting
            (``nowait``) are not answered, a refusal among them shows at the next call."""

            def __init__(self) -> None:
                self.is_closed = False

            def _declare(self, name: str) -> bool:
                if self.is_closed:
                    return False  # (the broker ignores what comes on a closed channel)
                holder = locks.holders.setdefault(name, instance)
                if holder != instance:
                    locks.refused += 1
                    self.is_closed = True
                    return False
                return True

            async def declare_queue(self, name: str, exclusive: bool = False) -> None:
                if not self._declare(name):
                    raise aio_pika.exceptions.ChannelClosed(405, "RESOURCE_LOCKED")

            async def get_underlay_channel(self) -> Any:
                channel = self

                class Underlay:
                    async def queue_declare(
                        self, name: str, *, exclusive: bool = False, nowait: bool = False
                    ) -> None:
                        assert nowait
                        channel._declare(name)

                return Underlay()

            async def queue_delete(self, name: str) -> None:
                locks.holders.pop(name, None)

        class Connection:
            async def channel(self) -> Channel:
                return Channel()

        return Connection()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Presence:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = orjson.dumps(body)


def manager(instance: str, tenants: list[str], clock: Clock, log: list[str]) -> LeaseManager:
    async def acquired(tenant: str) -> None:
        log.append(f"{instance} took {tenant}")

    async def lost(tenant: str) -> None:
        log.append(f"{instance} gave {tenant}")

    return LeaseManager(
        "amqp://x/",
        tenants,
        instance_id=instance,
        on_acquired=acquired,
        on_lost=lost,
        heartbeat_s=1.0,
        member_timeout_s=3.0,
        acquire_interval_s=1.0,
        clock=clock,
    )


async def heard(m: LeaseManager, instance: str, tenants: list[str], holds: list[str]) -> None:
    await m._on_presence(Presence({"instance": instance, "tenants": tenants, "holds": holds}))  # type: ignore[arg-type]


async def test_a_pbx_held_by_a_live_instance_is_never_tried() -> None:
    clock, locks, log = Clock(), Locks(), []
    tenants = [f"pbx-{n}" for n in range(6)]
    a = manager("gw-a", tenants, clock, log)
    for tenant in tenants:
        locks.holders[f"{LEASE_PREFIX}{tenant}"] = "gw-b"
    for _ in range(120):  # two minutes of balancing, the holder heard every second
        await heard(a, "gw-b", tenants, tenants)
        await a._balance(locks.connection("gw-a"))
        clock.now += 1.0
    assert locks.refused == 0 and not a.owned


async def test_refused_tries_back_off_when_nobody_says_they_hold_the_pbx() -> None:
    clock, locks, log = Clock(), Locks(), []
    a = manager("gw-a", ["pbx-1"], clock, log)
    locks.holders[f"{LEASE_PREFIX}pbx-1"] = "a-connection-the-broker-has-not-closed-yet"
    for _ in range(120):
        await a._balance(locks.connection("gw-a"))
        clock.now += 1.0
    assert locks.refused <= 14, "one try per 12 s once backed off (was one per 7 s)"
    del locks.holders[f"{LEASE_PREFIX}pbx-1"]
    for _ in range(13):
        await a._balance(locks.connection("gw-a"))
        clock.now += 1.0
    assert a.owned == {"pbx-1"}


async def test_no_hand_over_to_an_instance_not_heard_from_since_the_takeover() -> None:
    """gw-b was killed; its last heartbeat is still within the member timeout when gw-a takes
    its PBXs: gw-a must keep them, not hand them back to the dead instance."""
    clock, locks, log = Clock(), Locks(), []
    tenants = [f"pbx-{n}" for n in range(4)]
    a = manager("gw-a", tenants, clock, log)
    connection = locks.connection("gw-a")
    for _ in range(10):  # both up for a while: gw-b holds its share
        await heard(a, "gw-b", tenants, [t for t in tenants if a.assignment()[t] == "gw-b"])
        await a._balance(connection)
        clock.now += 1.0
    theirs = {t for t in tenants if a.assignment()[t] == "gw-b"}
    assert theirs and a.owned == set(tenants) - theirs
    for tenant in theirs:
        locks.holders[f"{LEASE_PREFIX}{tenant}"] = "gw-b"
    await heard(a, "gw-b", tenants, sorted(theirs))  # its last heartbeat
    for tenant in theirs:  # kill -9: the broker frees its lease queues at once
        del locks.holders[f"{LEASE_PREFIX}{tenant}"]
    for _ in range(20):  # gw-b never heard again
        clock.now += 0.5
        await a._balance(connection)
    assert a.owned == set(tenants)
    assert not [line for line in log if "gave" in line], log


async def test_hand_over_to_an_instance_alive_since_the_takeover() -> None:
    clock, locks, log = Clock(), Locks(), []
    tenants = [f"pbx-{n}" for n in range(4)]
    a = manager("gw-a", tenants, clock, log)
    connection = locks.connection("gw-a")
    for _ in range(5):  # alone: takes everything
        await a._balance(connection)
        clock.now += 1.0
    assert a.owned == set(tenants)
    for _ in range(10):  # gw-b starts and stays: it gets its share once settled
        await heard(a, "gw-b", tenants, [])
        await a._balance(connection)
        clock.now += 1.0
    assert len(a.owned) == 2 and any("gave" in line for line in log)


async def test_the_assignment_follows_membership_changes_though_it_is_reused_between_them() -> None:
    """Heartbeats that announce nothing new reuse the last assignment; a member announcing
    other PBXs, one timing out, or one joining changes it, as a fresh computation would."""
    from gateway.bus.lease import assign

    clock, log = Clock(), []
    tenants = [f"pbx-{n}" for n in range(40)]
    a = manager("gw-a", tenants, clock, log)
    await heard(a, "gw-b", tenants, [])
    first = a.assignment()
    await heard(a, "gw-b", tenants, [])
    assert a.assignment() is first, "nothing new: reused"
    assert first == assign({"gw-a": frozenset(tenants), "gw-b": frozenset(tenants)})
    await heard(a, "gw-b", tenants[:10], [])  # gw-b now only configured for ten of them
    fewer = a.assignment()
    assert fewer == assign({"gw-a": frozenset(tenants), "gw-b": frozenset(tenants[:10])})
    await heard(a, "gw-c", tenants, [])
    three = a.assignment()
    assert set(three.values()) == {"gw-a", "gw-b", "gw-c"}
    clock.now += 3.5  # both others time out
    assert a.assignment() == dict.fromkeys(tenants, "gw-a")
    # our own heartbeat, echoed by the fanout exchange, changes nothing
    own = {"instance": "gw-a", "tenants": tenants, "holds": []}
    a._own()
    a._announced = (frozenset(), orjson.dumps(own))
    await a._on_presence(Presence(own))  # type: ignore[arg-type]
    assert a.assignment() == dict.fromkeys(tenants, "gw-a")


async def test_leases_are_taken_in_batches_and_a_refusal_among_them_costs_only_its_pbx() -> None:
    """Many PBXs: their lease queues are declared back to back; one held elsewhere (nobody
    said so) closes the channel, and the batch is tried again one by one: every other PBX is
    taken, the refused one backs off as before."""
    clock, locks, log = Clock(), Locks(), []
    tenants = [f"pbx-{n}" for n in range(200)]
    a = manager("gw-a", tenants, clock, log)
    locks.holders[f"{LEASE_PREFIX}pbx-70"] = "a-connection-the-broker-has-not-closed-yet"
    await a._balance(locks.connection("gw-a"))
    assert a.owned == set(tenants) - {"pbx-70"}
    assert sorted(log) == sorted(f"gw-a took {t}" for t in tenants if t != "pbx-70")
    assert locks.refused == 2  # in its batch, then on its own
    assert "pbx-70" in a._refused
