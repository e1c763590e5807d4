"""Call control of the simulated PBX: live calls that the call/* REST commands act on.

Why: the gateway's command path (command -> REST -> PBX state change -> WebSocket event) can
only be tested end to end against a PBX whose calls really change when told to, with reports as
consistent as the generator's: one 30011 per member-status change, 30008 in step, exactly one
30012 per call id. Calls made here stay up until hung up or until ``auto_hangup_s`` has passed.
Every method raises :class:`ControlError` (errcode + body extras) when the PBX would refuse.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gateway.sim.yeastar.traffic import (
    CONFERENCE,
    DIDS,
    EXTENSIONS,
    GENERAL,
    IVR,
    MONITORED_TRUNK,
    OTHER_TRUNK,
    QUEUE,
    TRUNKS,
    Call,
    Member,
    TrafficGenerator,
    device_ip,
)

Spawn = Callable[[Awaitable[Any]], "asyncio.Task[Any]"]
Setup = Callable[[], Awaitable[None]]
TALKING = frozenset({"ANSWER", "ANSWERED"})
LIVE = frozenset({"ANSWER", "ANSWERED", "HOLD"})
PARK_SLOTS: tuple[str, ...] = tuple(str(n) for n in range(6000, 6010))
MAX_PARTIES = 9  # call/add_member: "支持最多 9 方通话"
SPECIAL = frozenset({IVR, QUEUE, CONFERENCE})


class ControlError(Exception):
    """A refused command: the errcode and extra body fields (``invalid_param_list``...)."""

    def __init__(self, code: int, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.extra = extra


def bad_param(name: str, value: Any = None) -> ControlError:
    """40002 naming one field, as ``required`` when absent or with the offending value."""
    item = (
        {"field": name, "validation_type": "required"}
        if value is None
        else {"field": name, "value": str(value)}
    )
    return ControlError(40002, invalid_param_list=[item])


@dataclass
class Consult:
    """An attended transfer between its two calls: B consulted C while A waits on hold."""

    transferor: Member
    held: Member
    target: Member


@dataclass
class Park:
    """One occupied parking slot (call/park_status row)."""

    slot: str
    parker: str
    parked_party: str
    channel_id: str
    call_id: str
    deadline: float  # monotonic


@dataclass
class PendingInbound:
    """An inbound call on the monitored trunk waiting for accept/refuse (10 s window)."""

    call_id: str
    channel_id: str
    deadline: float  # monotonic
    decision: asyncio.Future[str]


@dataclass(eq=False)
class LiveCall:
    """A controlled call: the generator's :class:`Call` plus what commands changed on it."""

    call: Call
    origin: Member | None = None  # the caller's member: decides src/dst hangup
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    created: float = field(default_factory=time.monotonic)
    answered: float | None = None
    done: bool = False
    monitors: dict[str, str] = field(default_factory=dict)  # channel -> listen/whisper/barge
    muted: set[str] = field(default_factory=set)
    held_from: dict[str, str] = field(default_factory=dict)  # channel -> status before HOLD
    recording: str = "off"  # off | recording | paused
    recorded: bool = False
    reserved: list[str] = field(default_factory=list)
    consult: Consult | None = None
    task: asyncio.Task[Any] | None = None

    def listeners(self) -> set[str]:
        return {ch for ch, mode in self.monitors.items() if mode != "barge"}

    def parties(self) -> list[Member]:
        quiet = self.listeners()
        return [m for m in self.call.members if m.channel_id not in quiet]


@dataclass
class UacstaCall:
    """A call ringing an uaCSTA phone, steered by uacsta_call/accept|refuse|hangup."""

    uacsta_id: str
    extension: str
    ip_address: str
    live: LiveCall
    caller: Member
    callee: Member
    state: str = "ringing"  # ringing | answered


