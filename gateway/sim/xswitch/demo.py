"""``gateway demo --vendor xswitch``: the XSwitch XCC simulator and a PBX's settings for it.

Named by the plugin with ``SimulatorSpec.lazy`` and imported only by ``gateway sim`` and
``gateway demo``, never by a process that only runs the gateway.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from gateway.connectors.plugin import DemoOptions, SimulatorSpec
from gateway.connectors.xswitch.settings import XSwitchPbxSettings
from gateway.sim.xswitch.cli import XSwitchSimulator, add_arguments, serve

DEMO_TZ = "Asia/Shanghai"


@contextlib.asynccontextmanager
async def demo(options: DemoOptions) -> AsyncIterator[XSwitchPbxSettings]:
    sim = XSwitchSimulator(
        calls_per_second=options.calls_per_second,
        config_change_s=20.0,
        seed=options.seed,
        tz=DEMO_TZ,
        talk_s=(2, 8),  # calls end within a short demo
        on_accept=lambda uuid: print(
            f"demo: a second controller (cn.xswitch.ctrl.app.acd.sim-controller) accepted"
            f" call {uuid}; the gateway observes its events there",
            flush=True,
        ),
    )
    await sim.start()
    try:
        yield XSwitchPbxSettings(
            tenant=options.tenant,
            vendor="xswitch",
            base_url=sim.base_url,
            dev_key=sim.dev_key,
            nats_url=sim.nats_url,
            subject_prefix=sim.prefix,
            command_prefix=sim.command_prefix,
            jetstream="off",  # a demo leaves no stream behind on the shared server
            config_poll_interval_s=5.0,
            timezone=DEMO_TZ,
        )
    finally:
        await sim.stop()


SIMULATOR = SimulatorSpec(add_arguments=add_arguments, serve=serve, demo=demo)
