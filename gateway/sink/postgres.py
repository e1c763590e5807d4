"""Rows into PostgreSQL (psycopg 3): one transaction per batch, each table's rows in one
pipelined ``executemany`` with ``ON CONFLICT (id) DO NOTHING``.

A batch that PostgreSQL refuses because of a row's data (a string too long for its column, a
number out of range, a NUL character) is written again row by row, each under a savepoint, so
the good rows commit and each bad one comes back with PostgreSQL's reason. A lost connection is
:class:`DatabaseUnavailable`: nothing of the batch is known to be committed, and writing it
again is harmless (the ids are the keys).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict

from gateway.sink.rows import COLUMNS, Row
from gateway.sink.schema import migrate

_Connection = AsyncConnection[Any]
#: What PostgreSQL says about a row's data (not about the database or the connection).
_ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached, or the connection broke (the reason is the message)."""


@dataclass
class WriteResult:
    written: int = 0  # rows inserted
    duplicates: int = 0  # rows whose id was there already
    rejected: dict[int, str] = field(default_factory=dict)  # row index -> PostgreSQL's reason


def describe_dsn(dsn: str) -> str:
    """The DSN for a log line: host, port, database and user, never the password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparseable DSN)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = parts.get("host") or "localhost"
    return f"postgresql://{user}{host}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"


class PostgresWriter:
    def __init__(self, dsn: str, schema: str = "pbx") -> None:
        conninfo_to_dict(dsn)  # a malformed DSN is the user's to fix: psycopg.ProgrammingError
        self.dsn = dsn
        self.schema = schema
        self._connection: _Connection | None = None
        self._inserts = {
            table: sql.SQL("INSERT INTO {}.{} ({}) VALUES ({}) ON CONFLICT (id) DO NOTHING").format(
                sql.Identifier(schema),
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(sql.Placeholder() * len(columns)),
            )
            for table, columns in COLUMNS.items()
        }

    async def connect(self) -> tuple[int, int]:
        """Connect and migrate; returns the schema version (before, now)."""
        await self.close()
        try:
            connection = await AsyncConnection.connect(self.dsn, connect_timeout=5)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(_first_line(exc)) from None
        try:
            versions = await migrate(connection, self.schema)
        except psycopg.OperationalError as exc:
            await connection.close()
            raise DatabaseUnavailable(_first_line(exc)) from None
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        return versions

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                await connection.close()
            except psycopg.Error:
                pass

    async def write(self, rows: list[Row]) -> WriteResult:
        """Write ``rows`` in one transaction (the rows PostgreSQL refuses aside)."""
        if self._connection is None or self._connection.closed:
            await self.connect()
        assert self._connection is not None
        try:
            try:
                return await self._write_batch(self._connection, rows)
            except _ROW_ERRORS:
                return await self._write_rows(self._connection, rows)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            await self.close()
            raise DatabaseUnavailable(_first_line(exc)) from None

    async def _write_batch(self, connection: _Connection, rows: list[Row]) -> WriteResult:
        by_table: dict[str, list[tuple[object, ...]]] = defaultdict(list)
        for row in rows:
            by_table[row.table].append(row.values)
        written = 0
        async with connection.transaction(), connection.cursor() as cursor:
            for table, values in by_table.items():
                await cursor.executemany(self._inserts[table], values)
                written += max(cursor.rowcount, 0)
        return WriteResult(written=written, duplicates=len(rows) - written)

    async def _write_rows(self, connection: _Connection, rows: list[Row]) -> WriteResult:
        result = WriteResult()
        async with connection.transaction(), connection.cursor() as cursor:
            for index, row in enumerate(rows):
                try:
                    async with connection.transaction():  # a savepoint per row
                        await cursor.execute(self._inserts[row.table], row.values)
                        inserted = max(cursor.rowcount, 0)
                except _ROW_ERRORS as exc:
                    result.rejected[index] = f"{type(exc).__name__}: {_first_line(exc)}"
                    continue
                result.written += inserted
                result.duplicates += 1 - inserted
        return result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
