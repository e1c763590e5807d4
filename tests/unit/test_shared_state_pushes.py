"""State pushes at a clean stop: bounded while the broker keeps up, all at once once it does not."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.bus.shared_state import _PUSHES_AT_ONCE, SharedState


async def test_when_the_broker_does_not_answer_a_stop_waits_about_two_timeouts_not_one_per_slotful(
) -> None:
    no_broker: Any = None
    shared = SharedState(no_broker)
    started: list[str] = []

    async def never_confirmed(tenant: str, values: dict[str, str]) -> None:
        started.append(tenant)
        await asyncio.Event().wait()

    shared._push = never_confirmed  # type: ignore[method-assign]
    tenants = [f"pbx{n}" for n in range(_PUSHES_AT_ONCE * 4)]
    begun = time.monotonic()
    results = await asyncio.gather(
        *(shared.push(t, {}, timeout=0.3) for t in tenants), return_exceptions=True
    )
    took = time.monotonic() - begun
    assert all(isinstance(r, TimeoutError) for r in results)
    assert len(started) == len(tenants)
    assert took < 3 * 0.3 + 0.5, f"{took:.2f} s: one timeout per slotful of pushes"


async def test_pushes_are_bounded_while_they_are_answered() -> None:
    no_broker: Any = None
    shared = SharedState(no_broker)
    in_flight = most = 0

    async def confirmed(tenant: str, values: dict[str, str]) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1

    shared._push = confirmed  # type: ignore[method-assign]
    await asyncio.gather(*(shared.push(f"pbx{n}", {}, timeout=5) for n in range(1000)))
    assert most == _PUSHES_AT_ONCE
