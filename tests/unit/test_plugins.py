"""The vendor plugin registry: what a plugin must declare, and what the gateway derives from it."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any, Literal

import orjson
import pytest

from gateway.connectors import registry
from gateway.connectors.base import WebhookReceiver
from gateway.connectors.plugin import VendorPlugin, VendorRoutes
from gateway.connectors.yeastar.settings import YeastarPbxSettings
from gateway.schema.commands import (
    BASE_COMMANDS,
    CommandArgs,
    CommandCatalog,
    CommandInvalid,
    CommandModel,
)
from gateway.settings import PbxSettings


class ToyPbx(PbxSettings):
    vendor: Literal["toy"]


class ToyReloadArgs(CommandArgs):
    reason: str


class ToyReload(CommandModel):
    command: Literal["toy.config.reload"]
    args: ToyReloadArgs


class ForeignReload(CommandModel):
    command: Literal["other.config.reload"]
    args: CommandArgs


def toy(**changes: Any) -> VendorPlugin:
    values: dict[str, Any] = {
        "name": "toy",
        "title": "Toy PBX",
        "settings": ToyPbx,
        "connector": lambda pbx, resources: None,
        "normalize": lambda line, ctx: [],
        "commands": frozenset({"call.dial", "toy.config.reload"}),
        "command_models": (ToyReload,),
    }
    values.update(changes)
    return VendorPlugin(**values)


TOY = toy()


def test_the_built_in_vendors_are_entry_points() -> None:
    yeastar = registry.plugin("yeastar")
    assert yeastar.settings is YeastarPbxSettings and yeastar.simulator is not None
    assert yeastar.commands <= set(BASE_COMMANDS)
    with pytest.raises(registry.PluginError, match=r"registered: .*yeastar"):
        registry.plugin("no-such-vendor")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Bad Name"}, "must match"),
        ({"name": "other"}, "Literal\\['other'\\]"),
        ({"command_models": (ForeignReload,)}, "must be named toy"),
        (
            {"commands": frozenset({"call.teleport", "toy.config.reload"})},
            "neither in the contract nor modelled",
        ),
        ({"commands": frozenset({"call.dial"})}, "modelled but not in commands"),
        ({"settings": dict}, "subclass of PbxSettings"),
    ],
)
def test_an_inconsistent_declaration_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        toy(**changes).check()


def test_a_broken_entry_point_is_named() -> None:
    def entry(value: str, name: str = "toy") -> EntryPoint:
        return EntryPoint(name=name, value=value, group=registry.GROUP)

    assert registry._load(entry("tests.unit.test_plugins:TOY")) is TOY
    with pytest.raises(registry.PluginError, match="failed to load"):
        registry._load(entry("tests.unit.no_such_module:PLUGIN"))
    with pytest.raises(registry.PluginError, match="not a VendorPlugin"):
        registry._load(entry("tests.unit.test_plugins:ToyPbx"))
    with pytest.raises(registry.PluginError, match="names a plugin called 'toy'"):
        registry._load(entry("tests.unit.test_plugins:TOY", name="other"))


def test_a_broken_plugin_is_set_aside_and_named_where_it_is_needed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    entries = [
        EntryPoint(name="yeastar", value="gateway.connectors.yeastar.plugin:PLUGIN", group="g"),
        EntryPoint(name="toy", value="tests.unit.no_such_module:PLUGIN", group="g"),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: entries)
    registry.refresh()
    try:
        assert list(registry.plugins()) == ["yeastar"], "the others still work"
        assert "failed to load" in registry.broken()["toy"]
        with pytest.raises(registry.PluginError, match="failed to load"):
            registry.plugin("toy")
        from gateway.settings import SettingsError, load_settings

        config = tmp_path / "gateway.yaml"
        config.write_text('{"pbxs": [{"tenant": "a", "vendor": "toy"}]}')
        with pytest.raises(SettingsError, match=r"pbxs\.0\.vendor: vendor plugin 'toy'"):
            load_settings(config)
    finally:
        monkeypatch.undo()
        registry.refresh()


def test_a_vendor_command_is_parsed_validated_and_exported() -> None:
    catalog = CommandCatalog(TOY.command_models)
    body = orjson.dumps({"command": "toy.config.reload", "args": {"reason": "new trunk"}})
    parsed = catalog.parse(body)
    assert isinstance(parsed, ToyReload) and parsed.args.reason == "new trunk"
    with pytest.raises(CommandInvalid, match="reason"):
        catalog.parse(orjson.dumps({"command": "toy.config.reload", "args": {}}))
    assert "ToyReload" in catalog.json_schema()["$defs"]
    assert "call.dial" in catalog.names, "the contract's commands are always there"


async def test_routes_find_a_webhook_receiver_only_where_the_running_link_takes_deliveries() -> (
    None
):
    """The typed seam of webhooks: ``VendorRoutes.receiver`` is the owner's running link when it
    takes deliveries (``WebhookReceiver``), else None (not owned here, or a link without)."""

    class Taker:
        async def take_delivery(
            self, envelope: dict[str, Any], delivery: str | None = None
        ) -> tuple[int, bool]:
            return 1, False

    class PollOnly:
        async def run(self, emit: Any) -> None:
            return None

    taker, plain = Taker(), PollOnly()
    links: dict[str, Any] = {"a": taker, "b": plain}

    async def emit(_event: Any) -> None:
        return None

    routes = VendorRoutes({}, emit, links.get)
    assert routes.receiver("a") is taker and isinstance(taker, WebhookReceiver)
    assert await routes.receiver("a").take_delivery({}) == (1, False)  # type: ignore[union-attr]
    assert routes.receiver("b") is None, "a link that takes no webhooks"
    assert routes.receiver("c") is None, "not owned by this instance"
