"""Token store and authentication-failure guard of the simulated Yeastar PBX.

Why a separate module: the token rules (access 1800 s / refresh 86400 s, refresh rotates the
refresh token, del_token revokes, 5 consecutive failures block the client IP) are what the gateway
must get right, so they are kept small and independently testable.
"""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import dataclass, field

_ALPHABET = string.ascii_letters + string.digits


def new_token() -> str:
    """A 32-character token shaped like the manual's examples (letters and digits)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(32))


@dataclass
class TokenPair:
    """One issued access token with the refresh token handed out alongside it."""

    access_token: str
    refresh_token: str
    access_expires_at: float  # time.monotonic() deadline
    refresh_expires_at: float
    revoked: bool = False


@dataclass
class TokenStore:
    """Issues, validates, rotates and revokes tokens (monotonic clock: tests use 1 s TTLs)."""

    access_ttl: float = 1800.0
    refresh_ttl: float = 86400.0
    by_access: dict[str, TokenPair] = field(default_factory=dict)
    by_refresh: dict[str, TokenPair] = field(default_factory=dict)
    issued: int = 0

    def issue(self) -> TokenPair:
        """Mint a new access/refresh pair."""
        now = time.monotonic()
        pair = TokenPair(new_token(), new_token(), now + self.access_ttl, now + self.refresh_ttl)
        self.by_access[pair.access_token] = pair
        self.by_refresh[pair.refresh_token] = pair
        self.issued += 1
        return pair

    def access_valid(self, token: str | None) -> bool:
        """True while the access token is known, not revoked and not expired."""
        pair = self.by_access.get(token or "")
        return pair is not None and not pair.revoked and time.monotonic() < pair.access_expires_at

    def refresh(self, refresh_token: str) -> TokenPair | None:
        """Rotate: the old refresh token dies now, the old access token lives to its own expiry."""
        pair = self.by_refresh.get(refresh_token)
        if pair is None or pair.revoked or time.monotonic() >= pair.refresh_expires_at:
            return None
        del self.by_refresh[refresh_token]
        return self.issue()

    def revoke(self, access_token: str) -> bool:
        """del_token: the access token and the refresh token issued with it stop working."""
        pair = self.by_access.get(access_token)
        if pair is None or pair.revoked:
            return False
        pair.revoked = True
        self.by_refresh.pop(pair.refresh_token, None)
        return True

    def expire_all(self) -> None:
        """Make every access token expired now (refresh tokens stay usable)."""
        past = time.monotonic() - 1.0
        for pair in self.by_access.values():
            pair.access_expires_at = min(pair.access_expires_at, past)

    def ttl_seconds(self) -> tuple[int, int]:
        """The integer TTLs reported in get_token/refresh_token bodies (at least 1)."""
        return max(1, round(self.access_ttl)), max(1, round(self.refresh_ttl))


@dataclass
class AuthGuard:
    """Counts consecutive authentication failures per client IP and blocks after the limit."""

    max_failures: int = 5
    failures: dict[str, int] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)

    def is_blocked(self, ip: str) -> bool:
        return ip in self.blocked

    def fail(self, ip: str) -> None:
        """One more failure; the limit-th consecutive one puts the IP on the block list."""
        self.failures[ip] = self.failures.get(ip, 0) + 1
        if self.failures[ip] >= self.max_failures:
            self.blocked.add(ip)

    def succeed(self, ip: str) -> None:
        self.failures.pop(ip, None)

    def unblock(self, ip: str | None = None) -> None:
        """Remove one IP (or every IP) from the block list and reset its counter."""
        if ip is None:
            self.blocked.clear()
            self.failures.clear()
        else:
            self.blocked.discard(ip)
            self.failures.pop(ip, None)
