"""Small durable key-value state of one gateway instance (SQLite, WAL): PBX watermarks and the like.

Each instance keeps its own file; it survives restarts so recovery can start from what was seen.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Protocol

from gateway.runtime.sqlite import open_sqlite


class KeyValue(Protocol):
    """What a connector needs of its state: strings by key."""

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...


class StateStore:
    def __init__(self, path: Path | str) -> None:
        self._db = open_sqlite(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
            " updated_at REAL NOT NULL)"
        )

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO state VALUES (?, ?, ?) ON CONFLICT(key)"
            " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (key, value, time.time()),
        )

    def updated_at(self, key: str) -> float | None:
        row = self._db.execute("SELECT updated_at FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self._db.close()


class TenantState:
    """One PBX's view of the store; remembers what it wrote so it can be shared with the next
    owner of the PBX (another instance after a takeover)."""

    def __init__(self, store: StateStore, tenant: str) -> None:
        self.tenant = tenant
        self._store = store
        self._written: set[str] = set()
        self.changed = asyncio.Event()  # set by every write, cleared by whoever shares it

    def get(self, key: str) -> str | None:
        return self._store.get(key)

    def set(self, key: str, value: str) -> None:
        if self._store.get(key) != value:
            self._store.set(key, value)
            self._written.add(key)
            self.changed.set()

    def snapshot(self) -> dict[str, str]:
        return {k: v for k in sorted(self._written) if (v := self._store.get(k)) is not None}

    def merge(self, values: dict[str, str], written_at: float) -> int:
        """Adopt values another owner wrote after ours; returns how many were taken."""
        taken = 0
        for key, value in values.items():
            mine = self._store.updated_at(key)
            if mine is None or mine < written_at:
                self._store.set(key, value)
                self._written.add(key)
                taken += 1
        return taken


class StoreSlice:
    """One PBX's keys of a store, kept apart by a prefix (``<vendor>:<tenant>:``), so a
    connector names only its own keys and two vendors or tenants never meet."""

    def __init__(self, store: KeyValue, prefix: str) -> None:
        self._store = store
        self.prefix = prefix

    def get(self, key: str) -> str | None:
        return self._store.get(self.prefix + key)

    def set(self, key: str, value: str) -> None:
        self._store.set(self.prefix + key, value)
