"""The status board's sums of a counter: the fast read of its children equals collect()'s."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from gateway.web.status import _collected_totals, _totals


def test_totals_by_label_match_what_collect_gives() -> None:
    registry = CollectorRegistry()
    counter = Counter("t_events", "events", ["tenant", "vendor", "type"], registry=registry)
    for n in range(300):
        counter.labels(f"pbx{n % 40}", "yeastar", f"type{n % 3}").inc(n % 7)
    for key in ("tenant", "type", "vendor"):
        fast = _totals(counter, key, "t_events_total")
        assert fast == _collected_totals(counter, key, "t_events_total")
    assert _totals(counter, "tenant", "t_events_total")["pbx1"] == sum(
        n % 7 for n in range(300) if n % 40 == 1
    )
