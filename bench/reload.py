"""Reload at scale: `python bench/reload.py [--pbxs 1000] [--add 10] [--rounds 3]`.

A RabbitMQ node of its own (never the machine's broker on 5672), one Yeastar simulator on
loopback standing in for every PBX, and one `gateway run` process with the default settings
(leases, commands, shared ledger, recovery) whose config lists ``--pbxs`` PBXs. Once every link
is subscribed, the config file is rewritten ``--rounds`` times, each adding ``--add`` PBXs.
Measured per round:

- reload: the reload's own duration (``took_s`` of its ``config_reloaded`` log line), of which
  ``read_s`` reading and validating the whole file and the rest applying the change;
- end to end: from the file write until every new PBX's link is subscribed at the simulator
  (includes the watch: polled every 0.5 s, applied once the file was still for 0.5 s);
- disturbed: WebSocket connections the simulator saw beyond the new ones (0: no running link
  reconnected), and token requests beyond one per new PBX.

Results are printed as a table and saved to bench/results/reload.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from gateway.sim.yeastar.server import YeastarSimulator  # noqa: E402
from tests.integration.brokers import RabbitNode, start_node  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "reload.json"


def subscribed(sim: YeastarSimulator) -> int:
    return sum(1 for conn in list(sim._conns) if conn.topics)


def write_config(path: Path, sim: YeastarSimulator, node: RabbitNode, pbxs: int) -> None:
    doc = {
        "bus": {"url": node.url},
        "state_dir": str(path.parent / "var"),
        "http": {"port": 0},
        "logging": {"level": "INFO", "format": "json"},
        "pbxs": [
            {
                "tenant": f"pbx{n:05d}",
                "vendor": "yeastar",
                "base_url": sim.base_url,
                "client_id": sim.client_id,
                "client_secret": sim.client_secret,
            }
            for n in range(pbxs)
        ],
    }
    fresh = path.with_suffix(".new")
    fresh.write_text(yaml.safe_dump(doc))
    fresh.replace(path)


def reloads(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if '"config_reload' not in line:
            continue
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


async def wait_until(condition: Any, timeout_s: float, proc: Any) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        if proc.returncode is not None:
            return None
        await asyncio.sleep(0.02)
    return None


async def run(pbxs: int, add: int, rounds: int, timeout_s: float) -> dict[str, Any]:
    node = await asyncio.to_thread(start_node, "gwreload")
    sim = YeastarSimulator(seed=1, idle_timeout=300)
    await sim.start()
    state = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    log = state / "gateway.log"
    proc: asyncio.subprocess.Process | None = None
    results: list[dict[str, Any]] = []
    try:
        await asyncio.sleep(2)  # the fresh node settles
        path = state / "gateway.yaml"
        write_config(path, sim, node, pbxs)
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "run",
            "--config",
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=open(log, "wb"),  # noqa: ASYNC230
            cwd=str(ROOT),
        )
        up = await wait_until(lambda: subscribed(sim) >= pbxs, timeout_s, proc)
        if up is None:
            raise RuntimeError(f"the {pbxs} links did not come up: see {log}")
        startup_s = time.monotonic() - started
        await asyncio.sleep(5)  # settled: leases held, recoveries done
        total = pbxs
        for n in range(rounds):
            connections, tokens = sim.connections_total, sim.token_requests
            seen = len(reloads(log))
            total += add
            wrote = time.monotonic()
            write_config(path, sim, node, total)
            end_to_end = await wait_until(
                lambda total=total: subscribed(sim) >= total, timeout_s, proc
            )
            await wait_until(lambda seen=seen: len(reloads(log)) > seen, 10, proc)
            await asyncio.sleep(2)  # anything disturbed would show by now
            entry = (reloads(log)[seen:] or [{}])[0]
            results.append(
                {
                    "round": n + 1,
                    "pbxs_before": total - add,
                    "added": add,
                    "reload_s": entry.get("took_s"),
                    "read_s": entry.get("read_s"),
                    "apply_s": None
                    if entry.get("took_s") is None or entry.get("read_s") is None
                    else round(entry["took_s"] - entry["read_s"], 3),
                    "reload_event": entry.get("event"),
                    "end_to_end_s": None if end_to_end is None else round(end_to_end, 2),
                    "written_to_reloaded_s": round(time.monotonic() - wrote, 2),
                    "new_connections": sim.connections_total - connections,
                    "disturbed_connections": sim.connections_total - connections - add,
                    "token_requests": sim.token_requests - tokens,
                }
            )
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 120)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await sim.stop()
        await node.destroy()
    shutil.rmtree(state, ignore_errors=True)
    applies = [r["apply_s"] for r in results if r["apply_s"] is not None]
    totals = [r["reload_s"] for r in results if r["reload_s"] is not None]
    ends = [r["end_to_end_s"] for r in results if r["end_to_end_s"] is not None]
    return {
        "pbxs": pbxs,
        "add": add,
        "startup_s": round(startup_s, 1),
        "reload_s_median": round(statistics.median(totals), 3) if totals else None,
        "apply_s_median": round(statistics.median(applies), 3) if applies else None,
        "end_to_end_s_median": round(statistics.median(ends), 2) if ends else None,
        "disturbed_connections": sum(r["disturbed_connections"] for r in results),
        "rounds": results,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pbxs", type=int, default=1000)
    parser.add_argument("--add", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout-s", type=float, default=240.0)
    args = parser.parse_args()
    result = await run(args.pbxs, args.add, args.rounds, args.timeout_s)
    print(
        f"\n{'round':>5} {'PBXs before':>11} {'added':>5} {'reload s':>8} {'read s':>6} "
        f"{'apply s':>7} {'end-to-end s':>12} "
        f"{'new conns':>9} {'disturbed':>9} {'tokens':>6}"
    )
    for r in result["rounds"]:
        print(
            f"{r['round']:>5} {r['pbxs_before']:>11} {r['added']:>5} {r['reload_s']!s:>8} "
            f"{r['read_s']!s:>6} {r['apply_s']!s:>7} "
            f"{r['end_to_end_s']!s:>12} {r['new_connections']:>9} "
            f"{r['disturbed_connections']:>9} {r['token_requests']:>6}"
        )
    print(
        f"median: reload {result['reload_s_median']} s (apply {result['apply_s_median']} s),"
        f" end to end {result['end_to_end_s_median']}"
        f" s (start-up of {result['pbxs']} PBXs: {result['startup_s']} s)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "command": "python bench/reload.py " + " ".join(sys.argv[1:]),
                **result,
            },
            indent=2,
        )
    )
    print(f"saved {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
