"""Connections that outlive one PBX link, shared by every link that needs them.

A vendor whose events come from a server many PBXs share (XSwitch's NATS) asks for one
connection per server instead of one per PBX; the gateway closes them all at shutdown, after the
links that used them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.logging import get_logger

T = TypeVar("T")


class SharedResources:
    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self._closers: dict[str, Callable[[Any], Awaitable[None]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    async def get(
        self,
        key: str,
        open_: Callable[[], Awaitable[T]],
        close: Callable[[T], Awaitable[None]],
    ) -> T:
        """The resource named ``key``, opened by the first caller (others wait for it); a
        failed open raises to that caller and is tried again by the next."""
        if self._closed:
            raise RuntimeError("shared resources are closed")
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._items:
                self._items[key] = await open_()
                self._closers[key] = close
            return self._items[key]

    async def discard(self, key: str) -> None:
        """Close and forget ``key`` (e.g. a connection found dead): the next ``get`` opens a
        new one. Closing errors are logged, never raised."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key in self._items:
                await self._close(key)

    async def _close(self, key: str) -> None:
        item = self._items.pop(key)
        closer = self._closers.pop(key)
        try:
            await asyncio.wait_for(closer(item), 5)
        except Exception as exc:
            get_logger("runtime.resources").warning(
                "resource_close_failed", resource=key, error=str(exc)[:300]
            )

    async def close(self) -> None:
        """Close every resource, newest first; a failing close is logged, never raised."""
        self._closed = True
        for key in reversed(list(self._items)):
            await self._close(key)
