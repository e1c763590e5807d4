"""UUCall cloud REST client (seed 000): ``GET/POST/PUT/DELETE <base_url><path>`` with query
parameters, JSON bodies for the writes that take a model, JSON answers.

Every response code the document lists for every path is handled the same way:

=====  ==========================================================================================
code   what the client does
=====  ==========================================================================================
401    :class:`AuthRefused` (``forbidden``, vendor code 401); polling reports ``auth_failed``
403    :class:`AuthRefused` (``forbidden``, vendor code 403); polling reports ``blocked``
405    ``unsupported``: this account's API does not offer the method on the path
424    ``failed`` with the answer's body in the message (a dependency refused the operation)
429    waits ``Retry-After`` (seconds or an HTTP date; the backoff when absent, capped at
       ``max_retry_after_s``) and sends again, reads and writes alike (a 429 was not run); every
       request of this client waits too. After ``rate_limit_retries`` of them: :class:`RateLimited`
       (``unavailable``, retryable, with the wait the server asked for)
500    reads: sent again after the backoff, ``read_retries`` times, then ``unavailable``;
       writes: never again, ``failed`` ("the change may have been made")
=====  ==========================================================================================

Codes the document does not list are mapped the usual way (400/422 ``invalid``, 404
``not_found``, 409 ``conflict``, other 5xx like 500). A write that got no answer (timeout,
connection dropped after sending) is ``timeout``: its outcome is unknown, it is not sent again.

Answers are decoded with JSON numbers that have a fraction read as :class:`~decimal.Decimal`:
no amount ever becomes a float. The document shows a model, not an envelope, for list
answers: :func:`rows` accepts a bare array, an object holding the array (``data``, ``list``,
``rows``, ``records``, ``items``, ``result``, ``content``, one level deep), or a single object.

The vendor's wiki wraps every answer in ``{"Result", "Code", "Data"}`` (any key case, see
``envelope.py``), failures included, with HTTP 200. The client unwraps it here, once for every
path: a ``success`` envelope's answer is its ``Data``; a ``failed`` one raises
:class:`VendorFailed` with the envelope's ``Code`` as ``vendor_code`` and its text as the
message (codes 5 and 6 raise :class:`AuthRefused`, code 3 :class:`RateLimited`), and counts in
``gateway_uucall_vendor_errors_total``. So a failure is never taken for data.

The secret (token or password), the signature of ``auth: signed`` and ``account_id`` are never
put in a message; query parameters (``password`` of ``POST /power/roleuser`` travels in the
query, as the document says) never either: messages name the method and path only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Literal

import aiohttp

from gateway.connectors import rest
from gateway.connectors.paging import read_pages
from gateway.connectors.uucall.envelope import Envelope, read_envelope
from gateway.connectors.uucall.metrics import VENDOR_ERRORS
from gateway.connectors.uucall.settings import UucallPbxSettings
from gateway.connectors.uucall.signing import sign
from gateway.logging import get_logger
from gateway.runtime.backoff import Backoff
from gateway.schema.commands import CommandFailed, ErrorCode

Method = Literal["GET", "POST", "PUT", "DELETE"]
#: Keys that may hold the rows of a list answer (the document shows none).
ROW_KEYS: Final = ("data", "list", "rows", "records", "items", "result", "content")
TOTAL_KEYS: Final = ("total", "totalCount", "count", "totalElements", "recordsTotal")
PAGES_KEYS: Final = ("pages", "totalPages", "pageCount", "page_count")
_MESSAGE_KEYS: Final = ("message", "msg", "error", "errmsg", "errorMessage", "detail")


class AuthRefused(rest.AuthRefused):
    """The credentials (``status`` 401) or their rights (403) were refused: an HTTP 401 / 403,
    or an envelope's code 5 / 6 (then ``vendor_code`` is that code)."""


class RateLimited(rest.RateLimited):
    """429 more often than ``rate_limit_retries`` (or an envelope's code 3, "the request limit
    is reached"): try again after ``retry_after_s``."""

    retry_after_s: float

    def __init__(
        self, message: str, retry_after_s: float, vendor_code: str | int | None = 429
    ) -> None:
        super().__init__(message, retry_after_s, vendor_code)


