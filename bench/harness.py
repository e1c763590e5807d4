"""What the benchmark suite (``bench/suite.py``) is built of: the fake PBX driven at full speed or
at a fixed rate, ``gateway run`` as a real process, a consumer that timestamps every event, and
the raw aio-pika ceiling. Every exchange and queue has a name of its own and is deleted after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import yaml

from gateway.sim.yeastar import YeastarSimulator

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ROOT = Path(__file__).resolve().parent.parent

#: One 30011 report (manual line 17426: 2002 calls 5503301, answered). ``call_id`` cycles over
#: CALLS live calls; the extension's ``channel_id`` carries the frame's sequence number so the
#: consumer can tell which frame an event came from.
CALLS = 200
_MSG = (
    '{{"call_id": "1648801160.{call}", "members": [{{"extension": {{"number": "2002", '
    '"channel_id": "PJSIP/2002-{seq:08x}", "member_status": "ANSWERED", "call_path": " "}}}}, '
    '{{"outbound": {{"from": "2002", "to": "5503301", "trunk_name": "peer-to-41", '
    '"channel_id": "PJSIP/trunk-peer-to-41-endpoint-00000050", "member_status": "ANSWER", '
    '"call_path": " "}}}}]}}'
)


def frame(seq: int) -> str:
    """The WebSocket text of 30011 number ``seq`` (as the PBX sends it: ``msg`` is a string)."""
    msg = _MSG.format(call=seq % CALLS, seq=seq)
    return orjson.dumps({"type": 30011, "sn": "3631A2124XXX", "msg": msg}).decode()


def seq_of(body: bytes) -> int | None:
    """The frame number an event came from (``None`` for events of no bench frame)."""
    try:
        members = orjson.loads(body)["data"]["members"]
        return int(members[0]["channel_id"].rsplit("-", 1)[1], 16)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        return None


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


# --- the ceiling -------------------------------------------------------------------------------


async def broker_ceiling(events: int, size: int, window: int = 256) -> float:
    """Raw aio-pika: ``events`` persistent messages of ``size`` bytes, publisher confirms,
    ``window`` in flight, to a topic exchange bound to one durable queue. Messages/s."""
    name = f"bench.ceiling.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(exchange, routing_key="#")
        body = b"x" * size
        slots = asyncio.Semaphore(window)
        tasks: set[asyncio.Task[Any]] = set()

        def done(task: asyncio.Task[Any]) -> None:
            tasks.discard(task)
            slots.release()

        started = time.perf_counter()
        for n in range(events):
            await slots.acquire()
            message = aio_pika.Message(
                body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(n)
            )
            task = asyncio.create_task(exchange.publish(message, routing_key="bench.call.x"))
            tasks.add(task)
            task.add_done_callback(done)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        await queue.delete(if_unused=False, if_empty=False)
        await exchange.delete()
        return events / elapsed
    finally:
        await connection.close()


# --- the gateway under test ---------------------------------------------------------------------


@dataclass
class Received:
    """Arrival times (perf_counter) of the bench frames' events, by frame number."""

    at: dict[int, float] = field(default_factory=dict)
    other: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class GatewayUnderTest:
    """A fake Yeastar PBX (in this process), ``gateway run`` (a child process, optionally under
    py-spy) subscribed to it, and a consumer of its events (in this process)."""

    def __init__(self, *, full: bool, profile: Path | None = None) -> None:
        self.full = full  # leases, commands and recovery on (the defaults) or off
        self.profile = profile
        run = uuid.uuid4().hex[:8]
        self.tenant = f"bench-{run}"
        self.events_exchange = f"bench.events.{run}"
        self.commands_exchange = f"bench.commands.{run}"
        self.dir = Path(tempfile.mkdtemp(prefix="bench-gw-"))
        self.sim = YeastarSimulator(idle_timeout=3600, trap_rate=0.0, seed=1)
        self.received = Received()
        self.proc: asyncio.subprocess.Process | None = None
        self.gateway_pid: int | None = None
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._tag = ""
        self._replies: dict[str, asyncio.Future[float]] = {}
        self.channel: aio_pika.abc.AbstractChannel | None = None

    def _config(self) -> Path:
        settings: dict[str, Any] = {
            "bus": {"url": AMQP_URL, "events_exchange": self.events_exchange},
            "http": {"enabled": False},
            "state_dir": str(self.dir / "state"),
            "shutdown_timeout_s": 30,
            "lease": {"enabled": self.full},
            "recovery": {"enabled": self.full},
            "commands": {"enabled": self.full, "exchange": self.commands_exchange},
            "pbxs": [
                {
                    "tenant": self.tenant,
                    "vendor": "yeastar",
                    "base_url": self.sim.base_url,
                    "client_id": self.sim.client_id,
                    "client_secret": self.sim.client_secret,
                    "timezone": "UTC",
                }
            ],
        }
        path = self.dir / "gateway.yaml"
        path.write_text(yaml.safe_dump(settings))
        return path

    async def start(self) -> None:
        await self.sim.start()
        self._connection = await aio_pika.connect_robust(AMQP_URL)
        self.channel = await self._connection.channel(publisher_confirms=True)
        await self.channel.set_qos(prefetch_count=2000)
        exchange = await self.channel.declare_exchange(
            self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._queue = await self.channel.declare_queue(
            f"bench.consumer.{self.tenant}", durable=True
        )
        await self._queue.bind(exchange, routing_key=f"{self.tenant}.#")
        self._tag = await self._queue.consume(self._on_event, no_ack=True)
        command = [sys.executable, "-m", "gateway.cli", "run", "--config", str(self._config())]
        if self.profile is not None:
            command = ["py-spy", "record", "-r", "200", "-f", "raw", "-o", str(self.profile)]
            command += ["--", *command_tail(self._config())]
        log = (self.dir / "gateway.log").open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=log
        )
        log.close()
        await self._until(self._subscribed, 30, "the gateway did not subscribe")
        self.gateway_pid = self.proc.pid
        if self.profile is not None:
            self.gateway_pid = child_of(self.proc.pid)
        await self._until(lambda: self.received.other > 0, 10, "no gateway.connection event")

    def _subscribed(self) -> bool:
        return any(30011 in conn.topics for conn in self.sim._conns)

    async def _until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(f"gateway exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "gateway.log").read_text()[-3000:]
        return ""

    async def _on_event(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        now = time.perf_counter()
        seq = seq_of(message.body) if message.type == "call.answered" else None
        if seq is None:
            self.received.other += 1
        else:
            self.received.at.setdefault(seq, now)
        self.received.changed.set()

    async def wait_received(self, seqs: range, timeout: float) -> int:
        """Wait until every frame of ``seqs`` arrived as an event, or ``timeout`` passes without
        progress; how many did not arrive."""
        at = self.received.at
        missing = [s for s in seqs if s not in at]
        while missing:
            self.received.changed.clear()
            try:
                await asyncio.wait_for(self.received.changed.wait(), timeout)
            except TimeoutError:
                break
            missing = [s for s in missing if s not in at]
        return len(missing)

    def socket(self) -> Any:
        conn = next(c for c in self.sim._conns if 30011 in c.topics)
        return conn.ws

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.gateway_pid or self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self.sim.stop()
        if self._connection is not None:
            if self._queue is not None and self._tag:
                with contextlib.suppress(Exception):
                    await self._queue.cancel(self._tag)
            channel = await self._connection.channel()
            names = [f"bench.consumer.{self.tenant}", f"pbx.state.{self.tenant}"]
            cx = self.commands_exchange
            names += [f"{cx}.{self.tenant}", f"{cx}.{self.tenant}.ledger"]
            names += [f"{cx}.dead", f"{cx}.expired"]
            for name in names:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
            for name in (self.events_exchange, cx, f"{cx}.dlx"):
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(name)
            await self._connection.close()

    # --- commands --------------------------------------------------------------------------

    async def command_round_trips(self, rate: float, duration: float) -> tuple[list[float], int]:
        """``call.query`` at ``rate``/s for ``duration`` s through the bus to the PBX and back:
        round trips (s) of those answered ok, and how many were not."""
        assert self.channel is not None
        replies = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        pending: dict[str, tuple[float, asyncio.Future[float]]] = {}
        failed = 0

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal failed
            entry = pending.pop(message.correlation_id or "", None)
            if entry is not None:
                if not orjson.loads(message.body).get("ok"):
                    failed += 1
                entry[1].set_result(time.perf_counter() - entry[0])

        tag = await replies.consume(on_reply, no_ack=True)
        exchange = await self.channel.get_exchange(self.commands_exchange)
        body = orjson.dumps({"command": "call.query", "args": {"direction": "inbound"}})
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[float]] = []
        total = int(rate * duration)
        started = time.perf_counter()
        sends: set[asyncio.Task[Any]] = set()
        for n in range(total):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            command_id = str(uuid.uuid4())
            future: asyncio.Future[float] = loop.create_future()
            pending[command_id] = (time.perf_counter(), future)
            futures.append(future)
            message = aio_pika.Message(
                body,
                content_type="application/json",
                message_id=command_id,
                correlation_id=command_id,
                reply_to=replies.name,
                expiration=30,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            task = asyncio.create_task(
                exchange.publish(message, routing_key=f"{self.tenant}.call.query")
            )
            sends.add(task)
            task.add_done_callback(sends.discard)
        done, not_done = await asyncio.wait(futures, timeout=30)
        for future in not_done:
            future.cancel()
        rtts = [f.result() for f in done]
        await replies.cancel(tag)
        await replies.delete(if_unused=False, if_empty=False)
        return rtts, failed + len(not_done)


def child_of(pid: int) -> int:
    """The process py-spy started (the gateway itself)."""
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return int(children.read().split()[0])


def command_tail(config: Path) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)]


