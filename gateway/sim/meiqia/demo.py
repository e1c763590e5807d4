"""``gateway demo --vendor meiqia``: the Meiqia call center simulator and a PBX's settings for it.

Named by the plugin with ``SimulatorSpec.lazy`` and imported only by ``gateway sim`` and
``gateway demo``, never by a process that only runs the gateway.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

from gateway.connectors.meiqia.settings import MeiqiaPbxSettings
from gateway.connectors.plugin import DemoOptions, SimulatorSpec
from gateway.sim.meiqia.cli import add_arguments, serve
from gateway.sim.meiqia.server import MeiqiaSimulator

DEMO_TZ = "Asia/Shanghai"


@contextlib.asynccontextmanager
async def demo(options: DemoOptions) -> AsyncIterator[MeiqiaPbxSettings]:
    """A simulator with short calls, records listed 1.5 s after a call (some later), seats
    changing every few seconds and, where the gateway serves HTTP, signed webhooks (some
    repeated, some forged, in the ``Meiqia-Sign`` header of the help page's example)."""
    secret = secrets.token_hex(16)
    url = f"{options.gateway_url}/webhooks/meiqia/{options.tenant}" if options.gateway_url else None
    sim = MeiqiaSimulator(
        tz=DEMO_TZ,
        seed=options.seed,
        calls_per_second=options.calls_per_second / 2,
        seat_change_s=4.0,
        record_delay_s=1.5,
        talk_s=(1.0, 4.0),
        webhook_url=url,
        webhook_secret=secret,
        bad_signatures=0.2,
        duplicates=0.3,
        sign_header="Meiqia-Sign",
    )
    await sim.start()
    try:
        yield MeiqiaPbxSettings(
            tenant=options.tenant,
            vendor="meiqia",
            base_url=sim.base_url,
            token=sim.token,
            webhook_secret=secret if url else None,
            records_poll_interval_s=2.0,
            records_overlap_s=60.0,
            seats_poll_interval_s=2.0,
            timezone=DEMO_TZ,
        )
    finally:
        await sim.stop()


SIMULATOR = SimulatorSpec(add_arguments=add_arguments, serve=serve, demo=demo)