class VendorFailed(CommandFailed):
    """An answer the service marked failed in its envelope (HTTP 200, ``Result: FAILED``)."""


class VendorRateLimited(RateLimited):
    """An envelope's code 3: the request limit is reached (the request was not run)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: its status, content type and decoded JSON (None when empty)."""

    status: int
    content_type: str
    body: Any


def decode_json(raw: bytes) -> Any:
    """JSON with fractional numbers as ``Decimal`` (never ``float``)."""
    return json.loads(raw, parse_float=Decimal)


def rows(answer: Any) -> list[dict[str, Any]]:
    """The records of a list answer (see the module docstring); rows that are not objects are
    left out, ``null`` and an empty envelope are no rows."""
    if answer is None:
        return []
    if isinstance(answer, list):
        return [row for row in answer if isinstance(row, dict)]
    if not isinstance(answer, dict):
        return []
    for key in ROW_KEYS:
        if key in answer:
            inner = answer[key]
            if isinstance(inner, dict) and any(k in inner for k in ROW_KEYS):
                return rows(inner)
            if isinstance(inner, list | type(None)):
                return rows(inner)
            if isinstance(inner, dict):
                return [inner]
    return [answer]


def record(answer: Any) -> dict[str, Any] | None:
    """The one record of a single-object answer (also inside an envelope or a one-row list)."""
    found = rows(answer)
    return found[0] if found else None


def _count(answer: Any, keys: tuple[str, ...]) -> int | None:
    if not isinstance(answer, dict):
        return None
    for scope in (answer, *(answer[k] for k in ROW_KEYS if isinstance(answer.get(k), dict))):
        for key in keys:
            value = scope.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().isdigit():
                return int(value)
    return None


