"""Fixtures of the fake vendor's own tests (its registration is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.sdk import BackoffSettings
from tests.fakepbx.settings import FakePbxSettings
from tests.fakepbx.sim import FakePbxSimulator


@pytest.fixture
async def fakepbx_sim() -> AsyncIterator[Callable[..., Awaitable[FakePbxSimulator]]]:
    """``await fakepbx_sim(**kwargs)``: a started simulator, stopped after the test."""
    sims: list[FakePbxSimulator] = []

    async def make(**kwargs: Any) -> FakePbxSimulator:
        sim = FakePbxSimulator(**kwargs)
        await sim.start()
        sims.append(sim)
        return sim

    try:
        yield make
    finally:
        for sim in sims:
            await sim.stop()


def fake_settings(sim: FakePbxSimulator, tenant: str, **overrides: Any) -> FakePbxSettings:
    values: dict[str, Any] = {
        "tenant": tenant,
        "vendor": "fakepbx",
        "base_url": sim.base_url,
        "token": sim.token,
        "poll_interval_s": 0.05,
        "backoff": BackoffSettings(initial_s=0.05, max_s=0.5, reset_after_s=5),
    }
    values.update(overrides)
    return FakePbxSettings(**values)
