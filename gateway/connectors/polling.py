"""The polling base, for vendors without push events (in the spirit of Home Assistant's
``DataUpdateCoordinator``): one ``poll()`` per interval, a persisted cursor, de-duplication of
what overlapping windows return twice, and one log line per outage, not one per failed poll.

A source is a :class:`Poller` subclass that overrides one method, ``poll(cursor) ->
PollResult``: the events found after ``cursor`` and the cursor to start from next time (any JSON
value; ``None`` on the very first poll). The base owns the rest: it loads the saved cursor once
(and again at each :meth:`Poller.run`, since the next owner of a PBX starts from what the last
one saved), saves it, passes each event id once, backs off, logs, and keeps the link state.
Windows that overlap (records can appear late) return some events again: their ids are
deterministic, so the poller passes each id once, and remembers the ids it passed together with
the cursor, so a restart or the next owner after a takeover does not publish them again either.

``poll`` reads its whole window, every page of it, so that the cursor can move past it.
The passed ids are kept ``seen_ttl_s`` (an hour by default): longer than any overlap.

A failed poll leaves the cursor where it was, so the next good poll reads the missed window:
nothing is lost, only late. The link state turns ``disconnected`` on the first failure and
``connected`` on the next success, which also publishes one ``gateway.gap`` (``from`` = the last
good poll, ``recovered`` = what that poll brought). A restart or a takeover is such an
interruption too: the first poll after it reads from the saved cursor and publishes the gap.

Refusals: a poll raising :class:`PollStopped` (bad credentials) publishes its state
(``auth_failed``, ``blocked``) and stops until the gateway is restarted with new settings;
:class:`PollDeferred` (rate limited) waits as long as the vendor asked (``Retry-After``), without
counting as an outage. A ``poll`` lets its client's exceptions out as they are, and the base
reads the shared REST ones (:mod:`gateway.connectors.rest`) in :meth:`Poller.refusal`:

* :class:`~gateway.connectors.rest.AuthRefused` stops polling: ``auth_failed`` for refused
  credentials (401), ``blocked`` for refused rights (403). A vendor says only what is its own:
  the reason text (:meth:`Poller.stop_reason`), whether one refusal is enough
  (:meth:`Poller.stops`: a client that authenticates again by itself may count refusals in a
  row) and, where a 403 means the credentials too, the state (:meth:`Poller.stop_state`);
* :class:`~gateway.connectors.rest.RateLimited` pauses polling for its ``retry_after_s`` (none
  named: the next backoff delay; :meth:`Poller.retry_after` may cap it or add jitter);
* anything else is an outage.

A vendor whose client raises other exceptions overrides :meth:`Poller.refusal` itself, and
:meth:`Poller.blocked` says when it knows before asking that the vendor will refuse.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson

from gateway.connectors.link import LinkState, describe
from gateway.connectors.rest import AuthRefused, RateLimited
from gateway.connectors.watermark import parse_iso
from gateway.logging import get_logger
from gateway.runtime.backoff import Backoff
from gateway.runtime.metrics import POLLS
from gateway.runtime.statestore import KeyValue
from gateway.runtime.supervisor import stopping
from gateway.schema.events import CloudEvent, ConnectionState, gap_event

#: A poll that found nothing new is saved (for its time) at most this often.
SAVE_QUIET_EVERY_S = 60.0
#: Ids passed between polls (webhooks) are saved at most this long after, in one write: the
#: whole list is rewritten on each save, so one save per webhook grew with the list. A crash in
#: between lets a re-poll publish those calls again, under the same event ids.
SAVE_SOON_S = 1.0


class SaveSoon:
    """One write for a burst of changes: :meth:`soon` runs ``save`` at most ``SAVE_SOON_S``
    later, :meth:`flush` at once if a save is due (the link stopping). ``save`` handles its own
    errors (a later save writes it all again)."""

    def __init__(self, save: Callable[[], None]) -> None:
        self._save = save
        self._timer: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(SAVE_SOON_S, self.flush)

    def cancel(self) -> None:
        """A full save happened meanwhile: nothing is due."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def flush(self) -> None:
        if self._timer is not None:
            self.cancel()
            self._save()


