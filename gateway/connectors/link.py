"""What every PBX link has, whatever the vendor: its state, a reconnect loop with gap events, and
the skeleton of a connector.

:class:`LinkState` is the one place a link's state changes: it publishes ``gateway.connection``,
sets ``gateway_link_up``, logs the change, and wakes the command consumer (``link``: commands
are taken only while it is ``connected``).

:class:`PushLink` runs a push subscription (WebSocket, NATS): connect, serve until it dies,
back off, reconnect; after every interruption (and at start, when a previous run left a
watermark) it lets the vendor re-read what the gap hid, then publishes one ``gateway.gap``.
Polled vendors use :class:`gateway.connectors.polling.Poller` instead.

:class:`BaseConnector` is what every vendor's connector repeats otherwise: the link state, one
task group running the link's parts (push links, pollers, a token keeper) until cancelled, the
link reported stopped on the way out, and ``health()`` built from the link state.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from gateway.connectors.base import Emit, Spool
from gateway.connectors.plugin import LinkResources
from gateway.connectors.watermark import Gap, Watermark
from gateway.logging import get_logger
from gateway.runtime.backoff import Backoff
from gateway.runtime.metrics import FRAMES_RECEIVED, LINK_UP
from gateway.runtime.supervisor import stopping
from gateway.runtime.watch import Watch
from gateway.schema.commands import CommandModel
from gateway.schema.events import (
    CloudEvent,
    ConnectionState,
    NormalizeContext,
    StreamMemory,
    connection_event,
    gap_event,
)
from gateway.settings_models import PbxSettings

S = TypeVar("S")
#: Which source's state the link shows when they differ: the most severe first.
_SEVERITY: dict[str, int] = {"auth_failed": 0, "blocked": 1, "disconnected": 2, "connected": 3}


def describe(exc: BaseException) -> str:
    """One line for a log or a ``reason``: the exception's kind and message, bounded."""
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:300]


class LinkState:
    """One PBX link's state, published to consumers as ``gateway.connection`` events.

    A link may have several sources (a push subscription and a poller, say), each reporting
    under its own ``source`` name; the link is ``connected`` only while every source that has
    reported is and every source it expects (:meth:`expect`) has (a poller's first success never
    announces a push link that is not subscribed yet), and otherwise takes the worst one's state
    and reason (``auth_failed`` and ``blocked`` before ``disconnected``), so one healthy source
    never hides another's outage.
    """

    def __init__(self, tenant: str, vendor: str, tz: ZoneInfo, *, include_raw: bool) -> None:
        self.tenant = tenant
        self.vendor = vendor
        self.tz = tz
        self.include_raw = include_raw
        self.link: Watch[str] = Watch("starting")
        self.state: ConnectionState | None = None
        self.reason: str | None = None
        self.since = datetime.now(UTC)
        self.messages = 0
        #: The normalizer's memory of this link's stream (see ``StreamMemory``).
        self.memory = StreamMemory()
        self._sources: dict[str, tuple[ConnectionState, str | None]] = {}
        #: Sources that must report before the link may show ``connected`` (see :meth:`expect`).
        self._expected: set[str] = set()
        self._emit: Emit | None = None
        #: Where live messages' events go without waiting for the disk (set by a connector
        #: given one in its resources); ``None``: every event is awaited through ``emit``.
        self.spool: Spool | None = None
        self._frames = FRAMES_RECEIVED.labels(tenant, vendor)
        self._closing = False  # while the gateway itself takes the link down
        self._log = get_logger(f"{vendor}.link").bind(tenant=tenant)

    def expect(self, source: str) -> None:
        """``source`` must report before the link shows ``connected``: a push subscription, whose
        events published before it is in place are gone (a poller reads them later anyway). A
        consumer that sees ``connected`` may rely on what the PBX sends from then on."""
        self._expected.add(source)

    def attach(self, emit: Emit) -> None:
        """Where events go from now on (given to the connector's ``run``)."""
        self._emit = emit

    def ctx(self) -> NormalizeContext:
        """The context of an event received now."""
        return NormalizeContext(
            tenant=self.tenant,
            vendor=self.vendor,
            tz=self.tz,
            received_at=datetime.now(UTC),
            include_raw=self.include_raw,
            memory=self.memory,
        )

    def received(self, count: int = 1) -> None:
        """Vendor messages arrived (frames, NATS messages, polled records, webhooks)."""
        self.messages += count
        self._frames.inc(count)

    async def send(self, event: CloudEvent) -> None:
        """Hand the event over: on disk when this returns."""
        if self._emit is not None:
            await self._emit(event)

    async def send_live(self, event: CloudEvent) -> None:
        """A live message's event: through the spool when there is one (on disk with the rest
        of this turn of the event loop, see ``Spool``), else as :meth:`send`."""
        if self.spool is not None and self._emit is not None:
            self.spool.spool(event)
        else:
            await self.send(event)

    def sync(self) -> None:
        """What :meth:`send_live` took is on disk when this returns."""
        if self.spool is not None:
            self.spool.sync()

    async def set(
        self, state: ConnectionState, reason: str | None, *, source: str = "link"
    ) -> None:
        """``source`` is in ``state`` now; publish the link's state when it changes (for auth
        trouble also on a new reason, e.g. giving up)."""
        self._sources[source] = (state, reason)
        state, reason = min(self._sources.values(), key=lambda s: _SEVERITY[s[0]])
        if state == "connected" and not self._expected <= self._sources.keys():
            return  # not yet: a source the link needs has not come up
        if state == self.state and (
            state not in ("auth_failed", "blocked") or reason == self.reason
        ):
            return
        self.state = state
        self.reason = reason
        self.link.set(state)
        self.since = datetime.now(UTC)
        LINK_UP.labels(self.tenant, self.vendor).set(1 if state == "connected" else 0)
        # The gateway closing the link itself (a clean stop, a hand-over) is no problem.
        log = self._log.info if state == "connected" or self._closing else self._log.warning
        log("link_state", state=state, reason=reason)
        await self.send(connection_event(self.ctx(), state, reason))

    async def stopped(self) -> None:
        """The gateway stops this link: consumers learn it is gone, commands stop."""
        self._sources.clear()
        self._closing = True
        with contextlib.suppress(Exception):
            await asyncio.shield(self.set("disconnected", "link stopped by the gateway"))
        self._closing = False
        # The series goes with the link: an instance that handed the PBX over must not keep
        # reporting it down (the link-down alert would fire for every handover).
        with contextlib.suppress(KeyError):
            LINK_UP.remove(self.tenant, self.vendor)
        self.link.set("stopped")

    def health(self, **extra: Any) -> dict[str, Any]:
        """The link for /readyz and the status page."""
        return {
            "tenant": self.tenant,
            "vendor": self.vendor,
            "state": self.state or "starting",
            "reason": self.reason,
            "since": self.since.isoformat(),
            "frames": self.messages,
            **extra,
        }


