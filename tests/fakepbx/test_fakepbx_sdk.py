"""The test vendor is built from the plugin SDK and checked with the testing kit only, as a
vendor package outside this repository would be."""

from __future__ import annotations

import ast
from pathlib import Path

import aiohttp

import gateway.sdk
import gateway.testing
from gateway.testing import (
    check_declaration,
    check_ids_deterministic,
    fake_link_resources,
    normalize_context,
)
from tests.fakepbx.plugin import PLUGIN
from tests.fakepbx.settings import FakePbxSettings

HERE = Path(__file__).parent
PUBLIC = {"gateway.sdk", "gateway.testing"}


def _gateway_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "gateway" or m.startswith("gateway.")}


def test_the_test_vendor_imports_only_the_sdk_and_the_testing_kit() -> None:
    for path in sorted(HERE.glob("*.py")):
        assert _gateway_imports(path) <= PUBLIC, path.name


def test_every_public_name_is_there() -> None:
    for module in (gateway.sdk, gateway.testing):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert not missing, (module.__name__, missing)


def test_the_contract_checks_pass_through_the_kit() -> None:
    check_declaration(PLUGIN)
    lines = (HERE.parent / "fixtures/fakepbx/sample.jsonl").read_text().splitlines()
    check_ids_deterministic(PLUGIN, [line for line in lines if line.strip()])
    assert PLUGIN.normalize(lines[0], normalize_context("fakepbx"))


async def test_a_connector_is_built_from_fake_link_resources() -> None:
    pbx = FakePbxSettings(tenant="kit", vendor="fakepbx", base_url="http://127.0.0.1:9", token="t")
    async with aiohttp.ClientSession() as http:
        resources = fake_link_resources(http)
        connector = PLUGIN.connector(pbx, resources)
        assert (connector.tenant, connector.vendor) == ("kit", "fakepbx")
        await resources.shared.close()
