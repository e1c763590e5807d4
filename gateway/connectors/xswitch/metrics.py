"""XSwitch's own metrics; the shared ones (with a ``vendor`` label) are in gateway.runtime."""

from __future__ import annotations

from prometheus_client import Counter

STATES_PASSED_OVER = Counter(
    "gateway_xswitch_states_passed_over_total",
    "Event.Channel states no manual lists (BRIDGED, DTMF ...), passed over without an event",
    ["tenant", "state"],
)

#: States seen in the vendor's code and FreeSWITCH that carry no progress of a call: labelled
#: by name; any other spelling is ``other``, so a node cannot grow the metric's series.
KNOWN_PASSED_OVER: frozenset[str] = frozenset(
    {
        "DTMF",
        "PARK",
        "PARKED",
        "EXECUTE",
        "EXCHANGEMEDIA",
        "CONSUMEMEDIA",
        "RESET",
        "REPORTING",
        "HIBERNATE",
        "ROUTING",
        "SOFTEXECUTE",
        "PROGRESS",
        "CALLSTATE",
        "NEW",
        "INIT",
        "CSNEW",
    }
)
