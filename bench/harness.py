"""What the benchmark suite (``bench/suite.py``) is built of: the fake PBX driven at full speed or
at a fixed rate, XSwitch messages over NATS, Meiqia's signed webhooks over HTTP, ``gateway run``
as a real process, a consumer that timestamps every event, and the raw aio-pika ceiling. Every
exchange, queue and NATS stream has a name of its own and is deleted after.

The consumer is kept lean on purpose (it shares the two cores with the broker and the gateway):
it consumes on the underlying aiormq channel with ``no_ack`` (no aio-pika ``IncomingMessage``
per event), takes the frame number out of the body with a bytes search (a full JSON parse only
when that fails) and counts arrivals instead of rescanning what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
import aiohttp
import aiormq.abc
import nats
import orjson
import yaml
from nats.aio.client import Client as Nats
from nats.js.errors import NotFoundError

from gateway.sim.meiqia.server import MeiqiaSimulator
from gateway.sim.xswitch.cli import XSwitchSimulator
from gateway.sim.xswitch.flows import CTRL
from gateway.sim.yeastar import YeastarSimulator

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
NATS_URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")
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


#: What precedes a bench frame's number in its event (compact JSON, as the gateway writes it).
_SEQ_MARK = b'"channel_id":"PJSIP/2002-'


def seq_of(body: bytes) -> int | None:
    """The frame number an event came from (``None`` for events of no bench frame).

    A bytes search for the extension's ``channel_id`` (the hot path: no JSON parse); should the
    body not look as expected (another serializer, spaces), a full parse decides."""
    at = body.find(_SEQ_MARK)
    if at >= 0:
        start = at + len(_SEQ_MARK)
        number = _hex(body, start, 8)
        if number is not None:
            return number
    return _seq_parsed(body)


def _hex(body: bytes, start: int, width: int) -> int | None:
    """The ``width`` hex digits at ``start`` that end a JSON string, else None."""
    digits = body[start : start + width]
    if len(digits) != width or body[start + width : start + width + 1] != b'"':
        return None
    if not digits.isalnum():  # int() would also take "+", "_" and spaces
        return None
    try:
        return int(digits, 16)
    except ValueError:
        return None


def _seq_parsed(body: bytes) -> int | None:
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
    """Arrival times (perf_counter) of the bench frames' events, by frame number; how many of
    the frames of ``expect`` (what :meth:`GatewayUnderTest.wait_received` waits for) arrived."""

    at: dict[int, float] = field(default_factory=dict)
    other: int = 0
    connected: int = 0  # gateway.connection events saying connected (among ``other``)
    expect: Collection[int] = range(0)
    hits: int = 0
    complete: asyncio.Event = field(default_factory=asyncio.Event)


class GatewayUnderTest:
    """A fake Yeastar PBX (in this process), ``gateway run`` (a child process, optionally under
    py-spy) subscribed to it, and a consumer of its events (in this process)."""

    vendor = "yeastar"
    #: The event type every bench frame becomes (others count as ``other``).
    bench_types: frozenset[str] = frozenset({"call.answered"})

    def __init__(
        self,
        *,
        full: bool,
        profile: Path | None = None,
        bus: dict[str, Any] | None = None,
        tree: Path | None = None,
        event_loop: str | None = None,
    ) -> None:
        self.full = full  # leases, commands and recovery on (the defaults) or off
        self.profile = profile
        self.bus = bus or {}  # more `bus` settings (e.g. coalesce_ms)
        self.tree = tree  # run the gateway of this source tree (an older revision, say)
        self.event_loop = event_loop  # the `event_loop` setting (None: the default)
        self.run = uuid.uuid4().hex[:8]
        self.tenant = f"bench-{self.run}"
        self.events_exchange = f"bench.events.{self.run}"
        self.commands_exchange = f"bench.commands.{self.run}"
        self.dir = Path(tempfile.mkdtemp(prefix="bench-gw-"))
        self.sim = YeastarSimulator(idle_timeout=3600, trap_rate=0.0, seed=1)
        self.received = Received()
        self.proc: asyncio.subprocess.Process | None = None
        self.gateway_pid: int | None = None
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._tag = ""
        self._replies: dict[str, asyncio.Future[float]] = {}
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self._underlay: aiormq.abc.AbstractChannel | None = None

    # --- what differs by vendor ----------------------------------------------------------------

    def _pbx(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "vendor": "yeastar",
            "base_url": self.sim.base_url,
            "client_id": self.sim.client_id,
            "client_secret": self.sim.client_secret,
            "timezone": "UTC",
        }

    async def _start_source(self) -> None:
        await self.sim.start()

    async def _stop_source(self) -> None:
        await self.sim.stop()

    def _ready(self) -> bool:
        """The gateway listens to the PBX (what it sends from now on reaches the gateway)."""
        return any(30011 in conn.topics for conn in self.sim._conns)

    def seq_of(self, body: bytes) -> int | None:
        return seq_of(body)

    def _http(self) -> dict[str, Any]:
        return {"enabled": False}

    # --- the gateway and the consumer ------------------------------------------------------------

    def _config(self) -> Path:
        settings: dict[str, Any] = {
            "bus": {"url": AMQP_URL, "events_exchange": self.events_exchange, **self.bus},
            "http": self._http(),
            "state_dir": str(self.dir / "state"),
            "shutdown_timeout_s": 30,
            "lease": {"enabled": self.full},
            "recovery": {"enabled": self.full},
            "commands": {"enabled": self.full, "exchange": self.commands_exchange},
            "pbxs": [self._pbx()],
        }
        if self.event_loop is not None:
            settings["event_loop"] = self.event_loop
        path = self.dir / "gateway.yaml"
        path.write_text(yaml.safe_dump(settings))
        return path

    async def start(self) -> None:
        await self._start_source()
        self._connection = await aio_pika.connect_robust(AMQP_URL)
        self.channel = await self._connection.channel(publisher_confirms=True)
        exchange = await self.channel.declare_exchange(
            self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await self.channel.declare_queue(f"bench.consumer.{self.tenant}", durable=True)
        await queue.bind(exchange, routing_key=f"{self.tenant}.#")
        # The consumer on a channel of its own, straight on aiormq: no IncomingMessage, no ack.
        consumer = await self._connection.channel()
        self._underlay = await consumer.get_underlay_channel()
        ok = await self._underlay.basic_consume(queue.name, self._on_delivery, no_ack=True)
        self._tag = ok.consumer_tag or ""
        command = self._command()
        if self.profile is not None:
            command = ["py-spy", "record", "-r", "200", "-f", "raw", "-o", str(self.profile)]
            command += ["--", *command_tail(self._config())]
        log = (self.dir / "gateway.log").open("wb")
        env = None
        if self.tree is not None:  # `python -m` puts the working folder first on the path
            env = {**os.environ, "PYTHONPATH": str(self.tree)}
        self.proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=log, env=env, cwd=self.tree
        )
        log.close()
        await self._until(self._ready, 30, "the gateway did not subscribe")
        self.gateway_pid = self.proc.pid
        if self.profile is not None:
            self.gateway_pid = child_of(self.proc.pid)
        await self._until(lambda: self.received.connected > 0, 10, "no gateway.connection event")

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "gateway.cli", "run", "--config", str(self._config())]

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

    async def _on_delivery(self, message: aiormq.abc.DeliveredMessage) -> None:
        now = time.perf_counter()
        received = self.received
        kind = message.header.properties.message_type
        seq = self.seq_of(message.body) if kind in self.bench_types else None
        if seq is None:
            received.other += 1
            if kind == "gateway.connection" and b'"state":"connected"' in message.body:
                received.connected += 1
            return
        at = received.at
        if seq in at:
            return
        at[seq] = now
        if seq in received.expect:
            received.hits += 1
            if received.hits >= len(received.expect):
                received.complete.set()

    async def wait_received(self, seqs: Collection[int], timeout: float) -> int:
        """Wait until every frame of ``seqs`` arrived as an event, or ``timeout`` passes without
        progress; how many did not arrive."""
        received = self.received
        received.expect = seqs
        received.hits = sum(1 for s in seqs if s in received.at)
        received.complete.clear()
        if received.hits >= len(seqs):
            received.complete.set()
        last, idle_since = received.hits, time.monotonic()
        try:
            while not received.complete.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(received.complete.wait(), min(timeout, 1.0))
                if received.hits != last:
                    last, idle_since = received.hits, time.monotonic()
                elif time.monotonic() - idle_since >= timeout:
                    break
                if self.proc is not None and self.proc.returncode is not None:
                    break
            return len(seqs) - received.hits
        finally:
            received.expect = range(0)

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
        try:
            await self._stop_source()
        finally:
            await self._delete_amqp()
            shutil.rmtree(self.dir, ignore_errors=True)  # config, state and log of this run

    async def _delete_amqp(self) -> None:
        if self._connection is None:
            return
        if self._underlay is not None and self._tag:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._underlay.basic_cancel(self._tag), 10)
        channel = await self._connection.channel()
        names = [f"bench.consumer.{self.tenant}", f"pbx.state.{self.tenant}"]
        cx = self.commands_exchange
        names += [f"{cx}.{self.tenant}", f"{cx}.{self.tenant}.ledger", f"{cx}.ledger"]
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


class FloorUnderTest(GatewayUnderTest):
    """``bench/floor.py`` in place of the gateway: the least relay of the same frames with the
    same libraries (WebSocket in, each frame published with a confirm), the floor of CPU per
    frame that the gateway's is compared with."""

    def _command(self) -> list[str]:
        sim = self.sim
        return [
            sys.executable,
            str(ROOT / "bench" / "floor.py"),
            sim.base_url,
            sim.client_id,
            sim.client_secret,
            AMQP_URL,
            self.events_exchange,
            self.tenant,
            self.event_loop or ("uvloop" if find_spec("uvloop") else "asyncio"),  # as `auto`
        ]


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
    gw: GatewayUnderTest, rate: float, duration: float, first: int, poisson: bool = False
) -> tuple[list[float], int]:
    """Frames at ``rate``/s for ``duration`` s: each one's latency (s) from the PBX writing it to
    the consumer receiving its event, and how many never arrived. Evenly spaced, or with
    ``poisson`` at random independent times (exponential gaps, as the frames of many PBXs
    arrive together; seeded, so every gateway gets the same times)."""
    ws = gw.socket()
    total = int(rate * duration)
    if poisson:
        gaps = random.Random(first).expovariate
        offsets = list(itertools.accumulate(gaps(rate) for _ in range(total)))
    else:
        offsets = [n / rate for n in range(total)]
    sent: dict[int, float] = {}
    started = time.perf_counter()
    n = 0
    while n < total:
        now = time.perf_counter() - started
        while n < total and offsets[n] <= now:  # whatever is due (sleep granularity: ~1 ms)
            seq = first + n
            text = frame(seq)
            sent[seq] = time.perf_counter()
            await ws.send_str(text)
            n += 1
        if n < total:
            await asyncio.sleep(max(0.0, started + offsets[n] - time.perf_counter()))
    lost = await gw.wait_received(range(first, first + total), timeout=15)
    at = gw.received.at
    return [at[s] - sent[s] for s in sent if s in at], lost


