"""Events about the PBX rather than a call or an agent: configuration changes (30005, 30006,
30022, 30023), trunk status (30010), a conference losing its host (30024)."""

from __future__ import annotations

from typing import Any, Final

from gateway.connectors import fields as read
from gateway.connectors.yeastar.normalize.envelope import (
    _Built,
    _Handler,
    _lower,
    _required,
)
from gateway.schema.events import (
    ConferenceHostLeftData,
    ConfigChangedData,
    NormalizeContext,
    TrunkStatusData,
)

_ORG_ACTION: Final = {1: "enable", 0: "disable"}


def _ids(value: Any) -> list[str]:
    """A list of ids (numbers or text); anything else is no ids."""
    return [s for s in map(read.text, value) if s is not None] if isinstance(value, list) else []


def _org_status(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30005: the department feature was switched on/off (show_root_org stays in raw)."""
    status = read.integer(msg.get("org_status"))
    action = _ORG_ACTION.get(status) if status is not None else None
    return _Built("config.changed", ConfigChangedData(object="organization", action=action))


def _org_config(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30006: departments created/updated/deleted/reordered or their extensions changed."""
    data = ConfigChangedData(
        object="organization",
        action=_lower(read.first(msg, "action")),
        ids=_ids(msg.get("id_list")),
    )
    return _Built("config.changed", data)


def _config_change(object_: str, key: str) -> _Handler:
    """30022 (extension) / 30023 (trunk): ``option`` CREATE|UPDATE|DELETE."""

    def handle(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
        ident = _required(msg, key)
        action = _lower(read.first(msg, "option", "action"))
        return _Built(
            "config.changed", ConfigChangedData(object=object_, action=action, ids=[ident])
        )

    return handle


#: The manual's "Trunk status" table (30010).
TRUNK_STATES: Final[dict[int, str]] = {
    0: "unknown",
    1: "idle",
    2: "busy",
    3: "idle_unmonitored",
    4: "registering",
    41: "registration_failed",
    42: "unreachable",
    43: "unavailable",
    44: "disabled",
}


def _trunk_status(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30010: numeric status -> the table's name, the code kept for consumers."""
    trunk = _required(msg, "trunk_name")
    code = read.integer(msg.get("status"))
    data = TrunkStatusData(
        trunk=trunk,
        state=TRUNK_STATES.get(code, "unknown") if code is not None else "unknown",
        code=code,
        kind=read.first(msg, "kind"),
        ip=read.first(msg, "registered_ip", "ip_address", "ip_addresses"),
    )
    return _Built("trunk.status", data, subject=trunk)


def _host_left(msg: dict[str, Any], ctx: NormalizeContext) -> _Built:
    """30024: the conference lost its host."""
    conference = _required(msg, "conference_id")
    data = ConferenceHostLeftData(conference=conference, host=read.first(msg, "host_num"))
    return _Built("conference.host_left", data, subject=conference)
