"""Meiqia unified call OpenAPI client (seed 001): every path is under
``/unified-api/call/openapi/ent/v1/``, authorized with ``Authorization: Bearer <token>``.

Success is an HTTP 200 with the JSON answer; a failure is any other status with
``{"error": {"code", "message"}}`` ("以HTTP CODE判断请求是否成功 ... 提示error中的message即可").
The codes are gRPC status names (the document's example is ``Unauthenticated``), mapped to the
contract's result codes:

=================================================  ==========================================
answer                                             result
=================================================  ==========================================
message ``坐席未注册`` (seat not registered), any    ``failed`` with the vendor's message: the
status (the document pairs it with                 agent's phone is not registered, the token
``Unauthenticated``)                               is fine
401 / ``Unauthenticated``                          ``forbidden``: the token is refused
                                                   (:class:`MeiqiaAuthRejected`)
403 / ``PermissionDenied``                         ``forbidden``
404 / ``NotFound``                                 ``not_found``
400, 422 / ``InvalidArgument`` ...                 ``invalid``
409 / ``AlreadyExists``                            ``conflict``
429 / ``ResourceExhausted``, a 5xx with            ``unavailable``, retryable, with the
``Retry-After`` (a read, or 502-504)               ``Retry-After`` (:class:`MeiqiaRateLimited`)
502, 503, 504                                      ``unavailable``, retryable (not run)
500 and other 5xx                                  a read: ``unavailable``, retryable; a
                                                   write: ``failed`` (it may have been done)
=================================================  ==========================================

The token is permanent and a new one invalidates the old, so the client never asks for one. It
never sends a write twice, except after a 429 (or a 502-504 with ``Retry-After``): the server
refused it before doing anything.
The token is replaced by ``***`` in every message this module builds.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any, Final

import aiohttp
import orjson

from gateway.connectors import rest
from gateway.connectors.fields import integer
from gateway.connectors.meiqia.settings import MeiqiaPbxSettings
from gateway.connectors.paging import read_pages
from gateway.logging import get_logger
from gateway.schema.commands import CommandFailed, ErrorCode

API_PREFIX: Final = "/unified-api/call/openapi/ent/v1/"
#: The message of an agent whose seat (SIP phone) is not registered (the document's example).
SEAT_NOT_REGISTERED: Final = "坐席未注册"
_CODES: Final[dict[str, ErrorCode]] = {
    "permissiondenied": ErrorCode.FORBIDDEN,
    "notfound": ErrorCode.NOT_FOUND,
    "invalidargument": ErrorCode.INVALID,
    "failedprecondition": ErrorCode.INVALID,
    "outofrange": ErrorCode.INVALID,
    "alreadyexists": ErrorCode.CONFLICT,
    "aborted": ErrorCode.CONFLICT,
    "unimplemented": ErrorCode.UNSUPPORTED,
}


class MeiqiaAuthRejected(rest.AuthRefused):
    """The token was refused (401 / ``Unauthenticated``): nothing works until it is replaced."""


class MeiqiaRateLimited(rest.RateLimited):
    """429 (or a 503 with ``Retry-After``): the server asks to wait ``retry_after_s``."""


def error_of(answer: Any) -> tuple[str | None, str | None]:
    """``{"error": {"code", "message"}}`` -> (code, message); also a bare ``code``/``message``."""
    if not isinstance(answer, dict):
        return None, None
    error = answer.get("error")
    source = error if isinstance(error, dict) else answer
    code, message = source.get("code"), source.get("message")
    if isinstance(error, str) and message is None:
        message = error
    return (
        str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None,
        str(message) if isinstance(message, str | int) and not isinstance(message, bool) else None,
    )


def _error_body(text: str) -> dict[str, Any]:
    """An error answer that is not JSON, as the document's error body."""
    return {"error": {"message": text}}