class UucallClient:
    """One enterprise account's REST API over the gateway's shared aiohttp session."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        settings: UucallPbxSettings,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._s = settings
        #: Messages never show the secret, the ids or the latest signatures, nor a transport
        #: error's text (it may name the URL, whose query may hold a password).
        self._rest = rest.Rest(
            http,
            settings.base_url.rstrip("/"),
            timeout_s=settings.request_timeout_s,
            error_detail=False,
            auth_refused=AuthRefused,
        )
        self._backoff = backoff or Backoff(settings.backoff)
        self._clock = clock
        self._sleep = sleep
        self._not_before = 0.0  # monotonic: no request before (the last Retry-After)
        #: 401/403 answers in a row (reset by any other answer).
        self.auth_rejections = 0
        #: 429 answers received (for tests and the status page).
        self.rate_limited = 0
        self._log = get_logger("uucall.client").bind(tenant=settings.tenant)

    @property
    def base_url(self) -> str:
        return self._rest.base_url

    # --- the API -------------------------------------------------------------------------------

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """A read: its decoded JSON answer."""
        return (await self.request("GET", path, params)).body

    async def request(
        self,
        method: Method,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Answer:
        """One operation; failures raise :class:`CommandFailed` with a neutral code. An
        envelope's code 3 (the request limit) is waited out like a 429 (the backoff, as it
        names no time): the request was not run."""
        limited = 0
        while True:
            try:
                return await self._request_once(method, path, params, body)
            except VendorRateLimited as exc:
                limited += 1
                self.rate_limited += 1
                wait = min(exc.retry_after_s, self._s.max_retry_after_s)
                self._not_before = max(self._not_before, self._clock() + wait)
                if limited > self._s.rate_limit_retries:
                    raise
                self._log.info("rate_limited", path=path, retry_in_s=round(wait, 2))

    async def _request_once(
        self, method: Method, path: str, params: Mapping[str, str] | None, body: Any
    ) -> Answer:
        where = f"{method} {path}"
        async with self._exchange(method, path, params, body) as response:
            raw = await self._rest.read(response, where=where, write=method != "GET")
            content_type = response.content_type or ""
            status = response.status
        if not raw.strip():
            self.auth_rejections = 0
            return Answer(status, content_type, None)
        try:
            decoded = decode_json(raw)
        except (ValueError, RecursionError):
            self.auth_rejections = 0
            if method != "GET":
                # a write was run; its answer is simply not JSON (the document says No Content)
                return Answer(status, content_type, None)
            raise self._rest.not_json(where, status, write=False) from None
        return Answer(status, content_type, self.unwrap(where, decoded))

    def unwrap(self, where: str, decoded: Any) -> Any:
        """The answer inside the vendor's envelope, or the failure it reports (see the module
        docstring); an answer without an envelope is returned as it is."""
        envelope = read_envelope(decoded)
        if envelope is not None and not envelope.ok:
            raise self._vendor_failure(where, envelope)
        self.auth_rejections = 0
        return decoded if envelope is None else envelope.data

    def check_download(self, where: str, raw: bytes) -> None:
        """A downloaded JSON body: raise the failure its envelope reports, if it is one."""
        try:
            decoded = decode_json(raw)
        except (ValueError, RecursionError):
            return
        envelope = read_envelope(decoded)
        if envelope is not None and not envelope.ok:
            raise self._vendor_failure(where, envelope)

    def _vendor_failure(self, where: str, envelope: Envelope) -> CommandFailed:
        VENDOR_ERRORS.labels(self._s.tenant, envelope.code_label()).inc()
        known = envelope.vendor_code()
        vendor_code = None if envelope.code is None else self.redact(str(envelope.code))[:32]
        text = self.redact(envelope.message or "no message")[:500]
        message = f"{where}: the service answered failed (code {vendor_code}): {text}"
        self._log.info(
            "vendor_failed",
            path=where,
            vendor_code=envelope.code_label(),
            name=known.name if known else None,
        )
        if known is not None and known.auth_status is not None:
            self.auth_rejections += 1
            return AuthRefused(known.auth_status, message, vendor_code=vendor_code)
        self.auth_rejections = 0
        if known is not None and known.retryable:
            return VendorRateLimited(message, self._backoff.next_delay(), vendor_code=vendor_code)
        error = known.code if known is not None else ErrorCode.FAILED
        return VendorFailed(error, message, vendor_code=vendor_code)

    async def list_all(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        page_size: int | None = None,
        max_pages: int | None = None,
        stop: Callable[[list[dict[str, Any]]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Every row of a paged list (``page``, ``pageSize``: 1-based, as strings).

        It stops at a short or empty page, at the answer's total or page count when it gives
        one, at a page of nothing new (a server ignoring ``page``), or when ``stop(page_rows)``
        says the rest is not needed. Rows seen twice (the list moved while it was read) are
        kept once, by ``id``. More than ``max_pages`` pages fail rather than return a part.
        """
        size = page_size or self._s.page_size
        limit = max_pages or self._s.max_pages

        async def fetch(page: int) -> tuple[Any, list[dict[str, Any]]]:
            answer = await self.get(path, {**params, "page": str(page), "pageSize": str(size)})
            return answer, rows(answer)

        def last(answer: Any, page: int, got: list[dict[str, Any]], kept: int) -> bool:
            total, pages = _count(answer, TOTAL_KEYS), _count(answer, PAGES_KEYS)
            return (
                len(got) < size
                or (total is not None and kept >= total)
                or (pages is not None and page >= pages)
                or (stop is not None and stop(got))
            )

        return await read_pages(fetch, last, max_pages=limit, what=f"GET {path} (pages of {size})")

    @asynccontextmanager
    async def stream(
        self, path: str, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A read whose body the caller consumes (file downloads), after the same error
        handling as :meth:`request` (a JSON body is checked with :meth:`check_download`)."""
        async with self._exchange("GET", path, params, None) as response:
            self.auth_rejections = 0
            yield response

    # --- one exchange ----------------------------------------------------------------------------

    @asynccontextmanager
    async def _exchange(
        self,
        method: Method,
        path: str,
        params: Mapping[str, str] | None,
        body: Any,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send until an answer that is not retried here; yield it when it is a success."""
        where = f"{method} {path}"
        write = method != "GET"
        limited = failed_reads = 0
        while True:
            await self._wait_turn()
            response = await self._send(method, path, params, body, write=write)
            status = response.status
            if status < 300:
                try:
                    yield response
                finally:
                    response.release()
                return
            reply = await rest.error_reply(response)
            text = self._error_text(reply.body)
            if status == 429:
                limited += 1
                self.rate_limited += 1
                wait = min(
                    reply.retry_after_s
                    if reply.retry_after_s is not None
                    else self._backoff.next_delay(),
                    self._s.max_retry_after_s,
                )
                self._not_before = max(self._not_before, self._clock() + wait)
                if limited > self._s.rate_limit_retries:
                    raise RateLimited(f"{where}: 429 rate limited {limited} times", wait)
                self._log.info("rate_limited", path=path, retry_in_s=round(wait, 2))
                continue
            if status >= 500 and not write and failed_reads < self._s.read_retries:
                failed_reads += 1
                await self._sleep(self._backoff.next_delay())
                continue
            if status in (401, 403):
                self.auth_rejections += 1
            else:
                self.auth_rejections = 0
            raise self._failure(where, status, text, write=write)

    async def _wait_turn(self) -> None:
        """After a 429 every request of this client waits until the server's Retry-After."""
        while (delay := self._not_before - self._clock()) > 0:
            await self._sleep(delay)

    async def _send(
        self, method: Method, path: str, params: Mapping[str, str] | None, body: Any, *, write: bool
    ) -> aiohttp.ClientResponse:
        where = f"{method} {path}"
        query = dict(params or {})
        headers = self._headers(query)
        data = None if body is None else json.dumps(body, default=str).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        return await self._rest.send(
            method,
            path,
            where=where,
            write=write,
            params=query,
            data=data,
            headers=headers,
            allow_redirects=False,
        )

    def _headers(self, query: dict[str, str]) -> dict[str, str]:
        """The credentials of one request (``auth: signed`` adds ``sig`` to ``query``)."""
        if self._s.auth == "none":
            return {}
        secret = self._s.read_secret()
        self._rest.secrets.keep(secret)
        if self._s.auth == "basic":
            pair = f"{self._s.username}:{secret}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        if self._s.auth == "signed":
            assert self._s.account_id is not None and self._s.app_id is not None  # validated
            account = self._s.account_id.get_secret_value()
            app_id = self._s.app_id.get_secret_value()
            signature = sign(account, secret, datetime.now(UTC).astimezone(self._s.zone))
            self._rest.secrets.keep(account, app_id)
            self._rest.secrets.recent(signature.sig, signature.authorization)
            query["sig"] = signature.sig
            return {**signature.headers(app_id), "Accept": "application/json"}
        return {self._s.auth_header: secret}

    def _error_text(self, raw: bytes) -> str:
        text = raw.decode("utf-8", "replace").strip()
        try:
            body = decode_json(raw) if text else None
        except (ValueError, RecursionError):
            body = None
        envelope = read_envelope(body)
        if envelope is not None and envelope.message:
            return self.redact(envelope.message)[:500]
        if isinstance(body, dict):
            for key in _MESSAGE_KEYS:
                value = body.get(key)
                if isinstance(value, str) and value.strip():
                    return self.redact(text if key == "error" else value.strip())[:500]
        return self.redact(text)[:500]

    def _failure(self, where: str, status: int, text: str, *, write: bool) -> CommandFailed:
        """An error answer -> a neutral code; the status is kept as ``vendor_code``."""
        said = f": {text}" if text else ""
        if status == 403:  # the account's rights: polling reports it blocked
            return AuthRefused(403, f"{where}: 403 forbidden{said}")
        what = "401 authentication refused" if status == 401 else str(status)
        # 424 too: failed, with its body
        return self._rest.failure(status, f"{where}: {what}{said}", write=write)

    def redact(self, text: str) -> str:
        """``text`` without the secret, the signature or the account id (longest first)."""
        return self._rest.redact(text)
