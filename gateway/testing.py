"""The testing kit of a vendor plugin: the contract checks every vendor passes, and the
resources a connector is given, without a running gateway.

A vendor package outside this repository runs the same checks as the built-in vendors
(``tests/contract/``): :func:`check_declaration`, :func:`check_ids_deterministic` on its sample
messages, and :func:`check_envelope` on every event it publishes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from gateway.runtime.resources import SharedResources
from gateway.sdk import (
    EVENT_TYPES,
    CloudEvent,
    LinkResources,
    NormalizeContext,
    RecoverySettings,
    Spool,
    VendorPlugin,
)
from gateway.settings_models import HttpSettings

__all__ = [
    "UNREADABLE_LINES",
    "HttpSettings",
    "MemoryStore",
    "check_declaration",
    "check_envelope",
    "check_ids_deterministic",
    "fake_link_resources",
    "normalize_context",
]

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
UUID_SHAPE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: Lines no normalizer can read: each gives events, never an exception.
UNREADABLE_LINES = ("", "{", "[1,", "[]", "null", "\x00\xff", '{"type": 1}', '{"kind": "call"}')


def normalize_context(vendor: str, tenant: str = "c-ids") -> NormalizeContext:
    """A fixed context (UTC, a fixed receive time), so ids repeat from run to run."""
    return NormalizeContext(tenant, vendor, ZoneInfo("UTC"), datetime(2024, 5, 1, tzinfo=UTC))


def check_envelope(event: dict[str, Any], routing_key: str, tenant: str, vendor: str) -> None:
    """One published event against the contract (docs/CONTRACT.md)."""
    where = f"{event.get('type')} {event.get('id')}"
    assert event["specversion"] == "1.0", where
    assert event["source"] == f"pbx://{tenant}", where
    assert event["tenant"] == tenant, where
    assert event["vendor"] == vendor, where
    assert RFC3339.match(event["time"]), f"{where}: time {event['time']!r} is not RFC 3339"
    assert datetime.fromisoformat(event["time"].replace("Z", "+00:00")).tzinfo is not None
    assert UUID_SHAPE.match(event["id"]) and uuid.UUID(event["id"]), where
    assert routing_key == f"{tenant}.{event['type']}", where
    assert event["type"] in EVENT_TYPES, f"{where}: not a contract event type"
    EVENT_TYPES[event["type"]].model_validate(event["data"])
    CloudEvent.model_validate(event)


def check_ids_deterministic(plugin: VendorPlugin, lines: Iterable[str]) -> None:
    """The same raw message in the same context always gives the same ids, and every sample
    message becomes valid, non-rejected events."""
    ctx = normalize_context
    for line in lines:
        first = plugin.normalize(line, ctx(plugin.name))
        second = plugin.normalize(line, ctx(plugin.name))
        assert first and all(e.type != "gateway.rejected" for e in first), first
        assert [e.id for e in first] == [e.id for e in second]
        for event in first:
            EVENT_TYPES[event.type].model_validate(event.data)


def check_declaration(plugin: VendorPlugin) -> None:
    """A consistent declaration, and a normalizer that never raises (unreadable lines become
    ``gateway.rejected``)."""
    plugin.check()
    for line in UNREADABLE_LINES:
        events = plugin.normalize(line, normalize_context(plugin.name))
        assert events, line
        for event in events:
            EVENT_TYPES[event.type].model_validate(event.data)
        if not line.startswith("{"):
            assert {e.type for e in events} == {"gateway.rejected"}, line


class MemoryStore:
    """A connector's state store kept in a dict (the gateway's is SQLite)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def set(self, key: str, value: str) -> None:
        self.values[key] = value


def fake_link_resources(
    http: aiohttp.ClientSession,
    store: MemoryStore | None = None,
    recovery: RecoverySettings | None = None,
    spool: Spool | None = None,
) -> LinkResources:
    """What ``gateway run`` gives a connector factory, for a connector run alone in a test.
    The caller owns ``http``; close ``resources.shared`` after the test."""
    return LinkResources(
        http=http,
        store=store if store is not None else MemoryStore(),
        recovery=recovery or RecoverySettings(),
        shared=SharedResources(),
        spool=spool,
    )
