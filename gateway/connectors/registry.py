"""Vendor name -> connector factory; the only place that knows every vendor package."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from gateway.connectors.base import Connector
from gateway.connectors.yeastar.connector import YeastarConnector
from gateway.runtime.statestore import KeyValue
from gateway.settings import PbxSettings, RecoverySettings

Factory = Callable[[PbxSettings, aiohttp.ClientSession, KeyValue, RecoverySettings], Connector]

FACTORIES: dict[str, Factory] = {
    "yeastar": YeastarConnector,
}


def build_connector(
    pbx: PbxSettings, session: aiohttp.ClientSession, store: KeyValue, recovery: RecoverySettings
) -> Connector:
    return FACTORIES[pbx.vendor](pbx, session, store, recovery)
