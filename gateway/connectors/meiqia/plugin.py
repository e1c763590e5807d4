"""Meiqia call center (unified call OpenAPI, seed 001): the plugin declaration.

No event socket: call records (``records``) and seats (``sips``) are polled, ``cdr.hangup``
webhooks arrive on ``POST /webhooks/meiqia/<tenant>``; click-to-dial (``callout``), record
search and seat / number management are commands.
"""

from __future__ import annotations

from gateway.connectors.meiqia.commands import COMMAND_MODELS, COMMAND_NAMES, CONTRACT_COMMANDS
from gateway.connectors.meiqia.connector import MeiqiaConnector
from gateway.connectors.meiqia.normalize import normalize_message
from gateway.connectors.meiqia.settings import MeiqiaPbxSettings
from gateway.connectors.meiqia.webhooks import routes
from gateway.connectors.plugin import SimulatorSpec, VendorPlugin

PLUGIN = VendorPlugin(
    name="meiqia",
    title="Meiqia call center",
    settings=MeiqiaPbxSettings,
    connector=MeiqiaConnector,
    normalize=normalize_message,
    simulator=SimulatorSpec.lazy("gateway.sim.meiqia.demo:SIMULATOR"),
    commands=CONTRACT_COMMANDS | COMMAND_NAMES,
    command_models=COMMAND_MODELS,
    routes=routes,
)
