"""A stop reaches the JetStream read loop even when nats-py swallows it: its fetch waits with
``asyncio.wait_for``, which on Python 3.11 returns a message that arrives as it is cancelled
instead of raising. Without care the link read on and the gateway never stopped."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from nats.errors import TimeoutError as NatsTimeout

from gateway.connectors.xswitch.link import NatsSession, serve


class _Msg:
    data = b"{}"

    @property
    def metadata(self) -> Any:
        raise ValueError("not a JetStream message")

    async def ack(self) -> None:
        return None


class _SwallowingPull:
    """A pull subscription whose fetch, cancelled, returns a message as nats-py's may."""

    def __init__(self) -> None:
        self.fetching = asyncio.Event()

    async def fetch(self, batch: int, timeout: float) -> list[_Msg]:
        self.fetching.set()
        try:
            await asyncio.sleep(timeout)
        except asyncio.CancelledError:
            return [_Msg()]  # the stop is swallowed
        raise NatsTimeout


class _Connection:
    is_closed = False


async def test_a_stop_during_a_fetch_ends_the_read_loop() -> None:
    pull = _SwallowingPull()
    session = NatsSession(nc=cast(Any, _Connection()), jetstream=True, pull=cast(Any, pull))
    handled: list[bytes] = []

    async def handle(body: bytes, position: str | None) -> None:
        handled.append(body)

    task = asyncio.create_task(serve(session, handle))
    await asyncio.wait_for(pull.fetching.wait(), 5)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done == {task} and task.cancelled()
    assert handled == []  # what the abandoned fetch took is not acked: it comes again
