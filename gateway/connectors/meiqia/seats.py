"""Meiqia seat state: ``GET sips`` compared every ``seats_poll_interval_s``.

A seat is a SIP account agents are bound to (``sip``, ``agent_id``, ``agent_name``,
``occupied`` y/n, ``expiration_at``, ``password``). Meiqia announces no change, so the whole
list is read and compared with the previous one: each seat whose occupancy, bound agent or
expiry changed (also one whose expiry time has now passed, one that appeared, one that went)
becomes one ``agent.seat`` event. The SIP password is never compared, published or saved.

On the shared :class:`~gateway.connectors.polling.Poller`, whose cursor is the list last seen:
the first poll ever is the baseline (it publishes nothing), and a restart (or the next owner)
compares with the saved list, so it announces only what changed meanwhile.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.connectors.link import LinkState
from gateway.connectors.meiqia.client import MeiqiaAuthRejected, MeiqiaClient, MeiqiaRateLimited
from gateway.connectors.meiqia.normalize import seat_events, seat_snapshot
from gateway.connectors.meiqia.pollers import stopped_reason
from gateway.connectors.polling import PollDeferred, Poller, PollResult, PollStopped
from gateway.runtime.backoff import Backoff
from gateway.runtime.statestore import KeyValue

SIPS_PATH: Final = "sips"
CURSOR_VERSION: Final = 1


def seat_rows(answer: Any) -> list[Any]:
    """The document's answer is a bare array; an object with ``data`` is read too."""
    if isinstance(answer, list):
        return answer
    if isinstance(answer, dict) and isinstance(answer.get("data"), list):
        return list(answer["data"])
    return []


class SeatWatcher:
    """Polls one enterprise's seats and publishes what changed."""

    def __init__(
        self,
        client: MeiqiaClient,
        store: KeyValue,
        state: LinkState,
        *,
        interval_s: float,
        backoff: Backoff,
        timeout_s: float = 60.0,
    ) -> None:
        self._client = client
        self._state = state
        self._backoff = backoff
        self._loaded = False
        self.poller = Poller(
            "sips",
            state,
            store,
            self.poll,
            interval_s=interval_s,
            backoff=backoff,
            timeout_s=timeout_s,
        )

    async def run(self) -> None:
        await self.poller.run()

    async def poll_once(self) -> int:
        """One poll now, outside ``run`` (tests): how many events were published."""
        if not self._loaded:
            self.poller.load()
            self._loaded = True
        return await self.poller.poll_once()

    async def poll(self, cursor: Any) -> PollResult:
        if self._client.refused is not None:
            raise PollStopped("auth_failed", stopped_reason(self._client))
        try:
            rows = seat_rows(await self._client.get(SIPS_PATH))
        except MeiqiaAuthRejected:
            raise PollStopped("auth_failed", stopped_reason(self._client)) from None
        except MeiqiaRateLimited as exc:
            wait = self._client.wait_for(exc, fallback_s=self._backoff.next_delay())
            raise PollDeferred(wait, exc.message) from None
        ctx = self._state.ctx()
        snapshot = seat_snapshot(rows, ctx.received_at, ctx.tz)
        saved = cursor if isinstance(cursor, dict) and cursor.get("v") == CURSOR_VERSION else None
        before = saved.get("seats") if saved else None
        sequences: dict[str, int] = {}
        if saved and isinstance(saved.get("seq"), dict):
            sequences = {str(k): int(v) for k, v in saved["seq"].items() if isinstance(v, int)}
        events = []
        if isinstance(before, dict):
            known = {str(k): v for k, v in before.items() if isinstance(v, dict)}
            events = seat_events(known, snapshot, sequences, ctx)
        cursor = {"v": CURSOR_VERSION, "seats": snapshot, "seq": sequences}
        return PollResult(events, cursor, records=len(rows))
