"""One WebSocket event frame -> events: the event id picks the family's handler; an id without
one is published as ``vendor.unknown``, a frame too broken to read as ``gateway.rejected``."""

from __future__ import annotations

from typing import Any, Final

import orjson
from pydantic import ValidationError

from gateway.connectors import fields as read
from gateway.connectors.yeastar.normalize.agents import (
    _agent_call_state,
    _agent_status,
    _auto_paused,
    _presence,
    _registration,
    _ring_timeout,
)
from gateway.connectors.yeastar.normalize.calls import (
    _call_failed,
    _call_kind,
    _call_status,
    _dtmf,
    _prompt_finished,
    _survey,
    _uacsta,
)
from gateway.connectors.yeastar.normalize.cdrs import _cdr
from gateway.connectors.yeastar.normalize.envelope import (
    _decode_msg,
    _event_code,
    _Handler,
    _Invalid,
    _parse_json,
    _reason,
)
from gateway.connectors.yeastar.normalize.system import (
    _config_change,
    _host_left,
    _org_config,
    _org_status,
    _trunk_status,
)
from gateway.schema.events import (
    CloudEvent,
    NormalizeContext,
    VendorUnknownData,
    make_event,
    rejected,
)

#: of newer firmware where a gateway type fits; the rest of newer ids stay vendor.unknown.
HANDLERS: Final[dict[str, _Handler]] = {
    "30005": _org_status,
    "30006": _org_config,
    "30007": _registration,
    "30008": _agent_call_state,
    "30009": _presence,
    "30010": _trunk_status,
    "30011": _call_status,
    "30012": _cdr,
    "30013": _call_kind("call.transferred"),
    "30014": _call_kind("call.forwarded"),
    "30015": _call_failed,
    "30016": _call_kind("call.incoming", "incoming"),
    "30017": _dtmf,
    "30018": _prompt_finished,
    "30019": _survey,
    "30020": _uacsta,
    "30022": _config_change("extension", "ext_number"),
    "30023": _config_change("trunk", "trunk_name"),
    "30024": _host_left,
    "30025": _auto_paused,
    "30026": _ring_timeout,
    "30029": _agent_status,
}


def _unknown(ctx: NormalizeContext, code: str, frame: dict[str, Any]) -> CloudEvent:
    """Never drop what we do not know: the raw frame always travels with vendor.unknown."""
    raw = dict(frame)
    try:
        raw["msg"] = _decode_msg(frame.get("msg"))
    except _Invalid:
        pass
    body = raw["msg"] if isinstance(raw.get("msg"), dict) else raw
    event = make_event(
        ctx,
        "vendor.unknown",
        VendorUnknownData(event=code),
        identity=(code, read.canonical(body), ctx.received_at.isoformat()),
        vendorevent=code,
        raw=raw,
    )
    event.data.setdefault("raw", raw)
    return event


def _normalize(text: str, ctx: NormalizeContext, display_format: str | None) -> CloudEvent:
    frame = _parse_json(text, "frame")
    if not isinstance(frame, dict):
        raise _Invalid(f"frame is not a JSON object (got {type(frame).__name__})")
    code = _event_code(frame)
    handler = HANDLERS.get(code)
    if handler is None:
        return _unknown(ctx, code, frame)
    try:
        msg = _decode_msg(frame.get("msg"))
        built = _cdr(msg, ctx, display_format) if handler is _cdr else handler(msg, ctx)
    except (_Invalid, ValidationError) as exc:
        raise _Invalid(f"{code}: {_reason(exc)}") from None
    identity = built.identity or (code, read.canonical(msg), ctx.received_at.isoformat())
    return make_event(
        ctx,
        built.type_,
        built.data,
        identity=identity,
        time=built.time,
        subject=built.subject,
        vendorevent=code,
        raw={**frame, "msg": msg} if ctx.include_raw else None,
    )


def _frame_code(text: str) -> str | None:
    """Best-effort event id for a rejected frame, so consumers can tell what failed."""
    try:
        frame = orjson.loads(text)
        return _event_code(frame) if isinstance(frame, dict) else None
    except (orjson.JSONDecodeError, _Invalid):
        return None


def normalize_frame(
    text: str | bytes, ctx: NormalizeContext, *, display_format: str | None = None
) -> list[CloudEvent]:
    """One WebSocket event frame -> events. Pure (no I/O, no clock: use ctx.received_at), total.

    ``display_format``: the PBX's date display format (strftime), to read CDR times that more
    than one format could read; None reads only what is unambiguous or proven otherwise.
    A call's ``direction`` here is what this one frame proves (``unknown`` when it proves
    nothing); a stream keeps it per call (``calls.CallDirections``).
    """
    safe = read.safe_text(text)
    try:
        return [_normalize(safe, ctx, display_format)]
    except _Invalid as exc:
        return [rejected(ctx, safe, read.safe_text(str(exc)), _frame_code(safe))]
    except Exception as exc:  # a bug here must not cost the event: publish it as rejected
        error = read.safe_text(f"normalizer error: {type(exc).__name__}: {exc}")
        return [rejected(ctx, safe, error, _frame_code(safe))]
