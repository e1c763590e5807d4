"""The instance's SQLite files (outbox, command ledger, state store) are opened one way."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from gateway.logging import get_logger


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


class Checkpointer:
    """Copies a WAL file back into its database from a thread of its own, so the event loop
    never waits for it: a checkpoint fsyncs the file (5-20 ms here, a stall for every event
    behind it when the writer's commit runs it). ``PASSIVE``: it never blocks the writer.

    The writer keeps ``wal_autocheckpoint`` at a high bound as a safety net, so the WAL cannot
    grow without end if this thread falls behind; ``journal_size_limit`` trims the file after.
    """

    def __init__(self, path: Path | str, *, interval_s: float = 0.2) -> None:
        self._path = str(path)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"checkpoint:{Path(path).name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(self._interval_s):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # the writer's own checkpoints still bound the WAL
                    get_logger("runtime.sqlite").warning(
                        "checkpoint_failed", path=self._path, error=str(exc)
                    )
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
