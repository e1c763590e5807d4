"""The Meiqia link: call records and seats polled over the unified call OpenAPI, webhooks taken
from the gateway's HTTP server, commands over REST."""

from __future__ import annotations

import asyncio
from typing import Any, Final

import orjson

from gateway.connectors.fields import text
from gateway.connectors.link import BaseConnector, Part, describe
from gateway.connectors.meiqia.client import MeiqiaClient
from gateway.connectors.meiqia.commands import MeiqiaCommands
from gateway.connectors.meiqia.normalize import VENDOR, delivery_events, records_events
from gateway.connectors.meiqia.pollers import RecordsPoller, SeatsPoller, read_records
from gateway.connectors.meiqia.settings import MeiqiaPbxSettings
from gateway.connectors.plugin import LinkResources
from gateway.connectors.polling import SaveSoon, SeenIds
from gateway.logging import get_logger
from gateway.runtime.backoff import Backoff
from gateway.runtime.statestore import KeyValue
from gateway.schema.commands import CommandModel
from gateway.schema.events import CloudEvent, NormalizeContext, rejected

#: The webhook delivery ids taken: a replay within this time is acknowledged, not published.
DELIVERIES_KEY: Final = "webhook:deliveries"
DELIVERIES_TTL_S: Final = 86400.0
DELIVERIES_LIMIT: Final = 10_000


class MeiqiaConnector(BaseConnector):
    """One Meiqia enterprise: the records and seats pollers share one link state (the link
    shows the worse of the two); webhooks go through the records poller's de-duplication
    (:meth:`take_delivery`)."""

    vendor = VENDOR

    def __init__(self, pbx: MeiqiaPbxSettings, resources: LinkResources) -> None:
        super().__init__(pbx, resources)
        self._pbx = pbx
        self._store = resources.store
        self.client = MeiqiaClient(resources.http, pbx)
        self.records = RecordsPoller(
            self.client,
            resources.store,
            self.link_state,
            interval_s=pbx.records_poll_interval_s,
            overlap_s=pbx.records_overlap_s,
            page_size=pbx.records_page_size,
            max_window_s=resources.recovery.max_window_s,
            backoff=Backoff(pbx.backoff),
        )
        self.seats = SeatsPoller(
            self.client,
            resources.store,
            self.link_state,
            interval_s=pbx.seats_poll_interval_s or 1.0,
            backoff=Backoff(pbx.backoff),
        )
        self.commands = MeiqiaCommands(self.client, self.link_state.ctx)
        self.deliveries = _load_deliveries(resources.store)
        self.webhooks_taken = 0
        # one write per burst of webhooks: the whole list is rewritten
        self._deliveries_later = SaveSoon(self._save_deliveries)
        self._log = get_logger("meiqia.link").bind(tenant=pbx.tenant)

    def tasks(self) -> dict[str, Part]:
        parts: dict[str, Part] = {"records": self.records.run}
        if self._pbx.seats_poll_interval_s > 0:
            parts["sips"] = self.seats.run
        return parts

    async def close(self) -> None:
        self._deliveries_later.flush()

    # --- webhooks ----------------------------------------------------------------------------

    async def take_delivery(
        self, envelope: dict[str, Any], delivery: str | None = None
    ) -> tuple[int, bool]:
        """One verified webhook delivery: its events published unless this delivery, or the
        call it reports, was published before. ``(published, duplicate)``; ``TimeoutError``
        when it cannot be published now (the route answers 503)."""
        if not self.running:  # owned a moment ago, its link not started yet (or stopping)
            raise TimeoutError("the link is not running; deliver again")
        self.link_state.received()
        delivery = delivery or text(envelope.get("id")) or ""
        if delivery in self.deliveries:
            return 0, True
        ctx = self.link_state.ctx()
        try:
            events = delivery_events(envelope, ctx, delivery)
        except Exception as exc:  # a Cdr it cannot read is published as rejected, not lost
            raw = orjson.dumps(envelope, default=str).decode()
            events = [rejected(ctx, raw, describe(exc), text(envelope.get("event")))]
        events = await self._completed(events, ctx)
        published = await self.records.offer(events)
        self.deliveries.add(delivery)
        self._deliveries_later.soon()
        self.webhooks_taken += 1
        return len(published), not published

    async def _completed(self, events: list[CloudEvent], ctx: NormalizeContext) -> list[CloudEvent]:
        """A webhook's Cdr may be thinner than the call's ``records`` record (its fields are
        not documented; a record has the recording, queue wait and ``user_data``), and the
        first of the two to arrive names the call for good (one id per call). So a thin one
        is looked up in ``records`` by ``call_uuid`` first; if the record is not listed yet,
        the webhook's own reading is published (nothing waits on a record that may never
        come)."""
        out: list[CloudEvent] = []
        for event in events:
            data = event.data
            thin = event.type == "cdr.created" and (
                data.get("direction") in (None, "unknown")
                or data.get("disposition") is None
                or data.get("started_at") is None
            )
            if not thin:
                out.append(event)
                continue
            try:
                async with asyncio.timeout(self._pbx.request_timeout_s):
                    rows, _ = await read_records(
                        self.client, {"call_uuid": data["call_id"]}, page_size=10, max_pages=1
                    )
            except Exception as exc:  # the webhook's reading is still worth publishing
                self._log.info("webhook_record_lookup_failed", error=describe(exc))
                rows = []
            found = [e for e in records_events(rows, ctx) if e.id == event.id]
            out.append(found[0] if found else event)
        return out

    def _save_deliveries(self) -> None:
        try:
            self._store.set(DELIVERIES_KEY, orjson.dumps(self.deliveries.items()).decode())
        except Exception as exc:  # the poller's ids still de-duplicate the calls
            self._log.warning("deliveries_not_saved", error=describe(exc))

    # --- commands ------------------------------------------------------------------------------

    async def execute(self, command: CommandModel) -> dict[str, Any]:
        return await self.commands.execute(command)

    def health_details(self) -> dict[str, Any]:
        cursor = self.records.cursor
        return {
            "records_until": cursor.get("until") if isinstance(cursor, dict) else None,
            "webhooks": self._pbx.webhooks,
            "token_refused": self.client.refused is not None,
        }


def _load_deliveries(store: KeyValue) -> SeenIds:
    raw = store.get(DELIVERIES_KEY)
    ids: list[tuple[str, float]] = []
    if raw:
        try:
            ids = [(str(i), float(t)) for i, t in orjson.loads(raw)]
        except (orjson.JSONDecodeError, TypeError, ValueError):
            ids = []
    return SeenIds(ids, ttl_s=DELIVERIES_TTL_S, limit=DELIVERIES_LIMIT)
