"""XSwitch XCC REST client: every call is ``POST <base_url>/api/xcc/...`` with a JSON body and
the user token in a ``token`` header (seed 002, lines 9-18 and 42).

It owns the token: one ``/api/xcc/sessions/auth`` with the ``dev_key`` (lines 9-28) when the
first call needs it, shared by concurrent callers (single flight), and a new one after a
``401`` or an "expired token" answer, once, then the call fails. Failed authentications are
spaced by the PBX's backoff so a wrong key does not hammer the server; the key and the tokens
are replaced by ``***`` in every message this module builds.

Write calls (``.../add``, ``.../set``, ``.../del``) are sent a second time only after a ``401``:
the server refused the token before doing anything. A timeout, a dropped connection or a 500
after a write leaves its outcome unknown, so it fails (``timeout``/``failed``, not retryable)
instead of risking a second extension or queue.

The document shows no error body. The simulator (and this client) use the shape of the auth
answer's ``"code": 200`` (line 23): an HTTP status, mirrored as ``code`` in a JSON body with a
``message``; a ``code`` of 400 or more in an HTTP 200 answer counts as that error too.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any, Final

import aiohttp

from gateway.connectors import rest
from gateway.connectors.paging import read_pages
from gateway.connectors.xswitch.settings import XSwitchPbxSettings
from gateway.logging import get_logger
from gateway.runtime.backoff import Backoff
from gateway.schema.commands import CommandFailed, ErrorCode

API_PREFIX: Final = "/api/xcc/"
AUTH_PATH: Final = "/api/xcc/sessions/auth"
EXTN_TOKEN_PATH: Final = "/api/xcc/sessions/getExtnToken"
#: The last path segment of the calls that change something (add / set / del in every section).
WRITE_ACTIONS: Final = frozenset({"add", "set", "del"})
#: ``expires`` above this is a Unix time, below it a lifetime in seconds (line 25 shows 0: none).
_EPOCH_FLOOR: Final = 1_000_000_000
#: An answer that says the token is no good, whatever its status (English or Chinese text).
_TOKEN_TEXT: Final = re.compile(
    r"token.{0,40}(expire|invalid|过期|无效)|(expire|invalid|过期|无效).{0,40}token", re.I
)
_MESSAGE_KEYS: Final = ("message", "msg", "error", "errmsg", "text")


class XccAuthRejected(rest.AuthRefused):
    """``/api/xcc/sessions/auth`` refused the ``dev_key``: nothing works until it is fixed."""


def is_write(path: str) -> bool:
    """Whether ``path`` changes the PBX (``/api/xcc/<resource>/add|set|del``)."""
    return path.rstrip("/").rsplit("/", 1)[-1] in WRITE_ACTIONS


def as_int(value: Any) -> int | None:
    """A count the document shows as a number or a string (``"page_size":"2"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def records(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a list answer: ``data`` as a list, or nothing for ``null`` / ``{}`` (an empty
    Lua table is encoded as an object) / absent. Rows that are not objects are left out."""
    data = answer.get("data")
    if not isinstance(data, list):
        return []
    return [row for row in data if isinstance(row, dict)]


class XccClient:
    """One XCC system's REST API over the gateway's shared (cookie-less) aiohttp session."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        settings: XSwitchPbxSettings,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rest = rest.Rest(
            http, settings.base_url.rstrip("/"), timeout_s=settings.request_timeout_s
        )
        self._secret = settings.secret
        self._backoff = backoff or Backoff(settings.backoff)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at: float | None = None  # monotonic; None: until the server says 401
        self._generation = 0  # bumped by every new token, so a 401 re-auths once for all
        self._next_auth_at = 0.0
        #: Authentication requests sent (for tests and the status page).
        self.auth_count = 0
        #: ``dev_key`` refusals in a row (reset by a successful authentication).
        self.auth_rejections = 0
        self._log = get_logger("xswitch.client").bind(tenant=settings.tenant)

    @property
    def base_url(self) -> str:
        return self._rest.base_url

    # --- the API ---------------------------------------------------------------------------------

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` with the user token; the JSON answer.

        An answer that is a bare JSON array (``freeswitch/list``, ``timeDef/list``,
        ``ivrs/get``: lines 470, 544, 822) comes back as ``{"data": [...]}``, like a page.
        Failures raise :class:`CommandFailed` with a neutral code.
        """
        if not path.startswith(API_PREFIX):
            raise CommandFailed(ErrorCode.INVALID, f"{path!r} is not an XCC API path")
        write = is_write(path)
        token, generation = await self._current_token()
        status, answer = await self._post(path, body, token, write=write)
        if _token_refused(status, answer):
            # The server refused the token before running anything: safe to send again, once.
            self._log.info("token_refused", path=path, status=status)
            token = await self._reauthenticate(generation)
            status, answer = await self._post(path, body, token, write=write)
            if _token_refused(status, answer):
                raise CommandFailed(
                    ErrorCode.UNAVAILABLE,
                    f"{path}: token refused again right after a new authentication"
                    f" ({self._message(answer, status)})",
                    vendor_code=status,
                    retryable=True,
                )
        return self._result(path, status, answer, write=write)

    async def extn_token(self, extn: str) -> dict[str, Any]:
        """An extension's token for the XCC WebSocket (lines 30-51): ``extn_id``, ``token``,
        ``domain``. The caller owns it: it is not logged here."""
        answer = await self.call(EXTN_TOKEN_PATH, {"extn": extn})
        if not isinstance(answer.get("token"), str) or not answer["token"]:
            raise CommandFailed(
                ErrorCode.FAILED, f"{EXTN_TOKEN_PATH}: answer without a token for {extn!r}"
            )
        return answer

    async def list_all(
        self,
        path: str,
        body: dict[str, Any],
        *,
        page_size: int = 100,
        max_pages: int = 1000,
    ) -> list[dict[str, Any]]:
        """Every row of a paged list (``page``/``page_size`` in, ``page``, ``row_count``,
        ``page_count``, ``data`` out: lines 65-71 and 80-132).

        Page numbers go out as strings, as every example sends them (lines 75, 269, 764,
        1007); counts coming back may be numbers or strings, ``data`` may be ``null``. Without
        ``page_count`` it stops at ``row_count`` rows or a short page. A row seen on two pages
        (the list changed while it was read) is kept once, by ``id``. More than ``max_pages``
        pages fail rather than return a partial list (a caller diffing it would see removals).
        """

        async def fetch(page: int) -> tuple[Any, list[dict[str, Any]]]:
            answer = await self.call(path, {**body, "page": str(page), "page_size": str(page_size)})
            return answer, records(answer)

        def last(answer: Any, page: int, rows: list[dict[str, Any]], kept: int) -> bool:
            return not _more_pages(answer, page, kept, len(rows), page_size)

        return await read_pages(
            fetch, last, max_pages=max_pages, what=f"{path} (pages of {page_size})"
        )

    # --- the token -------------------------------------------------------------------------------

    def _valid_token(self) -> str | None:
        if self._token is None:
            return None
        if self._expires_at is not None and self._clock() >= self._expires_at:
            return None
        return self._token

    async def _current_token(self) -> tuple[str, int]:
        token = self._valid_token()
        if token is not None:
            return token, self._generation
        async with self._lock:  # one authentication at a time; the others reuse its token
            token = self._valid_token()
            if token is None:
                token = await self._authenticate()
            return token, self._generation

    async def _reauthenticate(self, refused_generation: int) -> str:
        async with self._lock:
            token = self._valid_token()
            if token is not None and self._generation != refused_generation:
                return token  # another caller already replaced the refused token
            self._token = None
            return await self._authenticate()

    async def _authenticate(self) -> str:
        """``POST /api/xcc/sessions/auth {"dev_key": ...}`` (lines 9-28); holds ``_lock``."""
        wait = self._next_auth_at - self._clock()
        if wait > 0:
            raise CommandFailed(
                ErrorCode.UNAVAILABLE,
                f"authentication failed recently; next attempt in {wait:.1f} s",
                retryable=True,
            )
        dev_key = self._secret()
        self._rest.secrets.keep(dev_key)  # the key and the recent tokens: never in a message
        self.auth_count += 1
        try:
            status, answer = await self._post(AUTH_PATH, {"dev_key": dev_key}, None, write=False)
            token = self._auth_answer(status, answer)
        except CommandFailed as exc:
            delay = self._backoff.next_delay()
            self._next_auth_at = self._clock() + delay
            if isinstance(exc, XccAuthRejected):
                self.auth_rejections += 1
            self._log.warning(
                "auth_failed", error=exc.message, code=exc.code, retry_in_s=round(delay, 2)
            )
            raise
        self._backoff.reset()
        self._next_auth_at = 0.0
        self.auth_rejections = 0
        self._generation += 1
        self._token = token
        self._rest.secrets.recent(token)
        self._expires_at = self._expiry(answer.get("expires"))
        self._log.info("authenticated", generation=self._generation, expires=answer.get("expires"))
        return token

    def _auth_answer(self, status: int, answer: Any) -> str:
        code = _code(answer)
        if status in (401, 403) or code in (401, 403):
            raise XccAuthRejected(
                status if status in (401, 403) else code or status,
                f"{AUTH_PATH}: dev_key refused ({self._message(answer, status)})",
                vendor_code=code or status,
            )
        if status >= 400 or (code or 200) >= 400:
            raise self._failure(AUTH_PATH, status, answer, write=False)
        token = answer.get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise CommandFailed(
                ErrorCode.UNAVAILABLE, f"{AUTH_PATH}: answer without a token", retryable=True
            )
        return token

    def _expiry(self, expires: Any) -> float | None:
        """``expires`` 0 (line 25) says nothing: keep the token until a 401. A Unix time or a
        lifetime is honoured with a margin, so a call rarely meets the expiry first."""
        value = as_int(expires)
        if not value or value <= 0:
            return None
        lifetime = value - time.time() if value > _EPOCH_FLOOR else float(value)
        return self._clock() + lifetime - min(30.0, lifetime * 0.1)

    def redact(self, text: str) -> str:
        """``text`` without the dev_key or any recent token."""
        return self._rest.redact(text)

    # --- the wire --------------------------------------------------------------------------------

    async def _post(
        self, path: str, body: dict[str, Any], token: str | None, *, write: bool
    ) -> tuple[int, Any]:
        """One request: ``(HTTP status, decoded JSON)``; transport failures raise."""
        headers = {} if token is None else {"token": token}
        reply = await self._rest.exchange(
            "POST", path, where=path, write=write, json=body, headers=headers
        )
        answer = self._rest.json(
            reply, where=path, write=write, success=reply.status < 400, error_body=_error_body
        )
        return reply.status, answer

    def _result(self, path: str, status: int, answer: Any, *, write: bool) -> dict[str, Any]:
        code = _code(answer)
        if status >= 400 or (code is not None and code >= 400):
            raise self._failure(path, status, answer, write=write)
        if isinstance(answer, list):
            return {"data": answer}
        if isinstance(answer, dict):
            return answer
        if answer is None:  # JSON null: nothing to say (a delete, say)
            return {}
        raise CommandFailed(ErrorCode.FAILED, f"{path}: unexpected answer of type {type(answer)}")

    def _failure(self, path: str, status: int, answer: Any, *, write: bool) -> CommandFailed:
        """An error answer -> a neutral code; the PBX's status is kept as ``vendor_code``."""
        code = _code(answer)
        effective = code if code is not None and code >= 400 else status
        message = f"{path}: {effective} {self._message(answer, status)}"
        return self._rest.failure(effective, message, write=write, otherwise=ErrorCode.INVALID)

    def _message(self, answer: Any, status: int) -> str:
        text = ""
        if isinstance(answer, dict):
            for key in _MESSAGE_KEYS:
                value = answer.get(key)
                if isinstance(value, str) and value:
                    text = value
                    break
        return self.redact((text or f"HTTP {status}")[:300])


def _error_body(text: str) -> dict[str, Any]:
    """An error answer that is not JSON, with its text where a message is looked for."""
    return {"message": text}


def _code(answer: Any) -> int | None:
    """The ``code`` of a JSON object answer (``"code": 200`` in line 23), number or string."""
    return as_int(answer.get("code")) if isinstance(answer, dict) else None


def _token_refused(status: int, answer: Any) -> bool:
    if status == 401 or _code(answer) == 401:
        return True
    if status < 400 and (_code(answer) or 200) < 400:
        return False
    if isinstance(answer, dict):
        return any(
            isinstance(answer.get(k), str) and _TOKEN_TEXT.search(answer[k]) for k in _MESSAGE_KEYS
        )
    return False


def _more_pages(answer: dict[str, Any], page: int, total: int, rows: int, page_size: int) -> bool:
    if rows == 0:
        return False
    page_count = as_int(answer.get("page_count"))
    if page_count is not None:
        return page < page_count
    row_count = as_int(answer.get("row_count"))
    if row_count is not None:
        return total < row_count
    return rows >= page_size
