"""The registered vendor plugins: every entry point of the group ``pbx_gateway.vendors``.

This is the only place that finds vendors, and it names none: the built-in ones are entry
points of this distribution (``pyproject.toml``), a third party's are entry points of its own
package. Read once per process (``refresh()`` reads again, e.g. after a test adds a plugin's
distribution to ``sys.path``).
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points

from gateway.connectors.plugin import PluginError, VendorPlugin
from gateway.schema.commands import CommandCatalog

GROUP = "pbx_gateway.vendors"


def _load(entry: EntryPoint) -> VendorPlugin:
    try:
        plugin = entry.load()
    except Exception as exc:
        raise PluginError(
            f"vendor plugin {entry.name!r} ({entry.value}) failed to load: {exc}"
        ) from exc
    if not isinstance(plugin, VendorPlugin):
        raise PluginError(f"{entry.value} is a {type(plugin).__name__}, not a VendorPlugin")
    if plugin.name != entry.name:
        raise PluginError(f"entry point {entry.name!r} names a plugin called {plugin.name!r}")
    try:
        plugin.check()
    except ValueError as exc:
        raise PluginError(f"vendor plugin {plugin.name!r}: {exc}") from None
    return plugin


@functools.cache
def _read() -> tuple[dict[str, VendorPlugin], dict[str, str]]:
    found: dict[str, VendorPlugin] = {}
    broken: dict[str, str] = {}
    for entry in entry_points(group=GROUP):
        if entry.name in found or entry.name in broken:
            broken[entry.name] = f"vendor {entry.name!r} is registered twice ({entry.value})"
            found.pop(entry.name, None)
            continue
        try:
            found[entry.name] = _load(entry)
        except PluginError as exc:
            broken[entry.name] = str(exc)
    return dict(sorted(found.items())), broken


def plugins() -> dict[str, VendorPlugin]:
    """Vendor name -> plugin, sorted by name: every registered plugin that loaded."""
    return _read()[0]


def broken() -> dict[str, str]:
    """Vendor name -> why its plugin could not be used. A broken plugin never stops the others:
    only a configured PBX (or a ``--vendor``) that needs it fails, with this reason."""
    return _read()[1]


def unavailable(vendor: object) -> str:
    """Why no plugin serves ``vendor``: its load error, or that it is not registered."""
    if isinstance(vendor, str) and vendor in broken():
        return broken()[vendor]
    known = ", ".join(plugins()) or (
        "none (no vendor plugin is installed: pip install -e . registers them)"
    )
    return f"unknown vendor {str(vendor)[:64]!r}; registered: {known}"


def plugin(vendor: str) -> VendorPlugin:
    try:
        return plugins()[vendor]
    except KeyError:
        raise PluginError(unavailable(vendor)) from None


@functools.cache
def command_catalog() -> CommandCatalog:
    """The contract's commands plus every plugin's own management commands (their names start
    with the vendor's, so two plugins never declare the same one)."""
    return CommandCatalog([model for p in plugins().values() for model in p.command_models])


def refresh() -> None:
    """Forget what was read, so the next call reads the entry points again."""
    _read.cache_clear()
    command_catalog.cache_clear()