@dataclass(slots=True)
class PollResult:
    events: list[CloudEvent]
    cursor: Any
    records: int = field(default=0)  # vendor records read (for the frames counter)


class PollStopped(Exception):
    """Polling cannot go on with these settings (e.g. the vendor refused the credentials)."""

    def __init__(self, state: ConnectionState, reason: str) -> None:
        super().__init__(reason)
        self.state: ConnectionState = state
        self.reason = reason


class PollDeferred(Exception):
    """The vendor asked to wait (HTTP 429 ``Retry-After``): not an outage, a pause."""

    def __init__(self, retry_after_s: float, reason: str = "rate limited") -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class SeenIds:
    """Event ids passed within the last ``ttl_s`` seconds (at most ``limit``, oldest forgotten
    first): what an overlapping window can return again. Kept small on purpose, since it is
    saved with the cursor and shared with the next owner of the PBX."""

    def __init__(
        self,
        ids: Iterable[tuple[str, float]] = (),
        *,
        ttl_s: float = 3600.0,
        limit: int = 20_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ids: OrderedDict[str, float] = OrderedDict(sorted(ids, key=lambda i: i[1]))
        self._ttl_s = ttl_s
        self._limit = limit
        self._clock = clock
        self._prune()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = self._clock()
        self._ids.move_to_end(event_id)
        self._prune()

    def _prune(self) -> None:
        oldest = self._clock() - self._ttl_s
        while self._ids and (
            len(self._ids) > self._limit or next(iter(self._ids.values())) < oldest
        ):
            self._ids.popitem(last=False)

    def items(self) -> list[tuple[str, float]]:
        return list(self._ids.items())


class Poller:
    """Runs :meth:`poll` every ``interval_s`` for one PBX; ``name`` tells its cursors apart
    (``<vendor>:<tenant>:cursor:<name>`` in the state store).

    Subclass it and override :meth:`poll` (and, once per vendor, what its refusals say: see
    :meth:`refusal`), or pass the ``poll`` function to the constructor."""

    #: Whether a :class:`~gateway.connectors.rest.RateLimited` pauses polling (False: it is an
    #: outage like any failure).
    rate_limits_defer: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        state: LinkState,
        store: KeyValue,
        poll: Callable[[Any], Awaitable[PollResult]] | None = None,
        *,
        interval_s: float,
        backoff: Backoff,
        timeout_s: float = 60.0,
        seen_ttl_s: float = 3600.0,
        seen_limit: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.state = state
        self._store = store
        self._poll = poll
        self._interval = interval_s
        self._backoff = backoff
        self._timeout = timeout_s
        self._seen = {"ttl_s": seen_ttl_s, "limit": seen_limit}
        self._clock = clock
        self._key = f"cursor:{name}"
        self._source = f"poll:{name}"
        self.cursor: Any = None
        self.seen = SeenIds(ttl_s=seen_ttl_s, limit=seen_limit)
        self.loaded = False  # the saved cursor was read (at most once outside :meth:`run`)
        self._saved_at = -float("inf")
        self.last_success: datetime | None = None
        self._failing_since: datetime | None = None  # start of the window not read yet
        self._outage = False
        self._log = get_logger(f"{state.vendor}.poll").bind(tenant=state.tenant, source=name)
        self._polling = asyncio.Lock()
        self._later = SaveSoon(self._save_logged)  # webhooks' passed ids

    # --- what a source overrides ---------------------------------------------------------------

    async def poll(self, cursor: Any) -> PollResult:
        """The events found after ``cursor`` and the cursor to start from next time: the one
        method a source overrides. The client's exceptions may escape: see :meth:`refusal`."""
        if self._poll is None:
            raise NotImplementedError(f"{type(self).__name__} must override poll()")
        return await self._poll(cursor)

    def refusal(self, exc: Exception) -> PollStopped | PollDeferred | None:
        """What a poll's exception means beyond an outage: :class:`PollStopped` (the vendor
        refused the credentials for good), :class:`PollDeferred` (it asked to wait, e.g. a 429
        with ``Retry-After``) or None (an outage: back off and poll again). By default the
        shared REST refusals (see the module docstring); every other failure is an outage."""
        if isinstance(exc, AuthRefused):
            if not self.stops(exc):
                return None
            return PollStopped(self.stop_state(exc), self.stop_reason(exc))
        if isinstance(exc, RateLimited) and self.rate_limits_defer:
            return PollDeferred(self.retry_after(exc), exc.message)
        return None

    def stops(self, exc: AuthRefused) -> bool:
        """Whether this refusal stops polling (by default every one does)."""
        return True

    def stop_state(self, exc: AuthRefused) -> ConnectionState:
        """The link state a refusal stops with: ``blocked`` when the rights were refused
        (403), ``auth_failed`` otherwise."""
        return "blocked" if exc.status == 403 else "auth_failed"

    def stop_reason(self, exc: AuthRefused) -> str:
        """What the stopped link state says (and the log): what to fix."""
        return f"{exc.message}; fix the credentials and restart"

    def retry_after(self, exc: RateLimited) -> float:
        """Seconds to wait after a rate limit: the server's ``Retry-After``, else the next
        backoff delay."""
        return exc.retry_after_s if exc.retry_after_s is not None else self._backoff.next_delay()

    def blocked(self) -> PollStopped | None:
        """A stop known before asking the vendor (e.g. its client saw the credentials refused
        by another source or a command): polling stops without another request."""
        return None

    # --- the cursor ----------------------------------------------------------------------------

    def load(self) -> None:
        """The cursor and passed ids a previous run (or owner) left."""
        self.loaded = True
        raw = self._store.get(self._key)
        if not raw:
            return
        try:
            saved = orjson.loads(raw)
            ids = [(str(i), float(t)) for i, t in saved.get("seen") or []]
            seen = SeenIds(ids, ttl_s=self._seen["ttl_s"], limit=int(self._seen["limit"]))
            cursor, at = saved.get("cursor"), parse_iso(saved.get("at"))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            self._log.warning("cursor_unreadable", error=describe(exc))
            return
        self.cursor, self.seen, self.last_success = cursor, seen, at

    def save(self) -> None:
        self._later.cancel()
        at = self.last_success.isoformat() if self.last_success else None
        body = {"cursor": self.cursor, "seen": self.seen.items(), "at": at}
        self._store.set(self._key, orjson.dumps(body, default=str).decode())

    def save_soon(self) -> None:
        """Save within ``SAVE_SOON_S`` (a burst of webhooks: one write), and at the latest when
        :meth:`run` ends."""
        self._later.soon()

    def _save_logged(self) -> None:
        try:
            self.save()
        except Exception as exc:  # the next save writes it all again
            self._log.warning("cursor_not_saved", error=describe(exc))

    # --- polling -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled (or stopped by :class:`PollStopped`). Reads the saved cursor
        first, every time: the PBX may have had another owner since the last run."""
        try:
            await self._run()
        finally:
            self._later.flush()  # what webhooks passed since the last save

    async def _run(self) -> None:
        async with self._polling:  # not in the middle of a webhook's offer
            self.load()
        if self.last_success is not None:
            self._failing_since = self.last_success  # a previous run: the time since is a gap
        while True:
            started = self._clock()
            try:
                async with asyncio.timeout(self._timeout):
                    await self.poll_once()
            except PollStopped as exc:
                POLLS.labels(self.state.tenant, self.state.vendor, "stopped").inc()
                self._log.error("polling_stopped", state=exc.state, reason=exc.reason)
                await self.state.set(exc.state, exc.reason, source=self._source)
                await asyncio.Event().wait()  # until cancelled: the settings must change
            except asyncio.CancelledError:
                if stopping():
                    raise
                POLLS.labels(self.state.tenant, self.state.vendor, "failed").inc()
                await self._failed(RuntimeError("the poll was cancelled by the vendor client"))
                await asyncio.sleep(min(self._backoff.next_delay(), self._interval))
                continue
            except PollDeferred as exc:
                POLLS.labels(self.state.tenant, self.state.vendor, "deferred").inc()
                self._log.info("poll_deferred", retry_in_s=exc.retry_after_s, reason=str(exc))
                await asyncio.sleep(max(exc.retry_after_s, 0.0))
                continue
            except Exception as exc:
                POLLS.labels(self.state.tenant, self.state.vendor, "failed").inc()
                await self._failed(exc)
                await asyncio.sleep(min(self._backoff.next_delay(), self._interval))
                continue
            self._backoff.healthy()
            await asyncio.sleep(max(0.0, self._interval - (self._clock() - started)))

    async def poll_once(self) -> int:
        """One poll: publish what is new, then move and save the cursor. How many were new.

        A connector may also call it between the loop's rounds (e.g. to re-read after its push
        link's gap, or a test): polls never overlap, so two cannot move the cursor from the same
        place. The first call outside :meth:`run` reads the saved cursor, as ``run`` does."""
        async with self._polling:
            if not self.loaded:
                self.load()
            return await self._poll_locked()

    async def offer(self, events: Iterable[CloudEvent], timeout_s: float = 10.0) -> list[str]:
        """Events of this source that came another way (a webhook): published unless passed
        already, as a poll would, and remembered with the cursor; the ids published. Waits for
        a poll under way (at most ``timeout_s``, then ``TimeoutError``), so a poll and a webhook
        never both pass one id."""
        async with asyncio.timeout(timeout_s):
            await self._polling.acquire()
        try:
            if not self.loaded:
                self.load()
            published: list[str] = []
            for event in events:
                if await self._pass(event):
                    published.append(event.id)
            if published:
                self.save_soon()
            return published
        finally:
            self._polling.release()

    async def _pass(self, event: CloudEvent) -> bool:
        """Publish ``event`` unless its id was passed already; whether it was published."""
        if event.id in self.seen:
            return False
        await self.state.send(event)  # spooled durably before it is marked as passed
        self.seen.add(event.id)
        return True

    async def _read(self, cursor: Any) -> PollResult:
        """:meth:`poll`, its client's refusals read as a stop or a pause (:meth:`refusal`)."""
        stop = self.blocked()
        if stop is not None:
            raise stop
        try:
            return await self.poll(cursor)
        except (PollStopped, PollDeferred):
            raise
        except Exception as exc:
            verdict = self.refusal(exc)
            if verdict is None:
                raise
            raise verdict from exc

    async def _poll_locked(self) -> int:
        result = await self._read(self.cursor)
        self.state.received(result.records)
        fresh = 0
        for event in result.events:
            if await self._pass(event):
                fresh += 1
        now = datetime.now(UTC)
        changed = fresh > 0 or result.cursor != self.cursor
        self.cursor = result.cursor
        self.last_success = now
        if changed or self._clock() - self._saved_at >= SAVE_QUIET_EVERY_S:
            self.save()
            self._saved_at = self._clock()
        POLLS.labels(self.state.tenant, self.state.vendor, "ok").inc()
        await self.state.set("connected", None, source=self._source)
        self._outage = False
        if self._failing_since is not None:
            since, self._failing_since = self._failing_since, None
            self._log.info("poll_recovered", since=since.isoformat(), recovered=fresh)
            await self.state.send(gap_event(self.state.ctx(), since, now, recovered=fresh))
        return fresh

    async def _failed(self, exc: BaseException) -> None:
        """Log once per outage; the link is ``disconnected`` until a poll succeeds."""
        if self._failing_since is None:
            self._failing_since = self.last_success or datetime.now(UTC)
        if not self._outage:
            self._outage = True
            self._log.warning("poll_failed", error=describe(exc))
        else:
            self._log.debug("poll_failed_again", error=describe(exc))
        await self.state.set("disconnected", describe(exc), source=self._source)
