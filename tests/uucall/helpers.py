"""Helpers of the UUCall tests (their fixtures are in ``conftest.py``): a simulator on loopback
(no background changes, no rate limit unless a test asks), the settings of a PBX pointing at it."""

from __future__ import annotations

from typing import Any

from gateway.connectors.uucall.settings import UucallPbxSettings
from gateway.settings import BackoffSettings
from gateway.sim.uucall.rest import UucallSimulator

FAST_BACKOFF = BackoffSettings(initial_s=0.02, max_s=0.1, jitter=0.0, reset_after_s=0.0)
TOKEN = "uu-test-token-7f3a"


def pbx_for(sim: UucallSimulator, tenant: str = "acme", **overrides: Any) -> UucallPbxSettings:
    values: dict[str, Any] = {
        "tenant": tenant,
        "vendor": "uucall",
        "base_url": sim.base_url,
        "uid": sim.uid,
        "uid_name": sim.uid_name,
        "timezone": "Asia/Shanghai",
        "backoff": FAST_BACKOFF,
        "request_timeout_s": 5.0,
        "low_balance_threshold": 20000,
        "max_retry_after_s": 5.0,
    }
    if sim.auth == "header":
        values.update(auth="header", auth_header=sim.auth_header, secret=sim.token)
    elif sim.auth == "signed":
        values.update(auth="signed", account_id=sim.account_id, app_id=sim.app_id, secret=sim.token)
    elif sim.auth == "basic":
        values.update(auth="basic", username=sim.username, secret=sim.password)
    else:
        values.update(auth="none")
    values.update(overrides)
    return UucallPbxSettings(**values)


def make_sim(**options: Any) -> UucallSimulator:
    options.setdefault("seed", 7)
    options.setdefault("token", TOKEN)
    options.setdefault("rate_limit", 0.0)
    return UucallSimulator(**options)
