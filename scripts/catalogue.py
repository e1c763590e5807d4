"""The event catalogue: one example per event type, made by the real normalizer.

Examples come from the manual-derived fixtures in tests/fixtures/yeastar (and, for the
``account.*`` types, the UUCall messages in tests/fixtures/uucall/sample.jsonl; for
``agent.seat``, Meiqia's seat list in tests/fixtures/meiqia/sips.json), so the catalogue
shows exactly what the gateway publishes. ``scripts/gen-docs`` writes it into the documentation
(the "Event catalogue" page) and the AsyncAPI document; tests/unit/test_docs_site.py fails when the
page is stale.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.connectors.meiqia.normalize import seat_events, seat_snapshot  # noqa: E402
from gateway.connectors.uucall.normalize import normalize_message  # noqa: E402
from gateway.connectors.yeastar.normalize import normalize_frame  # noqa: E402
from gateway.schema.events import (  # noqa: E402
    EVENT_TYPES,
    AgentQueueStatusData,
    CloudEvent,
    CommandResultData,
    NormalizeContext,
    connection_event,
    gap_event,
    make_event,
)


def examples() -> dict[str, CloudEvent]:
    ctx = NormalizeContext(
        "acme-hq", "yeastar", ZoneInfo("Asia/Shanghai"), datetime(2022, 4, 27, 11, 5, 0, tzinfo=UTC)
    )
    found: dict[str, CloudEvent] = {}
    for path in sorted((ROOT / "tests/fixtures/yeastar").glob("300*.json")):
        frame = json.loads(path.read_text())["frame"]
        for event in normalize_frame(json.dumps(frame), ctx):
            found.setdefault(event.type, event)
    uucall = NormalizeContext(
        "acme-fin", "uucall", ZoneInfo("Asia/Shanghai"), datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    )
    for line in (ROOT / "tests/fixtures/uucall/sample.jsonl").read_text().splitlines():
        for event in normalize_message(line, uucall) if line.strip() else []:
            first_seen = event.data.get("previous_balance", 0) is None  # show a change
            if event.type.startswith("account.") and not first_seen:
                found.setdefault(event.type, event)
    found.setdefault("vendor.unknown", normalize_frame('{"type":30099,"msg":"{}"}', ctx)[0])
    # Meiqia's seats (tests/fixtures/meiqia/sips.json): seat 8001 freed between two polls
    meiqia = NormalizeContext("acme-cc", "meiqia", ZoneInfo("Asia/Shanghai"), ctx.received_at)
    seats = json.loads((ROOT / "tests/fixtures/meiqia/sips.json").read_text())
    freed = [{**seats[0], "occupied": "n", "agent_id": 0, "agent_name": ""}, *seats[1:]]
    before, after = (seat_snapshot(rows, meiqia.received_at, meiqia.tz) for rows in (seats, freed))
    found.setdefault("agent.seat", seat_events(before, after, {}, meiqia)[0])
    found.setdefault("gateway.rejected", normalize_frame("not json", ctx)[0])
    found.setdefault("gateway.connection", connection_event(ctx, "connected", None))
    start = datetime(2022, 4, 27, 11, 4, 0, tzinfo=UTC)
    found.setdefault("gateway.gap", gap_event(ctx, start, ctx.received_at, recovered=3))
    found.setdefault(
        "agent.queue_status",
        make_event(  # from queue/agent_status during recovery
            ctx,
            "agent.queue_status",
            AgentQueueStatusData(
                extension="2010", queue="6402", logged_in=True, paused=False, call_state="idle"
            ),
            identity=("queue/agent_status", "6402", "2010"),
            subject="2010",
            vendorevent="queue/agent_status",
        ),
    )
    ok = CommandResultData(
        command_id="6f1c9d0e", command="call.dial", ok=True, result={"call_id": "1651057476.362"}
    )
    found.setdefault(
        "command.succeeded",
        make_event(
            ctx, "command.succeeded", ok, identity=("command", "6f1c9d0e", True), subject="6f1c9d0e"
        ),
    )
    failed = CommandResultData(
        command_id="9a2b7c41",
        command="call.hold",
        ok=False,
        error={
            "code": "not_found",
            "message": "call/hold: 70130 CAHNNEL ID NOT FOUND",
            "vendor_code": "70130",
            "retryable": False,
        },
    )
    found.setdefault(
        "command.failed",
        make_event(
            ctx,
            "command.failed",
            failed,
            identity=("command", "9a2b7c41", False),
            subject="9a2b7c41",
        ),
    )
    return found


def render() -> str:
    found = examples()
    lines: list[str] = []
    for type_ in EVENT_TYPES:
        event = found.get(type_)
        lines += [f"## `{type_}`", ""]
        if event is None:
            lines += ["No example yet.", ""]
            continue
        body = json.dumps(event.model_dump(mode="json"), indent=2, ensure_ascii=False)
        lines += ["```json", body, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
