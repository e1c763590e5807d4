"""The benchmark suite of the event path, measured as a new user would (see bench/README.md).

    python bench/suite.py                      # everything, one table, JSON in bench/results/
    python bench/suite.py --only e2e latency   # some of it
    python bench/suite.py --only e2e-xswitch   # XSwitch's push path (NATS) end to end
    python bench/suite.py --only e2e-meiqia    # Meiqia's push path (signed webhooks) end to end
    python bench/suite.py --duration 60 --label after

Each figure that is a ratio is taken against a baseline measured in the same run (the machine is
noisy); nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    MEIQIA_CONCURRENCY,
    FloorUnderTest,
    GatewayUnderTest,
    MeiqiaGatewayUnderTest,
    XSwitchGatewayUnderTest,
    blast,
    broker_ceiling,
    frame,
    paced,
    percentile,
    post_webhooks,
    publish_nats,
)
from gateway.connectors.registry import plugins  # noqa: E402
from gateway.schema.events import NormalizeContext, StreamMemory  # noqa: E402

PARTS = ("e2e", "e2e-xswitch", "e2e-meiqia", "latency", "commands", "normalize")
FIXTURES = ROOT / "tests" / "fixtures"


def event_size(tenant: str) -> int:
    """Bytes of the event one bench frame becomes (the ceiling publishes this size)."""
    normalize = plugins()["yeastar"].normalize
    ctx = NormalizeContext(tenant, "yeastar", ZoneInfo("UTC"), datetime.now(UTC))
    return len(normalize(frame(1), ctx)[0].to_json())


def normalizer_rates(seconds: float = 1.0) -> dict[str, float]:
    """Messages per second of CPU time through each vendor's pure normalizer, fed its recorded
    sample stream (tests/fixtures/<vendor>/sample.jsonl) over and over."""
    rates: dict[str, float] = {}
    for name, plugin in sorted(plugins().items()):
        sample = FIXTURES / name / "sample.jsonl"
        if not sample.exists():
            continue
        lines = [line for line in sample.read_text().splitlines() if line.strip()]
        memory = StreamMemory()
        count = 0
        started = time.process_time()
        while time.process_time() - started < seconds:
            for line in lines:
                ctx = NormalizeContext(
                    "bench", name, ZoneInfo("UTC"), datetime.now(UTC), False, memory
                )
                plugin.normalize(line, ctx)
            count += len(lines)
        rates[name] = count / (time.process_time() - started)
    return rates


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    only = set(args.only)
    out: dict[str, Any] = {}
    if "latency" in only:
        out |= await measure_latency(args)
    if "e2e" in only:
        gw = GatewayUnderTest(full=False, profile=args.profile)
        await gw.start()
        try:
            size = event_size(gw.tenant)
            out["event_bytes"] = size
            first = 0
            if "e2e" in only:
                runs = []
                for _ in range(args.repeat):
                    ceiling = await broker_ceiling(args.events, size)
                    cpu_before = cpu_seconds(gw.gateway_pid)
                    rate, lost = await blast(gw, args.events, first)
                    cpu = cpu_seconds(gw.gateway_pid) - cpu_before
                    first += args.events
                    runs.append(
                        {
                            "ceiling": ceiling,
                            "e2e": rate,
                            "lost": lost,
                            # includes the wait for the last events (up to a few ms)
                            "gateway_cpu_us_per_event": cpu / args.events * 1e6,
                        }
                    )
                    print(f"  e2e {rate:,.0f}/s, ceiling {ceiling:,.0f}/s, lost {lost}")
                out["e2e"] = runs
        finally:
            await gw.stop()
    if only & {"e2e", "commands"} and args.profile is None:
        full = GatewayUnderTest(full=True)
        await full.start()
        try:
            size = event_size(full.tenant)
            if "e2e" in only:
                ceiling = await broker_ceiling(args.events, size)
                rate, lost = await blast(full, args.events, 0)
                out["e2e_full"] = {"ceiling": ceiling, "e2e": rate, "lost": lost}
                print(f"  e2e (leases, commands, recovery on) {rate:,.0f}/s, lost {lost}")
            if "commands" in only:
                rtts, failed = await full.command_round_trips(args.command_rate, args.duration)
                out["commands"] = summary_ms(rtts) | {"failed": failed}
                print(f"  commands: {out['commands']}")
        finally:
            await full.stop()
    if "e2e-xswitch" in only:
        out |= await measure_xswitch(args)
    if "e2e-meiqia" in only:
        out |= await measure_meiqia(args)
    if "normalize" in only:
        out["normalize"] = normalizer_rates()
    return out


async def measure_latency(args: argparse.Namespace) -> dict[str, Any]:
    """Frames paced at each rate: latency and the gateway's CPU per frame. With several
    ``--coalesce-ms`` values, one gateway per value runs at once (each idle while another is
    measured) and the runs alternate between them, rate by rate, ``--repeat`` times: each
    comparison is made within the same minute of the same noisy machine."""
    variants: list[tuple[str, dict[str, Any], Path | None]] = []
    if args.baseline_tree is not None:
        variants.append(("baseline", {}, args.baseline_tree))
    for value in args.coalesce_ms or ([] if variants else [None]):
        key = "default" if value is None else f"{value:g}"
        variants.append((key, {} if value is None else {"coalesce_ms": value}, None))
    if args.baseline_tree is not None and not args.coalesce_ms:
        variants.append(("default", {}, None))
    gateways: dict[str, GatewayUnderTest] = {}
    out: dict[str, Any] = {"latency": {}}
    loops = args.event_loop or [None]
    try:
        for loop in loops if args.floor else []:
            key = "floor" if loop is None else f"floor, {loop}"
            gateways[key] = FloorUnderTest(full=False, event_loop=loop)
            await gateways[key].start()
        single = len(variants) == 1 and len(loops) == 1 and not args.floor
        for name, bus, tree in variants:
            for loop in [None] if tree is not None else loops:
                key = name if loop is None else f"{name}, {loop}"
                profile = args.profile if single else None
                gw = gateways[key] = GatewayUnderTest(
                    full=False, profile=profile, bus=bus, tree=tree, event_loop=loop
                )
                await gw.start()
        first = {key: 0 for key in gateways}
        for _ in range(args.repeat):
            for rate in args.rates:
                for key, gw in gateways.items():
                    cpu_before = cpu_seconds(gw.gateway_pid)
                    poisson = args.arrivals == "poisson"
                    lat, lost = await paced(gw, rate, args.duration, first[key], poisson)
                    cpu = cpu_seconds(gw.gateway_pid) - cpu_before
                    frames = int(rate * args.duration)
                    first[key] += frames
                    run = summary_ms(lat) | {
                        "lost": lost,
                        "gateway_cpu_share": cpu / args.duration,  # of one core, while paced
                        "gateway_cpu_us_per_frame": cpu / frames * 1e6,
                    }
                    out["latency"].setdefault(key, {}).setdefault(f"{rate:g}", []).append(run)
                    print(f"  {key}, {rate:g}/s: {run}")
    finally:
        for gw in gateways.values():
            await gw.stop()
    return out


def vendor_profile(profile: Path | None, vendor: str) -> Path | None:
    """Where py-spy writes a vendor part's profile: ``FILE`` -> ``FILE-<vendor>`` (same
    suffix), so it never overwrites the Yeastar one."""
    if profile is None:
        return None
    return profile.with_name(f"{profile.stem}-{vendor}{profile.suffix}")


def xswitch_profile(profile: Path | None) -> Path | None:
    return vendor_profile(profile, "xswitch")


async def measure_xswitch(args: argparse.Namespace) -> dict[str, Any]:
    """XSwitch's push path: the bench publishes ``Event.Channel`` messages on NATS as fast as
    the client takes them, ``gateway run`` (one XSwitch tenant, leases, commands and recovery
    off) normalizes, spools and publishes them; the ceiling is measured just before each run at
    the mean size of those events."""
    out: dict[str, Any] = {}
    gw = XSwitchGatewayUnderTest(
        full=False, profile=xswitch_profile(args.profile), jetstream=args.xswitch_jetstream
    )
    await gw.start()
    try:
        size = gw.event_size()
        out["xswitch_event_bytes"] = size
        out["xswitch_nats"] = "jetstream" if gw.uses_jetstream else "core"
        runs = []
        first = 0
        for _ in range(args.repeat):
            ceiling = await broker_ceiling(args.events, size)
            rate, lost = await publish_nats(gw, args.events, first)
            first += args.events
            runs.append({"ceiling": ceiling, "e2e": rate, "lost": lost})
            print(
                f"  e2e XSwitch ({out['xswitch_nats']} NATS) {rate:,.0f}/s, "
                f"ceiling {ceiling:,.0f}/s, lost {lost}"
            )
        out["e2e_xswitch"] = runs
    finally:
        await gw.stop()
    return out


async def measure_meiqia(args: argparse.Namespace) -> dict[str, Any]:
    """Meiqia's push path: the bench posts signed ``cdr.hangup`` webhooks to the gateway's HTTP
    server (``MEIQIA_CONCURRENCY`` in flight), ``gateway run`` (one Meiqia tenant, leases,
    commands and recovery off) verifies, normalizes, spools and publishes them, one
    ``cdr.created`` each; the ceiling is measured just before each run at their mean size."""
    out: dict[str, Any] = {}
    gw = MeiqiaGatewayUnderTest(full=False, profile=vendor_profile(args.profile, "meiqia"))
    await gw.start()
    try:
        size = gw.event_size()
        out["meiqia_event_bytes"] = size
        runs = []
        first = 0
        for _ in range(args.repeat):
            ceiling = await broker_ceiling(args.events, size)
            cpu_before = cpu_seconds(gw.gateway_pid)
            bench_before = time.process_time()
            posted = await post_webhooks(gw, args.events, first)
            cpu = cpu_seconds(gw.gateway_pid) - cpu_before
            bench_cpu = time.process_time() - bench_before
            first += args.events
            runs.append(
                {
                    "ceiling": ceiling,
                    "e2e": posted.rate,
                    "lost": posted.lost,
                    "failed": posted.failed,
                    "statuses": posted.statuses,
                    "concurrency": MEIQIA_CONCURRENCY,
                    "answered_per_s": posted.answered_rate,
                    "answer": posted.answer_ms,
                    # includes the wait for the last events (up to a few ms)
                    "gateway_cpu_us_per_event": cpu / args.events * 1e6,
                    # the bench process: client, consumer (and the idle REST simulator)
                    "bench_cpu_us_per_event": bench_cpu / args.events * 1e6,
                }
            )
            print(
                f"  e2e Meiqia (webhooks) {posted.rate:,.0f}/s, ceiling {ceiling:,.0f}/s, "
                f"lost {posted.lost}, failed {posted.failed} {posted.statuses}"
            )
        out["e2e_meiqia"] = runs
    finally:
        await gw.stop()
    return out


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``), in seconds."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": percentile(values, 0.50) * 1000,
        "p99_ms": percentile(values, 0.99) * 1000,
        "max_ms": max(values) * 1000 if values else float("nan"),
    }


def e2e_rows(
    n: int,
    run: dict[str, Any],
    ceiling: str,
    size: str,
    name: str,
    *,
    lost: str = " (goal >= 0.80)",
    cpu: str | None = None,
    cpu_more: str = "",
) -> list[tuple[str, str, str]]:
    """The rows of one end-to-end run: the ceiling, the gateway's rate and ratio, its CPU."""
    rows = [
        (f"raw aio-pika ceiling{ceiling} (run {n})", f"{run['ceiling']:,.0f} msg/s", size),
        (
            f"{name} (run {n})",
            f"{run['e2e']:,.0f} events/s",
            f"ratio {run['e2e'] / run['ceiling']:.2f}, lost {run['lost']}{lost}",
        ),
    ]
    if cpu is not None and "gateway_cpu_us_per_event" in run:
        us = run["gateway_cpu_us_per_event"]
        share = f"{us * run['e2e'] / 1e6:.0%} of one core{cpu_more}"
        rows.append((f"gateway CPU, {cpu} (run {n})", f"{us:.0f} µs per event", share))
    return rows


