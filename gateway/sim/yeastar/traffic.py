"""Call-flow generator: realistic, internally consistent Yeastar call traffic.

Why: the gateway derives call state from 30011 member statuses and reconciles it with the 30012
CDR and ``cdr/list``; a simulator whose reports contradict each other would test nothing. Every
flow keeps one member list per call, emits one 30011 per member-status change (full list each
time), keeps 30008 extension states in step, and ends with exactly one 30012 per call id.

Wall-clock pacing is ``step_delay`` per step; call durations are *virtual* seconds (ring and talk
times drawn at random) so tests run fast while CDRs still look like real calls.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.sim.yeastar.cdr import CdrRecord, CdrStore

Emit = Callable[[int, dict[str, Any], str], Awaitable[None]]
# Asked after the 30016/30011 of an inbound call on the monitored trunk (call, member, monotonic
# time of the 30016): "accept", "refuse" or "timeout". Set by call control; None = never waits.
InboundGate = Callable[["Call", "Member", float], Awaitable[str]]


class CallRefused(Exception):
    """An inbound call refused through call/refuse_inbound: its flow ends early (CDR sent)."""

    def __init__(self, call_id: str) -> None:
        super().__init__(call_id)
        self.call_id = call_id


EXTENSIONS: dict[str, str] = {
    "2000": "Leo Ball",
    "2001": "Kristin Hale",
    "2002": "Anna Simmons",
    "2003": "Chris Wood",
    "2004": "Mia Chen",
    "2005": "Ivan Petrov",
    "2006": "Sara Lopez",
    "2007": "Tom Reed",
    "2008": "Nina Cole",
    "2009": "Omar Aziz",
    "2010": "Lucy Fox",
    "2011": "Ben Stone",
}
AGENTS: tuple[str, ...] = ("2010", "2011")  # members of queue 6402
GENERAL: tuple[str, ...] = tuple(e for e in EXTENSIONS if e not in AGENTS)
QUEUE = "6402"
IVR = "6200"
CONFERENCE = "6500"
MONITORED_TRUNK = "peer-to-41"  # inbound call control on: sends 30016
OTHER_TRUNK = "test-peer-trunking"
TRUNKS: dict[str, str] = {MONITORED_TRUNK: "112.48.19.183:18211", OTHER_TRUNK: "192.168.28.41:5060"}
DIDS: tuple[str, ...] = ("5503300", "5503310")
TRUNK_STATES: tuple[int, ...] = (0, 1, 2, 3, 4, 41, 42, 43, 44)
PRESENCE: tuple[str, ...] = (
    "available",
    "away",
    "business_trip",
    "do_not_disturb",
    "lunch",
    "off_work",
)
REG_KINDS: tuple[str, ...] = ("Sip", "Mobile", "Desktop", "Web", "Pad")
AUTO_PAUSE_MISSED = 2  # queue "max missed calls" before an agent is auto-paused

CALL_FLOWS: tuple[str, ...] = (
    "internal",
    "outbound",
    "inbound_ivr",
    "inbound_queue",
    "queue_unanswered",
    "blind_transfer",
    "forward",
    "failed",
    "uacsta",
    "conference",
)
BACKGROUND_EVENTS: dict[str, int] = {
    "org_status": 30005,
    "org_config": 30006,
    "registration": 30007,
    "presence": 30009,
    "trunk_state": 30010,
    "ext_config": 30022,
    "trunk_config": 30023,
}
# 30008 state implied by a member status.
EXT_STATE = {
    "ALERT": "busy",
    "RING": "ringing",
    "ANSWER": "busy",
    "ANSWERED": "busy",
    "HOLD": "busy",
    "BYE": "idle",
    "EARLYMEDIA": "ringing",
}


@dataclass
class Member:
    """One party of a call as listed in ``members`` (extension, inbound or outbound)."""

    kind: str
    channel_id: str
    status: str
    number: str = ""
    from_: str = ""
    to: str = ""
    trunk: str = ""
    call_path: str = " "
    since: float = field(default_factory=time.time)  # when the status last changed

    def to_obj(self) -> dict[str, Any]:
        if self.kind == "extension":
            info: dict[str, Any] = {"number": self.number}
        else:
            info = {"from": self.from_, "to": self.to, "trunk_name": self.trunk}
        info.update(channel_id=self.channel_id, member_status=self.status, call_path=self.call_path)
        return {self.kind: info}


@dataclass
class Call:
    """A call being played: its id, current members and the facts its CDR is built from."""

    call_id: str
    start: int  # unix seconds
    rng: random.Random
    members: list[Member] = field(default_factory=list)
    call_type: str = "internal"
    caller: str = ""
    callee: str = ""
    src_trunk: str = ""
    dst_trunk: str = ""
    did: str = ""
    dod: str = ""
    src_addr: str = ""
    ring_s: int = 0
    talk_s: int = 0
    agent_ring_s: int = 0
    disposition: str = "NO ANSWER"
    reason: str = "src hangup"
    answered_at: int | None = None


class TrafficGenerator:
    """Plays call flows and background events through an ``emit`` callback."""

    def __init__(
        self,
        emit: Emit,
        cdrs: CdrStore,
        *,
        seed: int | None,
        tz: ZoneInfo,
        sn: str,
        step_delay: float = 0.05,
    ) -> None:
        self._emit = emit
        self.cdrs = cdrs
        self.rng = random.Random(seed)
        self.tz = tz
        self.sn = sn
        self.step_delay = step_delay
        self._uniq = 0
        self._chan = 0x30
        self._uacsta = 32788
        self._busy: set[str] = set()
        self._pool = asyncio.Condition()
        self.ext_state: dict[str, str] = dict.fromkeys(EXTENSIONS, "idle")
        self.presence: dict[str, str] = dict.fromkeys(EXTENSIONS, "available")
        self.registration: dict[tuple[str, str], str] = {}
        self.trunk_state: dict[str, int] = dict.fromkeys(TRUNKS, 1)
        self.org = {"org_status": 1, "show_root_org": 1}
        self.created_exts: list[str] = []
        self.created_trunks: list[str] = []
        self.missed: dict[str, list[tuple[str, str]]] = {a: [] for a in AGENTS}
        self._flow_bag: list[str] = []
        self._event_bag: list[str] = []
        self._org_ids = 10
        self._ext_seq = 0
        self._trunk_seq = 0
        self.live: dict[str, Call] = {}  # calls started and not yet finished (for call/query)
        self.inbound_gate: InboundGate | None = None

    # ---------------------------------------------------------------- helpers
    async def _step(self) -> None:
        if self.step_delay > 0:
            await asyncio.sleep(self.step_delay)
        else:
            await asyncio.sleep(0)

    def _new_call(self) -> Call:
        self._uniq += 1
        now = int(time.time())
        call = Call(
            call_id=f"{now}.{self._uniq}", start=now, rng=random.Random(self.rng.getrandbits(64))
        )
        self.live[call.call_id] = call
        return call

    def _ext_member(self, number: str, status: str, call_path: str = " ") -> Member:
        self._chan += 1
        return Member(
            "extension",
            f"PJSIP/{number}-{self._chan:08x}",
            status,
            number=number,
            call_path=call_path,
        )

    def _trunk_member(
        self, kind: str, from_: str, to: str, trunk: str, status: str, call_path: str = " "
    ) -> Member:
        self._chan += 1
        return Member(
            kind,
            f"PJSIP/trunk-{trunk}-endpoint-{self._chan:08x}",
            status,
            from_=from_,
            to=to,
            trunk=trunk,
            call_path=call_path,
        )

    @staticmethod
    def _external(rng: random.Random) -> str:
        return rng.choice(["55033", "139000", "2100"]) + str(rng.randint(10, 99))

    async def _acquire(self, count: int, pool: tuple[str, ...]) -> list[str]:
        """Reserve ``count`` idle extensions of ``pool`` so concurrent calls never share one."""
        async with self._pool:
            while True:
                free = [e for e in pool if e not in self._busy]
                if len(free) >= count:
                    chosen = self.rng.sample(free, count)
                    self._busy.update(chosen)
                    return chosen
                await self._pool.wait()

    async def _release(self, exts: list[str]) -> None:
        async with self._pool:
            self._busy.difference_update(exts)
            self._pool.notify_all()

    async def _ext_status(self, ext: str, state: str) -> None:
        """30008 only when the extension's state really changes."""
        if ext in self.ext_state and self.ext_state[ext] != state:
            self.ext_state[ext] = state
            await self._emit(30008, {"extension": ext, "status": state}, ext)

    def _call_msg(self, call: Call, **extra: Any) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "call_id": call.call_id,
            "members": [m.to_obj() for m in call.members],
        }
        msg.update(extra)
        return msg

    async def _changed(self, call: Call, member: Member) -> None:
        """One 30011 with the full member list, then 30008; a BYE member leaves the list."""
        member.since = time.time()
        await self._step()
        await self._emit(30011, self._call_msg(call), call.call_id)
        if member.kind == "extension":
            await self._ext_status(member.number, EXT_STATE[member.status])
        if member.status == "BYE" and member in call.members:
            call.members.remove(member)

    async def _add(self, call: Call, member: Member) -> None:
        call.members.append(member)
        await self._changed(call, member)

    async def _set(self, call: Call, member: Member, status: str) -> None:
        member.status = status
        await self._changed(call, member)

    async def _answer(self, call: Call, caller: Member, callee: Member, ring_s: int) -> None:
        call.ring_s = ring_s
        call.answered_at = call.start + ring_s
        call.disposition = "ANSWERED"
        await self._set(call, callee, "ANSWER")
        await self._set(call, caller, "ANSWERED")

    async def _converse(self, call: Call, caller: Member, callee: Member) -> None:
        """Talk (maybe with a hold), then both sides hang up, the hanger first."""
        call.talk_s = call.rng.randint(5, 300)
        if call.rng.random() < 0.3:
            await self._set(call, callee, "HOLD")
            await self._set(call, callee, "ANSWER")
        first, second = (caller, callee) if call.rng.random() < 0.5 else (callee, caller)
        call.reason = "src hangup" if first is caller else "dst hangup"
        await self._set(call, first, "BYE")
        await self._set(call, second, "BYE")

    async def _hangup_all(self, call: Call) -> None:
        for member in list(call.members):
            await self._set(call, member, "BYE")

    async def _finish(self, call: Call, recorded: bool | None = None) -> None:
        """Emit the single 30012 of the call and store its cdr/list record.

        ``recorded`` None = auto-recording (every answered call has a file), else whether a
        recording was started through call control.
        """
        await self._hangup_all(call)
        self.live.pop(call.call_id, None)
        await self._step()
        local_start = datetime.fromtimestamp(call.start, self.tz)
        ctype = call.call_type.capitalize()
        recording = " "
        if call.answered_at is not None and recorded is not False:
            stamp = datetime.fromtimestamp(call.answered_at, self.tz).strftime("%Y%m%d%H%M%S")
            recording = f"{stamp}-{call.call_id}-{call.caller}-{call.callee}-{ctype}.wav"
        duration = call.ring_s + call.talk_s
        status = {"ANSWERED": "ANSWER"}.get(call.disposition, call.disposition)
        msg = {
            "call_id": call.call_id,
            "time_start": local_start.strftime("%Y-%m-%d %H:%M:%S"),
            "call_from": call.caller,
            "call_to": call.callee,
            "call_duration": duration,
            "talk_duration": call.talk_s,
            "src_trunk_name": call.src_trunk or " ",
            "dst_trunk_name": call.dst_trunk or " ",
            "pin_code": " ",
            "status": status,
            "type": call.call_type,
            "recording": recording,
            "did_number": call.did or " ",
            "agent_ring_time": call.agent_ring_s,
        }
        uid = local_start.strftime("%Y%m%d%H%M%S") + f"{call.rng.getrandbits(20):05X}"
        self.cdrs.add(
            CdrRecord(
                id=self.cdrs.next_id(),
                call_id=call.call_id,
                uid=uid,
                timestamp=call.start,
                caller=call.caller,
                caller_display=_display(call.caller),
                callee=call.callee,
                callee_display=_display(call.callee),
                src_addr=call.src_addr,
                src_trunk=call.src_trunk,
                dst_trunk=call.dst_trunk,
                duration=duration,
                ring_duration=call.ring_s,
                talk_duration=call.talk_s,
                disposition=call.disposition,
                call_type=ctype,
                did_number=call.did,
                dod_number=call.dod,
                record_file="" if recording == " " else recording,
                reason=call.reason + " " * call.rng.randint(1, 6),
            )
        )
        await self._emit(30012, msg, call.call_id)

    # ------------------------------------------------------------------ flows
    async def run_call(self, flow: str | None = None) -> str:
        """Play one call flow now; returns its call id."""
        if flow is None:
            flow = self.next_flow()
        if flow not in CALL_FLOWS:
            raise ValueError(f"unknown flow {flow!r}; known: {', '.join(CALL_FLOWS)}")
        handler: Callable[[], Awaitable[str]] = getattr(self, f"_flow_{flow}")
        try:
            return await handler()
        except CallRefused as refused:
            return refused.call_id

    def next_flow(self) -> str:
        """Shuffled round robin: every len(CALL_FLOWS) calls play every flow once."""
        if not self._flow_bag:
            self._flow_bag = list(CALL_FLOWS)
            self.rng.shuffle(self._flow_bag)
        return self._flow_bag.pop()

    def next_event(self) -> str:
        if not self._event_bag:
            self._event_bag = list(BACKGROUND_EVENTS)
            self.rng.shuffle(self._event_bag)
        return self._event_bag.pop()

    async def _internal_call(self, uacsta: bool = False) -> str:
        a, b = await self._acquire(2, GENERAL)
        call = self._new_call()
        call.caller, call.callee, call.src_addr = a, b, device_ip(a)
        try:
            ma = self._ext_member(a, "ALERT")
            await self._add(call, ma)
            mb = self._ext_member(b, "RING")
            await self._add(call, mb)
            ring = call.rng.randint(1, 15)
            if uacsta:
                self._uacsta += 1
                cid = str(self._uacsta)
                base = {"extension": b, "call_id": cid, "ip_address": f"{device_ip(b)}:5060"}
                await self._emit(30020, {"operation": "call_start", **base}, cid)
                if call.rng.random() < 0.7:
                    await self._emit(30020, {"operation": "call_answer", **base}, cid)
                else:
                    await self._emit(30020, {"operation": "call_over", **base}, cid)
                    call.ring_s, call.disposition = ring, "BUSY"
                    await self._set(call, mb, "BYE")
                    await self._emit(30015, self._call_msg(call, reason="User Busy"), call.call_id)
                    await self._finish(call)
                    return call.call_id
            if call.rng.random() < 0.85:
                await self._answer(call, ma, mb, ring)
                await self._converse(call, ma, mb)
            else:
                call.ring_s, call.reason = ring, "src hangup"
                await self._set(call, ma, "BYE")
            await self._finish(call)
            return call.call_id
        finally:
            await self._release([a, b])

    async def _flow_internal(self) -> str:
        return await self._internal_call()

    async def _flow_uacsta(self) -> str:
        return await self._internal_call(uacsta=True)

    async def _flow_outbound(self) -> str:
        (a,) = await self._acquire(1, GENERAL)
        call = self._new_call()
        trunk = call.rng.choice(list(TRUNKS))
        ext = self._external(call.rng)
        call.call_type, call.caller, call.callee = "outbound", a, ext
        call.dst_trunk, call.dod, call.src_addr = trunk, a, device_ip(a)
        try:
            ma = self._ext_member(a, "ALERT")
            await self._add(call, ma)
            mo = self._trunk_member("outbound", a, ext, trunk, "RING")
            await self._add(call, mo)
            await self._set(call, mo, "EARLYMEDIA")
            await self._answer(call, ma, mo, call.rng.randint(2, 20))
            await self._converse(call, ma, mo)
            await self._finish(call)
            return call.call_id
        finally:
            await self._release([a])

    async def _inbound_start(self, call: Call, trunk: str, path: str) -> Member:
        """Inbound leg: 30016 on the monitored trunk, then the call enters ``path``."""
        ext = self._external(call.rng)
        did = call.rng.choice(DIDS)
        call.call_type, call.caller, call.did, call.src_trunk = "inbound", ext, did, trunk
        call.src_addr = TRUNKS[trunk].split(":")[0]
        mi = self._trunk_member("inbound", ext, did, trunk, "ALERT")
        since = time.monotonic()
        if trunk == MONITORED_TRUNK:
            call.members.append(mi)
            await self._step()
            since = time.monotonic()
            await self._emit(30016, self._call_msg(call), call.call_id)
            call.members.remove(mi)
        await self._add(call, mi)
        if trunk == MONITORED_TRUNK and self.inbound_gate is not None:
            if await self.inbound_gate(call, mi, since) == "refuse":
                call.disposition, call.reason = "BUSY", "dst hangup"
                await self._finish(call)
                raise CallRefused(call.call_id)
        if path != " ":
            mi.call_path = path
            await self._changed(call, mi)
        return mi

    async def _flow_inbound_ivr(self) -> str:
        (b,) = await self._acquire(1, GENERAL)
        call = self._new_call()
        try:
            mi = await self._inbound_start(call, MONITORED_TRUNK, IVR)
            await self._emit(30018, self._call_msg(call, prompt="Welcome"), call.call_id)
            digits = "".join(str(call.rng.randint(0, 9)) for _ in range(call.rng.randint(1, 3)))
            for i, digit in enumerate(digits):
                await self._step()
                await self._emit(
                    30017,
                    self._call_msg(call, info=digit, flag=i, infos=digits[:i] or " "),
                    call.call_id,
                )
            call.callee = b
            mb = self._ext_member(b, "RING", IVR)
            await self._add(call, mb)
            await self._answer(call, mi, mb, call.rng.randint(5, 25))
            await self._converse(call, mi, mb)
            await self._finish(call)
            return call.call_id
        finally:
            await self._release([b])

    async def _ring_timeout(self, call: Call, agent: Member) -> None:
        """30026 for the agent, agent leg ends, then 30025 if the agent hit the missed limit."""
        await self._emit(
            30026,
            {
                "queue_number": QUEUE,
                "agent_number": agent.number,
                "caller_number": call.caller,
                "call_id": call.call_id,
            },
            f"{call.call_id}/{agent.number}",
        )
        await self._set(call, agent, "BYE")
        missed = self.missed[agent.number]
        missed.append((call.caller, call.call_id))
        if len(missed) >= AUTO_PAUSE_MISSED:
            calls = [{"caller_number": c, "call_id": i} for c, i in reversed(missed)]
            self.missed[agent.number] = []
            await self._emit(
                30025,
                {"queue_number": QUEUE, "agent_number": agent.number, "calls": calls},
                agent.number,
            )

    async def _queue_call(self, answered: bool) -> str:
        agents = await self._acquire(len(AGENTS), AGENTS)
        call = self._new_call()
        try:
            trunk = call.rng.choice(list(TRUNKS))
            mi = await self._inbound_start(call, trunk, QUEUE)
            call.callee = QUEUE
            ringing = []
            for agent in agents:
                member = self._ext_member(agent, "RING", QUEUE)
                ringing.append(member)
                await self._add(call, member)
            ring = call.rng.randint(10, 30)
            if answered:
                await self._ring_timeout(call, ringing[0])
                winner = ringing[1]
                call.callee, call.agent_ring_s = winner.number, call.rng.randint(1, 10)
                await self._answer(call, mi, winner, ring + call.agent_ring_s)
                call.talk_s = call.rng.randint(20, 400)
                call.reason = "dst hangup"
                await self._set(call, winner, "BYE")
                await self._step()
                await self._emit(
                    30019,
                    {"call_id": call.call_id, "survey_result": str(call.rng.randint(1, 5))},
                    call.call_id,
                )
            else:
                for member in ringing:
                    await self._ring_timeout(call, member)
                call.ring_s, call.reason = ring + 30, "src hangup"
            await self._finish(call)
            return call.call_id
        finally:
            await self._release(agents)

    async def _flow_inbound_queue(self) -> str:
        return await self._queue_call(answered=True)

    async def _flow_queue_unanswered(self) -> str:
        return await self._queue_call(answered=False)

    async def _flow_blind_transfer(self) -> str:
        b, c = await self._acquire(2, GENERAL)
        call = self._new_call()
        try:
            mi = await self._inbound_start(call, OTHER_TRUNK, " ")
            call.callee = b
            mb = self._ext_member(b, "RING")
            await self._add(call, mb)
            await self._answer(call, mi, mb, call.rng.randint(2, 10))
            await self._step()
            await self._emit(30013, self._call_msg(call), call.call_id)
            await self._set(call, mb, "BYE")
            mc = self._ext_member(c, "RING")
            await self._add(call, mc)
            await self._set(call, mc, "ANSWER")
            await self._converse(call, mi, mc)
            await self._finish(call)
            return call.call_id
        finally:
            await self._release([b, c])

    async def _flow_forward(self) -> str:
        a, b, c = await self._acquire(3, GENERAL)
        call = self._new_call()
        call.caller, call.callee, call.src_addr = a, b, device_ip(a)
        try:
            ma = self._ext_member(a, "ALERT")
            await self._add(call, ma)
            await self._step()
            await self._emit(30014, self._call_msg(call), call.call_id)
            mc = self._ext_member(c, "RING")
            await self._add(call, mc)
            await self._answer(call, ma, mc, call.rng.randint(2, 12))
            await self._converse(call, ma, mc)
            await self._finish(call)
            return call.call_id
        finally:
            await self._release([a, b, c])

    async def _flow_failed(self) -> str:
        a, b = await self._acquire(2, GENERAL)
        call = self._new_call()
        call.src_addr = device_ip(a)
        try:
            ma = self._ext_member(a, "ALERT")
            await self._add(call, ma)
            if call.rng.random() < 0.5:  # internal callee refuses or is in DND
                call.caller, call.callee = a, b
                reason = call.rng.choice(["486 Busy Here", "User Busy", "DND"])
                call.disposition, call.reason = "BUSY", "dst extension_busy_no_forward"
                if reason != "DND":
                    mb = self._ext_member(b, "RING")
                    await self._add(call, mb)
                    call.ring_s = call.rng.randint(1, 8)
                    await self._set(call, mb, "BYE")
            else:  # outbound attempt the far end does not take
                ext = self._external(call.rng)
                trunk = call.rng.choice(list(TRUNKS))
                call.call_type, call.caller, call.callee = "outbound", a, ext
                call.dst_trunk, call.dod = trunk, a
                reason = call.rng.choice(
                    ["480 Temporately Unavailable", "408 Request Time", "603 Declined"]
                )
                call.disposition, call.reason = "NO ANSWER", "dst no_answer"
                mo = self._trunk_member("outbound", a, ext, trunk, "RING")
                await self._add(call, mo)
                call.ring_s = call.rng.randint(20, 60)
                await self._set(call, mo, "BYE")
            await self._step()
            await self._emit(30015, self._call_msg(call, reason=reason), call.call_id)
            await self._finish(call)
            return call.call_id
        finally:
            await self._release([a, b])

    async def _flow_conference(self) -> str:
        host, guest = await self._acquire(2, GENERAL)
        self._uniq += 1
        conference_id = f"{int(time.time())}.{self._uniq}"
        try:
            legs: list[tuple[Call, Member]] = []
            for number in (host, guest):
                call = self._new_call()
                call.caller, call.callee, call.src_addr = number, CONFERENCE, device_ip(number)
                member = self._ext_member(number, "ALERT", CONFERENCE)
                await self._add(call, member)
                call.ring_s, call.answered_at, call.disposition = 0, call.start, "ANSWERED"
                await self._set(call, member, "ANSWERED")
                legs.append((call, member))
            for call, member in legs:
                call.talk_s = call.rng.randint(30, 900)
                await self._set(call, member, "BYE")
                if member.number == host:
                    await self._emit(
                        30024, {"conference_id": conference_id, "host_num": host}, conference_id
                    )
                await self._finish(call)
            return legs[0][0].call_id
        finally:
            await self._release([host, guest])

    # ------------------------------------------------------ background events
    async def run_event(self, kind: str | None = None) -> int:
        """Emit one non-call event (registration, presence, trunk, config); returns its id."""
        kind = kind or self.next_event()
        rng = self.rng
        await self._step()
        if kind == "org_status":
            key = rng.choice(["org_status", "show_root_org"])
            self.org[key] = 1 - self.org[key]
            await self._emit(30005, {**self.org, "sn": self.sn}, "org")
        elif kind == "org_config":
            self._org_ids += 1
            action = rng.choice(["create", "update", "delete", "update_order", "update_extension"])
            ids = [self._org_ids] if action != "update_extension" else [1, self._org_ids]
            await self._emit(30006, {"id_list": ids, "action": action, "sn": self.sn}, f"org:{ids}")
        elif kind == "registration":
            ext, reg_kind = rng.choice(list(EXTENSIONS)), rng.choice(REG_KINDS)
            old = self.registration.get((ext, reg_kind), "Unregistered")
            new = "Unregistered" if old == "Registered" else "Registered"
            self.registration[(ext, reg_kind)] = new
            await self._emit(
                30007,
                {
                    "extension": ext,
                    "kind": reg_kind,
                    "status": new,
                    "registered_ip": device_ip(ext),
                },
                f"{ext}/{reg_kind}",
            )
        elif kind == "presence":
            ext = rng.choice(list(EXTENSIONS))
            new = rng.choice([p for p in PRESENCE if p != self.presence[ext]])
            self.presence[ext] = new
            await self._emit(30009, {"extension": ext, "status": new}, ext)
        elif kind == "trunk_state":
            trunk = rng.choice(list(TRUNKS))
            new_state = rng.choice([s for s in TRUNK_STATES if s != self.trunk_state[trunk]])
            self.trunk_state[trunk] = new_state
            await self._emit(
                30010,
                {
                    "trunk_name": trunk,
                    "kind": "PJSIP",
                    "status": new_state,
                    "registered_ip": TRUNKS[trunk],
                },
                trunk,
            )
        elif kind == "ext_config":
            if self.created_exts and rng.random() < 0.5:
                number = self.created_exts.pop(0)
                option = rng.choice(["UPDATE", "DELETE"])
                if option == "UPDATE":
                    self.created_exts.append(number)
            else:
                self._ext_seq += 1
                number, option = str(3354 + self._ext_seq), "CREATE"
                self.created_exts.append(number)
            await self._emit(30022, {"ext_number": number, "option": option}, number)
        elif kind == "trunk_config":
            if self.created_trunks and rng.random() < 0.5:
                name = self.created_trunks.pop(0)
                option = rng.choice(["UPDATE", "DELETE"])
                if option == "UPDATE":
                    self.created_trunks.append(name)
            else:
                self._trunk_seq += 1
                name, option = f"peer-trunking-{self._trunk_seq}", "CREATE"
                self.created_trunks.append(name)
            await self._emit(30023, {"trunk_name": name, "option": option}, name)
        else:
            raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(BACKGROUND_EVENTS)}")
        return BACKGROUND_EVENTS[kind]


def _display(number: str) -> str:
    """cdr/list shows extensions as ``Name<number>`` and external numbers bare."""
    name = EXTENSIONS.get(number)
    return f"{name}<{number}>" if name else number


def device_ip(ext: str) -> str:
    """A stable LAN address per extension, for registration and online-status reports."""
    return f"192.168.28.{int(ext) % 200 + 20}" if ext.isdigit() else "192.168.28.25"