# --- XSwitch: channel events over NATS ----------------------------------------------------------

#: XSwitch bench calls: one inbound leg each (a trunk caller answered by the switch), three
#: ``Event.Channel`` messages (START, ANSWERED, DESTROY), each becoming exactly one event
#: (``call.ringing``, ``call.answered``, ``call.ended``). Messages go in blocks of XCALLS calls
#: (XCALLS STARTs, then their ANSWEREDs, then their DESTROYs), so XCALLS calls are live at a
#: time, as in the Yeastar stream; message ``seq`` is recovered from the leg's uuid (the call's
#: number) and the event's type (the phase).
XCALLS = 200
XPHASES = ("START", "ANSWERED", "DESTROY")
XTYPES = {"call.ringing": 0, "call.answered": 1, "call.ended": 2}
_XMSG = (
    '{{"jsonrpc":"2.0","method":"Event.Channel","params":{{"node_uuid":"xswitch-node-1",'
    '"uuid":"{uuid}","peer_uuid":"","direction":"inbound","state":"{state}",'
    '"cid_name":"0555010203","cid_number":"0555010203","dest_number":"88880000",'
    '"create_epoch":{created},"ring_epoch":0,"answer_epoch":{answered},"hangup_epoch":{ended},'
    '"answered":{is_answered},"cause":"{cause}","context":"public","params":{{}}}}}}'
)


