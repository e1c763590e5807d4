"""Shared fixtures: the real local RabbitMQ, unique names, condition waits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from aio_pika.abc import AbstractRobustConnection

#: Fixtures of the integration suite (sims, a running gateway, a command bus), shared by the
#: shared integration tests, each vendor's tests and the vendor contract test.
pytest_plugins = ["tests.integration.fixtures"]

AMQP_URL = os.environ.get("GATEWAY_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")

REPO_ROOT = Path(__file__).resolve().parents[1]

#: The test-only vendor ``fakepbx`` (tests/fakepbx), registered the way a third party ships a
#: vendor: an entry point of its own distribution, found by ``importlib.metadata``.
_TEST_VENDORS = {
    "METADATA": "Metadata-Version: 2.1\nName: fakepbx-tests\nVersion: 0.0\n",
    "entry_points.txt": "[pbx_gateway.vendors]\nfakepbx = tests.fakepbx.plugin:PLUGIN\n",
}
_registered: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Register the test vendors for the whole session, before collection (the contract test
    is parametrized over ``registry.plugins()``; a session fixture would run too late for
    that). ``sys.path`` serves this process, ``PYTHONPATH`` the ``gateway`` subprocesses."""
    from gateway.connectors import registry

    folder = tempfile.mkdtemp(prefix="pbx-test-vendors-")
    info = Path(folder) / "fakepbx_tests-0.0.dist-info"
    info.mkdir()
    for name, text in _TEST_VENDORS.items():
        (info / name).write_text(text)
    _registered["folder"] = folder
    _registered["PYTHONPATH"] = os.environ.get("PYTHONPATH")
    sys.path.insert(0, folder)
    inherited = [_registered["PYTHONPATH"]] if _registered["PYTHONPATH"] else []
    os.environ["PYTHONPATH"] = os.pathsep.join([folder, str(REPO_ROOT), *inherited])
    registry.refresh()


#: Fixtures that reach a service of the machine (RabbitMQ, the NATS server) or start a broker node:
#: a test using one must carry the ``integration`` marker, so that ``-m "not integration"`` runs
#: without the services. Tests that reach a service otherwise (``running_gateway``, a gateway
#: process, PostgreSQL) carry the marker themselves.
SERVICE_FIXTURES = frozenset({"amqp", "broker_node", "collector", "command_bus", "xsim"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to run a test that uses a service fixture without the ``integration`` marker."""
    unmarked = [
        f"{item.nodeid} (uses {', '.join(sorted(SERVICE_FIXTURES & set(fixtures)))})"
        for item in items
        if (fixtures := getattr(item, "fixturenames", ()))
        and SERVICE_FIXTURES & set(fixtures)
        and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests that need a service must be marked @pytest.mark.integration: "
            + "; ".join(unmarked)
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    """Undo :func:`pytest_configure`."""
    if "folder" not in _registered:
        return
    from gateway.connectors import registry

    folder = _registered.pop("folder") or ""
    previous = _registered.pop("PYTHONPATH")
    with contextlib.suppress(ValueError):
        sys.path.remove(folder)
    if previous is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = previous
    shutil.rmtree(folder, ignore_errors=True)
    registry.refresh()


def gateway_cli(
    *args: str, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``gateway ARGS...`` in a fresh process (as users run it), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll ``condition`` until true; fail the test with a clear message after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            result = condition()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return
            await asyncio.sleep(interval)


_UNIQUES: set[str] = set()


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session for a vendor client under test, closed afterwards."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def unique() -> str:
    value = uuid.uuid4().hex[:10]
    _UNIQUES.add(value)
    return value


@pytest.fixture(scope="session", autouse=True)
def _leave_no_queues_behind() -> Iterator[None]:
    """Gateways under test declare durable per-tenant queues (commands, ledger stream, shared
    state, leases); at the end, delete every queue named after a tenant this session made up."""
    yield
    if not _UNIQUES:
        return
    try:
        listed = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return
    names = [n for n in listed if any(u in n for u in _UNIQUES)]
    if names:
        with contextlib.suppress(Exception):  # tidying up must never fail the run
            asyncio.run(_delete_queues(names))


async def _delete_queues(names: list[str]) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        for name in names:
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
            with contextlib.suppress(Exception):
                await channel.close()
    finally:
        await connection.close()


@pytest.fixture
async def amqp() -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        yield connection
    finally:
        await connection.close()
