"""A deadline for a request's headers: aiohttp's server has none.

A client that opens a connection and sends its request line and headers a byte at a time
(slowloris) holds the connection, and a task, for as long as it likes: aiohttp closes only an
idle keep-alive connection, after ``keepalive_timeout`` (75 s), and not at all in older
versions. Each connection of a listener gets ``header_timeout_s`` from its opening, and again
from the end of each response (keep-alive), to complete a request's headers; a connection that
has not is closed. Trickling bytes does not extend it. Reading the body is the handler's
business (the webhook route gives it 10 s, else 408).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import Counter

from gateway.logging import get_logger

log = get_logger("web")

HEADER_TIMEOUTS = Counter(
    "gateway_http_header_timeouts_total",
    "Connections closed because their request headers were not complete in time",
    ["listener"],
)

#: Distinct client addresses whose header timeout is logged (each once); then only counted.
MAX_LOGGED_SOURCES: Final = 100


class SlowClients:
    """Counts a listener's header timeouts and logs each client address once (a flood of
    slow connections is one line per source, not one per connection)."""

    def __init__(self, listener: str) -> None:
        self.listener = listener
        self._seen: set[str] = set()

    def timed_out(self, peer: str, timeout_s: float) -> None:
        HEADER_TIMEOUTS.labels(listener=self.listener).inc()
        if peer in self._seen or len(self._seen) >= MAX_LOGGED_SOURCES:
            return
        self._seen.add(peer)
        log.warning(
            "http_header_timeout",
            listener=self.listener,
            source=peer,
            timeout_s=timeout_s,
            hint="the client did not send its request headers in time: closed",
        )


class HeaderDeadline(RequestHandler):
    """aiohttp's connection handler with a deadline for each request's headers.

    Armed when the connection opens and when a response ends; met when the parser has a
    whole request (its headers); never fires while a request is being handled."""

    def __init__(
        self, *args: Any, header_timeout_s: float, slow: SlowClients, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._slow = slow
        self._deadline: asyncio.TimerHandle | None = None
        self._requests_at_arming = 0
        self._handling = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._deadline is not None and self._request_count > self._requests_at_arming:
            self._disarm()  # a whole request arrived: its handling re-arms when it ends

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    async def _handle_request(self, *args: Any, **kwargs: Any) -> tuple[web.StreamResponse, bool]:
        self._handling += 1
        try:
            return await super()._handle_request(*args, **kwargs)
        finally:
            self._handling -= 1
            if self.transport is not None:
                self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._requests_at_arming = self._request_count
        self._deadline = asyncio.get_running_loop().call_later(self._header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._handling or self._request_count > self._requests_at_arming:
            return
        transport = self.transport
        if transport is None:
            return
        peer = transport.get_extra_info("peername")
        self._slow.timed_out(str(peer[0]) if peer else "?", self._header_timeout_s)
        self.force_close()


def protocol_factory(
    server: web.Server, header_timeout_s: float, slow: SlowClients
) -> Callable[[], HeaderDeadline]:
    """What ``loop.create_server`` takes in place of ``server`` itself: the same handlers,
    made with the settings aiohttp's runner gave the server, plus the header deadline."""
    kwargs: dict[str, Any] = dict(getattr(server, "_kwargs", {}))
    loop = asyncio.get_running_loop()

    def make() -> HeaderDeadline:
        return HeaderDeadline(
            server, loop=loop, header_timeout_s=header_timeout_s, slow=slow, **kwargs
        )

    return make
