"""XSwitch XCC: the plugin declaration.

Call events arrive over NATS (JSON-RPC ``Event.Channel`` / ``Event.CDR`` / ``Event.DTMF``),
configuration is polled and managed over the REST API (seed ``002``), ``call.hangup`` goes to
the node as ``XNode.Hangup``.
"""

from __future__ import annotations

from gateway.connectors.plugin import SimulatorSpec, VendorPlugin
from gateway.connectors.xswitch.commands import COMMAND_MODELS
from gateway.connectors.xswitch.connector import XSwitchConnector
from gateway.connectors.xswitch.normalize import normalize_message
from gateway.connectors.xswitch.settings import XSwitchPbxSettings
from gateway.schema.commands import command_name

#: Call control XCC offers over NATS; every other contract command answers ``unsupported``.
CALL_COMMANDS = frozenset({"call.hangup"})


PLUGIN = VendorPlugin(
    name="xswitch",
    title="XSwitch XCC",
    settings=XSwitchPbxSettings,
    connector=XSwitchConnector,
    normalize=normalize_message,
    simulator=SimulatorSpec.lazy("gateway.sim.xswitch.demo:SIMULATOR"),
    commands=CALL_COMMANDS | {command_name(model) for model in COMMAND_MODELS},
    command_models=COMMAND_MODELS,
)
