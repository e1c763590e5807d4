"""The PostgreSQL sink's tables, created on first run and migrated forward by version.

Every table is keyed by the event ``id``: a redelivered or replayed copy is the same row
(``INSERT ... ON CONFLICT DO NOTHING``). Strings have the lengths below; a value that does not
fit is a bad message (dead-lettered with the reason), never a truncated row. ``event`` keeps the
whole event as published. A migration is only ever appended to :data:`MIGRATIONS`, never edited.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql

#: version -> statements; ``{schema}`` is the sink's schema (``--schema``).
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE {schema}.cdr_legs (
    id                text PRIMARY KEY,          -- the event id: one row per CDR leg
    tenant            varchar(128) NOT NULL,
    vendor            varchar(64)  NOT NULL,
    call_id           varchar(255) NOT NULL,     -- every leg of a call has the call's call_id
    event_time        timestamptz  NOT NULL,
    started_at        timestamptz,
    caller            varchar(128),
    callee            varchar(128),
    direction         varchar(16),               -- the whole call's
    leg_direction     varchar(16),               -- this leg's own
    disposition       varchar(16),
    duration_s        integer,
    talk_duration_s   integer,
    ring_duration_s   integer,
    trunk_in          varchar(128),
    trunk_out         varchar(128),
    trunk_name        varchar(255),
    did               varchar(128),
    recording         varchar(1024),
    agent_id          varchar(128),
    agent_ring_s      integer,
    queue_wait_s      integer,
    reason            varchar(255),
    customer_location varchar(255),
    user_data         varchar(1024),
    event             jsonb        NOT NULL,
    stored_at         timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX cdr_legs_call ON {schema}.cdr_legs (tenant, call_id);
CREATE INDEX cdr_legs_started ON {schema}.cdr_legs (tenant, started_at);

CREATE TABLE {schema}.call_events (
    id          text PRIMARY KEY,
    tenant      varchar(128) NOT NULL,
    vendor      varchar(64)  NOT NULL,
    type        varchar(64)  NOT NULL,
    call_id     varchar(255),
    event_time  timestamptz  NOT NULL,
    state       varchar(16),
    direction   varchar(16),
    event       jsonb        NOT NULL,
    stored_at   timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX call_events_call ON {schema}.call_events (tenant, call_id, event_time);

CREATE TABLE {schema}.agent_events (
    id          text PRIMARY KEY,
    tenant      varchar(128) NOT NULL,
    vendor      varchar(64)  NOT NULL,
    type        varchar(64)  NOT NULL,
    extension   varchar(128) NOT NULL,
    event_time  timestamptz  NOT NULL,
    event       jsonb        NOT NULL,
    stored_at   timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX agent_events_extension ON {schema}.agent_events (tenant, extension, event_time);

CREATE TABLE {schema}.gaps (
    id          text PRIMARY KEY,
    tenant      varchar(128) NOT NULL,
    vendor      varchar(64)  NOT NULL,
    gap_from    timestamptz  NOT NULL,
    gap_to      timestamptz  NOT NULL,
    recovered   integer      NOT NULL,
    event       jsonb        NOT NULL,
    stored_at   timestamptz  NOT NULL DEFAULT now()
);

-- One row per call: its legs grouped by call_id.
CREATE VIEW {schema}.calls AS
SELECT tenant, call_id,
       count(*)                          AS legs,
       min(started_at)                   AS started_at,
       sum(talk_duration_s)              AS talk_s,
       bool_or(disposition = 'answered') AS answered,
       min(direction)                    AS direction
FROM {schema}.cdr_legs
GROUP BY tenant, call_id;
""",
}

LATEST = max(MIGRATIONS)


async def migrate(connection: AsyncConnection[Any], schema: str) -> tuple[int, int]:
    """Bring ``schema`` to :data:`LATEST`; returns (version before, version now). Sinks that
    start together take turns (an advisory lock), all in one transaction."""
    ident = sql.Identifier(schema)
    async with connection.transaction():
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pbx-gateway-sink:{schema}",)
        )
        await connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        await connection.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_version"
                " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(ident)
        )
        cursor = await connection.execute(
            sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_version").format(ident)
        )
        row = await cursor.fetchone()
        before = int(row[0]) if row else 0
        for version in sorted(v for v in MIGRATIONS if v > before):
            text = MIGRATIONS[version].replace("{schema}", ident.as_string(connection))
            await connection.execute(text.encode())
            await connection.execute(
                sql.SQL("INSERT INTO {}.schema_version (version) VALUES (%s)").format(ident),
                (version,),
            )
    return before, max(before, LATEST)