def xcall_of(seq: int) -> tuple[int, int]:
    """(call number, phase) of XSwitch message ``seq``."""
    block, rest = divmod(seq, len(XPHASES) * XCALLS)
    phase, slot = divmod(rest, XCALLS)
    return block * XCALLS + slot, phase


def xseq(call: int, phase: int) -> int:
    block, slot = divmod(call, XCALLS)
    return (block * len(XPHASES) + phase) * XCALLS + slot


class XSwitchGatewayUnderTest(GatewayUnderTest):
    """``gateway run`` with one XSwitch tenant: the XCC REST simulator in this process (the
    configuration poller needs it; its node answers nothing here), the bench itself publishing
    ``Event.Channel`` messages on NATS as the node would, and the same consumer."""

    vendor = "xswitch"
    bench_types = frozenset(XTYPES)

    def __init__(self, *, full: bool, profile: Path | None = None, jetstream: str = "auto") -> None:
        super().__init__(full=full, profile=profile)
        self.jetstream = jetstream  # the gateway's setting; "auto" is its default
        self.xsim = XSwitchSimulator(
            nats_url=NATS_URL, prefix=f"from-bench{self.run}.", config_change_s=0.0, seed=1
        )
        self.subject = self.xsim.prefix + CTRL
        self.stream = f"XCC_{self.tenant}"
        self.nc: Nats | None = None
        self.uses_jetstream: bool | None = None  # what the gateway chose (a stream exists)
        # A uuid per call, unique to this run: <run>-0000-4000-8000-<call, 12 hex digits>.
        self._uuid_head = f"{self.run}-0000-4000-8000-"
        self._mark = b'"channel_id":"' + self._uuid_head.encode()

    def _pbx(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "vendor": "xswitch",
            "base_url": self.xsim.base_url,
            "dev_key": self.xsim.dev_key,
            "nats_url": NATS_URL,
            "subject_prefix": self.xsim.prefix,
            "jetstream": self.jetstream,
            "timezone": "UTC",
        }

    async def _start_source(self) -> None:
        await self.xsim.start()
        self.nc = await nats.connect(NATS_URL, name=f"bench-{self.run}", connect_timeout=10)

    def _ready(self) -> bool:
        return self.received.connected > 0  # subscribed, or the stream and consumer made

    async def start(self) -> None:
        await super().start()
        assert self.nc is not None
        try:
            await self.nc.jetstream(timeout=10).stream_info(self.stream)
            self.uses_jetstream = True
        except NotFoundError:
            self.uses_jetstream = False

    async def _stop_source(self) -> None:
        try:
            if self.nc is not None:
                with contextlib.suppress(NotFoundError):
                    await self.nc.jetstream(timeout=10).delete_stream(self.stream)
                await asyncio.wait_for(self.nc.close(), 10)
        finally:
            await self.xsim.stop()

    def message(self, seq: int) -> bytes:
        """The body of XSwitch message ``seq`` (compact JSON, as the node's Go encoder writes)."""
        call, phase = xcall_of(seq)
        created = 1_700_000_000 + call
        return _XMSG.format(
            uuid=f"{self._uuid_head}{call:012x}",
            state=XPHASES[phase],
            created=created,
            answered=created + 1 if phase else 0,
            ended=created + 2 if phase == 2 else 0,
            is_answered="true" if phase else "false",
            cause="NORMAL_CLEARING" if phase == 2 else "",
        ).encode()

    def seq_of(self, body: bytes) -> int | None:
        at = body.find(self._mark)
        if at < 0:
            return None
        call = _hex(body, at + len(self._mark), 12)
        if call is None:
            return None
        phase = XTYPES.get(_type_in(body))
        return None if phase is None else xseq(call, phase)

    def event_size(self) -> int:
        """Mean bytes of the events one block of bench messages becomes (the ceiling's size)."""
        from gateway.connectors.registry import plugins
        from gateway.schema.events import NormalizeContext, StreamMemory

        normalize = plugins()["xswitch"].normalize
        memory = StreamMemory()
        sizes = []
        for seq in range(len(XPHASES) * XCALLS):
            ctx = NormalizeContext(
                self.tenant, "xswitch", ZoneInfo("UTC"), datetime.now(UTC), False, memory
            )
            sizes += [len(event.to_json()) for event in normalize(self.message(seq).decode(), ctx)]
        return round(sum(sizes) / len(sizes))


