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
import tempfile
from pathlib import Path
from typing import Any

import orjson

from tests.integration.brokers import destroy_all, start_cluster
from tests.integration.failover import node_kill_run

RESULTS = Path(__file__).parent / "results" / "cluster_failover.json"


async def main(runs: int) -> list[dict[str, Any]]:
    nodes = await asyncio.to_thread(start_cluster, 3, "gwbench")
    log_dir = Path(tempfile.mkdtemp(prefix="cluster-failover-"))
    rows: list[dict[str, Any]] = []
    try:
        for run in range(1, runs + 1):
            rows.append(await node_kill_run(nodes, run, log_dir / f"run{run}.log"))
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
