"""``gateway tail`` against a running demo: its lines, its JSON, Ctrl-C, nothing left behind."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import aio_pika
import pytest

from gateway.tail import TailError, render, routing_keys
from tests.conftest import AMQP_URL, gateway_cli, wait_for

CLOSED = "amqp://guest:guest@127.0.0.1:1/"


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway.cli", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _lines(proc: asyncio.subprocess.Process, into: list[str]) -> None:
    assert proc.stdout is not None
    async for raw in proc.stdout:
        into.append(raw.decode().rstrip("\n"))


@pytest.mark.integration
async def test_tail_follows_a_running_demo_and_leaves_nothing_behind(unique: str) -> None:
    tenant = f"tail-{unique}"
    demo = await _spawn("demo", "--tenant", tenant, "--calls-per-second", "3", "--seed", "5")
    lines: list[str] = []
    cdrs: list[str] = []
    tail = await _spawn("tail", "--tenant", tenant)
    tail_json = await _spawn("tail", "--tenant", tenant, "--type", "cdr.created", "--json")
    readers = [
        asyncio.create_task(_lines(tail, lines)),
        asyncio.create_task(_lines(tail_json, cdrs)),
    ]
    try:
        await wait_for(lambda: len(cdrs) >= 2 and len(lines) >= 10, timeout=45)
        for proc in (tail, tail_json):
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), 15)
            assert proc.returncode == 0
        await asyncio.gather(*readers)
    finally:
        for proc in (tail, tail_json, demo):
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                await asyncio.wait_for(proc.wait(), 30)
    assert any(" call.ringing " in line for line in lines), lines
    assert any(" cdr.created " in line and "disposition=" in line for line in lines), lines
    events = [json.loads(line) for line in cdrs]
    assert {e["type"] for e in events} == {"cdr.created"} and {e["tenant"] for e in events} == {
        tenant
    }
    assert tail.stderr is not None
    told = (await tail.stderr.read()).decode().strip().splitlines()
    assert len(told) == 1 and f"'{tenant}.#'" in told[0], told
    queue = told[0].split("temporary queue ")[1].split()[0]
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue(queue, passive=True)
    finally:
        await connection.close()


def test_tail_without_a_broker_is_one_line_and_status_4() -> None:
    result = gateway_cli("tail", "--amqp-url", CLOSED)
    assert result.returncode == 4
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert "RabbitMQ unreachable" in result.stderr


@pytest.mark.integration
def test_tail_on_a_broker_without_the_exchange_says_so(unique: str) -> None:
    result = gateway_cli("tail", "--exchange", f"absent-{unique}")
    assert result.returncode == 4
    assert f"no exchange 'absent-{unique}'" in result.stderr


def test_bindings_and_bad_bodies() -> None:
    assert routing_keys("*", ["#"]) == ["*.#"]
    assert routing_keys("acme", ["call.*", "cdr.created", "call.*"]) == [
        "acme.call.*",
        "acme.cdr.created",
    ]
    with pytest.raises(TailError):
        routing_keys("acme.hq", ["#"])
    assert render(b"not json", as_json=False).startswith("?? ")
    assert json.loads(render(b"[1]", as_json=True)) == {"not_an_event": "[1]"}