def _type_in(body: bytes) -> str:
    """The event's ``type`` from its body (the consumer has it as the AMQP type too, but the
    body is what ``seq`` must agree with)."""
    at = body.find(b'"type":"')
    if at < 0:
        return ""
    end = body.find(b'"', at + 8)
    return body[at + 8 : end].decode("ascii", "replace")


async def publish_nats(gw: XSwitchGatewayUnderTest, events: int, first: int) -> tuple[float, int]:
    """Publish ``events`` XSwitch messages on NATS as fast as the client takes them (core NATS
    publish; with JetStream the gateway's stream captures them); (events/s end to end, lost)."""
    assert gw.nc is not None
    nc, subject = gw.nc, gw.subject
    bodies = [gw.message(first + n) for n in range(events)]
    started = time.perf_counter()
    for body in bodies:
        await nc.publish(subject, body)
    await nc.flush(timeout=30)
    lost = await gw.wait_received(range(first, first + events), timeout=30)
    arrivals = [gw.received.at[s] for s in range(first, first + events) if s in gw.received.at]
    elapsed = max(arrivals) - started if arrivals else float("nan")
    return (events - lost) / elapsed, lost


# --- Meiqia: signed CDR webhooks over HTTP --------------------------------------------------------

#: Requests in flight at most when the bench posts Meiqia webhooks (one aiohttp ClientSession,
#: a connection pool of this size, keep-alive).
MEIQIA_CONCURRENCY = 64
MEIQIA_TZ = "Asia/Shanghai"


