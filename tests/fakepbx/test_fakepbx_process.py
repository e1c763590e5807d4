"""The fake vendor in fresh processes: ``gateway run``, ``gateway normalize`` and ``gateway sim``
find it through its entry point alone (``PYTHONPATH`` set by tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.conftest import AMQP_URL, wait_for
from tests.conftest import gateway_cli as cli
from tests.fakepbx.sim import frame
from tests.integration.process import GatewayProcess

pytestmark = pytest.mark.integration


async def test_gateway_run_loads_the_plugin_and_publishes_its_events(
    fakepbx_sim, collector, unique, tmp_path: Path
) -> None:
    sim = await fakepbx_sim()
    tenant = f"c-{unique}"
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "bus": {"url": AMQP_URL},
                "state_dir": str(tmp_path / "state"),
                "lease": {"enabled": False},
                "commands": {"enabled": False},
                "http": {"port": 0},
                "pbxs": [
                    {
                        "tenant": tenant,
                        "vendor": "fakepbx",
                        "base_url": sim.base_url,
                        "token_env": "FAKEPBX_TEST_TOKEN",
                        "poll_interval_s": 0.1,
                    }
                ],
            }
        )
    )
    got = await collector(tenant)
    gateway = await GatewayProcess.start(config, FAKEPBX_TEST_TOKEN=sim.token)
    try:
        assert gateway.http_port
        await wait_for(lambda: len(sim.sockets) == 1, timeout=20)
        await sim.push(frame("p1", "ringing"))
        sim.add_record("p1")
        await wait_for(lambda: got.of_type("call.ringing") and got.of_type("cdr.created"), 20)
    finally:
        code = await gateway.stop()
    assert code == 0, gateway.text
    assert any(e["data"]["state"] == "connected" for e in got.of_type("gateway.connection"))
    for event, key in zip(got.events, got.routing_keys, strict=True):
        assert event["vendor"] == "fakepbx" and key == f"{tenant}.{event['type']}"


def test_gateway_normalize_reads_fakepbx_frames(tmp_path: Path) -> None:
    good = json.dumps(frame("n1", "answered", at=1714552200))
    # run outside the repository: the plugin comes from PYTHONPATH and its entry point
    lines = f"{good}\n{{oops\n"
    done = cli("normalize", "--vendor", "fakepbx", "--tenant", "t1", stdin=lines, cwd=tmp_path)
    assert done.returncode == 3, done.stderr  # one line rejected
    [line] = done.stdout.splitlines()
    event = json.loads(line)
    assert (event["type"], event["vendor"], event["subject"]) == ("call.answered", "fakepbx", "n1")
    assert event["time"].startswith("2024-05-01T08:30:00")
    assert json.loads(done.stderr.strip().splitlines()[-1])["line"] == 2


def test_gateway_sim_fakepbx_help(tmp_path: Path) -> None:
    done = cli("sim", "fakepbx", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--calls-per-second" in done.stdout and "--token" in done.stdout


async def test_gateway_sim_fakepbx_serves(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "sim", "fakepbx", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"{match.group(0)}/records", params={"after": "0"}) as response,
        ):
            assert response.status == 200 and await response.json() == {"records": []}
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
    assert code == 0


def test_gateway_demo_runs_any_registered_vendor(unique: str) -> None:
    """``gateway demo --vendor fakepbx``: its simulator, the gateway and the printing consumer,
    in a fresh process that knows the vendor only by its entry point."""
    done = cli(
        "demo",
        "--vendor",
        "fakepbx",
        "--tenant",
        f"d-{unique}",
        "--amqp-url",
        AMQP_URL,
        "--calls-per-second",
        "5",
        "--duration",
        "4",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "demo: simulated Fake PBX (tests) (fakepbx)" in done.stdout
    assert re.search(r"gateway\.connection .*state=connected", done.stdout), done.stdout
    assert re.search(r"^\S+\s+call\.(ringing|answered|ended) ", done.stdout, re.M), done.stdout
