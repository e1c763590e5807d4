"""The fake PBX's plugin declaration (registered by ``tests/conftest.py`` as an entry point)."""

from __future__ import annotations

from gateway.sdk import SimulatorSpec, VendorPlugin
from tests.fakepbx.connector import FakePbxConnector
from tests.fakepbx.normalize import normalize
from tests.fakepbx.routes import routes
from tests.fakepbx.settings import FakePbxSettings
from tests.fakepbx.sim import add_arguments, demo, serve

PLUGIN = VendorPlugin(
    name="fakepbx",
    title="Fake PBX (tests)",
    settings=FakePbxSettings,
    connector=FakePbxConnector,
    normalize=normalize,
    simulator=SimulatorSpec(add_arguments=add_arguments, serve=serve, demo=demo),
    commands=frozenset({"call.dial"}),
    routes=routes,
)
