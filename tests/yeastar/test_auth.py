"""The token lifecycle against a scripted PBX: refresh timing, fallbacks, ban avoidance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.connectors.yeastar.auth import YeastarAuth
from gateway.connectors.yeastar.client import (
    TokenPair,
    YeastarAuthRejected,
    YeastarBlocked,
    YeastarUnreachable,
)
from gateway.runtime.backoff import Backoff
from gateway.settings import BackoffSettings
from tests.conftest import wait_for


class FakePbx:
    """Answers like the PBX; ``script`` lists outcomes for upcoming get_token calls."""

    def __init__(self, ttl: float = 0.3) -> None:
        self.ttl = ttl
        self.calls: list[str] = []
        self.get_script: list[Exception | None] = []
        self.refresh_script: list[Exception | None] = []
        self._n = 0

    def _pair(self) -> TokenPair:
        self._n += 1
        return TokenPair(f"access-{self._n}", self.ttl, f"refresh-{self._n}", 60)

    async def get_token(self, username: str, password: str) -> TokenPair:
        self.calls.append("get_token")
        outcome = self.get_script.pop(0) if self.get_script else None
        if outcome is not None:
            raise outcome
        return self._pair()

    async def refresh_token(self, refresh_token: str) -> TokenPair:
        self.calls.append("refresh_token")
        outcome = self.refresh_script.pop(0) if self.refresh_script else None
        if outcome is not None:
            raise outcome
        return self._pair()

    async def del_token(self, access_token: str) -> None:
        self.calls.append("del_token")


class Harness:
    def __init__(self, pbx: FakePbx, **kwargs: float) -> None:
        self.states: list[tuple[str, str | None]] = []

        async def on_state(state: str, reason: str | None) -> None:
            self.states.append((state, reason))

        self.auth = YeastarAuth(
            pbx,  # type: ignore[arg-type]
            tenant="t",
            client_id="id",
            secret=lambda: "secret",
            backoff=Backoff(BackoffSettings(initial_s=0.01, max_s=0.05, jitter=0)),
            on_state=on_state,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_refreshes_before_expiry_and_pushes_new_tokens(running) -> None:
    pbx = FakePbx(ttl=0.3)
    h = Harness(pbx, refresh_at=0.8)
    running.append(asyncio.create_task(h.auth.run()))
    first = await asyncio.wait_for(h.auth.wait_token(), 2)
    second = await asyncio.wait_for(h.auth.wait_token(newer_than=first.version), 2)
    assert second.access_token != first.access_token
    assert second.obtained_at - first.obtained_at == pytest.approx(0.24, abs=0.1)
    assert pbx.calls[:2] == ["get_token", "refresh_token"]


async def test_rejected_refresh_falls_back_to_get_token(running) -> None:
    pbx = FakePbx(ttl=0.2)
    pbx.refresh_script = [YeastarAuthRejected(-1, "FAILURE")]
    h = Harness(pbx)
    running.append(asyncio.create_task(h.auth.run()))
    first = await asyncio.wait_for(h.auth.wait_token(), 2)
    await asyncio.wait_for(h.auth.wait_token(newer_than=first.version), 2)
    assert pbx.calls[:3] == ["get_token", "refresh_token", "get_token"]


async def test_wrong_secret_gives_up_before_the_ban(running) -> None:
    pbx = FakePbx()
    pbx.get_script = [YeastarAuthRejected(-1, "FAILURE")] * 10
    h = Harness(pbx, max_auth_failures=3)
    running.append(asyncio.create_task(h.auth.run()))
    await wait_for(lambda: any("not retrying" in (r or "") for _, r in h.states), timeout=3)
    calls = len(pbx.calls)
    await asyncio.sleep(0.2)  # a hammering client would call again within this window
    assert calls == len(pbx.calls) == 3
    assert {s for s, _ in h.states} == {"auth_failed"}


async def test_ban_reports_blocked_and_waits(running) -> None:
    pbx = FakePbx()
    pbx.get_script = [YeastarBlocked(70004, "ACCOUNT IP BLOCKED")]
    h = Harness(pbx, blocked_retry_s=0.2)
    running.append(asyncio.create_task(h.auth.run()))
    await wait_for(lambda: h.states == [("blocked", "70004 ACCOUNT IP BLOCKED")], timeout=2)
    assert pbx.calls == ["get_token"]
    token = await asyncio.wait_for(h.auth.wait_token(), 2)  # the single later try succeeds
    assert token.version == 1 and pbx.calls == ["get_token", "get_token"]


async def test_unreachable_pbx_is_retried_with_backoff(running) -> None:
    pbx = FakePbx()
    pbx.get_script = [YeastarUnreachable("refused")] * 3
    h = Harness(pbx)
    running.append(asyncio.create_task(h.auth.run()))
    await asyncio.wait_for(h.auth.wait_token(), 2)
    assert pbx.calls == ["get_token"] * 4
    assert h.states[0][0] == "disconnected"


async def test_force_refresh_is_shared_by_concurrent_callers(running) -> None:
    pbx = FakePbx(ttl=60)
    h = Harness(pbx)
    running.append(asyncio.create_task(h.auth.run()))
    stale = await asyncio.wait_for(h.auth.wait_token(), 2)
    fresh = await asyncio.wait_for(
        asyncio.gather(*(h.auth.force_refresh(stale.access_token) for _ in range(5))), 2
    )
    assert len({t.access_token for t in fresh}) == 1
    assert pbx.calls == ["get_token", "refresh_token"]


async def test_revoke_gives_the_token_back(running) -> None:
    pbx = FakePbx(ttl=60)
    h = Harness(pbx)
    running.append(asyncio.create_task(h.auth.run()))
    await asyncio.wait_for(h.auth.wait_token(), 2)
    await h.auth.revoke()
    assert pbx.calls[-1] == "del_token" and h.auth.token is None


async def test_with_token_refreshes_once_and_retries_once(running) -> None:
    from gateway.connectors.yeastar.client import YeastarTokenError

    pbx = FakePbx(ttl=60)
    h = Harness(pbx)
    running.append(asyncio.create_task(h.auth.run()))
    used: list[str] = []

    async def expired_then_ok(access_token: str) -> str:
        used.append(access_token)
        if len(used) == 1:
            raise YeastarTokenError(10004, "TOKEN EXPIRED")
        return "done"

    assert await h.auth.with_token(expired_then_ok) == "done"
    assert used == ["access-1", "access-2"] and pbx.calls == ["get_token", "refresh_token"]

    async def always_expired(access_token: str) -> str:
        raise YeastarTokenError(10004, "TOKEN EXPIRED")

    with pytest.raises(YeastarTokenError):
        await h.auth.with_token(always_expired)
    assert pbx.calls.count("refresh_token") == 2, "one refresh per call, never more"
