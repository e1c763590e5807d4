"""One robust AMQP connection over several broker addresses (the nodes of a cluster).

aio-pika's robust connection reconnects to the one URL it was given. :class:`FailoverConnection`
holds the list instead: every new connection attempt after a failure or a lost connection goes
to the next address in turn, so losing the node the gateway is connected to moves it to another
node at the next attempt (``reconnect_interval``), and channels, queues, bindings and consumers
are restored there as after any reconnect.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aio_pika import RobustConnection
from yarl import URL


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
