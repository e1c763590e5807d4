"""``gateway demo --vendor yeastar``: the Yeastar P-Series simulator and a PBX's settings for it.

Named by the plugin with ``SimulatorSpec.lazy`` and imported only by ``gateway sim`` and
``gateway demo``, never by a process that only runs the gateway.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from gateway.connectors.plugin import DemoOptions, SimulatorSpec
from gateway.connectors.yeastar.settings import YeastarPbxSettings
from gateway.sim.yeastar import YeastarSimulator, add_arguments, serve

#: The demo's PBX keeps Chinese time, like the example config (CDR times are PBX-local).
DEMO_TZ = "Asia/Shanghai"


@contextlib.asynccontextmanager
async def demo(options: DemoOptions) -> AsyncIterator[YeastarPbxSettings]:
    sim = YeastarSimulator(calls_per_second=options.calls_per_second, seed=options.seed, tz=DEMO_TZ)
    await sim.start()
    try:
        yield YeastarPbxSettings(
            tenant=options.tenant,
            vendor="yeastar",
            base_url=sim.base_url,
            client_id=sim.client_id,
            client_secret=sim.client_secret,
            timezone=DEMO_TZ,
        )
    finally:
        await sim.stop()


SIMULATOR = SimulatorSpec(add_arguments=add_arguments, serve=serve, demo=demo)
