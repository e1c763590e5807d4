"""Yeastar P-Series Software Edition (OpenAPI v1.0): the plugin declaration.

Events arrive on a subscribed WebSocket (manual, "API 事件" 30005-30026), commands go to the
REST API (``call/*``, ``uacsta_call/*``, ``agent/*``, ``cdr/search``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from gateway.connectors.plugin import DemoOptions, SimulatorSpec, VendorPlugin
from gateway.connectors.yeastar.calls import normalize_stream
from gateway.connectors.yeastar.commands import SUPPORTED
from gateway.connectors.yeastar.connector import YeastarConnector
from gateway.connectors.yeastar.settings import YeastarPbxSettings
from gateway.sim.yeastar import YeastarSimulator, add_arguments, serve

#: The demo's PBX keeps Chinese time, like the example config (CDR times are PBX-local).
DEMO_TZ = "Asia/Shanghai"


@contextlib.asynccontextmanager
async def _demo(options: DemoOptions) -> AsyncIterator[YeastarPbxSettings]:
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


PLUGIN = VendorPlugin(
    name="yeastar",
    title="Yeastar P-Series",
    settings=YeastarPbxSettings,
    connector=YeastarConnector,
    normalize=normalize_stream,
    simulator=SimulatorSpec(add_arguments=add_arguments, serve=serve, demo=_demo),
    commands=SUPPORTED,
)
