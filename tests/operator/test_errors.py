"""What an operator or a newcomer sees when something is wrong: one readable line on stderr naming
what to fix, a documented exit status, a clean stop on SIGTERM at every phase, and the HTTP
server up before (and whatever) the broker.

"Broker unreachable" is a closed port or wrong credentials, never the machine's RabbitMQ stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aio_pika
import pytest

from gateway.send import EXIT_TIMEOUT, send_command
from tests.conftest import AMQP_URL, gateway_cli

pytestmark = pytest.mark.integration

CLOSED = "amqp://guest:guest@127.0.0.1:1/"
WRONG_PASSWORD = AMQP_URL.replace("guest:guest@", "guest:wrong-password@")


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(tmp_path: Path, url: str, port: int) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"bus:\n  url: {json.dumps(url)}\nstate_dir: {tmp_path / 'var'}\n"
        f"http: {{port: {port}}}\nlogging: {{format: json}}\n"
    )
    return path


class Process:
    """``gateway run`` in its own process, its stderr collected."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stop(self, timeout: float = 15) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            pytest.fail(f"still running {timeout} s after SIGTERM:\n{err}")
        return self.proc.returncode, err


async def _get(url: str, timeout: float = 20) -> tuple[int, dict[str, object]]:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as resp:
                    return resp.status, await resp.json()
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


def _events(stderr: str) -> list[str]:
    found = []
    for line in stderr.splitlines():
        try:
            found.append(json.loads(line)["event"])
        except (ValueError, KeyError):
            continue
    return found


@pytest.mark.parametrize(
    ("url", "why"),
    [(CLOSED, "RabbitMQ unreachable"), (WRONG_PASSWORD, "refused the login")],
    ids=["closed-port", "wrong-password"],
)
async def test_http_first_and_clean_sigterm_while_the_broker_is_away(
    tmp_path: Path, url: str, why: str
) -> None:
    port = _free_port()
    gateway = Process(_config(tmp_path, url, port))
    try:
        status, body = await _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200
        for _ in range(100):  # until the first attempt has failed and said why
            status, body = await _get(f"http://127.0.0.1:{port}/readyz")
            if body["bus"]["error"]:  # type: ignore[index]
                break
            await asyncio.sleep(0.1)
        assert status == 503
        assert why in body["bus"]["error"]  # type: ignore[index]
        assert any("broker not connected since" in r for r in body["reasons"])  # type: ignore[attr-defined]
        assert "wrong-password" not in json.dumps(body)
    finally:
        code, err = gateway.stop()
    assert code == 0, err
    assert "Traceback" not in err
    events = _events(err)
    assert events[-2:] == ["gateway_stopping", "gateway_stopped"], events
    stopping = events.index("gateway_stopping")
    assert "bus_unreachable" not in events[stopping:], "a retry after SIGTERM"


def test_bad_bus_url_is_refused_at_start(tmp_path: Path) -> None:
    result = gateway_cli("run", "--config", str(_config(tmp_path, "htp:/nowhere", 0)))
    assert result.returncode == 2
    assert "bus.url" in result.stderr and "scheme must be amqp or amqps" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_config_file_that_is_not_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("bus:\n  url: [unclosed\n")
    result = gateway_cli("run", "--config", str(bad))
    assert result.returncode == 2
    assert "is not valid YAML (line 3, column 1)" in _one_line(result.stderr)


def test_http_port_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = gateway_cli("run", "--config", str(_config(tmp_path, CLOSED, port)))
    assert result.returncode == 2
    assert f"cannot serve HTTP on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_without_a_broker() -> None:
    result = gateway_cli("demo", "--amqp-url", CLOSED, "--duration", "3")
    assert result.returncode == 4
    assert "RabbitMQ unreachable" in _one_line(result.stderr)


@pytest.mark.parametrize(
    ("url", "why"),
    [(CLOSED, "RabbitMQ unreachable"), (WRONG_PASSWORD, "refused the login")],
    ids=["closed-port", "wrong-password"],
)
def test_send_without_a_broker(url: str, why: str) -> None:
    result = gateway_cli("send", "acme", "call.dial", "--args", "{}", "--amqp-url", url)
    assert result.returncode == 4
    line = _one_line(result.stderr)
    assert why in line and "wrong-password" not in line


def test_send_bad_arguments() -> None:
    assert gateway_cli("send", "acme", "call.dial", "--args", "{nope").returncode == 3
    assert gateway_cli("send", "acme", "call.dial", "--args", "[1]").returncode == 3
    assert gateway_cli("send", "acme", "call.dial", "--timeout", "x").returncode == 3


def test_send_to_a_tenant_no_gateway_serves(unique: str) -> None:
    started = time.monotonic()
    result = gateway_cli("send", f"nobody-{unique}", "call.dial", "--args", "{}")
    assert result.returncode == 3
    assert "no gateway takes commands for tenant" in _one_line(result.stderr)
    assert time.monotonic() - started < 10


async def test_send_honours_its_timeout(unique: str) -> None:
    """A tenant whose queue exists but nobody serves: no result, given up on time."""
    tenant = f"idle-{unique}"
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "pbx.commands", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(f"test-send-{tenant}", auto_delete=False)
        await queue.bind(exchange, routing_key=f"{tenant}.#")
        started = time.monotonic()
        code, result = await send_command(
            AMQP_URL, tenant, "call.dial", {}, timeout_s=1.5, started_at=started
        )
        took = time.monotonic() - started
        assert (code, result) == (EXIT_TIMEOUT, None)
        assert 1.4 <= took <= 2.0, took
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()


def test_normalize_a_missing_file() -> None:
    result = gateway_cli("normalize", "--vendor", "yeastar", "/nonexistent/frames.jsonl")
    assert result.returncode == 2
    assert _one_line(result.stderr) == (
        "gateway: cannot read /nonexistent/frames.jsonl: No such file or directory"
    )


def test_run_without_config_says_so(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GATEWAY__BUS__URL": CLOSED,
        "GATEWAY__HTTP__PORT": "0",
        "GATEWAY__STATE_DIR": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=15)
    assert "no --config given" in first and "no PBX configured" in first
    assert proc.returncode == 0, rest


async def test_demo_prints_events_only_and_leaves_nothing_behind(unique: str) -> None:
    tenant = f"demo-{unique}"
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway.cli", "demo", "--duration", "6", "--tenant", tenant),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[1].startswith("demo: status page http://127.0.0.1:")
    assert any("gateway.connection" in line for line in lines[2:])
    assert err.decode().strip() == "demo: stopped", "nothing but the demo's own line on stderr"
    connection = await aio_pika.connect(AMQP_URL)
    try:
        for name in (
            f"pbx.commands.{tenant}",
            f"pbx.commands.{tenant}.ledger",
            f"pbx.state.{tenant}",
        ):
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await channel.declare_queue(name, passive=True)
    finally:
        await connection.close()
