"""``auth: signed``: the per-request signature UUCall's API wiki shows (the scheme of the
Chinese cloud-telephony REST platforms it comes from).

Every request carries, for one timestamp ``yyyyMMddHHmmss`` (24-hour, the service's local time):

* ``Authorization``: base64 of ``<account id>:<timestamp>``;
* the query parameter ``sig``: upper-case hex MD5 of ``<account id><token><timestamp>``;
* ``appid``: the application id, and ``timestamp``: the same instant as
  ``yyyy-MM-dd HH:mm:ss`` (the wiki's header format).

The token is never sent; the signature proves it. Both are secrets to the logs.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Final

STAMP: Final = "%Y%m%d%H%M%S"
HEADER_STAMP: Final = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True, slots=True)
class Signature:
    """What one request carries (see the module docstring)."""

    timestamp: str
    authorization: str
    sig: str
    header_timestamp: str

    def headers(self, app_id: str) -> dict[str, str]:
        return {
            "Authorization": self.authorization,
            "appid": app_id,
            "timestamp": self.header_timestamp,
        }


def authorization(account_id: str, timestamp: str) -> str:
    """base64(``account_id:timestamp``)."""
    return base64.b64encode(f"{account_id}:{timestamp}".encode()).decode("ascii")


def sig(account_id: str, token: str, timestamp: str) -> str:
    """Upper-case hex MD5 of ``account_id + token + timestamp``."""
    digest = hashlib.md5(f"{account_id}{token}{timestamp}".encode(), usedforsecurity=False)
    return digest.hexdigest().upper()


def sign(account_id: str, token: str, now: datetime) -> Signature:
    """The signature of a request sent at ``now`` (aware, in the service's time zone)."""
    stamp = now.strftime(STAMP)
    return Signature(
        timestamp=stamp,
        authorization=authorization(account_id, stamp),
        sig=sig(account_id, token, stamp),
        header_timestamp=now.strftime(HEADER_STAMP),
    )
