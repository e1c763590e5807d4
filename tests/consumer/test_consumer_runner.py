"""The consumer library against the real RabbitMQ: the documentation's example, ack after handling,
bounded retries then the dead-letter queue with the reason, de-duplication, gaps surfaced."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from gateway.consumer import REASON_HEADER, Consumer, Event
from tests.conftest import AMQP_URL, REPO_ROOT, wait_for
from tests.consumer.factory import cdr, gap, publish

pytestmark = pytest.mark.integration


def docs_example() -> str:
    text = (REPO_ROOT / "docs/consuming/library.md").read_text()
    found = re.search(r"<!-- consumer-example:[^\n]*-->\n```python\n(.*?)```", text, re.S)
    assert found, "the docs' consumer example is marked <!-- consumer-example: ... -->"
    return found.group(1)


@contextlib.asynccontextmanager
async def queues_deleted(amqp: AbstractRobustConnection, *names: str) -> AsyncIterator[None]:
    try:
        yield
    finally:
        channel = await amqp.channel()
        for name in names:
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
        with contextlib.suppress(Exception):
            await channel.close()


async def dead_letters(amqp: AbstractRobustConnection, queue: str, expected: int) -> list[Any]:
    channel = await amqp.channel()
    found: list[Any] = []

    async def take() -> bool:
        message = await (await channel.declare_queue(queue, durable=True)).get(fail=False)
        if message is not None:
            await message.ack()
            found.append(message)
        return len(found) >= expected

    await wait_for(take, timeout=30, interval=0.05)
    await channel.close()
    return found


async def test_the_readme_consumer_example_runs(
    amqp: AbstractRobustConnection, unique: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tenant, queue = f"ex-{unique}", f"crm-cdrs-{unique}"
    source = docs_example().replace('"crm-cdrs"', f'"{queue}"')
    source = source.replace('"amqp://guest:guest@127.0.0.1/"', repr(AMQP_URL))
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(source, str(tmp_path / "example.py"), "exec"), namespace)
    stop = asyncio.Event()
    out: list[str] = []
    async with queues_deleted(amqp, queue, f"{queue}.dead"):
        task = asyncio.create_task(namespace["main"](stop))
        try:
            await wait_for(lambda: _queue_exists(amqp, queue), timeout=15)
            leg1, leg2 = cdr(tenant, "call-1", leg=1), cdr(tenant, "call-1", leg=2)
            await publish(amqp, [leg1, leg2, leg1, gap(tenant)])  # leg1 twice: a redelivery

            def printed() -> bool:
                out.extend(capsys.readouterr().out.splitlines())
                return sum(line.startswith(tenant) for line in out) >= 3

            await wait_for(printed, timeout=20)
            await asyncio.sleep(0.3)  # a copy handled twice would print a fourth line now
            out.extend(capsys.readouterr().out.splitlines())
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    mine = [line for line in out if line.startswith(tenant)]
    assert mine[:2] == [
        f"{tenant} call call-1: 1 leg(s), talk 21 s",
        f"{tenant} call call-1: 2 leg(s), talk 43 s",
    ]
    assert len(mine) == 3 and "may be missing" in mine[2], "the gap too, though only CDRs bound"


async def _queue_exists(amqp: AbstractRobustConnection, name: str) -> bool:
    channel = await amqp.channel()
    try:
        await channel.declare_queue(name, passive=True)
        return True
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def test_failing_handler_is_retried_then_dead_lettered_with_its_reason(
    amqp: AbstractRobustConnection, unique: str
) -> None:
    tenant, queue = f"rt-{unique}", f"rt-{unique}"
    attempts: Counter[str] = Counter()
    handled: list[str] = []

    async def handler(event: Event[Any]) -> None:
        attempts[event.id] += 1
        if event.subject == "poison":
            raise RuntimeError("the CRM says no")
        handled.append(event.id)

    consumer = Consumer(
        AMQP_URL, queue, [f"{tenant}.cdr.created"], max_attempts=3, retry_delay_s=0.05
    )
    stop = asyncio.Event()
    async with queues_deleted(amqp, queue, f"{queue}.dead"), consumer:
        task = asyncio.create_task(consumer.run(handler, stop))
        try:
            good, poison = cdr(tenant, "good"), cdr(tenant, "poison")
            await publish(amqp, [poison, good])
            await publish(amqp, [b"<xml>not an event</xml>"], f"{tenant}.cdr.created")
            await publish(amqp, [good])  # a copy: skipped, acked
            dead = await dead_letters(amqp, f"{queue}.dead", 2)
            await wait_for(lambda: consumer.stats.duplicates >= 1, timeout=10)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    assert handled == [good.id] and attempts[poison.id] == 3
    reasons = {m.body: m.headers[REASON_HEADER] for m in dead}
    why = "handler failed 3 times, last: RuntimeError: the CRM says no"
    assert reasons[poison.to_json()] == why
    assert reasons[b"<xml>not an event</xml>"].startswith("not a gateway event: not JSON")
    assert consumer.stats.handled == 1 and consumer.stats.dead_lettered == 2
