"""Exponential backoff with jitter and a cap, reset after a healthy period (one per loop)."""

from __future__ import annotations

import random
import time

from gateway.settings_models import BackoffSettings

#: The jitter's source unless one is given: one for the process. A ``random.Random`` of each
#: backoff's own holds 2.5 KB of generator state, and there are a few per PBX.
_SHARED_RNG = random.Random()


class Backoff:
    def __init__(self, settings: BackoffSettings, rng: random.Random | None = None) -> None:
        self._s = settings
        self._rng = rng or _SHARED_RNG
        self._attempt = 0
        self._healthy_since: float | None = None

    def next_delay(self) -> float:
        """Delay before the next attempt; grows with each failure, never beyond the cap."""
        if self._healthy_since is not None:
            if time.monotonic() - self._healthy_since >= self._s.reset_after_s:
                self._attempt = 0
            self._healthy_since = None
        base = min(self._s.max_s, self._s.initial_s * self._s.factor**self._attempt)
        self._attempt += 1
        spread = base * self._s.jitter
        return max(0.0, base + self._rng.uniform(-spread, spread))

    def healthy(self) -> None:
        """The link works again; the delay resets once it has stayed up ``reset_after_s``."""
        if self._healthy_since is None:
            self._healthy_since = time.monotonic()

    def reset(self) -> None:
        self._attempt = 0
        self._healthy_since = None
