"""Token lifecycle for one Yeastar PBX: get, refresh before expiry, push new tokens to users.

The PBX bans an address after 5 failed authentications (70004), so this component makes at most
one authentication attempt per backoff step, gives up after ``max_auth_failures`` credential
rejections in a row, and on a ban waits ``blocked_retry_s`` before a single new try.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gateway.connectors.yeastar.client import (
    TokenPair,
    YeastarAuthRejected,
    YeastarBlocked,
    YeastarClient,
    YeastarError,
    YeastarTokenError,
    YeastarUnreachable,
)
from gateway.connectors.yeastar.metrics import TOKEN_REFRESHES
from gateway.logging import get_logger
from gateway.runtime.backoff import Backoff
from gateway.schema.events import ConnectionState

StateSink = Callable[[ConnectionState, str | None], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str
    obtained_at: float
    expires_at: float
    refresh_token: str
    refresh_expires_at: float
    version: int

    def valid(self, now: float, margin: float = 0.0) -> bool:
        return now + margin < self.expires_at


class YeastarAuth:
    def __init__(
        self,
        client: YeastarClient,
        *,
        tenant: str,
        client_id: str,
        secret: Callable[[], str],
        backoff: Backoff,
        on_state: StateSink,
        refresh_at: float = 0.8,
        max_auth_failures: int = 3,
        blocked_retry_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._tenant = tenant
        self._client_id = client_id
        self._secret = secret
        self._backoff = backoff
        self._on_state = on_state
        self._refresh_at = refresh_at
        self._max_auth_failures = max_auth_failures
        self._blocked_retry_s = blocked_retry_s
        self._clock = clock
        self._token: Token | None = None
        self._version = 0
        self._changed = asyncio.Event()
        self._refresh_now = asyncio.Event()
        self._auth_failures = 0
        self._log = get_logger("yeastar.auth").bind(tenant=tenant)

    @property
    def token(self) -> Token | None:
        """The newest token while it is still valid."""
        token = self._token
        return token if token is not None and token.valid(self._clock()) else None

    def expires_in_s(self) -> float | None:
        """Seconds the current token has left (None: no valid token), for the status page."""
        token = self.token
        return None if token is None else token.expires_at - self._clock()

    async def wait_token(self, newer_than: int = 0) -> Token:
        """The current token, or wait for one whose version is above ``newer_than``."""
        while True:
            token = self.token
            if token is not None and token.version > newer_than:
                return token
            changed = self._changed
            await changed.wait()

    async def force_refresh(self, stale: str) -> Token:
        """The PBX said ``stale`` expired: get a new token once (shared by concurrent callers)."""
        token = self._token
        if token is not None and token.access_token != stale and token.valid(self._clock()):
            return token
        self._refresh_now.set()
        return await self.wait_token(newer_than=self._version)

    async def with_token(
        self, call: Callable[[str], Awaitable[T]], *, token_timeout_s: float | None = None
    ) -> T:
        """Run ``call(access_token)``; a token answer forces one refresh and one retry, never more
        (a second token error propagates)."""
        token = await self._within(self.wait_token(), token_timeout_s)
        try:
            return await call(token.access_token)
        except YeastarTokenError:
            token = await self._within(self.force_refresh(token.access_token), token_timeout_s)
            return await call(token.access_token)

    @staticmethod
    async def _within(waiting: Awaitable[Token], timeout: float | None) -> Token:
        try:
            async with asyncio.timeout(timeout):
                return await waiting
        except TimeoutError:
            raise YeastarUnreachable(f"no access token from the PBX within {timeout:g} s") from None

    async def run(self) -> None:
        """Keep a valid token until cancelled."""
        while True:
            token = self._token
            now = self._clock()
            if token is None or now >= token.refresh_expires_at:
                pair = await self._acquire()
                self._install(pair, kind="get_token")
                continue
            refresh_in = (
                token.obtained_at + (token.expires_at - token.obtained_at) * self._refresh_at
            )
            await self._sleep_or_forced(refresh_in - now)
            self._refresh_now.clear()
            await self._refresh(token)

    async def revoke(self) -> None:
        """Give the token back on shutdown so it cannot be reused; best effort."""
        token, self._token = self._token, None
        if token is not None and token.valid(self._clock()):
            try:
                await self._client.del_token(token.access_token)
            except (YeastarError, YeastarUnreachable) as exc:
                self._log.info("token_revoke_failed", error=str(exc))

    async def _refresh(self, token: Token) -> None:
        while True:
            try:
                pair = await self._client.refresh_token(token.refresh_token)
            except (YeastarAuthRejected, YeastarError) as exc:
                # The refresh token is no longer accepted: fall back to full authentication.
                TOKEN_REFRESHES.labels(self._tenant, "refresh_token", "rejected").inc()
                self._log.info("refresh_rejected", errcode=getattr(exc, "errcode", None))
                self._install(await self._acquire(), kind="get_token")
                return
            except YeastarUnreachable as exc:
                TOKEN_REFRESHES.labels(self._tenant, "refresh_token", "unreachable").inc()
                delay = self._backoff.next_delay()
                self._log.warning("refresh_unreachable", error=str(exc), retry_in_s=round(delay, 2))
                if not token.valid(self._clock(), margin=delay):
                    self._token = None
                    self._install(await self._acquire(), kind="get_token")
                    return
                await asyncio.sleep(delay)
                continue
            self._install(pair, kind="refresh_token")
            return

    async def _acquire(self) -> TokenPair:
        """``get_token`` with one attempt per backoff step; blocks while banned or given up."""
        while True:
            try:
                pair = await self._client.get_token(self._client_id, self._secret())
            except YeastarBlocked as exc:
                TOKEN_REFRESHES.labels(self._tenant, "get_token", "blocked").inc()
                self._log.error(
                    "pbx_blocked_this_address",
                    errcode=exc.errcode,
                    retry_in_s=self._blocked_retry_s,
                )
                await self._on_state("blocked", f"{exc.errcode} {exc.errmsg}".strip())
                await asyncio.sleep(self._blocked_retry_s)
                continue
            except YeastarAuthRejected as exc:
                TOKEN_REFRESHES.labels(self._tenant, "get_token", "rejected").inc()
                self._auth_failures += 1
                if self._auth_failures >= self._max_auth_failures:
                    reason = (
                        f"credentials rejected {self._auth_failures} times"
                        f" ({exc.errcode} {exc.errmsg}); not retrying so the PBX does not ban"
                        " this address: fix the secret and restart"
                    )
                    self._log.error("auth_given_up", reason=reason)
                    await self._on_state("auth_failed", reason)
                    await asyncio.Event().wait()  # until the operator restarts us (cancellation)
                delay = self._backoff.next_delay()
                self._log.warning(
                    "auth_rejected",
                    errcode=exc.errcode,
                    attempt=self._auth_failures,
                    retry_in_s=round(delay, 2),
                )
                await self._on_state("auth_failed", f"{exc.errcode} {exc.errmsg}".strip())
                await asyncio.sleep(delay)
                continue
            except (YeastarError, YeastarUnreachable) as exc:
                TOKEN_REFRESHES.labels(self._tenant, "get_token", "unreachable").inc()
                delay = self._backoff.next_delay()
                self._log.warning("auth_unreachable", error=str(exc), retry_in_s=round(delay, 2))
                await self._on_state("disconnected", f"token request failed: {exc}")
                await asyncio.sleep(delay)
                continue
            self._auth_failures = 0
            self._backoff.reset()
            return pair

    def _install(self, pair: TokenPair, *, kind: str) -> None:
        now = self._clock()
        self._version += 1
        self._token = Token(
            access_token=pair.access_token,
            obtained_at=now,
            expires_at=now + pair.access_expires_in,
            refresh_token=pair.refresh_token,
            refresh_expires_at=now + pair.refresh_expires_in,
            version=self._version,
        )
        TOKEN_REFRESHES.labels(self._tenant, kind, "ok").inc()
        self._log.info(
            "token_obtained",
            kind=kind,
            expires_in_s=pair.access_expires_in,
            version=self._token.version,
        )
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _sleep_or_forced(self, delay: float) -> None:
        if delay <= 0:
            return
        try:
            async with asyncio.timeout(delay):
                await self._refresh_now.wait()
        except TimeoutError:
            pass
