"""Everything a vendor plugin package needs of the gateway, in one place.

A vendor package (``gateway/connectors/<name>/`` or a distribution of its own, registered as an
entry point of ``pbx_gateway.vendors``) imports from here only; its tests add
:mod:`gateway.testing`. What ``__all__`` lists is kept stable for third-party plugins.
"""

from __future__ import annotations

from gateway.connectors.base import Connector, Emit, Spool, WebhookReceiver
from gateway.connectors.link import BaseConnector, LinkState, Part, PushLink
from gateway.connectors.paging import read_pages
from gateway.connectors.plugin import (
    DemoOptions,
    LinkResources,
    PluginError,
    Simulator,
    SimulatorSpec,
    VendorPlugin,
    VendorRoutes,
)
from gateway.connectors.polling import PollDeferred, Poller, PollResult, PollStopped
from gateway.connectors.rest import AuthRefused, RateLimited, Reply, Rest, Secrets, error_reply
from gateway.connectors.watermark import Watermark
from gateway.runtime.backoff import Backoff
from gateway.runtime.statestore import KeyValue
from gateway.schema.commands import (
    BASE_COMMANDS,
    CommandArgs,
    CommandFailed,
    CommandModel,
    ErrorCode,
    command_name,
)
from gateway.schema.events import (
    EVENT_TYPES,
    CallData,
    CdrData,
    CloudEvent,
    Member,
    NormalizeContext,
    make_event,
    rejected,
)
from gateway.settings_models import (
    BackoffSettings,
    PbxSettings,
    RecoverySettings,
    check_secret_source,
    read_secret,
)

__all__ = [
    "BASE_COMMANDS",
    "EVENT_TYPES",
    "AuthRefused",
    "Backoff",
    "BackoffSettings",
    "BaseConnector",
    "CallData",
    "CdrData",
    "CloudEvent",
    "CommandArgs",
    "CommandFailed",
    "CommandModel",
    "Connector",
    "DemoOptions",
    "Emit",
    "ErrorCode",
    "KeyValue",
    "LinkResources",
    "LinkState",
    "Member",
    "NormalizeContext",
    "Part",
    "PbxSettings",
    "PluginError",
    "PollDeferred",
    "PollResult",
    "PollStopped",
    "Poller",
    "PushLink",
    "RateLimited",
    "RecoverySettings",
    "Reply",
    "Rest",
    "Secrets",
    "Simulator",
    "SimulatorSpec",
    "Spool",
    "VendorPlugin",
    "VendorRoutes",
    "Watermark",
    "WebhookReceiver",
    "check_secret_source",
    "command_name",
    "error_reply",
    "make_event",
    "read_pages",
    "read_secret",
    "rejected",
]
