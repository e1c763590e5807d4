"""RabbitMQ nodes the test suite (and the scale bench) starts for itself.

Tests that stop, restart or alarm a broker, the cluster test and the scale bench must never touch
the machine's broker on 5672 (others use it). A :class:`RabbitNode` is a separate
``rabbitmq-server`` with its own node name, AMQP and distribution ports, data and log folders
under a temporary directory, and its own Erlang cookie (``HOME`` points into that directory), so
its ``rabbitmqctl`` cannot reach the machine's node even by mistake. :func:`start_cluster` joins
several into one cluster with ``rabbitmqctl join_cluster``. Everything is removed by
:meth:`RabbitNode.destroy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_dist_port() -> int:
    """A port below 55535 whose +20000 (the CLI's distribution port range) is also unlikely in
    use; RabbitMQ needs the distribution port free, not one the OS hands out later."""
    for _ in range(50):
        port = free_port()
        if port < 45000:
            return port
    return free_port()


class RabbitNode:
    """One RabbitMQ node on loopback with everything of its own; ``await start()``/``destroy()``."""

    def __init__(self, name: str, base: Path, cookie: str) -> None:
        self.name = name
        self.node = f"{name}@localhost"
        self.base = base
        self.port = free_port()
        self.dist_port = _free_dist_port()
        self.home = base / "home"
        self._cookie = cookie

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        conf = self.base / "rabbitmq.conf"
        env_file = self.base / "rabbitmq-env.conf"
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(conf.with_suffix("")),
            "RABBITMQ_CONF_ENV_FILE": str(env_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_ENABLED_PLUGINS": "",
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _prepare(self) -> None:
        for folder in (self.home, self.base / "mnesia", self.base / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(self._cookie)
        cookie.chmod(0o400)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            "log.console = false\n"
            "log.file.level = warning\n"
            # A test node is small and short-lived: no disk alarm on a busy CI disk.
            "disk_free_limit.absolute = 50MB\n"
        )
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[].\n")

    def ctl_sync(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        done = subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-q", "-n", self.node, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node}: {done.stderr}")
        return done.stdout.strip()

    async def ctl(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        return await asyncio.to_thread(self.ctl_sync, *args, timeout=timeout, check=check)

    def start_sync(self) -> None:
        """Start the node detached and wait until it runs the ``rabbit`` application."""
        self._prepare()
        subprocess.run(
            [str(RABBIT_BIN / "rabbitmq-server"), "-detached"],
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=True,
        )
        self.ctl_sync("wait", "--timeout", str(START_TIMEOUT_S), str(self.base / "pid"))
        self.ctl_sync("await_startup", "--timeout", str(START_TIMEOUT_S), timeout=150)

    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    async def await_startup(self) -> None:
        await self.ctl("await_startup", "--timeout", str(START_TIMEOUT_S), timeout=150)

    async def stop_app(self) -> None:
        await self.ctl("stop_app", timeout=120)

    async def start_app(self) -> None:
        await self.ctl("start_app", timeout=120)
        await self.await_startup()

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.base / "pid").read_text().strip())
        return None

    def rss_bytes(self) -> int:
        """The node's resident memory (its ``beam.smp`` process), 0 when not running."""
        pid = self.pid()
        if pid is None:
            return 0
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def destroy_sync(self) -> None:
        """Stop the node (bounded), kill it if needed, remove its folders."""
        pid = self.pid()
        with contextlib.suppress(Exception):
            self.ctl_sync("stop", timeout=60, check=False)
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, 0)  # still there after ``stop``: kill this node's own process
                os.kill(pid, 9)
        shutil.rmtree(self.base, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.base.parent.rmdir()  # the folder of its group, once empty

    async def destroy(self) -> None:
        await asyncio.to_thread(self.destroy_sync)


def new_nodes(count: int, prefix: str = "gwtest") -> list[RabbitNode]:
    """``count`` nodes sharing one fresh cookie, each in its own temporary folder."""
    cookie = secrets.token_hex(20).upper()
    tag = uuid.uuid4().hex[:6]
    root = Path(tempfile.mkdtemp(prefix=f"{prefix}-{tag}-"))
    return [RabbitNode(f"{prefix}{tag}{n}", root / f"n{n}", cookie) for n in range(count)]


def start_node(prefix: str = "gwtest") -> RabbitNode:
    node = new_nodes(1, prefix)[0]
    try:
        node.start_sync()
    except BaseException:
        node.destroy_sync()
        raise
    return node


def start_cluster(size: int = 3, prefix: str = "gwclu") -> list[RabbitNode]:
    """``size`` nodes, started side by side, the others joined to the first."""
    nodes = new_nodes(size, prefix)
    try:
        with ThreadPoolExecutor(size) as pool:
            list(pool.map(RabbitNode.start_sync, nodes))
        for node in nodes[1:]:
            node.ctl_sync("stop_app", timeout=120)
            node.ctl_sync("join_cluster", nodes[0].node, timeout=120)
            node.ctl_sync("start_app", timeout=120)
            node.ctl_sync("await_startup", "--timeout", str(START_TIMEOUT_S), timeout=150)
    except BaseException:
        for node in nodes:
            node.destroy_sync()
        raise
    return nodes


def destroy_all(nodes: list[RabbitNode]) -> None:
    for node in nodes:
        node.destroy_sync()
    if nodes:
        shutil.rmtree(nodes[0].base.parent, ignore_errors=True)
