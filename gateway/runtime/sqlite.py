"""The instance's SQLite files (outbox, command ledger, state store) are opened one way."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from gateway.logging import get_logger


def open_sqlite(path: Path | str, *pragmas: str) -> sqlite3.Connection:
    """A connection in autocommit mode, WAL, ``synchronous=NORMAL`` (durable across a process
    crash; a power loss may take the last transactions), plus ``pragmas`` (``"name=value"``).

    ``":memory:"`` gives a private in-memory database; for a file, its folder is created and the
    file is readable by this user only (SQLite gives its WAL and shared-memory files the same
    mode).
    One event loop uses the connection, but the loop's default executor may too, so the
    same-thread check is off.
    """
    if str(path) != ":memory:":
        private_file(Path(path))
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", *pragmas):
        db.execute(f"PRAGMA {pragma}")
    return db


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if needed; mode 0700: spool, ledger and state may hold
    command results and vendor data."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def private_file(path: Path) -> None:
    """Create ``path`` mode 0600 if it does not exist (its folder 0700), and narrow an older
    file and its WAL / shared-memory companions to 0600."""
    if not path.parent.exists():
        private_dir(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if name.exists():
            os.chmod(name, 0o600)


#: Consecutive failed checkpoints after which the thread stops (the writer's own take over).
_GIVE_UP_AFTER = 50


class Checkpointer:
    """Copies a WAL file back into its database from a thread of its own, so the event loop
    never waits for it: a checkpoint fsyncs the file (5-20 ms here, a stall for every event
    behind it when the writer's commit runs it). ``PASSIVE``: it never blocks the writer.

    The writer keeps ``wal_autocheckpoint`` at a high bound as a safety net, so the WAL cannot
    grow without end if this thread falls behind (under tens of thousands of events a second, a
    PASSIVE checkpoint rarely ends with the WAL fully copied back: the writer's bound then
    applies); ``journal_size_limit`` trims the file after.
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
        log = get_logger("runtime.sqlite")
        failures = 0
        try:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:  # the writer's own checkpoints still bound the WAL
            log.warning("checkpointer_not_started", path=self._path, error=str(exc))
            return
        try:
            while not self._stop.wait(self._interval_s):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    failures = 0
                except sqlite3.Error as exc:
                    failures += 1
                    if failures == 1:
                        log.warning("checkpoint_failed", path=self._path, error=str(exc))
                    if failures >= _GIVE_UP_AFTER:  # e.g. the file is gone: stop trying
                        log.warning("checkpointer_stopped", path=self._path, error=str(exc))
                        return
        finally:
            db.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (a checkpoint under way finishes first, up to ``timeout_s``)."""
        self._stop.set()
        self._thread.join(timeout_s)
