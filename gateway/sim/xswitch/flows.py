"""Call flows as an XSwitch node publishes them: ordered ``(subject, body)`` NATS messages.

Shapes follow the SDK (``github:xswitch-cn/xctrl``): ``Event.Channel`` params are a
``ChannelEvent`` (``proto/xctrl/xctrl.proto``), ``Event.CDR`` params are ``tboy/tboy.go``'s
``RequestParam`` with its ``cdr_template`` fields, ``Event.DTMF`` params a ``DTMFEvent``.
State sequences are the life cycles of ``docs/channel.md``; a leg's CDR comes just before its
``DESTROY`` ("销毁前，会发送Event.CDR事件"), on the CDR subject.
"""

from __future__ import annotations

import random
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

CTRL = "cn.xswitch.ctrl"
CDR = "cn.xswitch.ctrl.event.cdr"
#: Trunk contexts: FreeSWITCH's default name and one named by whoever set up the carrier.
TRUNK_CONTEXTS = ("public", "MyCarrier-Inbound")
#: XCC's own word for a call's direction (``params.xcc_direction``), by kind of call.
XCC_DIRECTION = {
    "inbound": "inbound",
    "failed": "inbound",
    "dtmf": "inbound",
    "outbound": "outbound",
    "busy": "outbound",
    "bridged": "outbound",
    "internal": "internal",
}
KINDS = ("inbound", "outbound", "internal", "bridged", "failed", "busy", "dtmf")


@dataclass
class Leg:
    """One channel: its ``ChannelEvent`` fields, kept current as the flow advances."""

    uuid: str
    direction: str  # FreeSWITCH's: inbound = came into the switch, outbound = created by it
    cid_number: str
    dest_number: str
    context: str
    node_uuid: str
    peer_uuid: str = ""
    create_epoch: int = 0
    ring_epoch: int = 0
    answer_epoch: int = 0
    hangup_epoch: int = 0
    cause: str = ""
    params: dict[str, str] = field(default_factory=dict)

    def event(self, state: str) -> dict[str, Any]:
        """As a node marshals it: Go's ``omitempty`` on every ``ChannelEvent`` field
        (``xswitch-cn/proto`` ``xctrl.pb.go``) leaves out ``false``, ``0`` and ``""``."""
        return {
            "jsonrpc": "2.0",
            "method": "Event.Channel",
            "params": omitempty(
                {
                    "node_uuid": self.node_uuid,
                    "uuid": self.uuid,
                    "peer_uuid": self.peer_uuid,
                    "direction": self.direction,
                    "state": state,
                    "cid_name": self.cid_number,
                    "cid_number": self.cid_number,
                    "dest_number": self.dest_number,
                    "create_epoch": self.create_epoch,
                    "ring_epoch": self.ring_epoch,
                    "answer_epoch": self.answer_epoch,
                    "hangup_epoch": self.hangup_epoch,
                    "answered": self.answer_epoch > 0,
                    "cause": self.cause,
                    "context": self.context,
                    "params": dict(self.params),
                }
            ),
        }


def omitempty(fields: dict[str, Any]) -> dict[str, Any]:
    """Go's ``encoding/json`` with ``omitempty``: zero values (``false``, ``0``, ``""``, an
    empty map or list) are not sent at all."""
    return {key: value for key, value in fields.items() if value not in (False, 0, "", {}, [])}


