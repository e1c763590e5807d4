"""UUCall cloud: the plugin declaration.

No call events: account and billing state is polled over REST (seed ``000``) into
``account.*`` events, and the administration operations are ``uucall.*`` commands.
"""

from __future__ import annotations

from gateway.connectors.plugin import SimulatorSpec, VendorPlugin
from gateway.connectors.uucall.commands import COMMAND_MODELS, COMMAND_NAMES
from gateway.connectors.uucall.connector import UucallConnector
from gateway.connectors.uucall.normalize import normalize_message
from gateway.connectors.uucall.settings import UucallPbxSettings

PLUGIN = VendorPlugin(
    name="uucall",
    title="UUCall cloud",
    settings=UucallPbxSettings,
    connector=UucallConnector,
    normalize=normalize_message,
    simulator=SimulatorSpec.lazy("gateway.sim.uucall.demo:SIMULATOR"),
    commands=COMMAND_NAMES,
    command_models=COMMAND_MODELS,
)
