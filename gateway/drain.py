"""``gateway outbox drain``: publish the spool of an instance that will not come back.

Events an instance spooled but RabbitMQ never confirmed stay in its ``<state_dir>/outbox.sqlite3``
and are published by that instance's next start. When it will not start again (a replica scaled
away, a host retired), an operator publishes them with this command: in ``seq`` order, with
publisher confirms, each removed from the spool only once confirmed, exactly as the instance would
(same ids: a copy already published is identical, consumers de-duplicate on ``id``). Never run it
while that instance runs: both would publish the same events.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import aio_pika

from gateway.bus.connection import connect_failover
from gateway.bus.outbox import Outbox
from gateway.bus.publisher import EventPublisher
from gateway.settings import split_urls

OUTBOX_FILE = "outbox.sqlite3"
#: One attempt to reach a broker address.
CONNECT_TIMEOUT_S = 10.0


class DrainError(Exception):
    """Cannot drain; ``status`` is the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Drained:
    published: int
    left: int
    seconds: float


async def drain_outbox(
    state_dir: Path, url: str, exchange: str, *, timeout_s: float, window: int = 256
) -> Drained:
    """Publish everything in ``state_dir``'s spool; what is not confirmed within ``timeout_s``
    stays in it (run again to continue)."""
    path = state_dir / OUTBOX_FILE
    if not path.is_file():
        raise DrainError(f"no outbox in {state_dir} (expected {path})", 2)
    started = time.monotonic()
    try:
        connection = await connect_failover(
            split_urls(url),
            client_properties={"connection_name": f"pbx-gateway outbox drain {state_dir}"},
            timeout=CONNECT_TIMEOUT_S,
        )
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        raise DrainError(f"RabbitMQ unreachable: {type(exc).__name__}: {exc}"[:300], 4) from exc
    # Bounds as large as they go: draining must never shed what the instance kept.
    outbox = Outbox(path, max_events=2**62, max_age_s=float("inf"))
    try:
        before = len(outbox)
        publisher = EventPublisher(connection, exchange, outbox=outbox, window=window)
        await publisher.start()
        await publisher.flush(max(0.0, timeout_s - (time.monotonic() - started)))
        await publisher.stop(timeout=0)
        left = len(outbox)
    finally:
        outbox.close()
        with contextlib.suppress(Exception):
            await connection.close()
    return Drained(published=before - left, left=left, seconds=time.monotonic() - started)
