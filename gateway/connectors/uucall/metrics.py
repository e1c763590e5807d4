"""UUCall's own metrics; the shared ones (with a ``vendor`` label) are in gateway.runtime."""

from __future__ import annotations

from prometheus_client import Counter

VENDOR_ERRORS = Counter(
    "gateway_uucall_vendor_errors_total",
    "Answers the service marked failed in its envelope (HTTP 200, Result FAILED), by the"
    " envelope's Code (a code the wiki lists, 'other' or 'none')",
    ["tenant", "vendor_code"],
)