class MeiqiaClient:
    """One enterprise's unified call API over the gateway's shared (cookie-less) session."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        settings: MeiqiaPbxSettings,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._rest = rest.Rest(
            http,
            settings.base_url + API_PREFIX,
            timeout_s=settings.request_timeout_s,
            maybe_done="it may have been done",
            auth_refused=MeiqiaAuthRejected,
            rate_limited=MeiqiaRateLimited,
        )
        self._secret = settings.secret
        self._max_retry_after = settings.max_retry_after_s
        self._jitter = settings.backoff.jitter
        self._rng = rng or random.Random()
        self._sleep = sleep
        #: Why the token was refused, once it was (polling stops; commands still try).
        self.refused: str | None = None
        #: Requests sent, by path (tests and the status page).
        self.requests: dict[str, int] = {}
        self._log = get_logger("meiqia.client").bind(tenant=settings.tenant)

    # --- the API -------------------------------------------------------------------------------

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: dict[str, Any], *, write: bool = True) -> Any:
        return await self.request("POST", path, body=body, write=write)

    async def list_all(
        self, path: str, body: dict[str, Any], *, page_size: int, max_pages: int
    ) -> tuple[list[Any], int | None]:
        """Every row ``body`` selects, read page by page (``page_index`` from 1, ``page_size``)
        as a read: the rows and the server's ``total``.

        Stops at ``total`` rows or at an empty page, never on a short page: a server that caps
        ``page_size`` below the one asked for still has more pages. A row seen on two pages
        (the list moved while it was read) is kept once, by ``call_uuid``."""
        total: int | None = None

        async def fetch(page: int) -> tuple[Any, list[Any]]:
            nonlocal total
            answer = await self.post(
                path, {**body, "page_index": page, "page_size": page_size}, write=False
            )
            data = answer.get("data") if isinstance(answer, dict) else None
            total = integer(answer.get("total")) if isinstance(answer, dict) else None
            return answer, data if isinstance(data, list) else []

        def last(_answer: Any, _page: int, rows: list[Any], kept: int) -> bool:
            return not rows or (total is not None and kept >= total)

        found = await read_pages(
            fetch, last, max_pages=max_pages, what=f"{path} (pages of {page_size})", key="call_uuid"
        )
        return found, total

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        write: bool = False,
        retries: int = 0,
        deadline: float | None = None,
    ) -> Any:
        """One API call; the decoded answer (object or array). ``retries``: how many times a
        429 is waited out (honouring ``Retry-After``, with jitter) before it is raised, as long
        as the wait ends before ``deadline`` (a ``time.monotonic()`` value)."""
        attempt = 0
        while True:
            try:
                return await self._once(method, path, params, body, write=write)
            except MeiqiaRateLimited as exc:
                delay = self.wait_for(exc)
                late = deadline is not None and time.monotonic() + delay > deadline
                if attempt >= retries or late:
                    raise
                attempt += 1
                self._log.info("rate_limited_retry", path=path, retry_in_s=round(delay, 2))
                await self._sleep(delay)

    def wait_for(self, exc: rest.RateLimited, fallback_s: float = 1.0) -> float:
        """How long to wait after ``exc``: its ``Retry-After`` (capped) plus up to ``jitter``
        of it, so many gateways refused at once do not come back at once."""
        base = min(
            exc.retry_after_s if exc.retry_after_s is not None else fallback_s,
            self._max_retry_after,
        )
        return base * (1 + self._rng.uniform(0, self._jitter))

    # --- the wire ------------------------------------------------------------------------------

    async def _once(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        body: dict[str, Any] | None,
        *,
        write: bool,
    ) -> Any:
        token = self._secret()
        self._rest.secrets.keep(token)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        self.requests[path] = self.requests.get(path, 0) + 1
        reply = await self._rest.exchange(
            method,
            path,
            where=path,
            write=write,
            params=query or None,
            data=None if body is None else orjson.dumps(body),
            headers=headers,
        )
        ok = reply.status == 200
        answer = self._rest.json(reply, where=path, write=write, success=ok, error_body=_error_body)
        if ok:
            if self.refused is not None:
                self._log.info("token_accepted_again", path=path)
                self.refused = None
            return answer
        raise self._failure(path, reply.status, answer, reply.retry_after_s, write=write)

    def _failure(
        self, path: str, status: int, answer: Any, wait: float | None, *, write: bool
    ) -> CommandFailed:
        code, message = error_of(answer)
        text = self.redact((message or f"HTTP {status}")[:300])
        vendor_code = code or str(status)
        key = (code or "").replace("_", "").lower()
        if message and SEAT_NOT_REGISTERED in message:
            return CommandFailed(ErrorCode.FAILED, text, vendor_code=vendor_code)
        said = f"{status} {code + ': ' if code else ''}{text}"
        failure = self._rest.failure(
            status,
            f"{path}: {said}",
            write=write,
            vendor_code=vendor_code,
            retry_after_s=wait,
            refused=key == "unauthenticated",
            limited=key == "resourceexhausted",
            code=_CODES.get(key),
        )
        if isinstance(failure, MeiqiaAuthRejected):
            self.refused = said  # the same on any path
        return failure

    def redact(self, text: str) -> str:
        """``text`` without the token."""
        return self._rest.redact(text)
