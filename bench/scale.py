"""Start-up at scale: `python bench/scale.py [--pbxs 1000 2000] [--idle-s 30]`.

For each PBX count: a RabbitMQ node of its own (never the machine's broker on 5672), one Yeastar
simulator on loopback standing in for every PBX (it answers get_token and keeps each WebSocket
subscribed), and one `gateway run` process with the default settings (leases, commands, shared
ledger and recovery on), its config listing that many PBXs. Measured:

- time from process start until every link is subscribed (sockets with topics at the simulator),
  and the gateway's CPU time until then (less at the mercy of other work than the time);
- token requests: total and the most in any one second (no PBX asks twice);
- while idle (``--idle-s``): gateway RSS and CPU (% of one core);
- broker RSS growth (node before the gateway vs idle with it) and the broker's objects: queues by
  type, channels, consumers, connections, Erlang processes (total, and per PBX);
- then a clean stop (SIGTERM): how long it takes, the exit code, and how many PBXs' states were
  shared (their ``pbx.state.<tenant>`` queue holds the snapshot);
- the log from start to stop (the gateway's default level, INFO, unless ``--log-level``): lines
  by level, the warnings and errors by event, and any ``error`` field left empty (the simulated
  PBXs run the newer firmware unless ``--firmware``).

``--tree DIR`` runs the gateway of another source tree (``git archive REV | tar -x -C DIR``):
before and after on the same machine. ``--tracemalloc FILE``: where the idle gateway's memory is
held, by line (bench/tracemem.py). ``--profile-idle FILE``: py-spy (``--gil``) records the
gateway while idle (FILE gets the PBX count appended); its top functions are printed.
``--profile-start FILE``: the same from the gateway's start until every link is subscribed (or
the timeout); it slows the start-up it records, so its time is not a measure.

Results are printed as a table and saved to bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from gateway.sim.yeastar.server import YeastarSimulator  # noqa: E402
from tests.integration.brokers import RabbitNode, start_node  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scale.json"


def proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def written(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def subscribed(sim: YeastarSimulator) -> int:
    return sum(1 for conn in list(sim._conns) if conn.topics)


async def broker_objects(node: RabbitNode) -> dict[str, Any]:
    queues = (await node.ctl("list_queues", "type", "--no-table-headers")).split()
    channels = await node.ctl("list_channels", "pid", "--no-table-headers")
    consumers = await node.ctl("list_consumers", "queue_name", "--no-table-headers")
    connections = await node.ctl("list_connections", "pid", "--no-table-headers")
    processes = await node.ctl("eval", "erlang:system_info(process_count).")
    return {
        "queues": dict(Counter(queues)),
        "channels": len(channels.splitlines()),
        "consumers": len(consumers.splitlines()),
        "connections": len(connections.splitlines()),
        "erlang_processes": int(processes),
    }


async def shared_states(node: RabbitNode) -> int:
    """PBX state queues holding a snapshot (what a clean stop hands to the next owner)."""
    rows = await node.ctl("list_queues", "name", "messages", "--no-table-headers")
    count = 0
    for line in rows.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("pbx.state.") and parts[1] != "0":
            count += 1
    return count


def read_log(path: Path) -> dict[str, Any]:
    """Lines by level, warnings and errors by event, and those whose ``error`` is empty."""
    levels: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    empty_errors: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            levels["unparsed"] += 1
            continue
        level = str(entry.get("level", "?"))
        levels[level] += 1
        event = str(entry.get("event", ""))[:80]
        if level in ("warning", "error", "critical"):
            problems[f"{level} {event}"] += 1
            samples.setdefault(f"{level} {event}", line[:400])
        if "error" in entry and not entry["error"]:
            empty_errors[event] += 1
    return {
        "levels": dict(levels),
        "problems": dict(problems.most_common()),
        "problem_samples": samples,
        "empty_errors": dict(empty_errors),
    }


def profile_top(path: Path, limit: int = 15) -> list[tuple[str, float]]:
    """py-spy's raw output: the functions holding most samples (share of all samples)."""
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            own[stack.split(";")[-1]] += int(count)
            total += int(count)
    return [(name, round(n / total, 3)) for name, n in own.most_common(limit)]


