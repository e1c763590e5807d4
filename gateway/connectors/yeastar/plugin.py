"""Yeastar P-Series Software Edition (OpenAPI v1.0): the plugin declaration.

Events arrive on a subscribed WebSocket (manual, "API 事件" 30005-30026), commands go to the
REST API (``call/*``, ``uacsta_call/*``, ``agent/*``, ``cdr/search``).
"""

from __future__ import annotations

from gateway.connectors.plugin import SimulatorSpec, VendorPlugin
from gateway.connectors.yeastar.calls import normalize_stream
from gateway.connectors.yeastar.commands import SUPPORTED
from gateway.connectors.yeastar.connector import YeastarConnector
from gateway.connectors.yeastar.settings import YeastarPbxSettings

PLUGIN = VendorPlugin(
    name="yeastar",
    title="Yeastar P-Series",
    settings=YeastarPbxSettings,
    connector=YeastarConnector,
    normalize=normalize_stream,
    simulator=SimulatorSpec.lazy("gateway.sim.yeastar.demo:SIMULATOR"),
    commands=SUPPORTED,
)
