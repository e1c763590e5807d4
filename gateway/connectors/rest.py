"""A vendor's REST API over HTTP: how an exchange turns out, said the same way for every vendor.

Every REST client meets the same outcomes, and what they mean for a command does not depend on
the vendor, so they are mapped here, once:

=====================================  ========================================================
outcome                                failure
=====================================  ========================================================
the server was never reached           ``unavailable``, retryable: nothing was run
(connection refused, DNS, TLS)
no answer (timeout, connection         a read: ``unavailable``, retryable; a write: ``timeout``,
dropped, a redirect the session        not retryable: it may have been run
refused)
a success whose body is not JSON       a read: ``unavailable``, retryable; a write: ``failed``,
                                       not retryable: it was run
401                                    :class:`AuthRefused` (``forbidden``)
429                                    :class:`RateLimited` (``unavailable``, retryable) with the
                                       ``Retry-After`` (seconds or an HTTP date)
a 5xx with ``Retry-After`` (a read,    :class:`RateLimited`: the server is overloaded and says
or a write the server did not run),    when to come back
where the client passes it on
any other error status                 :func:`~gateway.connectors.http_answers.status_failure`
=====================================  ========================================================

and every message built here is passed through the client's :class:`Secrets`. A vendor client
keeps only what is its own: how it authorizes or signs a request, how its bodies, envelopes and
error answers read (an error inside an HTTP 200, a vendor's name for "token refused"), and how
often it waits and sends again. A client may name its own subclasses of :class:`AuthRefused`
and :class:`RateLimited`, so its pollers tell its refusals apart.

Redirects are never followed: the PBX links' session refuses them (a credential would travel
to where they point), and a refused redirect is "no answer" like any transport error; a client
that sends ``allow_redirects=False`` gets the 3xx as an error status instead. TLS is the
session's: a PBX with its own ``ca_file`` has a session that trusts that CA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson

from gateway.connectors.http_answers import NOT_RUN, retry_after_s, status_failure
from gateway.schema.commands import CommandFailed, ErrorCode

#: What a write that got no answer (or a body that is not JSON) may have done.
MAYBE_MADE: Final = "the change may have been made"
#: A value shorter than this is never replaced in a message: it would garble the text.
MIN_SECRET: Final = 4


class AuthRefused(CommandFailed):
    """The credentials (``status`` 401) or their rights (403) were refused: ``forbidden``, and
    nothing works until they are fixed. ``vendor_code`` defaults to the status."""

    def __init__(self, status: int, message: str, vendor_code: str | int | None = None) -> None:
        super().__init__(
            ErrorCode.FORBIDDEN, message, vendor_code=status if vendor_code is None else vendor_code
        )
        self.status = status


class RateLimited(CommandFailed):
    """The server refused the request before running it and asks to wait ``retry_after_s``
    (None: it named no time): ``unavailable``, retryable."""

    def __init__(
        self, message: str, retry_after_s: float | None, vendor_code: str | int | None = 429
    ) -> None:
        super().__init__(ErrorCode.UNAVAILABLE, message, vendor_code=vendor_code, retryable=True)
        self.retry_after_s = retry_after_s


class Secrets:
    """The values no message may show: keys and tokens (:meth:`keep`) and the latest of those
    that change with every request, such as signatures (:meth:`recent`, the last ``recent``)."""

    def __init__(self, recent: int = 8) -> None:
        self._kept: set[str] = set()
        self._recent: dict[str, None] = {}  # insertion-ordered: the oldest first
        self._limit = recent

    def keep(self, *values: str) -> None:
        self._kept.update(v for v in values if len(v) >= MIN_SECRET)

    def recent(self, *values: str) -> None:
        for value in values:
            if len(value) >= MIN_SECRET:
                self._recent.pop(value, None)
                self._recent[value] = None
        while len(self._recent) > self._limit:
            del self._recent[next(iter(self._recent))]

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``***`` (the longest first, so a secret that
        holds another is hidden whole)."""
        for value in sorted({*self._kept, *self._recent}, key=len, reverse=True):
            text = text.replace(value, "***")
        return text


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer read whole: its status, body, content type and ``Retry-After`` (seconds from
    when it arrived; None when absent or unreadable)."""

    status: int
    body: bytes
    content_type: str = ""
    retry_after_s: float | None = None

    @classmethod
    def of(cls, response: aiohttp.ClientResponse, body: bytes) -> Reply:
        return cls(
            response.status,
            body,
            response.content_type or "",
            retry_after_s(response.headers.get("Retry-After")),
        )

    def text(self, limit: int = 200) -> str:
        return self.body[:limit].decode("utf-8", "replace")


async def error_reply(response: aiohttp.ClientResponse, limit: int = 4096) -> Reply:
    """An error answer with the start of its body (none when it cannot be read: the status
    says what happened); the response is released."""
    try:
        body = await response.content.read(limit)
    except (TimeoutError, aiohttp.ClientError):
        body = b""
    finally:
        response.release()
    return Reply.of(response, body)


class Rest:
    """One vendor API at ``base_url`` over the PBX links' shared session.

    ``maybe_done`` is how its messages say a write may have been run; ``error_detail`` whether
    a transport error's own text is shown (off where a request's URL may hold a credential).
    ``auth_refused`` and ``rate_limited`` are the classes :meth:`failure` raises."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout_s: float,
        secrets: Secrets | None = None,
        maybe_done: str = MAYBE_MADE,
        error_detail: bool = True,
        auth_refused: type[AuthRefused] = AuthRefused,
        rate_limited: type[RateLimited] = RateLimited,
    ) -> None:
        self._http = http
        self.base_url = base_url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.secrets = secrets or Secrets()
        self._maybe_done = maybe_done
        self._error_detail = error_detail
        self._auth_refused = auth_refused
        self._rate_limited = rate_limited

    def redact(self, text: str) -> str:
        return self.secrets.redact(text)

    # --- the exchange ------------------------------------------------------------------------

    async def exchange(
        self, method: str, path: str, *, where: str, write: bool, **request: Any
    ) -> Reply:
        """Send one request (``request``: aiohttp's ``params``, ``json``, ``data``,
        ``headers`` ...) and read its answer whole; a transport error raises its failure."""
        try:
            async with self._http.request(
                method, self.base_url + path, timeout=self._timeout, **request
            ) as response:
                return Reply.of(response, await response.read())
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.transport_failure(where, exc, write=write) from None

    async def send(
        self, method: str, path: str, *, where: str, write: bool, **request: Any
    ) -> aiohttp.ClientResponse:
        """Send one request; the response, its body unread (the caller releases it)."""
        try:
            return await self._http.request(
                method, self.base_url + path, timeout=self._timeout, **request
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.transport_failure(where, exc, write=write) from None

    async def read(self, response: aiohttp.ClientResponse, *, where: str, write: bool) -> bytes:
        """The whole body of a response from :meth:`send`."""
        try:
            return await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.transport_failure(where, exc, write=write) from None

    # --- outcomes -> failures --------------------------------------------------------------------

    def transport_failure(self, where: str, exc: BaseException, *, write: bool) -> CommandFailed:
        """A request that got no answer -> its failure (see the module docstring)."""
        if isinstance(exc, aiohttp.ClientConnectorError):  # never reached the server: not run
            message = self.redact(f"{where}: cannot connect: {exc}")
            return CommandFailed(ErrorCode.UNAVAILABLE, message, retryable=True)
        kind = type(exc).__name__
        said = f"{kind}: {exc}" if self._error_detail else kind
        if write:
            return CommandFailed(
                ErrorCode.TIMEOUT, self.redact(f"{where}: no answer ({said}); {self._maybe_done}")
            )
        return CommandFailed(
            ErrorCode.UNAVAILABLE, self.redact(f"{where}: no answer ({said})"), retryable=True
        )

    def not_json(self, where: str, status: int, *, write: bool) -> CommandFailed:
        """A success whose body should be JSON and is not: a write was run, a read may be
        asked again."""
        message = self.redact(f"{where}: HTTP {status} answer is not JSON")
        if write:
            return CommandFailed(ErrorCode.FAILED, f"{message}; {self._maybe_done}")
        return CommandFailed(ErrorCode.UNAVAILABLE, message, retryable=True)

    def json(
        self,
        reply: Reply,
        *,
        where: str,
        write: bool,
        success: bool,
        error_body: Callable[[str], Any],
    ) -> Any:
        """The decoded body (``{}`` when empty). A success that is not JSON raises
        :meth:`not_json`; an error answer that is not JSON is ``error_body(its text)``, the
        vendor's error shape, so its own reader finds the message there."""
        if not reply.body.strip():
            return {}
        try:
            return orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            if success:
                raise self.not_json(where, reply.status, write=write) from None
            return error_body(reply.text())

    def failure(
        self,
        status: int,
        message: str,
        *,
        write: bool,
        vendor_code: str | int | None = None,
        retry_after_s: float | None = None,
        refused: bool = False,
        limited: bool = False,
        code: ErrorCode | None = None,
        otherwise: ErrorCode = ErrorCode.FAILED,
    ) -> CommandFailed:
        """An error answer -> its failure (see the module docstring). ``refused`` and
        ``limited``: the vendor's body says so whatever the status; ``code``: the vendor's
        body names the result, where no refusal or rate limit decides first. ``vendor_code``
        defaults to the status."""
        vendor = status if vendor_code is None else vendor_code
        if refused or status == 401:
            return self._auth_refused(401, message, vendor)
        if limited or status == 429:
            return self._rate_limited(message, retry_after_s, vendor)
        if status >= 500 and retry_after_s is not None and (not write or status in NOT_RUN):
            return self._rate_limited(message, retry_after_s, vendor)  # overloaded: come back then
        if code is not None:
            return CommandFailed(code, message, vendor_code=vendor)
        return status_failure(status, message, write=write, vendor_code=vendor, otherwise=otherwise)
