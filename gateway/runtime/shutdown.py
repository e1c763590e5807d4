"""Ordered shutdown steps on an :class:`contextlib.AsyncExitStack`: each step's failure is
logged (one line) and the steps after it are still taken, so a component that fails to close
never keeps the ones before it open."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.logging import get_logger


def sync_step(close: Callable[[], object]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        close()

    return run


def on_shutdown(
    stack: contextlib.AsyncExitStack,
    what: str,
    step: Callable[[], Awaitable[Any]],
    *,
    quiet: bool = False,
    staged: Callable[[], Any] | None = None,
) -> None:
    """One shutdown step on the exit stack; its failure is logged (not at all if ``quiet``) and
    the steps after it are still taken."""

    async def run() -> None:
        try:
            await step()
        except Exception as exc:
            if not quiet:
                extra = {"staged": staged()} if staged is not None else {}
                get_logger("app").error(what, error=str(exc), **extra)

    stack.push_async_callback(run)
