"""Helpers of the XSwitch REST tests (their fixtures are in ``conftest.py``): the document's
answers, the settings of a PBX pointing at the XCC REST simulator, the requests it received."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.connectors.xswitch.settings import XSwitchPbxSettings
from gateway.settings import BackoffSettings
from gateway.sim.xswitch.rest import API, XccRestSimulator

DEV_KEY = "4500ffd8-56b4-4faf-a851-9bd561bf1fb2"  # the document's example key (line 17)
FAST_BACKOFF = BackoffSettings(initial_s=0.05, max_s=0.2, jitter=0.0, reset_after_s=0.0)
REST_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xswitch" / "rest"


def doc_answer(name: str) -> Any:
    """One of the document's answers (``tests/fixtures/xswitch/rest/<name>.json``)."""
    return json.loads((REST_FIXTURES / f"{name}.json").read_text())


def pbx_settings(base_url: str, **overrides: Any) -> XSwitchPbxSettings:
    fields: dict[str, Any] = {
        "tenant": "acme",
        "vendor": "xswitch",
        "base_url": base_url,
        "dev_key": DEV_KEY,
        "backoff": FAST_BACKOFF,
        "request_timeout_s": 5.0,
        **overrides,
    }
    return XSwitchPbxSettings(**fields)


def api_calls(sim: XccRestSimulator) -> list[tuple[str, Any, int]]:
    """Every request but authentication: (path as sent, body, status)."""
    return [(r.path, r.body, r.status) for r in sim.received if r.path != API + "sessions/auth"]
