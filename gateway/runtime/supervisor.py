"""Restart a long-lived worker with backoff; log each kind of failure with its traceback once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.logging import get_logger
from gateway.runtime.backoff import Backoff


def stopping() -> bool:
    """True when the running task is being cancelled (a stop), false when a stray
    ``CancelledError`` reached it that nobody asked for (some libraries raise their own)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def supervise(name: str, work: Callable[[], Awaitable[None]], backoff: Backoff) -> None:
    log = get_logger("runtime.supervisor").bind(worker=name)
    seen: set[str] = set()
    while True:
        try:
            await work()
            log.warning("worker_returned")
        except asyncio.CancelledError:
            if stopping():
                raise
            # a CancelledError nobody asked for (a library's): a failure like any other, or
            # the worker would end silently while its link still looks up
            log.warning("worker_cancelled_unasked")
        except Exception as exc:
            kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
            if kind in seen:
                log.warning("worker_failed", error=kind, detail=str(exc)[:300])
            else:
                seen.add(kind)
                log.exception("worker_failed_first_time", error=kind)
        await asyncio.sleep(backoff.next_delay())