class MeiqiaGatewayUnderTest(GatewayUnderTest):
    """``gateway run`` with one Meiqia tenant taking signed webhooks on its HTTP server (loopback,
    a free port): the Meiqia REST simulator in this process for the records poll (quiet: no
    calls of its own; the gateway polls once at start, then every hour, and seats not at all),
    the bench itself posting ``cdr.hangup`` deliveries as Meiqia would, and the same consumer.

    Each delivery carries one complete ``Cdr`` (an answered outbound call with every field a
    ``records`` record has), so the gateway publishes the webhook's own reading (a thin one
    would make it look the call up in ``records`` first). Its ``call_uuid``, unique to the run,
    carries the delivery's sequence number; so does its delivery ``id``."""

    vendor = "meiqia"
    bench_types = frozenset({"cdr.created"})

    def __init__(self, *, full: bool, profile: Path | None = None) -> None:
        super().__init__(full=full, profile=profile)
        self.msim = MeiqiaSimulator(seed=1, tz=MEIQIA_TZ)
        self.secret = f"whsec-bench-{uuid.uuid4().hex}"
        self.url = ""  # the webhook route, once the gateway says which port it listens on
        self._zone = ZoneInfo(MEIQIA_TZ)
        self._epoch = int(time.time()) - 86400  # the calls started yesterday, one a second
        # A call_uuid per delivery, unique to this run: <run>-0000-4000-8000-<seq, 12 hex>.
        self._uuid_head = f"{self.run}-0000-4000-8000-"
        self._mark = b'"call_id":"' + self._uuid_head.encode()

    def _pbx(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "vendor": "meiqia",
            "base_url": self.msim.base_url,
            "token": self.msim.token,
            "webhook_secret": self.secret,
            "records_poll_interval_s": 3600.0,  # the first poll at start, none during the runs
            "seats_poll_interval_s": 0,  # seat state not polled
            "timezone": MEIQIA_TZ,
        }

    def _http(self) -> dict[str, Any]:
        return {"enabled": True, "host": "127.0.0.1", "port": 0}  # a free port, from its log

    async def _start_source(self) -> None:
        await self.msim.start()

    async def _stop_source(self) -> None:
        await self.msim.stop()

    def _ready(self) -> bool:
        return self.received.connected > 0  # the first records poll went through

    async def start(self) -> None:
        await super().start()
        await self._until(lambda: self._listening() is not None, 10, "no http_listening")
        port = self._listening()
        self.url = f"http://127.0.0.1:{port}/webhooks/meiqia/{self.tenant}"

    def _listening(self) -> int | None:
        """The port of the gateway's ``http_listening`` log line (JSON lines on stderr)."""
        with contextlib.suppress(OSError):
            for line in (self.dir / "gateway.log").read_bytes().splitlines():
                if b"http_listening" not in line:
                    continue
                with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                    port = orjson.loads(line).get("port")
                    if isinstance(port, int) and port > 0:
                        return port
        return None

    def call_uuid(self, seq: int) -> str:
        return f"{self._uuid_head}{seq:012x}"

    def delivery(self, seq: int) -> bytes:
        """The body of webhook ``seq``: a ``cdr.hangup`` delivery as the simulator's sender
        writes it (compact JSON), its ``Cdr`` shaped as a ``records`` record."""
        call = self.call_uuid(seq)
        started = self._epoch + seq % 86400
        stamp = datetime.fromtimestamp(started, self._zone).isoformat()
        ended = datetime.fromtimestamp(started + 128, self._zone).isoformat()
        envelope = {
            "id": f"sub_bench{self.run}_{seq}",
            "event": "cdr.hangup",
            "enterprise_token": self.msim.enterprise,
            "created_at": int(time.time()),  # within the replay window
            "cdr": {
                "agent_evaluated": 5,
                "agent_id": 1 + seq % 4,
                "agent_phone": f"800{1 + seq % 4}",
                "answer_way": "sip",
                "call_type": "外呼",
                "call_uuid": call,
                "customer_attribution": "上海",
                "customer_duration": 120,
                "customer_phone": f"13{seq % 10**9:09d}",
                "duration": 128,
                "end_time": ended,
                "hangup_disposition": "客户挂机",
                "queue_wait_time": 0,
                "record_path": f"https://recordings.meiqia.example/{call}.mp3",
                "start_time": stamp,
                "states": "接听",
                "trunk_number": "02166668888",
                "trunk_number_name": "上海客服",
                "wait_time": 8,
                "user_data": "",
            },
        }
        return orjson.dumps(envelope)

    def headers(self, body: bytes) -> dict[str, str]:
        """Signed as Meiqia signs: SHA-1 (hex) of the raw body followed by the secret."""
        signature = hashlib.sha1(body + self.secret.encode()).hexdigest()
        return {"Content-Type": "application/json; charset=utf-8", "Meiqia-Signature": signature}

    def seq_of(self, body: bytes) -> int | None:
        at = body.find(self._mark)
        if at < 0:
            return None
        return _hex(body, at + len(self._mark), 12)

    def event_size(self, samples: int = 200) -> int:
        """Mean bytes of the events the bench deliveries become (the ceiling's size)."""
        from gateway.connectors.registry import plugins
        from gateway.schema.events import NormalizeContext

        normalize = plugins()["meiqia"].normalize
        sizes = []
        for seq in range(samples):
            ctx = NormalizeContext(self.tenant, "meiqia", self._zone, datetime.now(UTC))
            sizes += [len(e.to_json()) for e in normalize(self.delivery(seq).decode(), ctx)]
        return round(sum(sizes) / len(sizes))


