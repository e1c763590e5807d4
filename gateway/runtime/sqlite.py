"""The instance's SQLite files (outbox, command ledger, state store) are opened one way."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_sqlite(path: Path | str, *pragmas: str) -> sqlite3.Connection:
    """A connection in autocommit mode, WAL, ``synchronous=NORMAL`` (durable across a process
    crash; a power loss may take the last transactions), plus ``pragmas`` (``"name=value"``).

    ``":memory:"`` gives a private in-memory database; for a file, its folder is created.
    One event loop uses the connection, but the loop's default executor may too, so the
    same-thread check is off.
    """
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", *pragmas):
        db.execute(f"PRAGMA {pragma}")
    return db
