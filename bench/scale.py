"""Start-up at scale: `python bench/scale.py [--pbxs 1000 2000] [--idle-s 30]`.

For each PBX count: a RabbitMQ node of its own (never the machine's broker on 5672), one Yeastar
simulator on loopback standing in for every PBX (it answers get_token and keeps each WebSocket
subscribed), and one `gateway run` process with the default settings (leases, commands, shared
ledger and recovery on), its config listing that many PBXs. Measured:

- time from process start until every link is subscribed (sockets with topics at the simulator),
  and the gateway's CPU time until then (less at the mercy of other work than the time);
  the same for this process (the simulator) and the broker node, and the load average;
- where the start-up goes: the first and last time of the log events of :data:`PHASES`;
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

``--vendor`` measures the same for another vendor, one simulator in this process standing in
for every tenant: ``xswitch`` (the XCC REST simulator for the configuration poll; the gateway's
default ``jetstream: auto`` makes one stream ``XCC_<tenant>`` and a durable consumer per tenant on
the NATS server at ``BENCH_NATS_URL``, each tenant under a subject prefix unique to the run; the
streams are deleted afterwards; each capped at 1 MiB, see ``XSWITCH_STREAM_BYTES``),
``uucall`` (accounts polled at the default intervals; the
simulator's rate limit off: it stands in for many enterprises) or ``meiqia`` (call centers whose
``records`` and seats are polled at the defaults, webhooks on). A tenant counts as connected at
its ``link_state`` ``connected`` log line; the broker figures, the stop and the log as above;
"requests" are those the simulator answered (Yeastar: token requests), also per second while
idle.
``--instances 2`` runs that many ``gateway run`` processes with the same configuration, sharing
the tenants by their leases: RSS and CPU are then the sum over the processes.

Results are printed as a table and saved to bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aio_pika  # noqa: E402
import nats  # noqa: E402
import yaml  # noqa: E402
from nats.js.errors import NotFoundError  # noqa: E402

from bench.harness import frame, seq_of  # noqa: E402
from gateway.sim.meiqia.server import MeiqiaSimulator  # noqa: E402
from gateway.sim.uucall.rest import UucallSimulator  # noqa: E402
from gateway.sim.xswitch.cli import XSwitchSimulator  # noqa: E402
from gateway.sim.yeastar.server import YeastarSimulator  # noqa: E402
from tests.integration.brokers import RabbitNode, start_node  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scale.json"
NATS_URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")
VENDORS = ("yeastar", "xswitch", "uucall", "meiqia")
XSWITCH_STREAM_BYTES = 1 << 20


def proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


async def stop_all(procs: list[asyncio.subprocess.Process], timeout_s: float) -> None:
    """SIGTERM to every process at once, then wait for each (killed after ``timeout_s``)."""
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def written(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def subscribed(sim: YeastarSimulator) -> int:
    return sum(1 for conn in list(sim._conns) if conn.topics)


class ConnectedInLog:
    """Tenants whose link's last ``link_state`` was ``connected`` (read on from where it
    stopped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.tenants: set[str] = set()

    def count(self) -> int:
        with contextlib.suppress(OSError), self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
            end = chunk.rfind(b"\n") + 1
            self.offset += end
            for line in chunk[:end].splitlines():
                if b'"link_state"' in line:
                    with contextlib.suppress(ValueError):
                        entry = json.loads(line)
                        if entry.get("state") == "connected":
                            self.tenants.add(str(entry.get("tenant")))
                        else:  # handed over, stopped or lost
                            self.tenants.discard(str(entry.get("tenant")))
        return len(self.tenants)