#: Re-read what the gap hid (up to ``end``, when the link was back); returns how many events
#: were published. A failure is logged by the loop; the gap event goes out all the same.
Recover = Callable[[Gap, datetime], Awaitable[int]]


class PushLink(Generic[S]):
    """One reconnect loop per link, backing off with jitter: ``connect`` opens and subscribes a
    session, ``serve`` holds it until it dies and returns why; ``on_connect_error`` may react to
    a refusal (e.g. force a token refresh) before the backoff."""

    def __init__(
        self,
        state: LinkState,
        watermark: Watermark,
        backoff: Backoff,
        *,
        connect: Callable[[], Awaitable[S]],
        serve: Callable[[S], Awaitable[str]],
        recover: Recover | None = None,
        on_connect_error: Callable[[BaseException], Awaitable[None]] | None = None,
    ) -> None:
        self.state = state
        state.expect("link")  # connected only once subscribed: what comes then is not lost
        self.watermark = watermark
        self._backoff = backoff
        self._connect = connect
        self._serve = serve
        self._recover = recover
        self._on_connect_error = on_connect_error
        self._recoveries: set[asyncio.Task[None]] = set()
        self._recovery_lock = asyncio.Lock()
        self._log = get_logger(f"{state.vendor}.link").bind(tenant=state.tenant)

    async def run(self) -> None:
        """Until cancelled; the watermark is saved on the way out."""
        gap = self._load()  # a previous run stopped there: recover from it
        try:
            while True:
                try:
                    session = await self._connect()
                except (Exception, asyncio.CancelledError) as exc:
                    if stopping():  # also when a library turned the stop into another error
                        raise asyncio.CancelledError from exc
                    gap = gap or self.watermark.interrupted(datetime.now(UTC))
                    await self.state.set("disconnected", describe(exc))
                    if self._on_connect_error is not None:
                        await self._on_connect_error(exc)
                    await asyncio.sleep(self._backoff.next_delay())
                    continue
                self._backoff.healthy()
                live = datetime.now(UTC)
                self.mark(live, None)  # caught up from here on: a quiet PBX is not a gap
                await self.state.set("connected", None)
                if gap is not None:
                    self._start_recovery(gap, live)
                    gap = None
                try:
                    task = asyncio.current_task()
                    if task is not None and stopping():  # a library swallowed the stop (its
                        task.cancel()  # wait_for, Python 3.11): serve ends, closing the session
                    reason = await self._serve(session)
                except asyncio.CancelledError:
                    if stopping():
                        raise
                    reason = "the session was cancelled by the vendor client"
                if stopping():  # the session ended because of a stop it did not pass on
                    raise asyncio.CancelledError
                gap = self.watermark.interrupted(datetime.now(UTC))
                await self.state.set("disconnected", reason)
                await asyncio.sleep(self._backoff.next_delay())
        finally:
            for task in self._recoveries:
                task.cancel()
            await asyncio.gather(*self._recoveries, return_exceptions=True)
            self._save()

    def mark(self, now: datetime, event: CloudEvent | None) -> None:
        """Remember what the PBX told us, once its event is spooled (a crash in between then
        repeats an event, never skips one)."""
        try:
            self.watermark.seen(now, event)
        except Exception as exc:  # the state file is a help, not a reason to lose an event
            self._log.warning("watermark_not_saved", error=describe(exc))

    def _load(self) -> Gap | None:
        try:
            return self.watermark.load()
        except Exception as exc:  # a broken state file must not keep the link down
            self._log.warning("watermark_unreadable", error=describe(exc))
            return None

    def _save(self) -> None:
        try:
            self.watermark.persist()
        except Exception as exc:
            self._log.warning("watermark_not_saved", error=describe(exc))

    def _start_recovery(self, gap: Gap, end: datetime) -> None:
        """Recover in the background: messages keep flowing on the new session meanwhile."""
        task = asyncio.create_task(self._recover_gap(gap, end), name=f"{self.state.tenant}-gap")
        self._recoveries.add(task)
        task.add_done_callback(self._recoveries.discard)

    async def _recover_gap(self, gap: Gap, end: datetime) -> None:
        """Re-read what the gap hid, then ONE gateway.gap saying how much came back. One
        recovery at a time, in order; a failure is a warning, never the end of the link."""
        async with self._recovery_lock:
            recovered = 0
            if self._recover is not None:
                try:
                    recovered = await self._recover(gap, end)
                except Exception as exc:  # a bug in recovery must not cost the gap event
                    self._log.warning("recovery_failed", error=describe(exc))
                else:
                    self._log.info(
                        "gap_recovered", start=gap.start.isoformat(), recovered=recovered
                    )
            await self.state.send(gap_event(self.state.ctx(), gap.start, end, recovered))
            self.watermark.recovered(gap)


