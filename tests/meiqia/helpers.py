"""Helpers of the Meiqia tests (their fixtures are in ``conftest.py``): a PBX's settings
pointing at the simulator, a normalizer context, the fixture files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.connectors.meiqia.settings import MeiqiaPbxSettings
from gateway.schema.events import NormalizeContext
from gateway.settings import BackoffSettings
from gateway.sim.meiqia.server import MeiqiaSimulator

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "meiqia"
FAST = BackoffSettings(initial_s=0.05, max_s=0.5, reset_after_s=5)
TZ = ZoneInfo("Asia/Shanghai")


def ctx(tenant: str = "acme", **kw: Any) -> NormalizeContext:
    return NormalizeContext(tenant, "meiqia", TZ, datetime(2024, 5, 1, 6, 0, tzinfo=UTC), **kw)


def sample() -> list[dict[str, Any]]:
    """The raw messages of ``tests/fixtures/meiqia/sample.jsonl``."""
    lines = (FIXTURES / "sample.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def records() -> list[dict[str, Any]]:
    """The records page fixture's rows (every ``call_type`` / ``states`` of the document)."""
    return list(json.loads((FIXTURES / "records_page.json").read_text())["data"])


def pbx_for(sim: MeiqiaSimulator, tenant: str, **overrides: Any) -> MeiqiaPbxSettings:
    values: dict[str, Any] = {
        "tenant": tenant,
        "vendor": "meiqia",
        "base_url": sim.base_url,
        "token": sim.token,
        "timezone": "Asia/Shanghai",
        "include_raw": True,
        "records_poll_interval_s": 0.3,
        "records_overlap_s": 30.0,
        "seats_poll_interval_s": 0.3,
        "backoff": FAST,
    }
    values.update(overrides)
    return MeiqiaPbxSettings(**values)
