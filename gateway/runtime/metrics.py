"""Prometheus metrics every vendor shares, served on /metrics.

Per-PBX series carry ``tenant`` and ``vendor`` labels. A vendor's own metrics live in its
folder (e.g. ``gateway/connectors/yeastar/metrics.py``), named ``gateway_<vendor>_*``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_PUBLISHED = Counter(
    "gateway_events_published_total", "Events confirmed by RabbitMQ", ["tenant", "vendor", "type"]
)
PUBLISH_RETRIES = Counter(
    "gateway_publish_retries_total", "Publishes retried after a nack or a lost connection"
)
PUBLISH_BACKLOG = Gauge("gateway_publish_backlog", "Events taken but not yet confirmed")
PUBLISH_LATENCY = Histogram(
    "gateway_publish_confirm_seconds",
    "From taking an event to its broker confirm",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
FRAMES_RECEIVED = Counter(
    "gateway_frames_received_total",
    "Vendor messages received: WebSocket frames, NATS messages, polled records, webhooks",
    ["tenant", "vendor"],
)
LINK_UP = Gauge(
    "gateway_link_up", "1 while the PBX link is up (subscribed, or polling)", ["tenant", "vendor"]
)
POLLS = Counter(
    "gateway_polls_total", "Polls of a PBX's API, by outcome", ["tenant", "vendor", "outcome"]
)
COMMANDS = Counter(
    "gateway_commands_total",
    "Commands answered, by outcome",
    ["tenant", "vendor", "command", "outcome"],
)
LEASES_HELD = Gauge("gateway_leases_held", "PBXs this instance owns")
OUTBOX_EVENTS = Gauge("gateway_outbox_events", "Events in the durable outbox (not yet confirmed)")
OUTBOX_OLDEST_AGE = Gauge(
    "gateway_outbox_oldest_age_seconds", "How long the oldest spooled event has waited (0: empty)"
)
OUTBOX_DROPPED = Counter(
    "gateway_outbox_dropped_total",
    "Events shed by the outbox bound policy (reason: coalesced, dropped, expired)",
    ["tenant", "vendor", "type", "reason"],
)
BUS_UP = Gauge("gateway_bus_up", "1 while this instance's RabbitMQ connection is open")
CONFIG_GENERATION = Gauge(
    "gateway_config_generation", "Configurations applied since start (1: the one read at start)"
)
CONFIG_RELOADS = Counter(
    "gateway_config_reloads_total", "Configuration reloads, by result (ok, failed)", ["result"]
)
CONFIG_LAST_RELOAD = Gauge(
    "gateway_config_last_reload_timestamp_seconds", "When the last reload was tried (Unix time)"
)
CONFIG_LAST_RELOAD_OK = Gauge(
    "gateway_config_last_reload_success", "1 if the last reload was applied, 0 if it was refused"
)
