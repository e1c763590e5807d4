"""The sink's Prometheus metrics (``gateway sink ... --metrics-port``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROWS_WRITTEN = Counter("gateway_sink_rows_written_total", "Rows committed", ["table"])
DUPLICATES = Counter(
    "gateway_sink_duplicates_total", "Events whose id was stored already (redeliveries, replays)"
)
DEAD_LETTERED = Counter(
    "gateway_sink_dead_lettered_total",
    "Messages moved to the dead-letter queue, by why (not_an_event, not_stored, rejected_row)",
    ["why"],
)
DB_UP = Gauge("gateway_sink_database_up", "1 while PostgreSQL takes the sink's writes")
DB_RETRIES = Counter(
    "gateway_sink_database_retries_total", "Writes retried because PostgreSQL was unavailable"
)
BATCH_SECONDS = Histogram(
    "gateway_sink_batch_seconds",
    "From taking a batch to its commit",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