#: One long-running part of a link, started by :meth:`BaseConnector.run`.
Part = Callable[[], Coroutine[Any, Any, None]]


class BaseConnector(ABC):
    """The skeleton of a vendor connector (a :class:`~gateway.connectors.base.Connector`).

    It owns the PBX's :class:`LinkState` (``link_state``; its ``spool`` is the resources' one),
    runs the parts :meth:`tasks` names in one task group until cancelled (or one fails), then
    releases what :meth:`close` releases and reports the link stopped. ``running`` is true in
    between: events can be published. ``health()`` is the link state's, with the fields
    :meth:`health_details` adds. A vendor sets ``vendor`` and writes :meth:`tasks`,
    :meth:`execute` and, where it has them, the two hooks."""

    vendor: str

    def __init__(self, pbx: PbxSettings, resources: LinkResources) -> None:
        self.tenant = pbx.tenant
        self.link_state = LinkState(pbx.tenant, self.vendor, pbx.zone, include_raw=pbx.include_raw)
        self.link_state.spool = resources.spool
        self.link = self.link_state.link
        self.running = False

    @abstractmethod
    def tasks(self) -> dict[str, Part]:
        """The link's parts by name; each runs as the task ``<tenant>-<name>``."""

    @abstractmethod
    async def execute(self, command: CommandModel) -> dict[str, Any]:
        """Run one validated command on the PBX: the result, or ``CommandFailed``."""

    async def close(self) -> None:
        """Release what the parts leave open once they stopped (before the link is reported
        stopped): nothing by default."""
        return None

    def health_details(self) -> dict[str, Any]:
        """The vendor's own fields of :meth:`health`: none by default."""
        return {}

    async def run(self, emit: Emit) -> None:
        """Keep the link up until cancelled; called again after a failure or a new ownership."""
        self.link_state.attach(emit)
        self.running = True
        try:
            async with asyncio.TaskGroup() as tg:
                for name, part in self.tasks().items():
                    tg.create_task(part(), name=f"{self.tenant}-{name}")
        finally:
            self.running = False
            try:
                await self.close()
            finally:
                await self.link_state.stopped()

    def health(self) -> dict[str, Any]:
        """The link for /readyz and the status page."""
        return self.link_state.health(**self.health_details())
