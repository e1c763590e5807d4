"""Yeastar P-Series events -> gateway CloudEvents (pure: no I/O, no clock, never raises).

The PBX pushes WebSocket frames ``{"type": 30011, "sn": "...", "msg": "<JSON string>"}``
(manual, "API 事件" 30005-30026). The manual's own examples drift in spelling and shape, and live
PBXs send ``null`` or nothing where the manual shows a value, so every reader here is lenient
about case, blanks (``" "``), trailing spaces, field-name variants, nulls, absent fields and
wrong types. Only an event's *identity* (its call id, extension, trunk ...) is required: a frame
without one becomes ``gateway.rejected``, never an exception and never silence; any other field
the PBX left out or sent in a shape the manual does not describe is published as None / empty.

The readers live one module per event family: ``frames`` (the frame dispatch), ``calls``,
``cdrs`` (with ``times``: when a CDR started), ``agents``, ``system`` (configuration, trunks,
conferences), ``envelope`` (what they share). This package re-exports what the connector,
recovery and tests use.
"""

from gateway.connectors.yeastar.normalize.agents import (
    QUEUE_AGENT_CALL_STATE,
    agent_status_events,
    text_or_none,
)
from gateway.connectors.yeastar.normalize.calls import (
    CALL_QUERY_VENDOREVENT,
    DIRECTIONS,
    normalize_call_query,
)
from gateway.connectors.yeastar.normalize.cdrs import (
    CDR_VENDOREVENT,
    call_id_from_recording,
    cdr_identity,
    normalize_cdr_record,
    record_call_id,
)
from gateway.connectors.yeastar.normalize.frames import HANDLERS, normalize_frame
from gateway.connectors.yeastar.normalize.system import TRUNK_STATES

__all__ = [
    "CALL_QUERY_VENDOREVENT",
    "CDR_VENDOREVENT",
    "DIRECTIONS",
    "HANDLERS",
    "QUEUE_AGENT_CALL_STATE",
    "TRUNK_STATES",
    "agent_status_events",
    "call_id_from_recording",
    "cdr_identity",
    "normalize_call_query",
    "normalize_cdr_record",
    "normalize_frame",
    "record_call_id",
    "text_or_none",
]
