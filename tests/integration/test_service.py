"""`gateway run` as users start it: a real process, config file, HTTP endpoints, SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.conftest import AMQP_URL, wait_for
from tests.integration.process import GatewayProcess

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
async def test_run_serves_health_and_drains_on_sigterm(
    sim_factory, tmp_path: Path, unique, event_loop: str
) -> None:
    sim = await sim_factory(calls_per_second=5)
    secret = tmp_path / "secret"
    secret.write_text(sim.client_secret)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "bus": {"url": AMQP_URL},
                "http": {"port": 0},
                "state_dir": str(tmp_path / "state"),
                "event_loop": event_loop,
                "pbxs": [
                    {
                        "tenant": f"svc{unique}",
                        "vendor": "yeastar",
                        "base_url": sim.base_url,
                        "client_id": sim.client_id,
                        "client_secret_file": str(secret),
                        "timezone": "Asia/Shanghai",
                    }
                ],
            }
        )
    )
    gateway = await GatewayProcess.start(config)
    try:
        port = gateway.http_port
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"

            async def ready() -> bool:
                async with http.get(f"{base}/readyz") as resp:
                    return resp.status == 200

            await wait_for(ready, timeout=15)
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            await wait_for(lambda: len(sim.sent) > 20, timeout=15)

            async def published() -> bool:
                async with http.get(f"{base}/metrics") as resp:
                    return "gateway_events_published_total{" in await resp.text()

            await wait_for(published, timeout=15)
        code = await gateway.stop(signal.SIGTERM)
    finally:
        await gateway.stop(signal.SIGKILL)
    text = gateway.text
    assert code == 0, text
    assert "gateway_stopped" in text
    assert f"event_loop={event_loop}" in text or f'"event_loop": "{event_loop}"' in text, text
    assert sim.client_secret not in text, "the secret must never reach a log line"


async def test_bad_config_lists_every_field_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pbxs": [{"tenant": "a.b", "vendor": "x"}, {"tenant": "c", "vendor": "yeastar"}],
                "bus": {"nope": 1},
            }
        )
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    for field in (
        "pbxs.0.tenant",
        "pbxs.0.vendor: unknown vendor 'x'; registered: ",
        "pbxs.1.base_url",
        "pbxs.1.client_id",
        "bus.nope",
    ):
        assert field in err.decode(), field
