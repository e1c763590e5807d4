"""What a production process loads: ``gateway run`` never imports simulator code, which the
plugins name by a string (``SimulatorSpec.lazy``); ``gateway sim`` and ``gateway demo`` do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.connectors import registry
from gateway.connectors.plugin import LazySimulator, PluginError, SimulatorSpec

ROOT = Path(__file__).resolve().parents[2]

#: Everything ``gateway run --config <the example config>`` does before it opens a socket: the
#: command line, every plugin, the settings of one PBX per vendor, the application object.
RUN_PATH = """
import sys
import orjson
from gateway import cli
from gateway.app import GatewayApp
from gateway.connectors import registry
from gateway.settings import load_settings

args = cli._parser().parse_args(["run", "--config", sys.argv[1]])
settings = load_settings(args.config)
GatewayApp(settings)
print(orjson.dumps({
    "vendors": sorted(registry.plugins()),
    "pbxs": sorted(p.vendor for p in settings.pbxs),
    "sim": sorted(m for m in sys.modules if m == "gateway.sim" or m.startswith("gateway.sim.")),
    "connectors": sorted(m for m in sys.modules if m.startswith("gateway.connectors.")),
}).decode())
"""

SECRETS = {
    "ACME_HQ_CLIENT_SECRET": "s",
    "ACME_CC_DEV_KEY": "k",
    "ACME_MQ_TOKEN": "t",
    "ACME_MQ_WEBHOOK_SECRET": "w" * 32,
    "ACME_FIN_UUCALL_TOKEN": "u",
}


def _run(code: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, **SECRETS, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def test_the_run_path_imports_no_simulator() -> None:
    seen = _run(RUN_PATH, str(ROOT / "config/gateway.example.yaml"))
    assert {"yeastar", "xswitch", "uucall", "meiqia"} <= set(seen["vendors"])
    assert seen["pbxs"] == ["meiqia", "uucall", "xswitch", "yeastar"]
    assert "gateway.connectors.yeastar.connector" in seen["connectors"]  # the plugins did load
    assert seen["sim"] == []


def test_gateway_sim_imports_only_its_vendors_simulator() -> None:
    code = """
import contextlib, io, sys
import orjson
from gateway import cli
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    cli._parser().parse_args(["sim", "xswitch", "--help"])
loaded = sorted(m for m in sys.modules if m.startswith("gateway.sim."))
print(orjson.dumps({"sim": loaded}).decode())
"""
    loaded = _run(code)["sim"]
    assert "gateway.sim.xswitch.demo" in loaded
    assert not [m for m in loaded if m.split(".")[2] in ("yeastar", "uucall", "meiqia")]


def test_every_built_in_simulator_is_lazy_and_loads() -> None:
    for name, plugin in registry.plugins().items():
        if not name.startswith(("yeastar", "xswitch", "uucall", "meiqia")):
            continue
        assert isinstance(plugin.simulator, LazySimulator), name
        assert isinstance(plugin.simulator.load(), SimulatorSpec)


def test_a_lazy_simulator_that_does_not_load_says_why() -> None:
    with pytest.raises(ValueError, match=r"must be 'package\.module:attribute'"):
        SimulatorSpec.lazy("gateway.sim.yeastar.demo")
    missing = SimulatorSpec.lazy("gateway.sim.nowhere:SIMULATOR")
    with pytest.raises(PluginError, match=r"gateway\.sim\.nowhere:SIMULATOR failed to load"):
        missing.demo  # noqa: B018 (the attribute is the import)
    wrong = SimulatorSpec.lazy("gateway.sim.yeastar.demo:DEMO_TZ")
    with pytest.raises(PluginError, match="is a str, not a SimulatorSpec"):
        wrong.load()
