"""``gateway demo --vendor yeastar``: the Yeastar P-Series simulator and a PBX's settings for it.

Named by the plugin with ``SimulatorSpec.lazy`` and imported only by ``gateway sim`` and
``gateway demo``, never by a process that only runs the gateway.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.connectors.plugin import DemoOptions, PluginError, SimulatorSpec
from gateway.connectors.yeastar.settings import YeastarPbxSettings
from gateway.sim.yeastar import YeastarSimulator, add_arguments, serve

#: The demo's PBX keeps Chinese time, like the example config (CDR times are PBX-local).
DEMO_TZ = "Asia/Shanghai"


#: ``gateway demo --sim`` keys this simulator reads.
DEMO_VARIANTS = frozenset({"pbx_tz"})


@contextlib.asynccontextmanager
async def demo(options: DemoOptions) -> AsyncIterator[YeastarPbxSettings]:
    """``pbx_tz``: the zone the simulated PBX's clock runs in, while the gateway is still told
    :data:`DEMO_TZ` (a PBX left at UTC, say): the gateway warns ``pbx_timezone_mismatch``."""
    unknown = sorted(set(options.variants) - DEMO_VARIANTS)
    if unknown:
        raise PluginError(f"yeastar simulator: unknown --sim {', '.join(unknown)}")
    pbx_tz = options.variants.get("pbx_tz", DEMO_TZ)
    try:
        ZoneInfo(pbx_tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise PluginError(f"yeastar simulator: pbx_tz={pbx_tz!r} is no IANA time zone") from None
    sim = YeastarSimulator(calls_per_second=options.calls_per_second, seed=options.seed, tz=pbx_tz)
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