class FlowBuilder:
    """Builds whole calls; times advance from ``start`` (epoch seconds), local stamps in ``tz``."""

    def __init__(
        self, *, node_uuid: str, tz: ZoneInfo, seed: int | None = None, start: int | None = None
    ) -> None:
        self.node_uuid = node_uuid
        self.tz = tz
        self.rng = random.Random(seed)
        self.now = start if start is not None else int(datetime.now(UTC).timestamp())
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.times: list[int] = []  # when each message is due, epoch seconds
        self.talk_s = (5, 90)  # how long answered calls last, seconds (min, max)
        self.variables: dict[str, str] = {}  # channel variables every leg of the call has

    # --- primitives --------------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuidlib.UUID(int=self.rng.getrandbits(128), version=4))

    def leg(self, direction: str, caller: str, callee: str, context: str, peer: str = "") -> Leg:
        return Leg(
            uuid=self._uuid(),
            direction=direction,
            cid_number=caller,
            dest_number=callee,
            context=context,
            node_uuid=self.node_uuid,
            peer_uuid=peer,
            create_epoch=self.now,
            params=dict(self.variables),
        )

    def _emit(self, subject: str, body: dict[str, Any]) -> None:
        self.messages.append((subject, body))
        self.times.append(self.now)

    def take(self) -> list[tuple[int, str, dict[str, Any]]]:
        """The queued messages with their due times (epoch seconds), emptying the queue."""
        taken = [
            (due, subject, body)
            for due, (subject, body) in zip(self.times, self.messages, strict=True)
        ]
        self.messages, self.times = [], []
        return taken

    def tick(self, seconds: int = 1) -> None:
        self.now += seconds

    def state(self, leg: Leg, state: str) -> None:
        if state == "RINGING":
            leg.ring_epoch = self.now
        elif state == "ANSWERED":
            leg.answer_epoch = self.now
        self._emit(CTRL, leg.event(state))

    def dtmf(self, leg: Leg, digit: str) -> None:
        params = {"node_uuid": leg.node_uuid, "uuid": leg.uuid, "dtmf_digit": digit}
        body = {
            "jsonrpc": "2.0",
            "method": "Event.DTMF",
            "params": {**params, "dtmf_duration": 100},
        }
        self._emit(CTRL, body)

    def _stamp(self, epoch: int) -> str:
        if not epoch:
            return ""
        return datetime.fromtimestamp(epoch, self.tz).strftime("%Y-%m-%d %H:%M:%S")

    def destroy(self, leg: Leg, cause: str, *, leg_name: str) -> None:
        """CDR first, then ``DESTROY`` (docs/channel.md)."""
        leg.hangup_epoch = self.now
        leg.cause = cause
        billsec = leg.hangup_epoch - leg.answer_epoch if leg.answer_epoch else 0
        # A DESTROY's variables carry the talk time and cause (``ctrl/bus/bus_test.go``).
        leg.params.update(
            billsec=str(billsec),
            hangup_cause=cause,
            duration=str(leg.hangup_epoch - leg.create_epoch),
        )
        cdr = {
            "uuid": leg.uuid,
            "leg": leg_name,
            "peer_uuid": leg.peer_uuid,
            "direction": leg.direction,
            "context": leg.context,
            "sofia_profile_name": "public" if leg.context in TRUNK_CONTEXTS else "default",
            "caller_id_name": leg.cid_number,
            "caller_id_number": leg.cid_number,
            "destination_number": leg.dest_number,
            "start_epoch": str(leg.create_epoch),
            "answer_epoch": str(leg.answer_epoch),
            "end_epoch": str(leg.hangup_epoch),
            "start_stamp": self._stamp(leg.create_epoch),
            "answer_stamp": self._stamp(leg.answer_epoch),
            "end_stamp": self._stamp(leg.hangup_epoch),
            "duration": str(leg.hangup_epoch - leg.create_epoch),
            "billsec": str(billsec),
            "hangup_cause": cause,
            "xcc_domain": "xswitch.cn",
            "xcc_session": leg.params.get("xcc_session", ""),
        }
        body = {
            "jsonrpc": "2.0",
            "method": "Event.CDR",
            "params": {
                "uuid": leg.uuid,
                "node_ip": "127.0.0.1",
                "node_uuid": leg.node_uuid,
                "cdr": cdr,
            },
        }
        self._emit(CDR, body)
        self.state(leg, "DESTROY")

    # --- whole calls -------------------------------------------------------------------------

    def _outside(self) -> str:
        return "0555" + "".join(self.rng.choice("0123456789") for _ in range(6))

    def _extension(self) -> str:
        return str(self.rng.randint(1000, 1019))

    def bridged(self, caller: str, callee: str, context: str, *, talk: int) -> None:
        """A leg comes in, the switch calls the callee, both talk, the callee hangs up."""
        a = self.leg("inbound", caller, callee, context)
        self.state(a, "START")
        self.tick()
        b = self.leg("outbound", caller, callee, "default", peer=a.uuid)
        self.state(b, "CALLING")
        self.state(b, "RINGING")
        self.tick(3)
        self.state(b, "ANSWERED")
        self.state(a, "ANSWERED")
        # The manuals write BRIDGE; the SDK's own fake node (tboy/tboy.go Bridge) BRIDGED.
        bridge = self.rng.choice(("BRIDGE", "BRIDGED"))
        self.state(a, bridge)
        self.state(b, bridge)
        if self.rng.random() < 0.3:  # the caller is put on hold a while
            self.tick(talk // 2)
            self.state(a, "HOLD")
            self.tick(2)
            self.state(a, "UNHOLD")
        self.tick(talk)
        self.state(a, "UNBRIDGE")
        self.destroy(b, "NORMAL_CLEARING", leg_name="b")
        self.destroy(a, "NORMAL_CLEARING", leg_name="a")

    def click_to_dial(self, agent: str, customer: str, *, talk: int) -> None:
        """XNode.Dial: the switch rings the agent, then bridges a second leg to the customer
        (docs/channel.md, outbound life cycle with early media "M")."""
        a = self.leg("outbound", "88880000", agent, "default")
        self.state(a, "CALLING")
        self.state(a, "RINGING")
        self.tick(2)
        self.state(a, "ANSWERED")
        self.state(a, "READY")
        b = self.leg("outbound", agent, customer, "default", peer=a.uuid)
        self.state(b, "CALLING")
        self.state(b, "RINGING")
        self.state(b, "MEDIA")
        self.state(b, "BRIDGE")
        self.tick(4)
        self.state(b, "ANSWERED")
        self.tick(talk)
        self.state(b, "UNBRIDGE")
        self.destroy(a, "NORMAL_CLEARING", leg_name="a")
        self.destroy(b, "NORMAL_CLEARING", leg_name="b")

    def unanswered(self, caller: str, callee: str, context: str, cause: str) -> None:
        a = self.leg("inbound", caller, callee, context)
        self.state(a, "START")
        b = self.leg("outbound", caller, callee, "default", peer=a.uuid)
        self.state(b, "CALLING")
        self.state(b, "RINGING")
        self.tick(5 if cause == "NO_ANSWER" else 1)
        self.destroy(b, cause, leg_name="b")
        self.destroy(a, cause, leg_name="a")

    def ivr_dtmf(self, caller: str, digits: str) -> None:
        """A caller answered by the IVR presses keys, then hangs up (one leg)."""
        a = self.leg("inbound", caller, "88880000", "public")
        self.state(a, "START")
        self.state(a, "ANSWERED")
        self.state(a, "READY")
        for digit in digits:
            self.tick()
            self.dtmf(a, digit)
        self.tick(2)
        self.destroy(a, "NORMAL_CLEARING", leg_name="a")

    def call(self, kind: str) -> None:
        talk = self.rng.randint(*self.talk_s)
        # Some nodes set ``xcc_direction`` on every leg, others not: both are played.
        self.variables = (
            {"xcc_direction": XCC_DIRECTION.get(kind, "")} if self.rng.random() < 0.5 else {}
        )
        trunk = self.rng.choice(TRUNK_CONTEXTS)
        if kind == "bridged":
            self.click_to_dial(self._extension(), self._outside(), talk=talk)
        elif kind == "inbound":
            self.bridged(self._outside(), self._extension(), trunk, talk=talk)
        elif kind == "outbound":
            self.bridged(self._extension(), self._outside(), "default", talk=talk)
        elif kind == "internal":
            self.bridged(self._extension(), self._extension(), "default", talk=talk)
        elif kind == "failed":
            self.unanswered(self._outside(), self._extension(), trunk, "NO_ANSWER")
        elif kind == "busy":
            self.unanswered(self._extension(), self._outside(), "default", "USER_BUSY")
        elif kind == "dtmf":
            self.ivr_dtmf(
                self._outside(), "".join(self.rng.choice("0123456789*#") for _ in range(3))
            )
        else:
            raise ValueError(f"unknown call kind {kind!r}; known: {', '.join(KINDS)}")
        self.variables = {}
        self.tick(2)


def encode(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def sample(
    kinds: tuple[str, ...] = KINDS, *, seed: int = 7, start: int = 1772440000
) -> list[bytes]:
    """Every kind of call once, as message bodies (the test fixtures and the demo's first calls)."""
    builder = FlowBuilder(node_uuid="node-1", tz=ZoneInfo("Asia/Shanghai"), seed=seed, start=start)
    for kind in kinds:
        builder.call(kind)
    return [encode(body) for _, body in builder.messages]


__all__ = [
    "CDR",
    "CTRL",
    "KINDS",
    "TRUNK_CONTEXTS",
    "XCC_DIRECTION",
    "FlowBuilder",
    "Leg",
    "encode",
    "omitempty",
    "sample",
]
