"""``gateway demo --vendor uucall``: the UUCall cloud simulator and a PBX's settings for it.

Named by the plugin with ``SimulatorSpec.lazy`` and imported only by ``gateway sim`` and
``gateway demo``, never by a process that only runs the gateway.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.connectors.plugin import DemoOptions, SimulatorSpec
from gateway.connectors.uucall.settings import UucallPbxSettings
from gateway.sim.uucall.cli import add_arguments, serve
from gateway.sim.uucall.rest import WIKI_BASE_PATH, UucallSimulator

DEMO_TZ = "Asia/Shanghai"
DEMO_THRESHOLD = 20000  # 200.00 in fen: the simulator's balance falls below it and recovers


@contextlib.asynccontextmanager
async def demo(options: DemoOptions) -> AsyncIterator[UucallPbxSettings]:
    rate = options.calls_per_second if options.calls_per_second > 0 else 1.0
    sim = UucallSimulator(
        # an enterprise of its own per run: the cursors a previous demo left in the shared
        # state of the tenant belong to another uid, so this run starts afresh
        uid=str(10001 + secrets.randbelow(80000)),
        seed=options.seed,
        tick_s=1.0 / rate,
        low_mark=DEMO_THRESHOLD,
        tz=DEMO_TZ,
        auth="signed",
        token=secrets.token_hex(16),
        account_id=secrets.token_hex(16),
        app_id=secrets.token_hex(16),
        base_path=WIKI_BASE_PATH,
        envelope="wiki",
        errors_in_body=True,
    )
    await sim.start()
    folder = Path(tempfile.mkdtemp(prefix="uucall-demo-downloads-"))
    try:
        yield UucallPbxSettings(
            tenant=options.tenant,
            vendor="uucall",
            base_url=sim.base_url,
            uid=sim.uid,
            uid_name=sim.uid_name,
            auth="signed",
            account_id=sim.account_id,
            app_id=sim.app_id,
            secret=sim.token,
            low_balance_threshold=DEMO_THRESHOLD,
            account_poll_s=1.0,
            cashlog_poll_s=2.0,
            bill_poll_s=3.0,
            oplog_poll_s=2.0,
            notice_poll_s=3.0,
            download_dir=folder,
            timezone=DEMO_TZ,
        )
    finally:
        await sim.stop()
        shutil.rmtree(folder, ignore_errors=True)
        refused = {k: v for k, v in sim.signed.items() if k != "accepted"}
        print(
            f"demo: UUCall simulator at {sim.base_url}: envelope {sim.envelope}"
            f" (errors in the body), signed requests accepted {sim.signed['accepted']},"
            f" refused {sum(refused.values())}"
            + (
                f" ({', '.join(f'{k} {v}' for k, v in sorted(refused.items()))})" if refused else ""
            ),
            file=sys.stderr,
            flush=True,
        )


SIMULATOR = SimulatorSpec(add_arguments=add_arguments, serve=serve, demo=demo)
