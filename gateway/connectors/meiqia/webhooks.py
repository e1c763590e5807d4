"""Meiqia webhooks (``POST /webhooks/meiqia/<tenant>``): docs/vendors/meiqia.md, "Webhooks"."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Iterable
from typing import Any, Final

import aiohttp
import orjson
from aiohttp import web

from gateway.connectors.fields import unix_time
from gateway.connectors.meiqia.metrics import WEBHOOKS
from gateway.connectors.meiqia.settings import MeiqiaPbxSettings
from gateway.connectors.plugin import VendorRoutes
from gateway.logging import get_logger

#: Header names, preferred first.
SIGNATURE_HEADERS: Final = ("Meiqia-Signature", "Meiqia-Sign")
#: Seconds a non-owner asks Meiqia to wait before delivering again.
NOT_OWNER_RETRY_S: Final = 5
#: Seconds a body may take to arrive: a slow sender holds no handler longer.
BODY_TIMEOUT_S: float = 10.0
#: The one answer for a tenant that takes no webhooks here, whether it exists or not.
NOT_FOUND: Final = {"error": "not found"}
#: Sources whose refusals were logged (bounded: a flood of new sources is not a log flood).
_MAX_LOGGED_SOURCES: Final = 1000

log = get_logger("meiqia.webhook")


def signature(body: bytes, secret: str) -> str:
    """SHA-1 hex of the raw body followed by the secret (the help page's four steps)."""
    return hashlib.sha1(body + secret.encode("utf-8")).hexdigest()


#: Meiqia's SDK push signing (repository Meiqia/MeiqiaSDK-Push-Signature-Example): header
#: ``Authorization: meiqia_sign:<base64 of the hex HMAC-SHA1 of the raw body, keyed by the
#: secret>``. Read when neither ``Meiqia-Signature`` nor ``Meiqia-Sign`` is sent.
SDK_SIGNATURE_HEADER: Final = "Authorization"
SDK_SIGNATURE_PREFIX: Final = "meiqia_sign:"


def sdk_signature(body: bytes, secret: str) -> str:
    """``meiqia_sign:`` + base64(hex(HMAC-SHA1(secret, body)))."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha1).hexdigest()
    return SDK_SIGNATURE_PREFIX + base64.b64encode(digest.encode("ascii")).decode("ascii")


def verify_request(body: bytes, secret: str, headers: Any) -> tuple[bool, bool]:
    """(verified, a signature was sent): ``Meiqia-Signature`` / ``Meiqia-Sign`` as
    :func:`verify`, else an SDK push ``Authorization`` signature."""
    sent = signature_header(headers)
    if sent is not None:
        return verify(body, secret, sent), True
    authorization = headers.get(SDK_SIGNATURE_HEADER)
    if authorization is None or not str(authorization).startswith(SDK_SIGNATURE_PREFIX):
        return False, False
    expected = sdk_signature(body, secret).encode("ascii")
    given = str(authorization).strip().encode("utf-8", errors="replace")
    return hmac.compare_digest(expected, given), True


def delivery_key(envelope: Any, body: bytes) -> str:
    """A delivery's id; a signed body without one (an SDK push, a topic of another shape) is
    known by its content, so Meiqia's repeat of it is a duplicate."""
    if isinstance(envelope, dict):
        found = envelope.get("id")
        if isinstance(found, str | int) and not isinstance(found, bool) and str(found).strip():
            return str(found).strip()
    return "sha256:" + hashlib.sha256(body).hexdigest()


def signature_header(headers: Any) -> str | None:
    """The signature sent: ``Meiqia-Signature``, else ``Meiqia-Sign``; None when neither."""
    for name in SIGNATURE_HEADERS:
        value = headers.get(name)
        if value is not None:
            return str(value)
    return None


def verify(body: bytes, secret: str, sent: str | None) -> bool:
    """Whether ``sent`` is the body's signature; compared in constant time (hex, any case)."""
    if not sent:
        return False
    expected = signature(body, secret).encode("ascii")
    given = sent.strip().lower().encode("utf-8", errors="replace")
    return hmac.compare_digest(expected, given)


class _Refusals:
    """Logs a kind of refusal once per (tenant, remote address, kind)."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, str]] = set()

    def log(self, tenant: str, remote: str, kind: str, **fields: Any) -> None:
        key = (tenant, remote, kind)
        if key in self._seen or len(self._seen) >= _MAX_LOGGED_SOURCES:
            return
        self._seen.add(key)
        log.warning("webhook_refused", tenant=tenant, source=remote, refusal=kind, **fields)


async def _read_at_most(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is longer than ``limit`` (not read further)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(
    status: int, tenant: str, result: str, body: dict[str, Any], **headers: str
) -> web.Response:
    WEBHOOKS.labels(tenant, result).inc()
    return web.json_response(body, status=status, headers=headers or None)


def routes(ctx: VendorRoutes) -> Iterable[web.AbstractRouteDef]:
    """The plugin's routes: ``POST /<tenant>`` under ``/webhooks/meiqia/``."""
    refusals = _Refusals()

    async def deliver(request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        remote = request.remote or "?"
        pbx = ctx.pbxs.get(tenant)
        if not isinstance(pbx, MeiqiaPbxSettings):
            refusals.log("", remote, "unknown_tenant")
            return _answer(404, "", "unknown_tenant", NOT_FOUND)
        if not pbx.webhooks:
            refusals.log(tenant, remote, "disabled")
            return _answer(404, tenant, "disabled", NOT_FOUND)
        limit = pbx.webhook_max_bytes
        if request.content_length is not None and request.content_length > limit:
            refusals.log(tenant, remote, "too_large", size=request.content_length)
            return _answer(413, tenant, "too_large", {"error": f"body over {limit} bytes"})
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                body = await _read_at_most(request, limit)
        except TimeoutError:
            refusals.log(tenant, remote, "slow_body")
            return _answer(
                408, tenant, "slow_body", {"error": f"body not sent within {BODY_TIMEOUT_S:g} s"}
            )
        except (aiohttp.ClientPayloadError, ConnectionError):  # the sender went away
            refusals.log(tenant, remote, "aborted")
            return _answer(400, tenant, "aborted", {"error": "body incomplete"})
        if body is None:
            refusals.log(tenant, remote, "too_large")
            return _answer(413, tenant, "too_large", {"error": f"body over {limit} bytes"})
        verified, sent = verify_request(body, pbx.webhook_key(), request.headers)
        if not verified:
            kind = "unsigned" if not sent else "bad_signature"
            refusals.log(tenant, remote, kind)
            return _answer(401, tenant, kind, {"error": "missing or wrong Meiqia-Signature"})
        try:
            envelope = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            refusals.log(tenant, remote, "not_json")
            return _answer(400, tenant, "not_json", {"error": f"body is not JSON: {exc}"})
        if not isinstance(envelope, dict):  # signed, so Meiqia's: kept, never refused
            envelope = {"body": envelope}
        if envelope.get("id") and envelope.get("event"):
            # The webhook envelope: its created_at bounds how old a delivery may be (replays).
            created = unix_time(envelope.get("created_at"))
            if created is None:
                refusals.log(tenant, remote, "invalid")
                return _answer(
                    400, tenant, "invalid", {"error": "'created_at' must be Unix seconds"}
                )
            skew = created.timestamp() - time.time()
            if abs(skew) > pbx.webhook_max_skew_s:
                refusals.log(tenant, remote, "stale", skew_s=round(skew))
                return _answer(
                    400,
                    tenant,
                    "stale",
                    {
                        "error": f"'created_at' is {abs(skew):.0f} s in the"
                        f" {'past' if skew < 0 else 'future'}: more than"
                        f" {pbx.webhook_max_skew_s:g} s from this gateway's clock"
                    },
                )
        key = delivery_key(envelope, body)
        taker = ctx.receiver(tenant)
        if taker is None:
            return _answer(
                503,
                tenant,
                "not_owner",
                {"error": f"this instance does not own {tenant} now; deliver again"},
                **{"Retry-After": str(NOT_OWNER_RETRY_S)},
            )
        try:
            published, duplicate = await taker.take_delivery(envelope, key)
        except TimeoutError:
            return _answer(
                503,
                tenant,
                "busy",
                {"error": "the link cannot take it now; deliver again"},
                **{"Retry-After": str(NOT_OWNER_RETRY_S)},
            )
        result = "duplicate" if duplicate else "accepted"
        return _answer(200, tenant, result, {"published": published, "duplicate": duplicate})

    return [web.post("/{tenant}", deliver)]