def table(result: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for n, run in enumerate(result.get("e2e", []), start=1):
        rows += e2e_rows(n, run, "", "", "gateway end to end", cpu="end to end")
    if "e2e_full" in result:
        run = result["e2e_full"]
        rows.append(
            (
                "end to end, leases+commands+recovery on",
                f"{run['e2e']:,.0f} events/s",
                f"ratio {run['e2e'] / run['ceiling']:.2f}, lost {run['lost']}",
            )
        )
    over = "NATS JetStream" if result.get("xswitch_nats") == "jetstream" else "core NATS"
    for n, run in enumerate(result.get("e2e_xswitch", []), start=1):
        size = f"{result['xswitch_event_bytes']} B"
        rows += e2e_rows(n, run, ", XSwitch event size", size, f"XSwitch end to end over {over}")
    for n, run in enumerate(result.get("e2e_meiqia", []), start=1):
        answer = run["answer"]
        rows += e2e_rows(
            n,
            run,
            ", Meiqia event size",
            f"{result['meiqia_event_bytes']} B",
            "Meiqia end to end over signed webhooks",
            lost=f", failed {run['failed']} ({run['concurrency']} in flight; goal >= 0.80)",
            cpu="Meiqia end to end",
            cpu_more=f"; answer p50 {answer['p50_ms']:.1f} / p99 {answer['p99_ms']:.1f} ms",
        )
    arrivals = " (poisson)" if getattr(args, "arrivals", "paced") == "poisson" else ""
    for key, by_rate in result.get("latency", {}).items():
        name, _, loop = key.partition(", ")
        window = {
            "default": "",
            "baseline": ", baseline tree",
            "floor": ", floor relay (bench/floor.py)",
        }.get(name, f", coalesce_ms {name}") + (f", {loop}" if loop else "")
        for rate, runs in by_rate.items():
            goal = 10 if float(rate) <= 1000 else 20
            for n, lat in enumerate(runs, start=1):
                rows.append(
                    (
                        f"{float(rate):,.0f} frames/s{arrivals}{window} (run {n})",
                        f"p50 {lat['p50_ms']:.1f} / p99 {lat['p99_ms']:.1f} / "
                        f"max {lat['max_ms']:.1f} ms, lost {lat['lost']} (p99 goal < {goal} ms)",
                        f"CPU {lat['gateway_cpu_us_per_frame']:.0f} µs per frame, "
                        f"{lat['gateway_cpu_share']:.0%} of one core",
                    )
                )
    latency = result.get("latency", {})
    floor = latency.get("floor") or latency.get("floor, asyncio") or {}
    for rate, runs in floor.items():
        mean = sum(run["gateway_cpu_us_per_frame"] for run in runs) / len(runs)
        for key, by_rate in latency.items():
            if key in ("floor", "floor, asyncio") or rate not in by_rate:
                continue
            ours = by_rate[rate]
            cpu = sum(run["gateway_cpu_us_per_frame"] for run in ours) / len(ours)
            rows.append(
                (
                    f"{float(rate):,.0f} frames/s, {key} / floor",
                    f"CPU per frame x{cpu / mean:.2f} the floor's",
                    f"{cpu:.0f} / {mean:.0f} µs, mean of {len(ours)} / {len(runs)} runs",
                )
            )
    if "commands" in result:
        c = result["commands"]
        rows.append(
            (
                f"command RPC at {args.command_rate:g}/s, {args.duration:g} s",
                f"p50 {c['p50_ms']:.1f} / p99 {c['p99_ms']:.1f} ms",
                f"{c['count']} answered, {c['failed']} failed or late",
            )
        )
    for vendor, rate in result.get("normalize", {}).items():
        rows.append((f"normalize {vendor} (per core)", f"{rate:,.0f} msg/s", "sample.jsonl"))
    return rows


def print_table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(3)] if rows else [0, 0, 0]
    print(f"| {'bench':<{widths[0]}} | {'result':<{widths[1]}} | {'':<{widths[2]}} |")
    print(f"|{'-' * (widths[0] + 2)}|{'-' * (widths[1] + 2)}|{'-' * (widths[2] + 2)}|")
    for row in rows:
        print("| " + " | ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)) + " |")


def revision() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def profile_top(path: Path, limit: int = 25) -> list[tuple[str, float, float]]:
    """From py-spy's raw (collapsed) output: the functions with most samples, as (function,
    share of samples on the CPU in it, share in it or what it called)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    names = [name for name, _ in own.most_common(limit)]
    return [(name, own[name] / total, inclusive[name] / total) for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--events", type=int, default=20_000, help="frames per end-to-end run")
    parser.add_argument(
        "--repeat", type=int, default=1, help="end-to-end runs, each with its ceiling"
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[1000.0, 2000.0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per fixed rate")
    parser.add_argument("--command-rate", type=float, default=200.0)
    parser.add_argument(
        "--coalesce-ms",
        type=float,
        nargs="+",
        default=None,
        help="latency: one gateway per `bus.coalesce_ms` value, runs alternating between them"
        " (default: one gateway, default settings)",
    )
    parser.add_argument(
        "--xswitch-jetstream",
        choices=("auto", "on", "off"),
        default="auto",
        help="the XSwitch tenant's `jetstream` setting (auto, the gateway's default: JetStream)",
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        default=None,
        help="latency: also run the gateway of this source tree (e.g. `git archive REV | tar -x"
        " -C DIR`), alternating with this one's: before and after in the same minutes",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="latency: also run bench/floor.py, the least relay of the same frames with the "
        "same libraries (no spool, no normalizer), alternating with the gateway(s)",
    )
    parser.add_argument(
        "--arrivals",
        choices=["paced", "poisson"],
        default="paced",
        help="latency: frames evenly spaced (each alone in its turn of the gateway's loop, the "
        "dearest case) or at random independent times, as the frames of many PBXs arrive",
    )
    parser.add_argument(
        "--event-loop",
        nargs="+",
        choices=["asyncio", "uvloop"],
        help="latency: one gateway (and floor relay) per event loop (the `event_loop` setting), "
        "runs alternating between them",
    )
    parser.add_argument("--label", default="latest", help="results go to suite-<label>.json")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run `gateway run` under py-spy (raw output here; XSwitch's in FILE-xswitch, "
        "Meiqia's in FILE-meiqia) for the end-to-end and fixed-rate (latency) runs",
    )
    args = parser.parse_args()
    started = time.time()
    result = asyncio.run(measure(args))
    rows = table(result, args)
    command = "python bench/suite.py " + " ".join(sys.argv[1:])
    print(f"\n{command.strip()}  ({revision()}, {time.time() - started:.0f} s)\n")
    print_table(rows)
    document = {
        "when": datetime.now(UTC).isoformat(),
        "command": command.strip(),
        "revision": revision(),
        "python": platform.python_version(),
        "cpus": __import__("os").cpu_count(),
        "result": result,
        "table": rows,
    }
    profiles = [
        ("profile", "e2e", args.profile),
        ("profile_xswitch", "e2e-xswitch", xswitch_profile(args.profile)),
        ("profile_meiqia", "e2e-meiqia", vendor_profile(args.profile, "meiqia")),
    ]
    for key, part, path in profiles:
        if path is None or not path.exists():
            continue
        if part not in args.only and not (part == "e2e" and "latency" in args.only):
            continue  # a file left by an earlier run
        top = profile_top(path)
        document[key] = top
        print(f"\npy-spy, {path}: own% incl% function")
        for name, mine, total in top:
            print(f"{mine * 100:5.1f} {total * 100:5.1f}  {name}")
    out = ROOT / "bench" / "results" / f"suite-{args.label}.json"
    out.write_text(json.dumps(document, indent=2))
    print(f"\nsaved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
