"""Yeastar P-Series OpenAPI client: REST over an injected aiohttp session, WebSocket URL building.

Knows the wire format (``{base_url}/openapi/v1.0/{endpoint}?access_token=``, mandatory
User-Agent, ``errcode``/``errmsg`` bodies) and nothing about retries or token lifetimes.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

API_PATH = "/openapi/v1.0"
#: The manual's error table (line 18516, 表 388). Only 10004 TOKEN EXPIRED is about the token.
TOKEN_EXPIRED: Final = 10004
#: 10001 INTERFACE NOT EXISTED, 10002 API VERSION OUT OF MAINTENANCE, 10003 API VERSION
#: UNSUPPORTED: this PBX does not serve the endpoint / this API version; no retry changes that.
UNSUPPORTED_ERRCODES: Final = frozenset({10001, 10002, 10003})
ERR_IP_BLOCKED: Final = 70004
QUEUE_PAGE_SIZE: Final = 100
MAX_QUEUE_PAGES: Final = 100

#: A GET of one endpoint with query parameters, token and error handling included.
Get = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class YeastarError(Exception):
    """The PBX answered with a non-zero ``errcode``."""

    def __init__(self, errcode: int, errmsg: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{errcode} {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
        self.body = body or {}


class YeastarTokenError(YeastarError):
    """10004: the access token is expired or refused: refresh once and retry."""


class YeastarUnsupported(YeastarError):
    """10001/10002/10003: the endpoint or API version is not served by this PBX (firmware)."""


class YeastarBlocked(YeastarError):
    """70004: the PBX has banned this address after failed authentications."""


class YeastarAuthRejected(YeastarError):
    """The PBX refused the client id / secret (or the refresh token)."""


class YeastarUnreachable(Exception):
    """Network failure, timeout or a non-JSON answer: the PBX could not be talked to."""


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    access_expires_in: float
    refresh_token: str
    refresh_expires_in: float


class YeastarClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        user_agent: str,
        verify_tls: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._headers = {"User-Agent": user_agent}
        self._ssl: ssl.SSLContext | bool = True if verify_tls else False
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def subscribe_url(self, access_token: str) -> str:
        scheme = "wss" if self._base_url.startswith("https") else "ws"
        host = self._base_url.split("://", 1)[1]
        return f"{scheme}://{host}{API_PATH}/subscribe?access_token={access_token}"

    @property
    def ssl(self) -> ssl.SSLContext | bool:
        return self._ssl

    @property
    def user_agent(self) -> str:
        return self._headers["User-Agent"]

    async def get_token(self, username: str, password: str) -> TokenPair:
        body = await self._call(
            "POST", "get_token", json={"username": username, "password": password}
        )
        return _token_pair(body)

    async def refresh_token(self, refresh_token: str) -> TokenPair:
        body = await self._call("POST", "refresh_token", json={"refresh_token": refresh_token})
        return _token_pair(body)

    async def del_token(self, access_token: str) -> None:
        await self._call("GET", "del_token", params={"access_token": access_token})

    async def request(
        self,
        method: str,
        endpoint: str,
        access_token: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An authenticated API call; returns the body of a successful (errcode 0) answer."""
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        query["access_token"] = access_token
        return await self._call(method, endpoint, params=query, json=json)

    async def _call(
        self,
        method: str,
        endpoint: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        url = f"{self._base_url}{API_PATH}/{endpoint}"
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                json=json,
                headers=self._headers,
                ssl=self._ssl,
                timeout=self._timeout,
            ) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise YeastarUnreachable(f"{method} {endpoint}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(body, dict) or "errcode" not in body:
            raise YeastarUnreachable(f"{method} {endpoint}: unexpected answer {str(body)[:200]!r}")
        errcode = int(body.get("errcode", -1))
        if errcode == 0:
            return body
        raise _error(errcode, str(body.get("errmsg", "")), body, endpoint)


def _error(errcode: int, errmsg: str, body: dict[str, Any], endpoint: str) -> YeastarError:
    if errcode == TOKEN_EXPIRED:
        return YeastarTokenError(errcode, errmsg, body)
    if errcode in UNSUPPORTED_ERRCODES:  # before the auth endpoints: not a credential refusal
        return YeastarUnsupported(errcode, errmsg, body)
    if errcode == ERR_IP_BLOCKED:
        return YeastarBlocked(errcode, errmsg, body)
    if endpoint in ("get_token", "refresh_token"):
        return YeastarAuthRejected(errcode, errmsg, body)
    return YeastarError(errcode, errmsg, body)


def _token_pair(body: dict[str, Any]) -> TokenPair:
    try:
        return TokenPair(
            access_token=str(body["access_token"]),
            access_expires_in=float(body["access_token_expire_time"]),
            refresh_token=str(body["refresh_token"]),
            refresh_expires_in=float(body["refresh_token_expire_time"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise YeastarUnreachable(f"token answer without {exc}") from exc


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


async def list_queues(get: Get) -> list[dict[str, Any]]:
    """Every queue: queue/list is paged (``page``, ``page_size``; ``total_number``)."""
    found: list[dict[str, Any]] = []
    for page in range(1, MAX_QUEUE_PAGES + 1):
        body = await get("queue/list", {"page": page, "page_size": QUEUE_PAGE_SIZE})
        listed = body.get("queue_list")
        items = [q for q in listed if isinstance(q, dict)] if isinstance(listed, list) else []
        found.extend(items)
        total = body.get("total_number")
        if not items or not isinstance(total, int) or len(found) >= total:
            break
    return found
