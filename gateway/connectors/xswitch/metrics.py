"""XSwitch's own metrics; the shared ones (with a ``vendor`` label) are in gateway.runtime."""

from __future__ import annotations

from prometheus_client import Counter

STATES_PASSED_OVER = Counter(
    "gateway_xswitch_states_passed_over_total",
    "Event.Channel states no manual lists (BRIDGED, DTMF ...), passed over without an event",
    ["tenant", "state"],
)
