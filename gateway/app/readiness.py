"""The readiness report: what ``/readyz``, ``/status.json`` and the status page say is true now.

Ready means running, the broker connected and every PBX link this instance owns connected; when
not, one line per reason says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.bus.connection import BusLink
from gateway.bus.outbox import Outbox
from gateway.bus.ownership import PbxOwnership
from gateway.bus.publisher import EventPublisher
from gateway.settings import PbxSettings, redact_url


@dataclass
class Readiness:
    """Reads the components' state on each call; holds none of its own."""

    bus: BusLink
    publisher: EventPublisher | None = None
    outbox: Outbox | None = None
    ownership: PbxOwnership | None = None
    instance: str | None = None
    config: Callable[[], dict[str, Any]] | None = None

    def report(self, phase: str, pbxs: Iterable[PbxSettings]) -> dict[str, Any]:
        owned = self.ownership.owned if self.ownership else set()
        links = self.ownership.links() if self.ownership else []
        bus_up = self.bus.up
        reasons = not_ready(phase, self.bus, links)
        return {
            "ready": not reasons,
            "reasons": reasons,
            "phase": phase,
            "instance": self.instance,
            "time": datetime.now(UTC).isoformat(),
            "bus": {
                "connected": bus_up,
                "url": redact_url(self.bus.url),
                "since": self.bus.since.isoformat(),
                "error": None if bus_up else self.bus.error,
                "backlog": self.publisher.backlog if self.publisher else 0,
                "outbox_events": len(self.outbox) if self.outbox else 0,
                "outbox_oldest_age_s": round(self.outbox.oldest_age_s(), 1) if self.outbox else 0,
            },
            "config": self.config() if self.config else None,
            "links": links,
            "pbxs": [
                {
                    "tenant": pbx.tenant,
                    "vendor": pbx.vendor,
                    "owned": pbx.tenant in owned,
                    "owner": (self.instance or "this instance") if pbx.tenant in owned else None,
                }
                for pbx in pbxs
            ],
        }


def not_ready(phase: str, bus: BusLink, links: list[dict[str, Any]]) -> list[str]:
    """Why this instance is not ready, one line each (empty: ready)."""
    reasons: list[str] = []
    if phase != "running":
        reasons.append(f"gateway {phase}")
    if not bus.up:
        why = f": {bus.error}" if bus.error else ""
        reasons.append(f"broker not connected since {bus.since.isoformat()}{why}")
    for link in links:
        if link["state"] != "connected":
            reason = f" ({link['reason']})" if link.get("reason") else ""
            since = link.get("since")
            reasons.append(f"PBX {link['tenant']} {link['state']} since {since}{reason}")
    return reasons