class CallControl:
    """Creates and steers live calls through the generator's member/report helpers."""

    def __init__(
        self,
        traffic: TrafficGenerator,
        spawn: Spawn,
        *,
        auto_hangup_s: float = 30.0,
        inbound_control_window_s: float = 10.0,
        inbound_wait: bool = False,
        answer_delay_s: float = 0.0,
        park_time_s: int = 60,
    ) -> None:
        self.t = traffic
        self._spawn = spawn
        self.auto_hangup_s = auto_hangup_s
        self.inbound_control_window_s = inbound_control_window_s
        self.inbound_wait = inbound_wait
        self.answer_delay_s = answer_delay_s
        self.park_time_s = park_time_s
        self.calls: dict[str, LiveCall] = {}
        self.parks: dict[str, Park] = {}
        self.pending: dict[str, PendingInbound] = {}
        self.uacsta: dict[str, UacstaCall] = {}
        self.no_answer: set[str] = set()  # extensions that let calls ring (never answer)
        self.available_agents: Callable[[], list[str]] = lambda: []
        traffic.inbound_gate = self._gate

    # ---------------------------------------------------------------- helpers
    def find(self, channel_id: str) -> tuple[LiveCall, Member]:
        """The controlled call holding the channel; 70132 for a generator call, else 70130."""
        for live in self.calls.values():
            for member in live.call.members:
                if member.channel_id == channel_id and not live.done:
                    return live, member
        if any(m.channel_id == channel_id for c in self.t.live.values() for m in c.members):
            raise ControlError(70132)  # a generator flow plays itself and is not steerable
        raise ControlError(70130)

    def _reserve(self, live: LiveCall, number: str) -> None:
        """Keep the generator's flows off an extension this call uses."""
        if number in EXTENSIONS and number not in self.t._busy:
            self.t._busy.add(number)
            live.reserved.append(number)

    def _free_general(self, exclude: tuple[str, ...] = ()) -> str:
        free = [e for e in GENERAL if e not in self.t._busy and e not in exclude]
        return free[0] if free else next(e for e in GENERAL if e not in exclude)

    def _member(self, live: LiveCall, number: str, status: str, from_: str = "") -> Member:
        """Extension member for an extension, outbound trunk member for anything else."""
        self._reserve(live, number)
        if number in EXTENSIONS:
            return self.t._ext_member(number, status)
        return self.t._trunk_member("outbound", from_, number, OTHER_TRUNK, status)

    def _new(self, caller: str, callee: str) -> LiveCall:
        call = self.t._new_call()
        call.caller, call.callee, call.src_addr = caller, callee, device_ip(caller)
        live = LiveCall(call)
        self.calls[call.call_id] = live
        return live

    def _start(self, live: LiveCall, setup: Setup | None) -> None:
        live.task = self._spawn(self._run(live, setup))

    async def _run(self, live: LiveCall, setup: Setup | None) -> None:
        """Play the rest of the set-up, then keep the call up until it ends or times out.

        ``setup`` is a factory so nothing is left un-awaited when stop() cancels early.
        """
        try:
            async with asyncio.timeout(self.auto_hangup_s):
                if setup is not None:
                    await setup()
                await live.ended.wait()
        except TimeoutError:
            await self.end(live)

    async def _answer(self, live: LiveCall, caller: Member, callee: Member) -> None:
        call = live.call
        live.answered = time.monotonic()
        call.answered_at, call.disposition = int(time.time()), "ANSWERED"
        await self.t._set(call, callee, "ANSWER")
        await self.t._set(call, caller, "ANSWERED")

    async def _ring_and_answer(self, live: LiveCall, caller: Member, callee: Member) -> None:
        """Callee rings; after ``answer_delay_s`` it answers unless listed in ``no_answer``."""
        if self.answer_delay_s > 0:
            await asyncio.sleep(self.answer_delay_s)
        number = callee.number or callee.to
        async with live.lock:
            if live.done or number in self.no_answer or callee.status != "RING":
                return
            if caller not in live.call.members:
                return
            await self._answer(live, caller, callee)

    async def end(
        self, live: LiveCall, first: Member | None = None, disposition: str = "", reason: str = ""
    ) -> None:
        async with live.lock:
            await self._end_locked(live, first, disposition, reason)

    async def _end_locked(
        self, live: LiveCall, first: Member | None, disposition: str, reason: str = ""
    ) -> None:
        """BYE for every member (``first`` first), then the call's one 30012."""
        if live.done:
            return
        live.done = True
        call, now = live.call, time.monotonic()
        if live.answered is None:
            call.ring_s, call.talk_s = round(now - live.created), 0
            call.disposition = disposition or "NO ANSWER"
        else:
            call.ring_s = round(live.answered - live.created)
            call.talk_s = round(now - live.answered)
        src = first is None or first is live.origin
        call.reason = reason or ("src hangup" if src else "dst hangup")
        if first is not None and first in call.members:
            await self.t._set(call, first, "BYE")
        self.parks = {s: p for s, p in self.parks.items() if p.call_id != call.call_id}
        self.pending = {c: p for c, p in self.pending.items() if p.call_id != call.call_id}
        self.uacsta = {u: c for u, c in self.uacsta.items() if c.live is not live}
        await self.t._finish(call, recorded=live.recorded)
        self.calls.pop(call.call_id, None)
        await self.t._release(live.reserved)
        live.ended.set()

    def _talking(self, live: LiveCall, member: Member) -> None:
        if live.done or member.status not in TALKING or member.channel_id in live.listeners():
            raise ControlError(70132)

    async def _restore(self, live: LiveCall, member: Member) -> None:
        if member.status == "HOLD" and member in live.call.members:
            await self.t._set(live.call, member, live.held_from.pop(member.channel_id, "ANSWER"))

    async def _hold(self, live: LiveCall, member: Member) -> None:
        live.held_from[member.channel_id] = member.status
        await self.t._set(live.call, member, "HOLD")

    # ------------------------------------------------------------------- dial
    async def dial(self, caller: str, callee: str) -> str:
        """call/dial: caller rings (ALERT) now, the callee side plays in the background."""
        if callee in self.parks:
            return await self._retrieve(caller, callee)
        live = self._new(caller, callee)
        call = live.call
        if callee not in EXTENSIONS and callee not in SPECIAL:
            call.call_type, call.dst_trunk, call.dod = "outbound", OTHER_TRUNK, caller
        self._reserve(live, caller)
        origin = self.t._ext_member(caller, "ALERT")
        live.origin = origin
        async with live.lock:
            await self.t._add(call, origin)
        self._start(live, partial(self._dial_rest, live, origin, callee))
        return call.call_id

    async def _dial_rest(self, live: LiveCall, origin: Member, callee: str) -> None:
        call = live.call
        if callee in (IVR, CONFERENCE):
            async with live.lock:
                if live.done:
                    return
                origin.call_path = callee
                live.answered, call.answered_at = time.monotonic(), int(time.time())
                call.disposition = "ANSWERED"
                await self.t._set(call, origin, "ANSWERED")
            return
        if callee == QUEUE:
            await self._queue_rest(live, origin)
            return
        async with live.lock:
            if live.done:
                return
            target = self._member(live, callee, "RING", from_=origin.number)
            await self.t._add(call, target)
        await self._ring_and_answer(live, origin, target)

    async def _queue_rest(self, live: LiveCall, origin: Member) -> None:
        """Ring the available agents; the first answers. None available: wait in the queue."""
        call = live.call
        async with live.lock:
            if live.done:
                return
            origin.call_path = QUEUE
            agents = [a for a in self.available_agents() if a not in self.t._busy]
            if not agents:
                live.answered, call.answered_at = time.monotonic(), int(time.time())
                call.disposition = "ANSWERED"
                await self.t._set(call, origin, "ANSWERED")
                return
            ringing = []
            for agent in agents:
                member = self._member(live, agent, "RING")
                member.call_path = QUEUE
                ringing.append(member)
                await self.t._add(call, member)
        await self._ring_and_answer(live, origin, ringing[0])
        async with live.lock:
            if ringing[0].status == "ANSWER":
                call.callee = ringing[0].number
                for other in ringing[1:]:
                    await self.t._set(call, other, "BYE")

    async def _retrieve(self, caller: str, slot: str) -> str:
        """call/dial to a parking slot: the caller picks the parked call up."""
        park = self.parks.pop(slot)
        live = self.calls[park.call_id]
        async with live.lock:
            parked = next(m for m in live.call.members if m.channel_id == park.channel_id)
            self._reserve(live, caller)
            picker = self.t._ext_member(caller, "ALERT")
            await self.t._add(live.call, picker)
            await self._restore(live, parked)
            await self.t._set(live.call, picker, "ANSWERED")
        return live.call.call_id

    # ------------------------------------------------------- channel commands
    async def hangup(self, channel_id: str) -> str:
        live, member = self.find(channel_id)
        async with live.lock:
            if live.done:
                raise ControlError(70130)
            if channel_id in live.monitors or len(live.parties()) > 2:
                live.monitors.pop(channel_id, None)
                live.muted.discard(channel_id)
                if live.consult is not None and member in vars(live.consult).values():
                    live.consult = None
                await self.t._set(live.call, member, "BYE")
                return live.call.call_id
            refused = member.status == "RING"
            await self._end_locked(live, member, "BUSY" if refused else "NO ANSWER")
        return live.call.call_id

    async def hold(self, channel_id: str) -> str:
        live, member = self.find(channel_id)
        async with live.lock:
            self._talking(live, member)
            await self._hold(live, member)
        return live.call.call_id

    async def unhold(self, channel_id: str) -> str:
        live, member = self.find(channel_id)
        async with live.lock:
            parked = any(p.channel_id == channel_id for p in self.parks.values())
            if live.done or member.status != "HOLD" or parked:
                raise ControlError(70132)
            await self._restore(live, member)
        return live.call.call_id

    async def mute(self, channel_id: str, on: bool) -> str:
        """Idempotent: muting a muted channel succeeds (there is no report to repeat)."""
        live, member = self.find(channel_id)
        if live.done or member.status not in LIVE:
            raise ControlError(70132)
        (live.muted.add if on else live.muted.discard)(channel_id)
        return live.call.call_id

    async def record(self, channel_id: str, action: str) -> str:
        """record_start (off->recording), record_pause (recording->paused), record_unpause."""
        live, member = self.find(channel_id)
        before, after = {
            "start": ("off", "recording"),
            "pause": ("recording", "paused"),
            "unpause": ("paused", "recording"),
        }[action]
        if live.done or member.status not in LIVE or live.recording != before:
            raise ControlError(70132)
        live.recording, live.recorded = after, True
        return live.call.call_id

    async def park(self, channel_id: str, slot: str | None) -> tuple[str, str]:
        """Parked party on HOLD, the parker leaves (BYE); slot free for ``park_time_s``."""
        live, member = self.find(channel_id)
        async with live.lock:
            self._talking(live, member)
            others = [m for m in live.parties() if m is not member]
            if len(others) != 1:
                raise ControlError(70132)
            if slot is None:
                slot = next((s for s in PARK_SLOTS if s not in self.parks), None)
                if slot is None:
                    raise ControlError(60002)
            elif slot not in PARK_SLOTS or slot in self.parks:
                raise bad_param("parking_slot", slot)
            parker = others[0]
            self.parks[slot] = Park(
                slot=slot,
                parker=parker.number or parker.from_,
                parked_party=member.number
                or (member.from_ if member.kind == "inbound" else member.to),
                channel_id=channel_id,
                call_id=live.call.call_id,
                deadline=time.monotonic() + self.park_time_s,
            )
            await self._hold(live, member)
            await self.t._set(live.call, parker, "BYE")
        self._spawn(self._park_timeout(live, slot))
        return live.call.call_id, slot

    async def _park_timeout(self, live: LiveCall, slot: str) -> None:
        park = self.parks.get(slot)
        if park is None:
            return
        await asyncio.sleep(max(0.0, park.deadline - time.monotonic()))
        if self.parks.get(slot) is park:
            del self.parks[slot]
            await self.end(live)

    def park_status(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {
                "parker": p.parker,
                "parked_party": p.parked_party,
                "parking_slot": p.slot,
                "park_time": max(0, round(p.deadline - now)),
                "channel_id": p.channel_id,
            }
            for p in sorted(self.parks.values(), key=lambda p: p.slot)
        ]

    async def transfer_blind(self, channel_id: str, number: str) -> str:
        """The given member stays; its peer leaves; ``number`` rings and answers (30013 first)."""
        live, member = self.find(channel_id)
        async with live.lock:
            self._talking(live, member)
            others = [m for m in live.parties() if m is not member]
            if len(others) != 1 or live.consult is not None:
                raise ControlError(70132)
            if number in {m.number or m.to for m in live.call.members}:
                raise bad_param("number", number)
            await self.t._step()
            await self.t._emit(30013, self.t._call_msg(live.call), live.call.call_id)
            await self.t._set(live.call, others[0], "BYE")
            target = self._member(live, number, "RING", from_=member.number or member.from_)
            await self.t._add(live.call, target)
            if number not in self.no_answer:
                await self.t._set(live.call, target, "ANSWER")
        return live.call.call_id

    async def transfer_attended(self, channel_id: str, number: str) -> str:
        """Step one: the transferor's peer goes on HOLD while ``number`` is consulted."""
        live, member = self.find(channel_id)
        async with live.lock:
            self._talking(live, member)
            others = [m for m in live.parties() if m is not member]
            if len(others) != 1 or live.consult is not None or others[0].status not in TALKING:
                raise ControlError(70132)
            if number in {m.number or m.to for m in live.call.members}:
                raise bad_param("number", number)
            await self._hold(live, others[0])
            target = self._member(live, number, "RING", from_=member.number or member.from_)
            await self.t._add(live.call, target)
            await self.t._set(live.call, target, "ANSWER")
            live.consult = Consult(transferor=member, held=others[0], target=target)
        return live.call.call_id

    async def transfer_operate(self, channel_id: str, operate: str) -> str:
        """Step two: complete / abort / threeway / swap on the transferor's channel."""
        live, member = self.find(channel_id)
        async with live.lock:
            consult = live.consult
            if live.done or consult is None or consult.transferor is not member:
                raise ControlError(70132)
            call = live.call
            if operate == "complete":
                await self.t._step()
                await self.t._emit(30013, self.t._call_msg(call), call.call_id)
                await self.t._set(call, member, "BYE")
                await self._restore(live, consult.held)
                await self._restore(live, consult.target)
                live.consult = None
            elif operate == "abort":
                await self.t._set(call, consult.target, "BYE")
                await self._restore(live, consult.held)
                live.consult = None
            elif operate == "threeway":
                await self._restore(live, consult.held)
                await self._restore(live, consult.target)
                live.consult = None
            else:  # swap
                talking, waiting = (
                    (consult.target, consult.held)
                    if consult.held.status == "HOLD"
                    else (consult.held, consult.target)
                )
                await self._hold(live, talking)
                await self._restore(live, waiting)
        return live.call.call_id

    async def add_member(self, channel_id: str, number: str) -> str:
        live, member = self.find(channel_id)
        async with live.lock:
            self._talking(live, member)
            if len(live.parties()) >= MAX_PARTIES:
                raise ControlError(70510)
            if number in {m.number or m.to for m in live.call.members}:
                raise bad_param("number", number)
            guest = self._member(live, number, "RING", from_=member.number or member.from_)
            await self.t._add(live.call, guest)
            if number not in self.no_answer:
                await self.t._set(live.call, guest, "ANSWER")
        return live.call.call_id

    async def listen(self, monitor: str, channel_id: str, mode: str) -> str:
        """The monitor's phone is called (ALERT -> ANSWERED) and joins as a member."""
        live, member = self.find(channel_id)
        async with live.lock:
            self._talking(live, member)
            if member.kind != "extension" or monitor in {m.number for m in live.call.members}:
                raise ControlError(70132)
            self._reserve(live, monitor)
            spy = self.t._ext_member(monitor, "ALERT")
            live.monitors[spy.channel_id] = mode
            await self.t._add(live.call, spy)
            await self.t._set(live.call, spy, "ANSWERED")
        return live.call.call_id

    # --------------------------------------------------------------- prompts
    async def play_prompt(self, number: str, prompts: list[str], count: int, caller: str) -> str:
        """A call to ``number`` that answers, plays, reports 30018 and hangs up (with CDR)."""
        live = self._new(caller, number)
        if number not in EXTENSIONS:
            live.call.call_type, live.call.dst_trunk = "outbound", OTHER_TRUNK
        self._start(live, partial(self._prompt_rest, live, number, prompts, count, caller))
        return live.call.call_id

    async def _prompt_rest(
        self, live: LiveCall, number: str, prompts: list[str], count: int, caller: str
    ) -> None:
        call = live.call
        async with live.lock:
            target = self._member(live, number, "RING", from_=caller)
            live.origin = target
            await self.t._add(call, target)
            live.answered, call.answered_at = time.monotonic(), int(time.time())
            call.disposition = "ANSWERED"
            await self.t._set(call, target, "ANSWER" if number in EXTENSIONS else "ANSWERED")
        for _ in range(count * len(prompts)):
            await self.t._step()
        async with live.lock:
            if live.done:
                return
            msg = self.t._call_msg(call, prompt=",".join(prompts))
            await self.t._emit(30018, msg, call.call_id)
            await self._end_locked(live, target, "")

    # --------------------------------------------------------------- inbound
    async def _gate(self, call: Call, member: Member, since: float) -> str:
        """Generator inbound flows on the monitored trunk wait only when ``inbound_wait``."""
        if not self.inbound_wait:
            return "accept"
        return await self._decision(self._pending(call.call_id, member.channel_id, since))

    def _pending(self, call_id: str, channel_id: str, since: float) -> PendingInbound:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        pending = PendingInbound(call_id, channel_id, since + self.inbound_control_window_s, future)
        self.pending[channel_id] = pending
        return pending

    async def _decision(self, pending: PendingInbound) -> str:
        try:
            remaining = max(0.0, pending.deadline - time.monotonic())
            return await asyncio.wait_for(pending.decision, remaining)
        except TimeoutError:
            return "timeout"  # the PBX accepts the call itself
        finally:
            if self.pending.get(pending.channel_id) is pending:
                del self.pending[pending.channel_id]

    async def decide_inbound(self, channel_id: str, decision: str) -> str:
        """accept/refuse: 70132 once the window closed (or for a non-waiting channel)."""
        pending = self.pending.get(channel_id)
        if pending is None or time.monotonic() > pending.deadline:
            self.find(channel_id)  # 70130 unknown, 70132 generator call
            raise ControlError(70132)
        del self.pending[channel_id]
        if not pending.decision.done():
            pending.decision.set_result(decision)
        return pending.call_id

    async def start_inbound_call(
        self, caller: str | None = None, dest: str | None = None
    ) -> dict[str, str]:
        """An inbound call on the monitored trunk that waits for accept/refuse (30016 sent)."""
        call = self.t._new_call()
        number = caller or self.t._external(call.rng)
        did = call.rng.choice(DIDS)
        call.call_type, call.caller, call.did, call.src_trunk = (
            "inbound",
            number,
            did,
            MONITORED_TRUNK,
        )
        call.src_addr = TRUNKS[MONITORED_TRUNK].split(":")[0]
        live = LiveCall(call)
        self.calls[call.call_id] = live
        inbound = self.t._trunk_member("inbound", number, did, MONITORED_TRUNK, "ALERT")
        live.origin = inbound
        async with live.lock:
            call.members.append(inbound)
            await self.t._step()
            since = time.monotonic()
            await self.t._emit(30016, self.t._call_msg(call), call.call_id)
            call.members.remove(inbound)
            await self.t._add(call, inbound)
        pending = self._pending(call.call_id, inbound.channel_id, since)
        self._start(live, partial(self._inbound_rest, live, inbound, pending, dest))
        return {"call_id": call.call_id, "channel_id": inbound.channel_id}

    async def _inbound_rest(
        self, live: LiveCall, inbound: Member, pending: PendingInbound, dest: str | None
    ) -> None:
        decision = await self._decision(pending)
        if decision == "refuse":
            await self.end(live, None, "BUSY", "dst hangup")
            return
        async with live.lock:
            if live.done:
                return
            number = dest or self._free_general()
            live.call.callee = number
            target = self._member(live, number, "RING")
            await self.t._add(live.call, target)
        await self._ring_and_answer(live, inbound, target)

    # ---------------------------------------------------------------- uaCSTA
    async def start_uacsta_call(
        self, caller: str | None = None, callee: str | None = None
    ) -> dict[str, str]:
        """An internal call ringing an uaCSTA phone (30020 call_start), awaiting uacsta_call/*."""
        caller = caller or self._free_general()
        callee = callee or self._free_general(exclude=(caller,))
        live = self._new(caller, callee)
        async with live.lock:
            origin = self._member(live, caller, "ALERT")
            live.origin = origin
            await self.t._add(live.call, origin)
            target = self._member(live, callee, "RING")
            await self.t._add(live.call, target)
            self.t._uacsta += 1
            uid = str(self.t._uacsta)
            entry = UacstaCall(uid, callee, f"{device_ip(callee)}:5060", live, origin, target)
            self.uacsta[uid] = entry
            await self._uacsta_report(entry, "call_start")
        self._start(live, None)
        return {
            "call_id": live.call.call_id,
            "uacsta_call_id": uid,
            "extension": callee,
            "ip_address": entry.ip_address,
            "channel_id": target.channel_id,
        }

    async def _uacsta_report(self, entry: UacstaCall, operation: str) -> None:
        msg = {
            "operation": operation,
            "extension": entry.extension,
            "call_id": entry.uacsta_id,
            "ip_address": entry.ip_address,
        }
        await self.t._emit(30020, msg, entry.uacsta_id)

    async def uacsta_command(self, action: str, extension: str, uid: str, ip: str) -> None:
        """accept (ringing only), refuse (ringing only), hangup (either state)."""
        entry = self.uacsta.get(uid)
        if entry is None:
            raise ControlError(70130)
        if entry.extension != extension:
            raise bad_param("extension", extension)
        if entry.ip_address != ip:
            raise bad_param("ip_address", ip)
        live = entry.live
        async with live.lock:
            if live.done or (action != "hangup" and entry.state != "ringing"):
                raise ControlError(70132)
            if action == "accept":
                await self._uacsta_report(entry, "call_answer")
                await self._answer(live, entry.caller, entry.callee)
                entry.state = "answered"
                return
            await self._uacsta_report(entry, "call_over")
            if entry.state == "ringing":
                await self.t._set(live.call, entry.callee, "BYE")
                msg = self.t._call_msg(live.call, reason="User Busy")
                await self.t._emit(30015, msg, live.call.call_id)
                await self._end_locked(live, None, "BUSY", "dst hangup")
            else:
                await self._end_locked(live, entry.callee, "")

    # ---------------------------------------------------------------- reading
    def state(self, call_id: str) -> dict[str, Any] | None:
        """A call's members and statuses plus what call control recorded on it."""
        call = self.t.live.get(call_id)
        if call is None:
            return None
        live = self.calls.get(call_id)
        members = []
        for m in call.members:
            obj = m.to_obj()[m.kind]
            item = {"kind": m.kind, **obj, "status": m.status}
            if live is not None:
                item["muted"] = m.channel_id in live.muted
                item["monitor"] = live.monitors.get(m.channel_id)
            members.append(item)
        return {
            "call_id": call_id,
            "type": call.call_type,
            "caller": call.caller,
            "callee": call.callee,
            "controlled": live is not None,
            "answered": call.answered_at is not None,
            "recording": live.recording if live else "off",
            "members": members,
        }

    def query(self, *, call_id: str = "", kind: str = "", number: str = "") -> list[dict[str, Any]]:
        """call/query data: Call_Info objects (call_path blank as ``""`` like the example)."""
        out = []
        for call in list(self.t.live.values()):
            if call_id and call.call_id != call_id:
                continue
            if kind and call.call_type != kind:
                continue
            if number and number not in {m.number for m in call.members if m.kind == "extension"}:
                continue
            if not call.members:
                continue
            members = []
            for m in call.members:
                obj = m.to_obj()
                info = obj[m.kind]
                if info["call_path"] == " ":
                    info["call_path"] = ""
                members.append(obj)
            out.append({"call_id": call.call_id, "members": members})
        return out
