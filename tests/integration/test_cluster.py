"""A real 3-node RabbitMQ cluster (started by the fixture, the machine's broker untouched):
quorum queues, failover of the gateway to another node, two instances on two nodes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import pytest

from gateway.bus.connection import FailoverConnection
from gateway.bus.topology import TopologyMismatch
from gateway.settings import CommandSettings
from tests.conftest import wait_for
from tests.integration.brokers import RabbitNode, destroy_all, start_cluster
from tests.integration.failover import Client, error_lines, node_kill_run, urls
from tests.integration.fixtures import pbx_settings, running_gateway
from tests.yeastar.test_yeastar_events import account

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[RabbitNode]]:
    nodes = start_cluster(3)
    try:
        yield nodes
    finally:
        destroy_all(nodes)


@contextlib.asynccontextmanager
async def node_stopped(node: RabbitNode) -> AsyncIterator[None]:
    await node.stop_app()
    try:
        yield
    finally:
        await node.start_app()


async def test_gateway_moves_to_another_node_and_loses_nothing(
    cluster, sim_factory, unique
) -> None:
    sim = await sim_factory(trap_rate=0.0)
    tenant = f"k{unique}"
    commands = CommandSettings(exchange=f"test-{unique}.commands", execute_timeout_s=5)
    client = Client(cluster[2], tenant, commands.exchange)
    await client.start()
    bus = {"url": urls(cluster), "queue_type": "quorum", "reconnect_interval_s": 0.5}
    sent_commands: list[str] = []
    stop = asyncio.Event()
    failover_s = float("nan")

    async def traffic() -> None:
        while not stop.is_set():
            await sim.run_traffic(calls=2, concurrency=2)

    async def load() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                sent_commands.append(
                    await client.command("call.dial", {"caller": "2001", "callee": "2002"})
                )
            await asyncio.sleep(0.2)

    try:
        async with running_gateway(pbx_settings(sim, tenant), commands=commands, bus=bus) as app:
            connection = app._connection
            assert isinstance(connection, FailoverConnection)
            await wait_for(lambda: app.connectors[0].health()["state"] == "connected", 20)
            first = connection.address
            assert first == f"127.0.0.1:{cluster[0].port}"
            tasks = [asyncio.create_task(traffic()), asyncio.create_task(load())]
            try:
                await wait_for(lambda: len(client.results) >= 3, timeout=30)
                victim = cluster[0]
                stopped_at = time.monotonic()
                async with node_stopped(victim):
                    # moved: connected elsewhere, and a command sent now is answered
                    await wait_for(
                        lambda: connection.connected.is_set() and connection.address != first,
                        timeout=30,
                    )
                    probe = await client.command("call.dial", {"caller": "2001", "callee": "2003"})
                    sent_commands.append(probe)
                    await wait_for(lambda: probe in client.results, timeout=45)
                    failover_s = time.monotonic() - stopped_at
                    await asyncio.sleep(2)  # traffic goes on without the node
                    owned_during = set(app.owned)
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
            await wait_for(lambda: all(c in client.results for c in sent_commands), timeout=60)
            assert app.publisher is not None
            publisher = app.publisher
            await wait_for(lambda: publisher.backlog == 0, timeout=60)
            await wait_for(lambda: account(sim, client.collected)["lost"] == 0, timeout=30)
    finally:
        stop.set()
        await client.close()
    counts = account(sim, client.collected)
    answered = len([c for c in sent_commands if c in client.results])
    executed = sim.control_calls["call/dial"]
    ok = sum(1 for c in sent_commands if client.results.get(c, {}).get("ok"))
    print(
        f"\ncluster failover: events sent={counts['sent']} received={counts['published']} "
        f"lost={counts['lost']} duplicates={counts['duplicates']} commands sent="
        f"{len(sent_commands)} executed={executed} answered={answered} ok={ok} "
        f"failover_s={failover_s:.1f}"
    )
    assert counts["lost"] == 0 and counts["unexpected"] == 0
    assert answered == len(sent_commands)
    assert executed <= len(sent_commands), "no command executed twice"
    assert ok <= executed
    assert owned_during == {tenant}, "the lease moved with the gateway: one owner"


async def test_node_kill_during_a_command_burst_stalls_briefly_and_loses_nothing(
    cluster, tmp_path
) -> None:
    """``kill -9`` of the gateway's node while a PBX sends calls and a ``call.dial`` goes out
    every 200 ms: events flow again within seconds, nothing is lost or dialled twice, no command
    that never reached the PBX is answered "outcome unknown", and nothing is logged as an error.
    The goal is 3 s of failover; the bound here is looser for a loaded test machine."""
    row = await asyncio.wait_for(node_kill_run(cluster, 1, tmp_path / "gateway.log"), 420)
    print(f"\nnode kill: {row}")
    errors = error_lines(tmp_path / "gateway.log")
    assert row["failover_s"] <= 5.0, row
    assert row["events_lost"] == 0, row
    assert row["dialled_twice"] == 0, row
    assert row["unknown_never_sent"] == 0, row
    assert errors == [], errors[:10]


async def test_two_instances_on_two_nodes_split_the_pbxs(cluster, sim_factory, unique) -> None:
    sims = [await sim_factory() for _ in range(4)]
    pbxs = [pbx_settings(sim, f"s{unique}-{n}") for n, sim in enumerate(sims)]
    commands = CommandSettings(exchange=f"test-{unique}.commands")
    a_bus = {"url": urls(cluster), "queue_type": "quorum"}
    b_bus = {"url": urls([cluster[1], cluster[2], cluster[0]]), "queue_type": "quorum"}
    async with (
        running_gateway(*pbxs, commands=commands, bus=a_bus) as a,
        running_gateway(*pbxs, commands=commands, bus=b_bus) as b,
    ):
        assert isinstance(a._connection, FailoverConnection)
        assert isinstance(b._connection, FailoverConnection)
        assert a._connection.address != b._connection.address
        await wait_for(
            lambda: len(a.owned) == 2 and len(b.owned) == 2 and not (a.owned & b.owned),
            timeout=30,
        )
        assert a.owned | b.owned == {p.tenant for p in pbxs}


async def test_a_queue_of_the_other_type_is_a_clear_start_up_error(
    cluster, sim_factory, unique
) -> None:
    sim = await sim_factory()
    commands = CommandSettings(exchange=f"test-{unique}.commands")
    bus = {"url": cluster[1].url, "queue_type": "classic"}
    connection = await aio_pika.connect(cluster[1].url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(
            f"{commands.exchange}.dead", durable=True, arguments={"x-queue-type": "quorum"}
        )
        with pytest.raises(TopologyMismatch, match=r"bus\.queue_type"):
            async with running_gateway(pbx_settings(sim, f"q{unique}"), commands=commands, bus=bus):
                pass
    finally:
        with contextlib.suppress(Exception):
            channel = await connection.channel()
            await channel.queue_delete(f"{commands.exchange}.dead")
        await connection.close()


async def test_two_instances_starting_together_on_a_fresh_ledger_stream(
    cluster, sim_factory, unique
) -> None:
    """Both declare the (new) ledger stream at the same moment, on different nodes: RabbitMQ may
    answer one ``stream_not_found`` and close its connection; neither instance may fail."""
    sims = [await sim_factory() for _ in range(2)]
    pbxs = [pbx_settings(sim, f"r{unique}-{n}") for n, sim in enumerate(sims)]
    commands = CommandSettings(exchange=f"test-{unique}.commands")  # a stream nobody declared
    buses = [
        {"url": urls(cluster), "queue_type": "quorum", "reconnect_interval_s": 0.5},
        {"url": urls([cluster[1], *cluster[2:], cluster[0]]), "queue_type": "quorum"},
    ]
    apps: list[Any] = []
    release = asyncio.Event()

    async def instance(bus: dict[str, Any]) -> None:
        async with running_gateway(*pbxs, commands=commands, bus=bus) as app:
            apps.append(app)
            await release.wait()

    tasks = [asyncio.create_task(instance(bus)) for bus in buses]
    try:
        await wait_for(lambda: len(apps) == 2 or any(t.done() for t in tasks), timeout=60)
        for task in tasks:
            if task.done():
                task.result()  # a start-up failure shows here
        await wait_for(lambda: sum(len(a.owned) for a in apps) == len(pbxs), timeout=30)
        assert all(a.phase == "running" for a in apps)
    finally:
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)
