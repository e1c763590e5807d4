"""Serving a simulator's aiohttp application on a (loopback) port."""

from __future__ import annotations

from aiohttp import web


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Start ``app`` on ``host:port`` (0: an ephemeral port); its runner and ``http://host:port``.
    Signals stay with the caller, and there is no access log (simulators log what matters)."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, f"http://{host}:{runner.addresses[0][1]}"