# --- driving the fake PBX -----------------------------------------------------------------------


async def blast(gw: GatewayUnderTest, events: int, first: int) -> tuple[float, int]:
    """Send ``events`` frames as fast as the socket takes them; (events/s end to end, lost)."""
    ws = gw.socket()
    texts = [frame(first + n) for n in range(events)]
    started = time.perf_counter()
    for text in texts:
        await ws.send_str(text)
    lost = await gw.wait_received(range(first, first + events), timeout=30)
    arrivals = [gw.received.at[s] for s in range(first, first + events) if s in gw.received.at]
    elapsed = max(arrivals) - started if arrivals else float("nan")
    return (events - lost) / elapsed, lost


async def paced(
    gw: GatewayUnderTest, rate: float, duration: float, first: int
) -> tuple[list[float], int]:
    """Frames at ``rate``/s for ``duration`` s: each one's latency (s) from the PBX writing it to
    the consumer receiving its event, and how many never arrived."""
    ws = gw.socket()
    total = int(rate * duration)
    sent: dict[int, float] = {}
    started = time.perf_counter()
    n = 0
    while n < total:
        now = time.perf_counter()
        due = min(total, int((now - started) * rate) + 1)
        while n < due:  # catch up whatever is due (sleep granularity is ~1 ms)
            seq = first + n
            text = frame(seq)
            sent[seq] = time.perf_counter()
            await ws.send_str(text)
            n += 1
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
    lost = await gw.wait_received(range(first, first + total), timeout=15)
    at = gw.received.at
    return [at[s] - sent[s] for s in sent if s in at], lost
