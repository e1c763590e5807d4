"""`gateway run` as a real process, the way users start it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from tests.conftest import wait_for


class GatewayProcess:
    """Reads the JSON log continuously (a full pipe would stall the service)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[str] = []
        self.http_port: int | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, config: Path, **env: str) -> GatewayProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "run",
            "--config",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **env},
        )
        gateway = cls(proc)
        try:
            await wait_for(lambda: gateway.started or proc.returncode is not None, timeout=20)
        except TimeoutError:
            await gateway.stop(signal.SIGKILL)
            raise
        if not gateway.started:
            await gateway.stop()
            raise AssertionError("gateway did not start:\n" + gateway.text)
        return gateway

    @property
    def started(self) -> bool:
        return self.http_port is not None or any('"gateway_started"' in line for line in self.log)

    @property
    def text(self) -> str:
        return "".join(self.log)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode()
            self.log.append(text)
            if '"gateway_started"' in text:
                with contextlib.suppress(ValueError, TypeError):
                    port = json.loads(text).get("http_port")
                    self.http_port = int(port) if port is not None else 0

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig`` and wait; kill if it does not exit in time. Returns the exit status."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), timeout)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reader, 5)
        return self.proc.returncode
