"""Shared fixtures: the real local RabbitMQ, unique names, condition waits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

#: Fixtures of the integration suite (sims, a running gateway, a command bus), shared by the
#: shared integration tests, each vendor's tests and the vendor contract test.
pytest_plugins = ["tests.integration.fixtures"]

AMQP_URL = os.environ.get("GATEWAY_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll ``condition`` until true; fail the test with a clear message after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            result = condition()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return
            await asyncio.sleep(interval)


_UNIQUES: set[str] = set()


@pytest.fixture
def unique() -> str:
    value = uuid.uuid4().hex[:10]
    _UNIQUES.add(value)
    return value


@pytest.fixture(scope="session", autouse=True)
def _leave_no_queues_behind() -> Iterator[None]:
    """Gateways under test declare durable per-tenant queues (commands, ledger stream, shared
    state, leases); at the end, delete every queue named after a tenant this session made up."""
    yield
    if not _UNIQUES:
        return
    try:
        listed = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return
    names = [n for n in listed if any(u in n for u in _UNIQUES)]
    if names:
        with contextlib.suppress(Exception):  # tidying up must never fail the run
            asyncio.run(_delete_queues(names))


async def _delete_queues(names: list[str]) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        for name in names:
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
            with contextlib.suppress(Exception):
                await channel.close()
    finally:
        await connection.close()


@pytest.fixture
async def amqp() -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        yield connection
    finally:
        await connection.close()