@dataclass
class Posted:
    """What :func:`post_webhooks` measured."""

    rate: float  # events/s end to end: first request sent -> last event received
    lost: int  # answered 2xx, event never received
    failed: int  # answered non-2xx, or not at all
    statuses: dict[str, int]  # answers by status ("0": no answer)
    answered_rate: float  # webhooks answered per second (first sent -> last answered)
    answer_ms: dict[str, float]  # request -> answer: p50, p99, max (ms)


async def post_webhooks(
    gw: MeiqiaGatewayUnderTest,
    events: int,
    first: int,
    concurrency: int = MEIQIA_CONCURRENCY,
    request_timeout: float = 30.0,
) -> Posted:
    """Post ``events`` signed webhooks (bodies and signatures made before the clock starts) as
    fast as the gateway answers them, ``concurrency`` in flight on one ClientSession; then wait
    for the events of those answered 2xx."""
    bodies = [gw.delivery(first + n) for n in range(events)]
    headers = [gw.headers(body) for body in bodies]
    statuses: Counter[int] = Counter()
    accepted: list[int] = []
    answer_s: list[float] = []
    last_answer = 0.0
    todo = iter(range(events))  # shared by the workers: each takes the next one

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal last_answer
        for n in todo:
            sent = time.perf_counter()
            try:
                async with session.post(gw.url, data=bodies[n], headers=headers[n]) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            last_answer = time.perf_counter()
            answer_s.append(last_answer - sent)
            statuses[status] += 1
            if 200 <= status < 300:
                accepted.append(first + n)

    connector = aiohttp.TCPConnector(limit=concurrency)
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=request_timeout),
    )
    started = time.perf_counter()
    try:
        # Every request is bounded, and so is the whole: at least 20 answers/s, or give up
        # (what is not answered by then counts as failed, status 0).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(120 + events / 20):
                await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    finally:
        await session.close()
    if missing := events - sum(statuses.values()):
        statuses[0] += missing  # not sent, or not answered before the whole gave up
    failed = events - len(accepted)
    expect: Collection[int] = range(first, first + events) if not failed else frozenset(accepted)
    lost = await gw.wait_received(expect, timeout=30)
    at = gw.received.at
    arrivals = [at[s] for s in expect if s in at]
    elapsed = max(arrivals) - started if arrivals else float("nan")
    return Posted(
        rate=(len(expect) - lost) / elapsed,
        lost=lost,
        failed=failed,
        statuses={str(code): count for code, count in sorted(statuses.items())},
        answered_rate=(events - statuses[0]) / (last_answer - started) if last_answer else 0.0,
        answer_ms={
            "p50_ms": percentile(answer_s, 0.50) * 1000,
            "p99_ms": percentile(answer_s, 0.99) * 1000,
            "max_ms": max(answer_s) * 1000 if answer_s else float("nan"),
        },
    )