class Source:
    """The simulator standing in for every tenant of one vendor, and how a tenant is listed."""

    def __init__(self, vendor: str, firmware: str) -> None:
        self.vendor = vendor
        self.run = uuid.uuid4().hex[:6]
        self.yeastar = YeastarSimulator(seed=1, idle_timeout=120, firmware=firmware)
        self.xswitch = XSwitchSimulator(
            nats_url=NATS_URL, prefix=f"from-bscale{self.run}.", seed=1, controller=False
        )
        self.uucall = UucallSimulator(rate_limit=0.0, seed=1)
        self.meiqia = MeiqiaSimulator(seed=1)
        self.secret = f"whsec-bench-{uuid.uuid4().hex}"
        self.log: ConnectedInLog | None = None
        self.tenants: list[str] = []

    def tenant(self, n: int) -> str:
        return f"pbx{n:05d}" if self.vendor == "yeastar" else f"{self.vendor}{self.run}-{n:05d}"

    async def start(self) -> None:
        if self.vendor == "yeastar":
            await self.yeastar.start()
        elif self.vendor == "xswitch":
            await self.xswitch.rest.start("127.0.0.1", 0)  # no node: idle tenants
        elif self.vendor == "uucall":
            await self.uucall.start()
        else:
            await self.meiqia.start()

    async def stop(self) -> None:
        if self.vendor == "yeastar":
            await self.yeastar.stop()
        elif self.vendor == "xswitch":
            await self.xswitch.rest.stop()
            await self._delete_streams()
        elif self.vendor == "uucall":
            await self.uucall.stop()
        else:
            await self.meiqia.stop()

    async def _delete_streams(self) -> None:
        """The streams the gateway made for this run's tenants (they outlive it by design)."""
        client = await nats.connect(NATS_URL, connect_timeout=10)
        try:
            js = client.jetstream(timeout=10)
            for tenant in self.tenants:
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(f"XCC_{tenant}")
        finally:
            await client.close()

    def pbx(self, n: int) -> dict[str, Any]:
        tenant = self.tenant(n)
        self.tenants.append(tenant)
        if self.vendor == "yeastar":
            sim = self.yeastar
            return {
                "tenant": tenant,
                "vendor": "yeastar",
                "base_url": sim.base_url,
                "client_id": sim.client_id,
                "client_secret": sim.client_secret,
            }
        if self.vendor == "xswitch":
            return {
                "tenant": tenant,
                "vendor": "xswitch",
                "base_url": self.xswitch.base_url,
                "dev_key": self.xswitch.dev_key,
                "nats_url": NATS_URL,
                "subject_prefix": f"from-bscale{self.run}-{n}.",
                "command_prefix": f"to-bscale{self.run}-{n}.",
                # JetStream reserves a stream's max_bytes on the server when it is made: at the
                # default 1 GiB the shared server here (about 59 GiB) takes 59 tenants, then
                # refuses ("insufficient storage resources"). Idle streams hold nothing.
                "stream_max_bytes": XSWITCH_STREAM_BYTES,
            }
        if self.vendor == "uucall":
            return {
                "tenant": tenant,
                "vendor": "uucall",
                "base_url": self.uucall.base_url,
                "uid": self.uucall.uid,
                "uid_name": self.uucall.uid_name,
                "secret": self.uucall.token,
            }
        return {
            "tenant": tenant,
            "vendor": "meiqia",
            "base_url": self.meiqia.base_url,
            "token": self.meiqia.token,
            "webhook_secret": self.secret,
        }

    def connected(self) -> int:
        if self.vendor == "yeastar":
            return subscribed(self.yeastar)
        return 0 if self.log is None else self.log.count()

    def requests(self) -> int:
        """Requests the simulator answered (Yeastar: token requests)."""
        if self.vendor == "yeastar":
            return self.yeastar.token_requests
        if self.vendor == "xswitch":
            return 0
        sim = self.uucall if self.vendor == "uucall" else self.meiqia
        return sum(sim.requests.values())


async def blast_frames(
    sim: YeastarSimulator, node: RabbitNode, frames: int, pids: list[int]
) -> dict[str, Any]:
    """``frames`` Yeastar 30011 frames written round-robin to every subscribed PBX socket, each
    PBX's share as fast as its socket takes it; a consumer on the node receives the events.
    Frames/s end to end (first frame written -> last event received), lost, and each gateway
    process's CPU over the run (share of one core)."""
    connection = await aio_pika.connect(node.url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "pbx.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue("bench.scale.consumer", exclusive=True)
        await queue.bind(exchange, routing_key="#")
        seen: dict[int, float] = {}
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if message.type != "call.answered":
                return
            seq = seq_of(message.body)
            if seq is not None and seq < frames and seq not in seen:
                seen[seq] = time.perf_counter()
                if len(seen) >= frames:
                    done.set()

        await queue.consume(on_message, no_ack=True)
        sockets = [conn.ws for conn in list(sim._conns) if 30011 in conn.topics]
        cpu_before = [proc_cpu_s(pid) for pid in pids]
        started = time.perf_counter()

        async def write(k: int) -> None:
            for seq in range(k, frames, len(sockets)):
                await sockets[k].send_str(frame(seq))

        await asyncio.gather(*(write(k) for k in range(len(sockets))))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 60)
        took = (max(seen.values()) if seen else time.perf_counter()) - started
        cpu = [proc_cpu_s(pid) - before for pid, before in zip(pids, cpu_before, strict=True)]
        return {
            "frames": frames,
            "sockets": len(sockets),
            "frames_per_s": round(len(seen) / took),
            "lost": frames - len(seen),
            "cpu_pct_per_process": [round(100 * c / took, 1) for c in cpu],
            "cpu_us_per_frame": round(sum(cpu) / max(1, len(seen)) * 1e6, 1),
        }
    finally:
        await connection.close()


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


