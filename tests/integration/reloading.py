"""A gateway run from a config file that the test rewrites (reload), as ``gateway run`` does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from gateway.app import GatewayApp
from gateway.app.reload import plain
from gateway.settings import PbxSettings, load_settings
from tests.conftest import AMQP_URL
from tests.integration.fixtures import running


def pbx_doc(pbx: PbxSettings, **overrides: Any) -> dict[str, Any]:
    """A PBX's settings as a config file holds them (secrets in clear, unset fields left out)."""
    doc = {k: v for k, v in plain(pbx).items() if v is not None}
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def config_doc(
    pbxs: list[dict[str, Any]],
    state_dir: Path,
    *,
    commands: str | None = None,
    instance: str | None = None,
    http: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "bus": {"url": AMQP_URL},
        "state_dir": str(state_dir),
        "logging": {"format": "console", "level": "WARNING"},
        "lease": {"heartbeat_s": 0.2, "member_timeout_s": 0.6, "acquire_interval_s": 0.2},
        "commands": {"enabled": commands is not None, "exchange": commands or "pbx.commands"},
        "http": {"enabled": True, "host": "127.0.0.1", "port": 0} if http else {"enabled": False},
        "pbxs": pbxs,
    }
    if instance is not None:
        doc["lease"]["instance_id"] = instance
    doc.update(extra)
    return doc


def write_config(path: Path, doc: dict[str, Any]) -> None:
    """Replace the file at once (a new inode, as editors and Kubernetes do)."""
    fresh = path.with_suffix(".new")
    fresh.write_text(yaml.safe_dump(doc, sort_keys=False))
    fresh.replace(path)


@contextlib.asynccontextmanager
async def reloading_gateway(
    config: Path, *, poll_s: float = 0.1, settle_s: float = 0.3
) -> AsyncIterator[GatewayApp]:
    app = GatewayApp(load_settings(config), config, watch_poll_s=poll_s, watch_settle_s=settle_s)
    async with running(app, start_s=30, stop_s=60):
        yield app
