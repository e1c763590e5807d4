"""Meiqia's own metrics; the shared ones (with a ``vendor`` label) are in gateway.runtime."""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOKS = Counter(
    "gateway_meiqia_webhooks_total",
    "Webhook deliveries by outcome: accepted, duplicate, bad_signature, unsigned, too_large,"
    " not_json, invalid, not_owner, unknown_tenant, disabled, busy",
    ["tenant", "result"],
)
