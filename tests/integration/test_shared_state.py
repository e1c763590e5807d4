"""PBX state shared through RabbitMQ: a clean stop of many PBXs hands every state over."""

from __future__ import annotations

import asyncio

import pytest
from aio_pika.abc import AbstractRobustConnection

from gateway.bus.shared_state import STATE_PREFIX, SharedState

pytestmark = pytest.mark.integration


async def test_many_states_pushed_at_once_all_arrive_within_the_timeout(
    amqp: AbstractRobustConnection, unique: str
) -> None:
    """Hundreds of pushes at once (what a clean stop does) are pipelined on the one channel,
    not queued behind each other: all confirmed within the per-PBX timeout, each readable by
    the next owner (and still there after it read it)."""
    tenants = [f"{unique}-{n}" for n in range(300)]
    shared = SharedState(amqp)
    try:
        for tenant in tenants:  # the start-up reads each one first (and declares its queue)
            assert await shared.pull(tenant) is None
        async with asyncio.timeout(5):
            await asyncio.gather(*(shared.push(t, {"watermark": t}) for t in tenants))
        reader = SharedState(amqp)
        try:
            for tenant in tenants[:: 37]:
                pulled = await reader.pull(tenant)
                assert pulled is not None and pulled[0] == {"watermark": tenant}
                assert (await reader.pull(tenant)) is not None  # left for the next owner too
        finally:
            await reader.close()
    finally:
        channel = await amqp.channel()
        for tenant in tenants:
            await channel.queue_delete(f"{STATE_PREFIX}{tenant}")
        await channel.close()
        await shared.close()
