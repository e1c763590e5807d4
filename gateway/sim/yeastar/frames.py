"""Event-report frames and error bodies of the Yeastar P-Series OpenAPI, plus the manual's traps.

Why: the gateway is tested against exactly what the manual shows, including its inconsistencies
(double-encoded ``msg``, spelling drift, ``member_statuses``, ``ip_addresses``, missing ``sn``,
``" "`` blanks, padded reasons), so the wire form of every frame is produced in one place.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from typing import Any

# Event ids of the manual's "API 事件" chapter. There is no 30021.
EVENT_IDS: tuple[int, ...] = (
    30005,
    30006,
    30007,
    30008,
    30009,
    30010,
    30011,
    30012,
    30013,
    30014,
    30015,
    30016,
    30017,
    30018,
    30019,
    30020,
    30022,
    30023,
    30024,
    30025,
    30026,
)
# Reports whose table and example carry no top-level ``sn``.
NO_SN_EVENTS = frozenset({30022, 30023, 30025, 30026})
# Reports whose example sends ``msg`` as an object rather than a JSON string.
OBJECT_MSG_EVENTS = frozenset({30025, 30026, 30029})
# Reports carrying a ``members`` list.
MEMBER_EVENTS = frozenset({30011, 30013, 30014, 30015, 30016, 30017, 30018})

# Error-code table (manual line 18516, 表 388), the whole of it, exact errmsg spelling.
ERRORS: dict[int, str] = {
    -2: "INTERNAL SERVER ERROR",
    -1: "FAILURE",
    0: "SUCCESS",
    1: "PARTIAL SUCCESS",
    2: "PROCESSING",
    10001: "INTERFACE NOT EXISTED",
    10002: "API VERSION OUT OF MAINTENANCE",
    10003: "API VERSION UNSUPPORTED",
    10004: "TOKEN EXPIRED",
    10005: "ACCESS DENIED",
    40001: "PARAMETER SYNTAX ERROR",
    40002: "PARAMETER ERROR",
    40003: "DUPLICATE KEY VALUE",
    40004: "FILE SIZE EXCEEDED",
    60001: "DATA NOT FOUND",
    60002: "MAX LIMITATION EXCEEDED",
    60101: "ROLE NOT EXISTED",
    70004: "ACCOUNT IP BLOCKED",
    70082: "OVERLOAD_TASK_RUNNING",
    70084: "ACTION FORBIDDEN",
    70087: "IP FORBIDDEN",
    70091: "CONNECTION_RELATION_EXISTS",
    70093: "PHONEBOOK_NOT_EXISTED",
    70106: "RATE_NOT_EXISTED",
    70120: "ORGANIZATION DISABLED",
    70123: "API UNAVAILABLE",
    70128: "CONTACTS_NOT_EXISTED",
    70130: "CAHNNEL ID NOT FOUND",  # sic, as in the manual
    70132: "OPERATION NOT SUPPORTED",
    70510: "MAX PARTICIPANTS EXCEEDED",
    70516: "WAKEUP CALL ALARM NOT EXISTED",
    70524: "CAN'T CHECKOUT WHEN PMS CHECKIN",
    70525: "CAN'T OPERATE WITH PMS CONNECT",
}


def error_body(code: int, **extra: Any) -> dict[str, Any]:
    """``{"errcode": code, "errmsg": <table text>}`` plus extras (invalid_param_list...)."""
    body: dict[str, Any] = {"errcode": code, "errmsg": ERRORS[code]}
    body.update(extra)
    return body


def dumps(obj: Any) -> str:
    """Compact JSON keeping non-ASCII text readable, as the PBX sends it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@dataclass
class SentFrame:
    """One generated event frame, as recorded for tests and stats."""

    seq: int
    event: int
    text: str
    msg: Any  # the msg exactly as placed in the frame (str when double-encoded, else dict)
    time: float  # time.time() when generated
    subscribers: int  # how many sockets it went to
    entity: str = ""
    trap: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)  # the clean msg object before traps


def applicable_traps(event: int, msg: dict[str, Any]) -> list[str]:
    """Which trap variants make sense for this event's payload."""
    traps = ["msg_form"]
    if event == 30008 or event == 30012:
        traps.append("case_drift")
    if event in MEMBER_EVENTS:
        traps.append("member_statuses")
    if event == 30020:
        traps.append("ip_key")
    if event not in NO_SN_EVENTS:
        traps.append("missing_sn")
    if event in MEMBER_EVENTS or event == 30012:
        traps.append("blank")
    if event == 30015:
        traps.append("reason_padding")
    return traps


def _apply_trap(trap: str, event: int, msg: dict[str, Any]) -> None:
    """Mutate ``msg`` (a deep copy) for the payload-level traps."""
    if trap == "case_drift":
        if event == 30008:
            msg["status"] = str(msg["status"]).capitalize()
        elif event == 30012:
            if msg.get("status") == "ANSWER":
                msg["status"] = "ANSWERED"
            msg["type"] = str(msg.get("type", "")).capitalize()
    elif trap == "member_statuses":
        for member in msg.get("members", []):
            for info in member.values():
                if "member_status" in info:
                    info["member_statuses"] = info.pop("member_status")
    elif trap == "ip_key":
        if "ip_address" in msg:
            msg["ip_addresses"] = msg.pop("ip_address")
    elif trap == "blank":
        for member in msg.get("members", []):
            for info in member.values():
                for key, value in info.items():
                    if value == " ":
                        info[key] = ""
        for key, value in list(msg.items()):
            if value == " ":
                msg[key] = ""
    elif trap == "reason_padding":
        msg["reason"] = str(msg.get("reason", "")) + "      "


def build_frame(
    event: int, msg: dict[str, Any], *, sn: str, rng: random.Random, trap_rate: float
) -> tuple[str, Any, str | None]:
    """Return (frame text, msg as placed in the frame, trap name or None)."""
    trap: str | None = None
    body = copy.deepcopy(msg)
    if trap_rate > 0 and rng.random() < trap_rate:
        trap = rng.choice(applicable_traps(event, msg))
        _apply_trap(trap, event, body)
    as_object = event in OBJECT_MSG_EVENTS
    if trap == "msg_form":
        as_object = not as_object
    frame: dict[str, Any] = {"type": event}
    if event not in NO_SN_EVENTS and trap != "missing_sn":
        frame["sn"] = sn
    placed: Any = body if as_object else dumps(body)
    frame["msg"] = placed
    return dumps(frame), placed, trap
