"""Yeastar's own metrics; the shared ones (with a ``vendor`` label) are in gateway.runtime."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

FRAMES_DEDUPED = Counter(
    "gateway_yeastar_frames_deduplicated_total",
    "Frames dropped as copies seen on the other socket during a token handover",
    ["tenant"],
)
TOKEN_REFRESHES = Counter(
    "gateway_yeastar_token_refreshes_total",
    "Token acquisitions by kind (get_token, refresh_token) and outcome",
    ["tenant", "kind", "outcome"],
)
TIMEZONE_MISMATCH = Gauge(
    "gateway_yeastar_timezone_mismatch",
    "1 while the PBX's calls show a UTC offset other than its configured time zone's",
    ["tenant"],
)
PBX_UTC_OFFSET = Gauge(
    "gateway_yeastar_pbx_utc_offset_seconds",
    "The PBX's UTC offset, read from its call ids and local call start times",
    ["tenant"],
)
