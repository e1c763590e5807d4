"""Queue agents of the simulated PBX: login/pause state and the queue status views.

Why: the gateway's agent commands (queue/agent_login, queue/agent_pause, agent/login,
agent/pause) must be seen to change something, and queue/agent_status / queue/call_status are
how it (and its tests) read that back, in the manual's shape. The API addresses extensions and
queues by *id*, not number: extension ids here are the position in ``EXTENSIONS`` plus one, and
queue 6402 has id 3 (the id of the manual's example).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gateway.sim.yeastar.control import ControlError, bad_param
from gateway.sim.yeastar.traffic import AGENTS, EXTENSIONS, QUEUE, TrafficGenerator, device_ip

EXT_IDS: dict[int, str] = {i + 1: number for i, number in enumerate(EXTENSIONS)}
QUEUE_ID = 3
QUEUES: dict[int, tuple[str, str, tuple[str, ...]]] = {QUEUE_ID: (QUEUE, "Support", AGENTS)}
# Pause-reason feature codes known to the PBX (manual example: "Lunch" is *01).
PAUSE_REASONS: dict[str, str] = {"*01": "Lunch", "*02": "Break", "*03": "Meeting"}
CALL_STATUS = {"idle": 1, "busy": 2, "ringing": 3}


@dataclass
class AgentState:
    """One agent in one queue."""

    number: str
    agent_type: str = "dynamic"
    is_login: int = 1
    is_pause: int = 0
    pause_reason: str = ""


class AgentBoard:
    """Agents per queue id; every operation validates all ids before changing anything."""

    def __init__(self, traffic: TrafficGenerator) -> None:
        self.t = traffic
        self.agents: dict[int, dict[str, AgentState]] = {
            qid: {n: AgentState(n) for n in members} for qid, (_, _, members) in QUEUES.items()
        }

    def available(self) -> list[str]:
        """Agents of queue 6402 that may be rung (logged in, not paused)."""
        return [a.number for a in self.agents[QUEUE_ID].values() if a.is_login and not a.is_pause]

    # ------------------------------------------------------------- commands
    def _targets(
        self, ext_ids: list[int], queue_ids: list[int] | None, id_field: str
    ) -> list[AgentState]:
        """The (agent, queue) pairs addressed; 40002 for an unknown extension or queue id."""
        for qid in queue_ids or []:
            if qid not in QUEUES:
                raise bad_param("queue_ids" if id_field == "ext_id" else "queue_id", qid)
        out: list[AgentState] = []
        for ext_id in ext_ids:
            number = EXT_IDS.get(ext_id)
            found = [
                self.agents[qid][number]
                for qid in (queue_ids or list(QUEUES))
                if number is not None and number in self.agents[qid]
            ]
            if not found:
                raise bad_param(id_field, ext_id)
            out.extend(found)
        return out

    def login(
        self,
        ext_ids: list[int],
        queue_ids: list[int] | None,
        operation: str,
        paused: int,
        reason: str | None,
        id_field: str,
    ) -> None:
        targets = self._targets(ext_ids, queue_ids, id_field)
        name = self._reason(reason)
        if any(a.agent_type != "dynamic" for a in targets):
            raise ControlError(70132)  # static agents are always in their queues
        for agent in targets:
            if operation == "login":
                agent.is_login, agent.is_pause = 1, paused
                agent.pause_reason = name if paused else ""
            else:
                agent.is_login, agent.is_pause, agent.pause_reason = 0, 0, ""

    def pause(
        self,
        ext_ids: list[int],
        queue_ids: list[int] | None,
        operation: str,
        reason: str | None,
        id_field: str,
    ) -> None:
        targets = self._targets(ext_ids, queue_ids, id_field)
        name = self._reason(reason)
        if any(not a.is_login for a in targets):
            raise ControlError(70132)  # a logged-out agent has no service to pause
        for agent in targets:
            agent.is_pause = 1 if operation == "pause" else 0
            agent.pause_reason = name if operation == "pause" else ""

    @staticmethod
    def _reason(code: str | None) -> str:
        if code is None:
            return ""
        if code not in PAUSE_REASONS:
            raise bad_param("reason", code)
        return PAUSE_REASONS[code]

    # --------------------------------------------------------------- reading
    def extension_search(
        self, search_value: str, page: int, page_size: int, sort_by: str, order_by: str
    ) -> dict[str, Any]:
        """``extension/search`` (Ext_Basicinfo): the keyword matches part of the number or
        the name, as on the PBX, so a caller wanting one number must pick the exact match."""
        needle = search_value.casefold()
        rows = [
            self._basic_info(ext_id, number)
            for ext_id, number in EXT_IDS.items()
            if needle in number or needle in EXTENSIONS[number].casefold()
        ]
        rows.sort(key=lambda row: row.get(sort_by) or "", reverse=order_by == "desc")
        start = (page - 1) * page_size
        return {"total_number": len(rows), "data": rows[start : start + page_size]}

    def _basic_info(self, ext_id: int, number: str) -> dict[str, Any]:
        def online(kind: str, dev_type: str) -> dict[str, Any]:
            up = self.t.registration.get((number, kind)) == "Registered"
            info: dict[str, Any] = {"status": int(up)}
            if up:
                info["ext_dev_type"] = dev_type
                info["status_list"] = [{"status": 1, "ip": device_ip(number)}]
            return info

        return {
            "id": ext_id,
            "online_status": {
                "sip_phone": online("Sip", "sip"),
                "linkus_desktop": online("Desktop", "linkusdesktop"),
                "linkus_mobile": online("Mobile", "linkusmobile"),
                "linkus_web": online("Web", "linkusweb"),
            },
            "presence_status": self.t.presence.get(number, "available"),
            "number": number,
            "caller_id_name": EXTENSIONS[number],
            "role_name": "User",
            "email_addr": f"{number}@sample.com",
            "mobile_number": "",
        }

    def queue_list(self, page: int, page_size: int) -> dict[str, Any]:
        """``queue/list`` in the manual's shape: members as {text, text2, value, type}."""
        ext_ids = {number: ext_id for ext_id, number in EXT_IDS.items()}

        def member(number: str) -> dict[str, str]:
            return {
                "text": EXTENSIONS[number],
                "text2": number,
                "value": str(ext_ids[number]),
                "type": "extension",
            }

        queues = [
            {
                "id": qid,
                "number": number,
                "name": name,
                "ring_strategy": "ring_all",
                "dynamic_agent_list": [member(n) for n in members],
                "static_agent_list": None,
                "manager_list": None,
            }
            for qid, (number, name, members) in sorted(QUEUES.items())
        ]
        start = (page - 1) * page_size
        return {"total_number": len(queues), "queue_list": queues[start : start + page_size]}

    def agent_status(self, queue_id: int) -> dict[str, Any]:
        if queue_id not in QUEUES:
            raise bad_param("id", queue_id)
        data = [
            {
                "name": EXTENSIONS[a.number],
                "number": a.number,
                "is_login": a.is_login,
                "is_pause": a.is_pause,
                "call_status": CALL_STATUS.get(self.t.ext_state.get(a.number, ""), 0),
                "pause_reason": a.pause_reason,
                "agent_type": a.agent_type,
            }
            for a in self.agents[queue_id].values()
        ]
        return {"total_number": len(data), "data": data}

    def call_status(self, queue_id: int) -> dict[str, Any]:
        """Queue calls from the live calls: waiting (no agent), ringing agents, answered."""
        if queue_id not in QUEUES:
            raise bad_param("id", queue_id)
        number, qname, members = QUEUES[queue_id]
        now = time.time()
        waiting, active, ringing = [], [], []
        for call in list(self.t.live.values()):
            if not any(m.call_path == number for m in call.members):
                continue
            agents = [
                m
                for m in call.members
                if m.kind == "extension" and m.number in members and m.number != call.caller
            ]
            caller = call.caller
            base = {
                "call_id": call.call_id,
                "caller_number": caller,
                "caller_display_name": EXTENSIONS.get(caller, ""),
            }
            talking = [m for m in agents if m.status in ("ANSWER", "HOLD")]
            if talking:
                for m in talking:
                    active.append(self._row(base, m.number, now - m.since))
            elif any(m.status == "RING" for m in agents):
                for m in agents:
                    if m.status == "RING":
                        ringing.append(self._row(base, m.number, now - m.since))
            else:
                item = {**base, "callee_number": number, "callee_display_name": qname}
                waiting.append({**item, "duration": max(0, round(now - call.start))})
        return {
            "waiting_list": waiting,
            "active_list": active,
            "waiting_calls": len(waiting),
            "active_calls": len(active),
            "ringing_list": ringing,
            "ringing_calls": len(ringing),
        }

    @staticmethod
    def _row(base: dict[str, Any], agent: str, seconds: float) -> dict[str, Any]:
        return {
            **base,
            "callee_number": agent,
            "callee_display_name": EXTENSIONS.get(agent, ""),
            "duration": max(0, round(seconds)),
        }
