"""The node-kill scenario on a 3-node RabbitMQ cluster this script starts for itself (never the
machine's broker): a gateway (quorum queues) on node 0, a simulated Yeastar PBX sending calls, one
``call.dial`` every 200 ms; ``kill -9`` node 0 mid-burst, restart it. Per run: the failover time
(kill -> RabbitMQ confirms events again, on another node), events lost, commands dialled
twice, commands answered "outcome unknown" that never reached the PBX, and ERROR log lines.

    PYTHONPATH=$PWD python bench/cluster_failover.py --runs 5

Prints a table; writes bench/results/cluster_failover.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from gateway.logging import configure_logging
from gateway.settings import CommandSettings
from gateway.sim.yeastar import YeastarSimulator
from tests.conftest import wait_for
from tests.integration.brokers import RabbitNode, destroy_all, start_cluster
from tests.integration.fixtures import pbx_settings, running_gateway
from tests.integration.test_cluster import Client, urls
from tests.yeastar.test_yeastar_events import account

RESULTS = Path(__file__).parent / "results" / "cluster_failover.json"
_ERROR_LINE = re.compile(
    r"\[(error|critical)\s*\]|\"level\": ?\"(error|critical)\"|^Callback .* error"
)


@contextlib.contextmanager
def stderr_to(path: Path) -> Any:
    """The gateway's log lines (stdout and stderr: structlog and library records) into ``path``
    for counting."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "wb") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


async def one_run(nodes: list[RabbitNode], run: int, log_dir: Path) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:8]
    tenant = f"f{unique}"
    sim = YeastarSimulator(seed=run, tz="Asia/Shanghai", trap_rate=0.0)
    await sim.start(port=0)
    commands = CommandSettings(exchange=f"bench-{unique}.commands", execute_timeout_s=5)
    client = Client(nodes[2], tenant, commands.exchange)
    await client.start()
    bus = {"url": urls(nodes), "queue_type": "quorum", "reconnect_interval_s": 0.5}
    sent: list[str] = []
    stop = asyncio.Event()
    log = log_dir / f"run{run}.log"
    failover_s = float("nan")

    async def traffic() -> None:
        while not stop.is_set():
            await sim.run_traffic(calls=2, concurrency=2)

    async def dial() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                sent.append(await client.command("call.dial", {"caller": "2001", "callee": "2002"}))
            await asyncio.sleep(0.2)

    try:
        with stderr_to(log):
            async with running_gateway(
                pbx_settings(sim, tenant), commands=commands, bus=bus
            ) as app:
                await wait_for(lambda: app.connectors[0].health()["state"] == "connected", 30)
                tasks = [asyncio.create_task(traffic()), asyncio.create_task(dial())]
                try:
                    await wait_for(lambda: len(client.results) >= 5, timeout=60)
                    victim = nodes[0]
                    pid = victim.pid()
                    assert pid is not None
                    killed_at = time.monotonic()
                    os.kill(pid, signal.SIGKILL)

                    # Flowing again: the publisher noticed the loss, then RabbitMQ confirmed
                    # events again (on another node).
                    publisher = app.publisher
                    assert publisher is not None
                    await wait_for(lambda: publisher._failing, timeout=30, interval=0.01)
                    await wait_for(lambda: not publisher._failing, timeout=120, interval=0.01)
                    failover_s = time.monotonic() - killed_at
                    await asyncio.sleep(3)  # the burst goes on
                    await asyncio.to_thread(victim.start_sync)  # back into the cluster
                    await asyncio.sleep(2)
                finally:
                    stop.set()
                    await asyncio.gather(*tasks, return_exceptions=True)
                await wait_for(lambda: all(c in client.results for c in sent), timeout=120)
                assert app.publisher is not None
                publisher = app.publisher
                await wait_for(lambda: publisher.backlog == 0, timeout=60)
                with contextlib.suppress(TimeoutError):
                    await wait_for(lambda: account(sim, client.collected)["lost"] == 0, 30)
    finally:
        stop.set()
        await client.close()
        await sim.stop()
    counts = account(sim, client.collected)
    results = [client.results[c] for c in sent if c in client.results]
    executed = sim.control_calls["call/dial"]
    unknown = sum(1 for r in results if "outcome unknown" in str(r.get("error") or ""))
    known = sum(
        1
        for r in results
        if r.get("ok") or (r.get("error") and "outcome unknown" not in str(r["error"]))
    )
    return {
        "run": run,
        "failover_s": round(failover_s, 2),
        "events_sent": counts["sent"],
        "events_lost": counts["lost"],
        "commands": len(sent),
        "dialled": executed,
        "dialled_twice": max(0, executed - len(sent)),
        "unknown": unknown,
        "unknown_never_sent": max(0, known + unknown - executed),
        "error_lines": sum(
            1 for line in log.read_text(errors="replace").splitlines() if _ERROR_LINE.search(line)
        ),
        "log": str(log),
    }


async def main(runs: int) -> list[dict[str, Any]]:
    configure_logging("console", "INFO")  # as `gateway run` does (library records included)
    nodes = await asyncio.to_thread(start_cluster, 3, "gwbench")
    log_dir = Path(tempfile.mkdtemp(prefix="cluster-failover-"))
    rows: list[dict[str, Any]] = []
    try:
        for run in range(1, runs + 1):
            rows.append(await one_run(nodes, run, log_dir))
            print(orjson.dumps(rows[-1]).decode(), flush=True)
    finally:
        await asyncio.to_thread(destroy_all, nodes)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    keys = [
        "run",
        "failover_s",
        "events_sent",
        "events_lost",
        "commands",
        "dialled",
        "dialled_twice",
        "unknown",
        "unknown_never_sent",
        "error_lines",
    ]
    lines = [" | ".join(keys), " | ".join("---" for _ in keys)]
    lines += [" | ".join(str(r[k]) for k in keys) for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = asyncio.run(main(args.runs))
    print(table(rows))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(orjson.dumps({"runs": rows}, option=orjson.OPT_INDENT_2).decode())
