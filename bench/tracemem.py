"""Run ``gateway`` under tracemalloc: ``python bench/tracemem.py OUT -- run --config FILE``.

On SIGUSR1 the process writes, to ``OUT``, the allocations still held, grouped by the line that
made them (biggest first), and the total; ``bench/scale.py --tracemalloc`` sends it while idle.
tracemalloc slows the process down (about twice): for where memory goes, not for timings.
"""

from __future__ import annotations

import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType


def main() -> int:
    out = Path(sys.argv[1])
    args = sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:]
    tracemalloc.start(1)

    def dump(_signum: int, _frame: FrameType | None) -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),)
        )
        stats = snapshot.statistics("lineno")
        total = sum(s.size for s in stats)
        lines = [f"total {total / 2**20:.1f} MB in {sum(s.count for s in stats)} blocks"]
        for stat in stats[:60]:
            frame = stat.traceback[0]
            lines.append(
                f"{stat.size / 2**10:10.0f} KB {stat.count:8d}  {frame.filename}:{frame.lineno}"
            )
        out.write_text("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR1, dump)
    from gateway.cli import main as gateway

    sys.argv = ["gateway", *args]
    return gateway()


if __name__ == "__main__":
    sys.exit(main())
