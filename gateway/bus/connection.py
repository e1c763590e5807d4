"""One robust AMQP connection over several broker addresses (the nodes of a cluster).

aio-pika's robust connection reconnects to the one URL it was given. :class:`FailoverConnection`
holds the list instead: every new connection attempt after a failure or a lost connection goes
to the next address in turn, so losing the node the gateway is connected to moves it to another
node at the next attempt (``reconnect_interval``), and channels, queues, bindings and consumers
are restored there as after any reconnect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika import RobustConnection
from aio_pika.abc import AbstractRobustConnection
from yarl import URL

from gateway.logging import get_logger
from gateway.runtime.backoff import Backoff
from gateway.settings_models import BackoffSettings, redact_url, split_urls

#: How long one attempt to reach RabbitMQ may take (a host that drops packets never refuses).
BUS_CONNECT_TIMEOUT_S = 10.0


class FailoverConnection(RobustConnection):
    def __init__(
        self,
        url: URL | str,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        addresses: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self._addresses = [URL(a) for a in (addresses or [str(url)])]
        given = URL(url)
        self._index = self._addresses.index(given) if given in self._addresses else 0
        self._attempts = 0
        super().__init__(given, loop, **kwargs)

    # aio-pika clears ``transport`` right before each new connection attempt: that is where the
    # next address is chosen (the first attempt keeps the address given).
    @property
    def transport(self) -> Any:
        return self.__dict__.get("_failover_transport")

    @transport.setter
    def transport(self, value: Any) -> None:
        if value is None and getattr(self, "_addresses", None):
            self._attempts += 1
            if self._attempts > 2:  # __init__ and the first attempt keep the given address
                self._index = (self._index + 1) % len(self._addresses)
                self.url = self._addresses[self._index].with_query(self.url.query)
        self.__dict__["_failover_transport"] = value

    @property
    def address(self) -> str:
        """Host and port of the broker this connection uses (or tries) now."""
        return f"{self.url.host}:{self.url.port}"


async def connect_failover(
    addresses: list[str],
    *,
    client_properties: dict[str, Any] | None = None,
    timeout: float | None = None,
    **kwargs: Any,
) -> FailoverConnection:
    """Connect to the first address that answers (trying each once, in order), robustly; the
    last address's error if none does."""
    error: BaseException | None = None
    for address in addresses:
        connection = FailoverConnection(
            address, addresses=addresses, client_properties=client_properties, **kwargs
        )
        try:
            await connection.connect(timeout=timeout)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            error = exc
            continue
        return connection
    assert error is not None
    raise error


async def connect_first(
    addresses: list[str], *, client_properties: dict[str, Any] | None = None
) -> aio_pika.abc.AbstractConnection:
    """A plain (not robust) connection to the first address that answers."""
    error: BaseException | None = None
    for address in addresses:
        try:
            return await aio_pika.connect(address, client_properties=client_properties)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            error = exc
    assert error is not None
    raise error


def bus_problem(exc: BaseException, setting: str = "bus.url") -> str:
    """One line saying why RabbitMQ could not be reached, and what to check (``setting``)."""
    if isinstance(exc, aio_pika.exceptions.ProbableAuthenticationError):
        return f"RabbitMQ refused the login: check the user and password in {setting}"
    if isinstance(exc, TimeoutError):
        return f"RabbitMQ did not answer in time: check the host and port in {setting}"
    text = str(exc) or type(exc).__name__
    if "ACCESS_REFUSED" in text or "vhost" in text.lower():
        return f"RabbitMQ refused the connection ({text[:200]}): check {setting}"
    return f"RabbitMQ unreachable ({text[:200]}): is it running, and is {setting} right?"


async def connect_bus(
    url: str,
    on_failure: Callable[[str], None] | None = None,
    *,
    reconnect_interval_s: float = 1.0,
    name: str = "pbx-gateway",
) -> AbstractRobustConnection:
    """Connect to RabbitMQ, waiting with backoff while it is not there yet (one warning line per
    attempt, ``on_failure`` told why). Cancel the caller to stop waiting."""
    log = get_logger("bus")
    backoff = Backoff(BackoffSettings(initial_s=0.5, max_s=10))
    while True:
        try:
            return await connect_failover(  # several addresses: the nodes of a cluster
                split_urls(url),
                client_properties={"connection_name": name},
                timeout=BUS_CONNECT_TIMEOUT_S,
                reconnect_interval=reconnect_interval_s,
            )
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            delay = backoff.next_delay()
            problem = bus_problem(exc)
            log.warning(
                "bus_unreachable", url=redact_url(url), error=problem, retry_in_s=round(delay, 2)
            )
            if on_failure is not None:
                on_failure(problem)
            await asyncio.sleep(delay)


class BusLink:
    """The main broker connection of an instance as the status page tells it: up or not, since
    when, and why not (the last reason an attempt failed)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: AbstractRobustConnection | None = None
        self.error: str | None = None
        self.since = datetime.now(UTC)  # when the broker went up or down (or start-up)

    @property
    def up(self) -> bool:
        return self.connection is not None and not self.connection.is_closed

    def gauge(self) -> float:
        return 1.0 if self.up else 0.0

    def failed(self, problem: str) -> None:
        if self.error is None:
            self.since = datetime.now(UTC)
        self.error = problem

    async def connect(self, reconnect_interval_s: float) -> AbstractRobustConnection:
        self.connection = await connect_bus(
            self.url, on_failure=self.failed, reconnect_interval_s=reconnect_interval_s
        )
        self.error, self.since = None, datetime.now(UTC)
        return self.connection
