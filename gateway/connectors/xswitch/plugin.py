"""XSwitch XCC: the plugin declaration.

Call events arrive over NATS (JSON-RPC ``Event.Channel`` / ``Event.CDR`` / ``Event.DTMF``),
configuration is polled and managed over the REST API (seed ``002``), ``call.hangup`` goes to
the node as ``XNode.Hangup``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from gateway.connectors.plugin import DemoOptions, SimulatorSpec, VendorPlugin
from gateway.connectors.xswitch.commands import COMMAND_MODELS
from gateway.connectors.xswitch.connector import XSwitchConnector
from gateway.connectors.xswitch.normalize import normalize_message
from gateway.connectors.xswitch.settings import XSwitchPbxSettings
from gateway.schema.commands import command_name
from gateway.sim.xswitch.cli import XSwitchSimulator, add_arguments, serve

DEMO_TZ = "Asia/Shanghai"
#: Call control XCC offers over NATS; every other contract command answers ``unsupported``.
CALL_COMMANDS = frozenset({"call.hangup"})


@contextlib.asynccontextmanager
async def _demo(options: DemoOptions) -> AsyncIterator[XSwitchPbxSettings]:
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
            jetstream="off",  # a demo leaves no stream behind on the shared server
            config_poll_interval_s=5.0,
            timezone=DEMO_TZ,
        )
    finally:
        await sim.stop()


PLUGIN = VendorPlugin(
    name="xswitch",
    title="XSwitch XCC",
    settings=XSwitchPbxSettings,
    connector=XSwitchConnector,
    normalize=normalize_message,
    simulator=SimulatorSpec(add_arguments=add_arguments, serve=serve, demo=_demo),
    commands=CALL_COMMANDS | {command_name(model) for model in COMMAND_MODELS},
    command_models=COMMAND_MODELS,
)
