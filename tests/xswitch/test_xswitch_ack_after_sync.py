"""``link.serve`` on the local NATS server: a JetStream message is acked only after
``sync`` made its events durable (never when ``sync`` raises: it comes again), and a drain of
the core-NATS queue yields to the event loop on a large backlog."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from pydantic import SecretStr

from gateway.connectors.xswitch import link
from gateway.connectors.xswitch.link import NatsSession, open_session, serve
from gateway.connectors.xswitch.settings import CTRL_SUBJECT, XSwitchPbxSettings
from tests.conftest import wait_for
from tests.xswitch.link_helpers import stream_removed

pytestmark = pytest.mark.integration

NATS_URL = "nats://127.0.0.1:4222"


def _pbx(unique: str, **overrides: Any) -> XSwitchPbxSettings:
    values: dict[str, Any] = {
        "tenant": f"acks{unique}",
        "vendor": "xswitch",
        "base_url": "http://127.0.0.1:9",  # no REST here: only the NATS session is used
        "dev_key": SecretStr("unused"),
        "nats_url": NATS_URL,
        "subject_prefix": f"acks{unique}.",
        "request_timeout_s": 5.0,
        "ack_wait_s": 1.0,  # an unacked message comes again soon
    }
    values.update(overrides)
    return XSwitchPbxSettings(**values)


async def _publish(pbx: XSwitchPbxSettings, count: int) -> None:
    nc = await nats.connect(servers=[NATS_URL], allow_reconnect=False)
    try:
        for i in range(count):
            await nc.publish(pbx.subject_prefix + CTRL_SUBJECT, f"m{i}".encode())
        await nc.flush()
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def _session(pbx: XSwitchPbxSettings) -> AsyncIterator[NatsSession]:
    async with stream_removed(pbx):
        session = await open_session(pbx)
        try:
            yield session
        finally:
            await session.close()


@contextlib.asynccontextmanager
async def _serving(coro: Any) -> AsyncIterator[asyncio.Task[str]]:
    task: asyncio.Task[str] = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 5)


async def _consumer(session: NatsSession) -> Any:
    assert session.pull is not None
    return await session.pull.consumer_info()


async def _settled(session: NatsSession) -> bool:
    info = await _consumer(session)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_jetstream_acks_only_after_sync(unique: str) -> None:
    pbx = _pbx(unique, jetstream="on")
    count = 5
    async with _session(pbx) as session:
        assert session.jetstream and session.pull is not None
        await _publish(pbx, count)
        await wait_for(lambda: _pending_is(session, count))

        handled: list[tuple[bytes, str | None]] = []
        synced_at: list[int] = []  # how many messages were handled at each sync
        gate = asyncio.Event()

        async def handle(body: bytes, position: str | None) -> None:
            handled.append((body, position))
            if len(handled) == 1:
                await gate.wait()  # held: the batch is fetched, nothing synced yet

        async with _serving(serve(session, handle, sync=lambda: synced_at.append(len(handled)))):
            await wait_for(lambda: len(handled) == 1)
            info = await _consumer(session)
            assert synced_at == []
            assert info.num_ack_pending >= 1  # delivered to the gateway ...
            assert info.ack_floor.stream_seq == 0  # ... and none of it acked before sync
            gate.set()
            await wait_for(lambda: _settled(session))
            info = await _consumer(session)

        assert [body for body, _ in handled] == [f"m{i}".encode() for i in range(count)]
        assert all(p is not None and p.startswith(f"{pbx.stream_name()}:") for _, p in handled)
        assert synced_at and synced_at[-1] == count
        assert info.ack_floor.stream_seq == count
        assert info.num_redelivered == 0


async def test_jetstream_never_acks_when_sync_raises(unique: str) -> None:
    pbx = _pbx(unique, jetstream="on")
    count = 5
    async with _session(pbx) as session:
        await _publish(pbx, count)
        await wait_for(lambda: _pending_is(session, count))

        first: list[str | None] = []
        failed_syncs: list[int] = []

        async def handle_first(body: bytes, position: str | None) -> None:
            first.append(position)

        def failing_sync() -> None:
            failed_syncs.append(len(first))
            raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            async with asyncio.timeout(10):
                await serve(session, handle_first, sync=failing_sync)
        assert failed_syncs == [len(first)] and first
        info = await _consumer(session)
        assert info.ack_floor.stream_seq == 0  # not one acked
        assert info.num_ack_pending == len(first)

        again: list[str | None] = []
        synced: list[int] = []

        async def handle_again(body: bytes, position: str | None) -> None:
            again.append(position)

        async with _serving(serve(session, handle_again, sync=lambda: synced.append(len(again)))):
            # after ack_wait the unacked messages come again (the same stream positions), and
            # any not fetched before; all acked this time
            await wait_for(lambda: set(first) <= set(again) and len(set(again)) == count)
            await wait_for(lambda: _settled(session))
        assert synced


async def _pending_is(session: NatsSession, count: int) -> bool:
    return int((await _consumer(session)).num_pending or 0) == count


async def test_core_drain_yields_to_the_loop(unique: str) -> None:
    pbx = _pbx(unique, jetstream="off")
    count = 250
    async with _session(pbx) as session:
        assert not session.jetstream
        await _publish(pbx, count)
        await wait_for(lambda: session.queue.qsize() == count)

        handled: list[bytes] = []
        seen: list[int] = []

        async def handle(body: bytes, position: str | None) -> None:
            handled.append(body)  # never yields, like the spool path

        async def probe() -> None:
            seen.append(len(handled))

        async with _serving(serve(session, handle)):
            # scheduled after serve's first step: it runs only when the drain yields
            probe_task = asyncio.ensure_future(probe())
            await wait_for(lambda: len(handled) == count)
            await probe_task
        assert seen == [link.DRAIN_YIELD_EVERY]
        assert handled == [f"m{i}".encode() for i in range(count)]