#: Log events whose first and last time (s after the gateway process started) show where the
#: start-up goes: the command queues declared (``ledger_following``), leases taken, tokens,
#: subscriptions, commands taken.
PHASES = (
    "http_listening",
    "ledger_following",
    "gateway_started",
    "lease_acquired",
    "token_obtained",
    "subscribed",
    "commands_consuming",
)


def phases(path: Path, started_at: float) -> dict[str, list[float]]:
    """Per event of :data:`PHASES`: [first, last] seconds after ``started_at`` (wall clock)."""
    seen: dict[str, list[float]] = {}
    wanted = [f'"{event}"'.encode() for event in PHASES]
    with path.open("rb") as log:
        for line in log:
            if not any(w in line for w in wanted):
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                entry = json.loads(line)
                event = entry["event"]
                if event not in PHASES:
                    continue
                at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
                offset = round(at.timestamp() - started_at, 2)
                span = seen.setdefault(event, [offset, offset])
                span[1] = offset
    return {event: seen[event] for event in PHASES if event in seen}


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


def config(source: Source, node: RabbitNode, pbxs: int, state: Path, log_level: str | None) -> Path:
    path = state / "gateway.yaml"
    logging = {} if log_level is None else {"logging": {"level": log_level}}
    path.write_text(
        yaml.safe_dump(
            {
                "bus": {"url": node.url},
                "state_dir": str(state / "var"),
                "http": {"port": 0},
                **logging,
                "pbxs": [source.pbx(n) for n in range(pbxs)],
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
    vendor: str = "yeastar",
    instances: int = 1,
    blast: int = 0,
) -> dict[str, Any]:
    node = await asyncio.to_thread(start_node, "gwscale")
    source = Source(vendor, firmware)
    await source.start()
    state = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    procs: list[asyncio.subprocess.Process] = []
    logs = [state / f"gateway-{i}.log" for i in range(instances)]
    source.log = ConnectedInLog(logs[0])
    watches = [ConnectedInLog(log) for log in logs]
    try:
        await asyncio.sleep(2)  # the fresh node settles
        broker_before = node.rss_bytes()
        objects_before = await broker_objects(node)
        path = config(source, node, pbxs, state, log_level)
        started = time.monotonic()
        started_at = time.time()
        bench_cpu_before = proc_cpu_s(os.getpid())
        broker_pid = node.pid()
        broker_cpu_before = proc_cpu_s(broker_pid) if broker_pid else 0.0
        env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
        launcher = ["-m", "gateway.cli"]
        if tracemalloc is not None:
            launcher = [str(ROOT / "bench" / "tracemem.py"), str(tracemalloc), "--"]
        for i in range(instances):
            own = state / f"gateway-{i}.yaml"  # a state_dir of its own per instance
            settings = yaml.safe_load(path.read_text())
            settings["state_dir"] = str(state / f"var-{i}")
            own.write_text(yaml.safe_dump(settings))
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    *launcher,
                    "run",
                    "--config",
                    str(own),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=open(logs[i], "wb"),  # noqa: ASYNC230
                    cwd=str(tree or ROOT),
                    env=env,
                )
            )
        proc = procs[0]
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

        def connected() -> int:
            if vendor == "yeastar":
                return source.connected()
            # a tenant moved between instances logs connected in each: count it once
            seen: set[str] = set()
            for watch in watches:
                watch.count()
                seen |= watch.tenants
            return len(seen)

        requests_per_s: Counter[int] = Counter()
        last_requests = 0
        all_subscribed_s: float | None = None
        start_cpu_s: float | None = None  # the gateway's CPU time until then: less noisy
        # the same for this process (the simulator standing in for every PBX) and the broker
        # node: on a shared machine, who holds the cores during the start
        bench_start_cpu_s: float | None = None
        broker_start_cpu_s: float | None = None
        load_at_start = os.getloadavg()
        progress: list[tuple[float, int]] = []
        while time.monotonic() - started < timeout_s:
            await asyncio.sleep(0.25)
            now = time.monotonic() - started
            requests_per_s[int(now)] += source.requests() - last_requests
            last_requests = source.requests()
            count = connected()
            if not progress or progress[-1][1] != count:
                progress.append((round(now, 2), count))
            if count >= pbxs:
                all_subscribed_s = now
                start_cpu_s = proc_cpu_s(proc.pid)
                bench_start_cpu_s = proc_cpu_s(os.getpid()) - bench_cpu_before
                if broker_pid:
                    broker_start_cpu_s = proc_cpu_s(broker_pid) - broker_cpu_before
                break
            if any(p.returncode is not None for p in procs):
                break
        start_top: list[tuple[str, float]] = []
        if start_spy is not None and start_out is not None:
            start_spy.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
            await start_spy.wait()
            if start_out.exists():
                start_top = profile_top(start_out)
        # idle: nothing happens on the PBXs; the gateway only heartbeats, holds leases and polls
        await asyncio.sleep(5)
        requests_before = source.requests()
        cpu_before, idle_from = sum(proc_cpu_s(p.pid) for p in procs), time.monotonic()
        await asyncio.sleep(idle_s)
        idle_took = time.monotonic() - idle_from
        cpu_pct = 100 * (sum(proc_cpu_s(p.pid) for p in procs) - cpu_before) / idle_took
        idle_requests_per_s = (source.requests() - requests_before) / idle_took
        per_instance = [
            {"rss_mb": round(proc_rss(p.pid) / 2**20, 1), "tenants_connected": w.count()}
            for p, w in zip(procs, watches, strict=True)
        ]
        gateway_rss = sum(proc_rss(p.pid) for p in procs)
        broker_after = node.rss_bytes()
        objects = await broker_objects(node)
        still = connected() if vendor == "yeastar" else None
        blasted = None
        if blast and vendor == "yeastar":
            blasted = await blast_frames(source.yeastar, node, blast, [p.pid for p in procs])
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
        await stop_all(procs, 120)
        stop_s = time.monotonic() - stop_started
        shared = await shared_states(node)
    finally:
        await stop_all(procs, 60)
        await source.stop()
        await node.destroy()
    suffix = "" if vendor == "yeastar" else f"-{vendor}"
    log_tail: list[str] = []
    problems: Counter[str] = Counter()
    empty: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    samples: dict[str, str] = {}
    kept: list[str] = []
    for i, log_path in enumerate(logs):
        name = f"bench-scale{suffix}-{pbxs}{'' if i == 0 else f'-{i}'}.log"
        copy = Path(tempfile.gettempdir()) / name  # the whole log, for a look
        shutil.copyfile(log_path, copy)
        kept.append(str(copy))
        log_tail += log_path.read_text(errors="replace").splitlines()[-5:]
        one = read_log(log_path)
        problems.update(one["problems"])
        empty.update(one["empty_errors"])
        levels.update(one["levels"])
        for key, line in one["problem_samples"].items():
            samples.setdefault(key, line)
    log: dict[str, Any] = {
        "levels": dict(levels),
        "problems": dict(problems.most_common()),
        "problem_samples": samples,
        "empty_errors": dict(empty),
    }
    start_phases = phases(logs[0], started_at)
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
        "vendor": vendor,
        "instances": instances,
        "pbxs": pbxs,
        "all_subscribed_s": None if all_subscribed_s is None else round(all_subscribed_s, 2),
        "subscribed_at_end": still,
        "start_cpu_s": None if start_cpu_s is None else round(start_cpu_s, 2),
        "bench_start_cpu_s": None if bench_start_cpu_s is None else round(bench_start_cpu_s, 2),
        "broker_start_cpu_s": None if broker_start_cpu_s is None else round(broker_start_cpu_s, 2),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "token_requests": source.requests(),
        "token_requests_max_per_s": max(requests_per_s.values(), default=0),
        "idle_requests_per_s": round(idle_requests_per_s, 1),
        "gateway_rss_mb": round(gateway_rss / 2**20, 1),
        "gateway_idle_cpu_pct": round(cpu_pct, 2),
        "per_instance": per_instance,
        "blast": blasted,
        "broker_rss_before_mb": round(broker_before / 2**20, 1),
        "broker_rss_after_mb": round(broker_after / 2**20, 1),
        "broker_rss_growth_mb": round((broker_after - broker_before) / 2**20, 1),
        "broker_objects": objects,
        "broker_objects_before": objects_before,
        "per_pbx": per_pbx,
        "progress": progress[:: max(1, len(progress) // 20)],
        "start_phases": start_phases,
        "stop_s": round(stop_s, 2),
        "exit_code": [p.returncode for p in procs] if instances > 1 else proc.returncode,
        "states_shared": shared,
        "log": log,
        "warnings": sum(log["problems"].values()),
        "idle_profile": top,
        "start_profile": start_top,
        "tree": str(tree) if tree else None,
        "gateway_log": kept[0] if instances == 1 else kept,
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
    parser.add_argument(
        "--vendor", choices=VENDORS, default="yeastar", help="the vendor of every tenant"
    )
    parser.add_argument(
        "--instances", type=int, default=1, help="gateway processes sharing the tenants by leases"
    )
    parser.add_argument(
        "--blast",
        type=int,
        default=0,
        help="Yeastar: after the idle measure, this many frames as fast as the sockets take"
        " them, spread over every PBX; frames/s end to end and CPU per process",
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
            vendor=args.vendor,
            instances=args.instances,
            blast=args.blast,
        )
        for n in args.pbxs
    ]
    print(
        f"\n{args.vendor} x {args.instances} instance(s)"
        f"\n{'PBXs':>6} {'connected s':>12} {'CPU s':>6} {'sim CPU':>7} {'MQ CPU':>6} "
        f"{'requests':>7} {'req/s max':>9} "
        f"{'gw RSS MB':>9} "
        f"{'gw CPU %':>8} {'broker +MB':>10} {'queues':>7} {'streams':>7} {'channels':>8} "
        f"{'consumers':>9} {'procs/PBX':>9} {'stop s':>6} {'shared':>6} {'warnings':>8}"
    )
    for r in runs:
        o = r["broker_objects"]
        print(
            f"{r['pbxs']:>6} {r['all_subscribed_s']!s:>12} {r['start_cpu_s']!s:>6} "
            f"{r['bench_start_cpu_s']!s:>7} {r['broker_start_cpu_s']!s:>6} "
            f"{r['token_requests']:>7} "
            f"{r['token_requests_max_per_s']:>9} {r['gateway_rss_mb']:>9} "
            f"{r['gateway_idle_cpu_pct']:>8} {r['broker_rss_growth_mb']:>10} "
            f"{sum(o['queues'].values()):>7} {o['queues'].get('stream', 0):>7} "
            f"{o['channels']:>8} {o['consumers']:>9} {r['per_pbx']['erlang_processes']:>9} "
            f"{r['stop_s']:>6} {r['states_shared']:>6} {r['warnings']:>8}"
        )
    if len(runs) == 2:  # per tenant, fitted from the two sizes
        small, big = sorted(runs, key=lambda r: r["pbxs"])
        span = big["pbxs"] - small["pbxs"]
        for key, unit in (("gateway_rss_mb", "MB"), ("gateway_idle_cpu_pct", "% of a core")):
            slope = (big[key] - small[key]) / span * 1000
            base = small[key] - slope * small["pbxs"] / 1000
            print(f"  per 1,000 tenants: {key} +{slope:.2f} {unit} (over {base:.1f})")
    for r in runs:
        spans = ", ".join(f"{event} {a}-{b}" for event, (a, b) in r["start_phases"].items())
        print(f"  {r['pbxs']} PBXs start-up, s after the process start (first-last): {spans}")
    for r in runs:
        if r["blast"]:
            print(f"  {r['pbxs']} PBXs blast: {r['blast']}")
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
