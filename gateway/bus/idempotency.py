"""At most one execution per command id, across redeliveries and restarts (SQLite, WAL).

An id is recorded as ``started`` before the PBX is called and ``done`` with its result after;
a redelivered id answers the stored result. An id found ``started`` but never finished means the
gateway stopped mid-call: its outcome is unknown and it is not executed again. Records of other
instances arrive through :meth:`CommandLedger.merge` (see :mod:`gateway.bus.journal`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.bus.ledger_entry import NO_SENDER, JournalEntry, Sender
from gateway.runtime.sqlite import open_sqlite
from gateway.schema.commands import CommandModel, CommandResult, credential_field

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    tenant TEXT NOT NULL,
    command_id TEXT NOT NULL,
    command TEXT,
    state TEXT NOT NULL,
    result BLOB,
    created_at REAL NOT NULL,
    user_id TEXT,
    app_id TEXT,
    fingerprint TEXT,
    PRIMARY KEY (tenant, command_id)
)
"""
#: Columns added since the first schema: a ledger file written before gets them on opening.
_ADDED = {"user_id": "TEXT", "app_id": "TEXT", "fingerprint": "TEXT"}
_COLUMNS = "tenant, command_id, command, state, result, created_at, user_id, app_id, fingerprint"
_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL)"


@dataclass(frozen=True, slots=True)
class Seen:
    state: str  # "started" | "done"
    result: CommandResult | None
    command: str | None = None
    fingerprint: str | None = None  # None: recorded before fingerprints were

    def same(self, command: str, fingerprint: str) -> bool:
        """Whether the recorded command is the one now asked for under its id."""
        if self.fingerprint is not None:
            return hmac.compare_digest(self.fingerprint, fingerprint)
        return self.command is None or self.command == command


def fingerprint(command: CommandModel, sender: Sender) -> str:
    """SHA-256 of the command name, its args (the deadline aside: a retry may move it) and the
    sender's broker login. Credentials stay out: it travels on the shared stream, where a hash
    of a short password could be searched offline."""
    args = {
        name: "<given>" if credential_field(name) else value
        for name, value in command.args.model_dump(mode="json", exclude={"deadline"}).items()
        if value is not None
    }
    material = {"command": command.command, "args": args, "user_id": sender.user_id}
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()


class CommandLedger:
    def __init__(self, path: Path | str, ttl_s: float) -> None:
        self._db = open_sqlite(path)
        self._db.execute(_SCHEMA)
        self._db.execute(_META)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(commands)")}
        for column, kind in _ADDED.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE commands ADD COLUMN {column} {kind}")
        self._ttl_s = ttl_s
        self.expire()

    def claim(
        self,
        tenant: str,
        command_id: str,
        command: str | None,
        sender: Sender = NO_SENDER,
        fingerprint: str | None = None,
    ) -> Seen | None:
        """Record ``started``; None when the id is new, else what was recorded before."""
        cursor = self._db.execute(
            f"INSERT OR IGNORE INTO commands ({_COLUMNS})"
            " VALUES (?, ?, ?, 'started', NULL, ?, ?, ?, ?)",
            (tenant, command_id, command, time.time(), sender.user_id, sender.app_id, fingerprint),
        )
        if cursor.rowcount == 1:
            return None
        row = self._db.execute(
            "SELECT state, result, command, fingerprint FROM commands"
            " WHERE tenant = ? AND command_id = ?",
            (tenant, command_id),
        ).fetchone()
        result = CommandResult.model_validate(orjson.loads(row[1])) if row[1] else None
        return Seen(state=row[0], result=result, command=row[2], fingerprint=row[3])

    def finish(self, tenant: str, result: CommandResult) -> None:
        self._db.execute(
            "UPDATE commands SET state = 'done', result = ? WHERE tenant = ? AND command_id = ?",
            (orjson.dumps(result.model_dump(mode="json")), tenant, result.command_id),
        )

    def release(self, tenant: str, command_id: str) -> None:
        """Forget a claim whose execution never began (it may be taken again)."""
        self._db.execute(
            "DELETE FROM commands WHERE tenant = ? AND command_id = ? AND state = 'started'",
            (tenant, command_id),
        )

    def merge(self, tenant: str, entries: Iterable[JournalEntry]) -> int:
        """Take another instance's records: a result wins over ``started``. How many changed.
        Their times are capped at this clock's now, so :meth:`newest` never runs ahead of it."""
        now = time.time()
        oldest = now - self._ttl_s
        changed = 0
        with self._db:  # one transaction (committed, or rolled back on error)
            self._db.execute("BEGIN")
            for entry in entries:
                if entry.at < oldest:
                    continue
                at = min(entry.at, now)
                if entry.result is None:
                    cursor = self._db.execute(
                        f"INSERT OR IGNORE INTO commands ({_COLUMNS})"
                        " VALUES (?, ?, ?, 'started', NULL, ?, ?, ?, ?)",
                        (
                            tenant,
                            entry.command_id,
                            entry.command,
                            at,
                            entry.sender.user_id,
                            entry.sender.app_id,
                            entry.fingerprint,
                        ),
                    )
                else:
                    cursor = self._db.execute(
                        f"INSERT INTO commands ({_COLUMNS})"
                        " VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?)"
                        " ON CONFLICT (tenant, command_id) DO UPDATE"
                        " SET state = 'done', result = excluded.result WHERE state != 'done'",
                        (
                            tenant,
                            entry.command_id,
                            entry.command,
                            orjson.dumps(entry.result.model_dump(mode="json")),
                            at,
                            entry.sender.user_id,
                            entry.sender.app_id,
                            entry.fingerprint,
                        ),
                    )
                changed += cursor.rowcount
        return changed

    def sender(self, tenant: str, command_id: str) -> Sender | None:
        """Who sent the command recorded under this id (None: no record)."""
        row = self._db.execute(
            "SELECT user_id, app_id FROM commands WHERE tenant = ? AND command_id = ?",
            (tenant, command_id),
        ).fetchone()
        return None if row is None else Sender(row[0], row[1])

    def newest(self, tenant: str) -> float | None:
        """When, on this clock, the newest record of ``tenant`` was made or learnt (None: none).
        Every record journaled before then is known here (see :mod:`gateway.bus.journal`)."""
        row = self._db.execute(
            "SELECT MAX(created_at) FROM commands WHERE tenant = ?", (tenant,)
        ).fetchone()
        return row[0]

    def mark_followed(self, at: float) -> None:
        """Every journal record appended before ``at`` (this clock) is merged here."""
        self._db.execute(
            "INSERT INTO meta VALUES ('followed', ?) ON CONFLICT (key) DO UPDATE"
            " SET value = MAX(value, excluded.value)",
            (at,),
        )

    def followed(self) -> float | None:
        """Up to when this ledger knows the shared journal (None: never followed it)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'followed'").fetchone()
        return None if row is None else float(row[0])

    def expire(self) -> int:
        cursor = self._db.execute(
            "DELETE FROM commands WHERE created_at < ?", (time.time() - self._ttl_s,)
        )
        return cursor.rowcount

    def close(self) -> None:
        self._db.close()
