"""What every Yeastar event family's reader shares: the frame envelope (a JSON frame whose
``msg`` is itself JSON), the lenient field readers, the error a payload too broken to publish
raises, and what a handler returns."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from gateway.connectors import fields as read
from gateway.schema.events import (
    NormalizeContext,
)


class _Invalid(ValueError):
    """A payload the normalizer understands too little of to publish as its own type."""


# --- low-level readers: tolerate the manual's drift ---------------------------------------------


def _required(msg: Mapping[str, Any], *keys: str) -> str:
    """Like :func:`_first`, but the event is meaningless without it."""
    found = read.first(msg, *keys)
    if found is None:
        raise _Invalid(f"missing required field {keys[0]!r}")
    return found


def _json_safe(value: Any) -> Any:
    """Records handed over by the connector may hold what JSON cannot (huge ints, inf)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


# --- frame envelope ------------------------------------------------------------------------------


def _parse_json(text: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _Invalid(f"{what} is not valid JSON: {exc}") from None


def _event_code(frame: Mapping[str, Any]) -> str:
    """``type`` may be an int or a string; it is the only way to know what the frame is."""
    value = frame.get("type")
    if type(value) is int:  # the usual case (not bool): what read.integer and str() give
        return str(value)
    if value is None:
        raise _Invalid("frame has no 'type' (event id)")
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | str)
        or not str(value).strip()
    ):
        raise _Invalid(f"frame 'type' is not an event id: {value!r}")
    code = read.integer(value)
    return str(code) if code is not None else str(value).strip()


def _decode_msg(value: Any) -> dict[str, Any]:
    """``msg`` is usually a JSON string (double-encoded), sometimes already an object."""
    if value is None:
        raise _Invalid("frame has no 'msg'")
    for _ in range(3):  # tolerate one extra level of encoding
        if isinstance(value, dict):
            return value
        if not isinstance(value, str):
            break
        value = _parse_json(value, "msg")
    raise _Invalid(f"msg is not a JSON object (got {type(value).__name__})")


@dataclass(slots=True)
class _Built:
    """What a handler decided; :func:`normalize_frame` turns it into the event."""

    type_: str
    data: BaseModel | dict[str, Any]  # a dict: the payload's JSON-mode dump (see make_event)
    subject: str | None = None
    identity: tuple[object, ...] | None = None  # None: the generic (event, msg, received_at)
    time: datetime | None = None  # None: ctx.received_at


_Handler = Callable[[dict[str, Any], NormalizeContext], _Built]


def _lower(value: str | None) -> str | None:
    return value.lower() if value else None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False)
        return "invalid payload: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:3]
        )
    return str(exc)