def config(
    sim: YeastarSimulator, node: RabbitNode, pbxs: int, state: Path, log_level: str | None
) -> Path:
    path = state / "gateway.yaml"
    logging = {} if log_level is None else {"logging": {"level": log_level}}
    path.write_text(
        yaml.safe_dump(
            {
                "bus": {"url": node.url},
                "state_dir": str(state / "var"),
                "http": {"port": 0},
                **logging,
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
        )
    )
    return path


async def run_one(
    pbxs: int,
    idle_s: float,
    timeout_s: float,
    *,
    log_level: str | None = None,
    tree: Path | None = None,
    profile: Path | None = None,
    firmware: str = "newer",
    tracemalloc: Path | None = None,
    profile_start: Path | None = None,
) -> dict[str, Any]:
    node = await asyncio.to_thread(start_node, "gwscale")
    sim = YeastarSimulator(seed=1, idle_timeout=120, firmware=firmware)
    await sim.start()
    state = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    proc: asyncio.subprocess.Process | None = None
    try:
        await asyncio.sleep(2)  # the fresh node settles
        broker_before = node.rss_bytes()
        objects_before = await broker_objects(node)
        path = config(sim, node, pbxs, state, log_level)
        started = time.monotonic()
        env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
        launcher = ["-m", "gateway.cli"]
        if tracemalloc is not None:
            launcher = [str(ROOT / "bench" / "tracemem.py"), str(tracemalloc), "--"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *launcher,
            "run",
            "--config",
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=open(state / "gateway.log", "wb"),  # noqa: ASYNC230
            cwd=str(tree or ROOT),
            env=env,
        )
        start_spy: asyncio.subprocess.Process | None = None
        start_out: Path | None = None
        if profile_start is not None:
            start_out = profile_start.with_name(
                f"{profile_start.stem}-{pbxs}{profile_start.suffix}"
            )
            start_spy = await asyncio.create_subprocess_exec(
                *("py-spy", "record", "--gil", "-r", "100", "-f", "raw", "-o", str(start_out)),
                *("-d", str(int(timeout_s)), "--pid", str(proc.pid)),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        tokens_per_s: Counter[int] = Counter()
        last_tokens = 0
        all_subscribed_s: float | None = None
        start_cpu_s: float | None = None  # the gateway's CPU time until then: less noisy
        progress: list[tuple[float, int]] = []
        while time.monotonic() - started < timeout_s:
            await asyncio.sleep(0.25)
            now = time.monotonic() - started
            tokens_per_s[int(now)] += sim.token_requests - last_tokens
            last_tokens = sim.token_requests
            count = subscribed(sim)
            if not progress or progress[-1][1] != count:
                progress.append((round(now, 2), count))
            if count >= pbxs:
                all_subscribed_s = now
                start_cpu_s = proc_cpu_s(proc.pid)
                break
            if proc.returncode is not None:
                break
        start_top: list[tuple[str, float]] = []
        if start_spy is not None and start_out is not None:
            start_spy.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
            await start_spy.wait()
            if start_out.exists():
                start_top = profile_top(start_out)
        # idle: nothing happens on the PBXs; the gateway only heartbeats and holds leases
        await asyncio.sleep(5)
        cpu_before, idle_from = proc_cpu_s(proc.pid), time.monotonic()
        await asyncio.sleep(idle_s)
        cpu_pct = 100 * (proc_cpu_s(proc.pid) - cpu_before) / (time.monotonic() - idle_from)
        gateway_rss = proc_rss(proc.pid)
        broker_after = node.rss_bytes()
        objects = await broker_objects(node)
        still = subscribed(sim)
        top: list[tuple[str, float]] = []
        if profile is not None:  # after the measure: py-spy costs the gateway some CPU
            out = profile.with_name(f"{profile.stem}-{pbxs}{profile.suffix}")
            spy = await asyncio.create_subprocess_exec(
                *("py-spy", "record", "--gil", "-r", "100", "-f", "raw", "-o", str(out)),
                *("-d", str(int(idle_s)), "--pid", str(proc.pid)),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await spy.wait()
            if out.exists():
                top = profile_top(out)
        if tracemalloc is not None:
            tracemalloc.unlink(missing_ok=True)  # noqa: ASYNC240
            proc.send_signal(signal.SIGUSR1)
            for _ in range(600):
                if written(tracemalloc):
                    break
                await asyncio.sleep(0.5)
        stop_started = time.monotonic()
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 120)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        stop_s = time.monotonic() - stop_started
        shared = await shared_states(node)
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await sim.stop()
        await node.destroy()
    kept = Path(tempfile.gettempdir()) / f"bench-scale-{pbxs}.log"  # the whole log, for a look
    shutil.copyfile(state / "gateway.log", kept)
    log_tail = (state / "gateway.log").read_text(errors="replace").splitlines()[-5:]
    log = read_log(state / "gateway.log")
    shutil.rmtree(state, ignore_errors=True)
    per_pbx = {
        "queues": round(
            (sum(objects["queues"].values()) - sum(objects_before["queues"].values())) / pbxs, 3
        ),
        "streams": round(objects["queues"].get("stream", 0) / pbxs, 4),
        "channels": round(objects["channels"] / pbxs, 4),
        "consumers": round(objects["consumers"] / pbxs, 4),
        "erlang_processes": round(
            (objects["erlang_processes"] - objects_before["erlang_processes"]) / pbxs, 2
        ),
        "broker_rss_kb": round((broker_after - broker_before) / pbxs / 1024, 1),
    }
    return {
        "pbxs": pbxs,
        "all_subscribed_s": None if all_subscribed_s is None else round(all_subscribed_s, 2),
        "subscribed_at_end": still,
        "start_cpu_s": None if start_cpu_s is None else round(start_cpu_s, 2),
        "token_requests": sim.token_requests,
        "token_requests_max_per_s": max(tokens_per_s.values(), default=0),
        "gateway_rss_mb": round(gateway_rss / 2**20, 1),
        "gateway_idle_cpu_pct": round(cpu_pct, 2),
        "broker_rss_before_mb": round(broker_before / 2**20, 1),
        "broker_rss_after_mb": round(broker_after / 2**20, 1),
        "broker_rss_growth_mb": round((broker_after - broker_before) / 2**20, 1),
        "broker_objects": objects,
        "broker_objects_before": objects_before,
        "per_pbx": per_pbx,
        "progress": progress[:: max(1, len(progress) // 20)],
        "stop_s": round(stop_s, 2),
        "exit_code": proc.returncode,
        "states_shared": shared,
        "log": log,
        "warnings": sum(log["problems"].values()),
        "idle_profile": top,
        "start_profile": start_top,
        "tree": str(tree) if tree else None,
        "gateway_log": str(kept),
        "gateway_log_tail": log_tail,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pbxs", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--timeout-s", type=float, default=180.0)
    parser.add_argument(
        "--log-level", default=None, help="the gateway's log level (default: its own, INFO)"
    )
    parser.add_argument("--tree", type=Path, default=None, help="run this source tree's gateway")
    parser.add_argument("--profile-idle", type=Path, default=None, help="py-spy while idle")
    parser.add_argument(
        "--profile-start", type=Path, default=None, help="py-spy from start to all subscribed"
    )
    parser.add_argument("--label", default=None, help="results go to scale-<label>.json")
    parser.add_argument(
        "--tracemalloc",
        type=Path,
        default=None,
        help="run the gateway under tracemalloc (bench/tracemem.py; slower) and write where its"
        " memory is held, while idle, to this file",
    )
    parser.add_argument(
        "--firmware",
        choices=("newer", "v1.0"),
        default="newer",
        help="the simulated PBXs' firmware (v1.0 refuses the newer event ids: each PBX then"
        " logs one subscription_narrowed warning, by design)",
    )
    args = parser.parse_args()
    runs = [
        await run_one(
            n,
            args.idle_s,
            args.timeout_s,
            log_level=args.log_level,
            tree=args.tree,
            profile=args.profile_idle,
            firmware=args.firmware,
            tracemalloc=args.tracemalloc,
            profile_start=args.profile_start,
        )
        for n in args.pbxs
    ]
    print(
        f"\n{'PBXs':>6} {'subscribed s':>12} {'CPU s':>6} {'tokens':>7} {'tok/s max':>9} "
        f"{'gw RSS MB':>9} "
        f"{'gw CPU %':>8} {'broker +MB':>10} {'queues':>7} {'streams':>7} {'channels':>8} "
        f"{'consumers':>9} {'procs/PBX':>9} {'stop s':>6} {'shared':>6} {'warnings':>8}"
    )
    for r in runs:
        o = r["broker_objects"]
        print(
            f"{r['pbxs']:>6} {r['all_subscribed_s']!s:>12} {r['start_cpu_s']!s:>6} "
            f"{r['token_requests']:>7} "
            f"{r['token_requests_max_per_s']:>9} {r['gateway_rss_mb']:>9} "
            f"{r['gateway_idle_cpu_pct']:>8} {r['broker_rss_growth_mb']:>10} "
            f"{sum(o['queues'].values()):>7} {o['queues'].get('stream', 0):>7} "
            f"{o['channels']:>8} {o['consumers']:>9} {r['per_pbx']['erlang_processes']:>9} "
            f"{r['stop_s']:>6} {r['states_shared']:>6} {r['warnings']:>8}"
        )
    for r in runs:
        for what, count in r["log"]["problems"].items():
            print(f"  {r['pbxs']} PBXs: {count} x {what}")
        for event, count in r["log"]["empty_errors"].items():
            print(f"  {r['pbxs']} PBXs: {count} x {event} with an empty error")
        for name, share in r["idle_profile"]:
            print(f"  {r['pbxs']} PBXs idle: {share:6.1%} {name}")
        for name, share in r["start_profile"]:
            print(f"  {r['pbxs']} PBXs start-up: {share:6.1%} {name}")
    out = RESULTS if args.label is None else RESULTS.with_name(f"scale-{args.label}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "command": "python bench/scale.py " + " ".join(sys.argv[1:]),
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
