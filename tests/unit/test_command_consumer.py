"""The consumer's decisions without a broker: invalid input, duplicates, deadlines, timeouts."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gateway.bus.consumer import CommandConsumer
from gateway.bus.idempotency import CommandLedger
from gateway.bus.journal import JournalEntry, JournalError
from gateway.bus.processing import CommandProcessor
from gateway.bus.topology import CommandNames
from gateway.runtime.watch import Watch
from gateway.schema.commands import CommandFailed, CommandResult, ErrorCode
from tests.conftest import wait_for


@dataclass
class FakeMessage:
    body: bytes
    message_id: str | None = "cmd-1"
    routing_key: str | None = "t.call.dial"
    redelivered: bool = False
    reply_to: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    nacked: int = 0

    async def nack(self, requeue: bool = True) -> None:
        self.nacked += 1


class FakeConnector:
    vendor = "yeastar"
    tenant = "t"

    def __init__(self, behaviour: Any = None) -> None:
        self.link = Watch("connected")
        self.calls = 0
        self.behaviour = behaviour

    async def execute(self, command: Any) -> dict[str, Any]:
        self.calls += 1
        if isinstance(self.behaviour, Exception):
            raise self.behaviour
        if self.behaviour == "slow":
            await asyncio.sleep(10)
        if isinstance(self.behaviour, asyncio.Event):  # the PBX answers when it is set
            await self.behaviour.wait()
        return {"call_id": "1.1"}


def consumer(ledger: CommandLedger | None = None, timeout: float = 5) -> CommandConsumer:
    return CommandConsumer(
        None,
        CommandNames(),
        {},
        ledger or CommandLedger(":memory:", 3600),
        None,  # type: ignore[arg-type]
        execute_timeout_s=timeout,
    )


DIAL = orjson.dumps({"command": "call.dial", "args": {"caller": "2001", "callee": "2002"}})


async def test_missing_command_id_is_invalid_and_dead_lettered() -> None:
    result, name, dead = await consumer().processor.process(
        "t", FakeConnector(), FakeMessage(DIAL, None)
    )
    assert dead and name is None and result.error and result.error.code == ErrorCode.INVALID
    assert "message_id" in result.error.message


async def test_duplicate_ids_execute_once_even_concurrently() -> None:
    c, connector = consumer(), FakeConnector()
    results = await asyncio.gather(
        *(c.processor.process("t", connector, FakeMessage(DIAL)) for _ in range(3))
    )
    assert connector.calls == 1
    assert len({r.model_dump_json() for r, _, _ in results}) == 1
    assert not any(dead for _, _, dead in results)


async def test_started_but_unfinished_id_is_not_repeated(tmp_path) -> None:
    path = tmp_path / "ledger.sqlite3"
    CommandLedger(path, 3600).claim("t", "cmd-1", "call.dial")  # a crash mid-execution
    connector = FakeConnector()
    result, _, dead = await consumer(CommandLedger(path, 3600)).processor.process(
        "t", connector, FakeMessage(DIAL)
    )
    assert connector.calls == 0 and not dead
    assert result.error and "outcome unknown" in result.error.message


async def test_past_deadline_is_expired_not_executed() -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    body = orjson.dumps(
        {"command": "call.dial", "args": {"caller": "2001", "callee": "2002", "deadline": past}}
    )
    connector = FakeConnector()
    result, _, _ = await consumer().processor.process("t", connector, FakeMessage(body))
    assert connector.calls == 0 and result.error and result.error.code == ErrorCode.EXPIRED


async def test_vendor_failure_and_timeout_become_results() -> None:
    failed = FakeConnector(CommandFailed(ErrorCode.NOT_FOUND, "gone", vendor_code=70130))
    result, _, dead = await consumer().processor.process("t", failed, FakeMessage(DIAL))
    assert not dead and result.error and result.error.vendor_code == "70130"
    result, _, _ = await consumer(timeout=0.05).processor.process(
        "t", FakeConnector("slow"), FakeMessage(DIAL, "cmd-2")
    )
    assert result.error and result.error.code == ErrorCode.TIMEOUT


async def test_redelivered_unknown_id_is_not_executed() -> None:
    """Taken by an instance that died before answering: it may have dialled already."""
    connector = FakeConnector()
    message = FakeMessage(DIAL, "cmd-9", redelivered=True)
    result, _, dead = await consumer().processor.process("t", connector, message)
    assert connector.calls == 0 and not dead
    assert result.error and "outcome unknown" in result.error.message


async def test_redelivered_known_id_answers_the_stored_result() -> None:
    c, connector = consumer(), FakeConnector()
    first, _, _ = await c.processor.process("t", connector, FakeMessage(DIAL, "cmd-3"))
    again, _, _ = await c.processor.process(
        "t", connector, FakeMessage(DIAL, "cmd-3", redelivered=True)
    )
    assert connector.calls == 1 and again == first and first.ok


class FakeJournal:
    """Records what the consumer journals; ``fail`` makes every write raise."""

    def __init__(self, fail: bool = False) -> None:
        self.records: list[tuple[str, str | None]] = []
        self.fail = fail

    async def record(
        self, tenant: str, command_id: str, command: str | None, result: Any, *_: Any
    ) -> None:
        await asyncio.sleep(0)  # a real write waits for the broker: let duplicates interleave
        if self.fail:
            raise JournalError("broker gone")
        self.records.append((command_id, "started" if result is None else "done"))


def journaled(journal: FakeJournal, ledger: CommandLedger | None = None) -> CommandConsumer:
    return CommandConsumer(
        None,
        CommandNames(),
        {},
        ledger or CommandLedger(":memory:", 3600),
        None,  # type: ignore[arg-type]
        journal=journal,  # type: ignore[arg-type]
    )


async def test_an_id_is_journaled_before_the_pbx_is_called_and_after() -> None:
    journal, connector = FakeJournal(), FakeConnector()
    result, _, _ = await journaled(journal).processor.process("t", connector, FakeMessage(DIAL))
    assert result.ok and connector.calls == 1
    assert journal.records == [("cmd-1", "started"), ("cmd-1", "done")]


async def test_concurrent_duplicates_with_a_journal_execute_once() -> None:
    journal, connector = FakeJournal(), FakeConnector()
    c = journaled(journal)
    results = await asyncio.gather(
        *(c.processor.process("t", connector, FakeMessage(DIAL)) for _ in range(3))
    )
    assert connector.calls == 1
    assert len({r.model_dump_json() for r, _, _ in results}) == 1


async def test_no_journal_write_no_execution_and_the_id_stays_free() -> None:
    ledger, connector = CommandLedger(":memory:", 3600), FakeConnector()
    failing = journaled(FakeJournal(fail=True), ledger)
    outcomes = await asyncio.gather(  # a duplicate arriving meanwhile is put back as well
        *(failing.processor.process("t", connector, FakeMessage(DIAL)) for _ in range(2)),
        return_exceptions=True,
    )
    assert all(isinstance(o, JournalError) for o in outcomes)  # nacked: they come back
    assert connector.calls == 0
    result, _, _ = await journaled(FakeJournal(), ledger).processor.process(
        "t", connector, FakeMessage(DIAL, redelivered=True)
    )
    assert result.ok and connector.calls == 1


async def test_with_a_journal_a_redelivered_unknown_id_runs() -> None:
    """Every start is journaled first, so an id nobody journaled was never sent to the PBX."""
    connector = FakeConnector()
    message = FakeMessage(DIAL, "cmd-9", redelivered=True)
    result, _, _ = await journaled(FakeJournal()).processor.process("t", connector, message)
    assert result.ok and connector.calls == 1


async def test_merged_records_of_another_owner_are_answered_not_run() -> None:
    ledger, connector = CommandLedger(":memory:", 3600), FakeConnector()
    done = CommandResult(command_id="cmd-5", ok=True, result={"call_id": "9.9"})
    now = time.time()
    merged = ledger.merge(
        "t",
        [
            JournalEntry("cmd-5", "call.dial", None, now - 2),
            JournalEntry("cmd-5", "call.dial", done, now - 1),
            JournalEntry("cmd-6", "call.dial", None, now),
            JournalEntry("cmd-7", "call.dial", None, now - 7200),  # past the retention
        ],
    )
    assert merged == 3
    assert ledger.merge("t", [JournalEntry("cmd-5", "call.dial", None, now)]) == 0
    assert ledger.newest("t") == now and ledger.newest("other") is None  # where a replay starts
    ledger.merge("t", [JournalEntry("cmd-8", "call.dial", None, now + 3600)])  # a clock ahead
    assert (ledger.newest("t") or 0) <= time.time()
    c = journaled(FakeJournal(), ledger)
    answered, _, _ = await c.processor.process("t", connector, FakeMessage(DIAL, "cmd-5"))
    unknown, _, _ = await c.processor.process("t", connector, FakeMessage(DIAL, "cmd-6"))
    fresh, _, _ = await c.processor.process("t", connector, FakeMessage(DIAL, "cmd-7"))
    assert answered == done
    assert unknown.error and "outcome unknown" in unknown.error.message
    assert fresh.ok and connector.calls == 1


async def test_a_command_arriving_as_the_link_drops_is_put_back_not_failed() -> None:
    c, connector = consumer(), FakeConnector()
    connector.link.set("disconnected")
    message = FakeMessage(DIAL, "cmd-8")
    await c._on_message("t", connector, message)  # type: ignore[arg-type]
    assert message.nacked == 1 and connector.calls == 0
    connector.link.set("connected")  # it comes back flagged redelivered: it never ran here
    result, _, _ = await c.processor.process(
        "t", connector, FakeMessage(DIAL, "cmd-8", redelivered=True)
    )
    assert result.ok and connector.calls == 1
    elsewhere = FakeMessage(DIAL, "cmd-10", redelivered=True)  # may have run on a dead instance
    connector.link.set("disconnected")
    await c._on_message("t", connector, elsewhere)  # type: ignore[arg-type]
    connector.link.set("connected")
    result, _, _ = await c.processor.process("t", connector, elsewhere)
    assert result.error and "outcome unknown" in result.error.message and connector.calls == 1


async def test_a_command_the_vendor_does_not_declare_is_unsupported_and_never_sent() -> None:
    processor = CommandProcessor(
        CommandLedger(":memory:", 3600), supported={"yeastar": frozenset({"call.hangup"})}
    )
    connector = FakeConnector()
    result, name, dead = await processor.process("t", connector, FakeMessage(DIAL, "cmd-u"))
    assert name == "call.dial" and not dead and connector.calls == 0
    assert result.error and result.error.code == ErrorCode.UNSUPPORTED
    assert "yeastar" in result.error.message
    hangup = orjson.dumps({"command": "call.hangup", "args": {"channel_id": "PJSIP/1-1"}})
    result, _, _ = await processor.process(
        "t", connector, FakeMessage(hangup, "cmd-h", routing_key="t.call.hangup")
    )
    assert result.ok and connector.calls == 1


async def test_expired_commands_label_metrics_with_known_values_only() -> None:
    """The routing key of an expired command is whatever its publisher chose: a flood of
    made-up names must not become a flood of metric series."""
    from prometheus_client import REGISTRY

    from gateway.schema.commands import CONTRACT_COMMANDS

    @dataclass
    class Expired:
        routing_key: str
        message_id: str = "cmd-x"
        reply_to: str | None = None
        acked: int = 0

        async def ack(self) -> None:
            self.acked += 1

    c = CommandConsumer(
        None,  # type: ignore[arg-type]
        CommandNames(),
        {"t": FakeConnector()},  # type: ignore[dict-item]
        CommandLedger(":memory:", 3600),
        None,  # type: ignore[arg-type]
    )

    async def no_reply(*_args: Any) -> None:
        return None

    c._reply = no_reply  # type: ignore[method-assign]

    def series() -> set[tuple[str, ...]]:
        return {
            (s.labels["tenant"], s.labels["command"])
            for metric in REGISTRY.collect()
            if metric.name == "gateway_commands"
            for s in metric.samples
            if s.name == "gateway_commands_total" and s.labels["outcome"] == "expired"
        }

    before = series()
    keys = [f"t.made-up-{n}" for n in range(50)] + [f"x{n}.call.dial" for n in range(50)]
    messages = [Expired(key) for key in [*keys, "t.call.dial"]]
    for message in messages:
        await c._on_expired(message)  # type: ignore[arg-type]
    assert all(m.acked == 1 for m in messages)
    assert "call.dial" in CONTRACT_COMMANDS.names
    known = {(t, n) for t in ("t", "unknown") for n in ("call.dial", "unknown")}
    assert series() - before <= known


class GatedJournal(FakeJournal):
    """Holds every "started" write until ``gate`` is set (a broker slow to confirm)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0

    async def record(
        self, tenant: str, command_id: str, command: str | None, result: Any, *rest: Any
    ) -> None:
        if result is None:
            self.waiting += 1
            await self.gate.wait()
        await super().record(tenant, command_id, command, result, *rest)


async def test_a_delivery_cancelled_before_the_pbx_call_is_run_once_not_unknown() -> None:
    """A channel closing cancels its deliveries' handlers: the command is not abandoned with
    its id "started" (which would answer its redelivery "outcome unknown" though the PBX never
    had it); it runs once, and the redelivery answers its result."""
    journal, connector = GatedJournal(), FakeConnector()
    c = journaled(journal)
    delivery = asyncio.create_task(c.processor.process("t", connector, FakeMessage(DIAL)))
    await wait_for(lambda: journal.waiting == 1)
    delivery.cancel()  # what aiormq does to a consumer's task when its channel closes
    await asyncio.gather(delivery, return_exceptions=True)
    assert connector.calls == 0
    journal.gate.set()
    result, _, _ = await c.processor.process(
        "t", connector, FakeMessage(DIAL, redelivered=True)
    )
    assert result.ok and connector.calls == 1


async def test_a_delivery_cancelled_during_the_pbx_call_answers_its_real_result() -> None:
    answer = asyncio.Event()
    connector = FakeConnector(answer)
    c = journaled(FakeJournal())
    delivery = asyncio.create_task(c.processor.process("t", connector, FakeMessage(DIAL)))
    await wait_for(lambda: connector.calls == 1)
    delivery.cancel()
    await asyncio.gather(delivery, return_exceptions=True)
    redelivered = asyncio.create_task(
        c.processor.process("t", connector, FakeMessage(DIAL, redelivered=True))
    )
    answer.set()
    result, _, _ = await asyncio.wait_for(redelivered, 5)
    assert result.ok and connector.calls == 1  # the first execution's result, not a second


async def test_stopped_before_the_pbx_call_the_id_is_free_and_runs_once_later() -> None:
    ledger, journal, connector = CommandLedger(":memory:", 3600), GatedJournal(), FakeConnector()
    c = journaled(journal, ledger)
    delivery = asyncio.create_task(c.processor.process("t", connector, FakeMessage(DIAL)))
    await wait_for(lambda: journal.waiting == 1)
    await c.processor.stop()  # the gateway stops before the PBX was called
    assert isinstance((await asyncio.gather(delivery, return_exceptions=True))[0], Exception)
    assert connector.calls == 0
    result, _, _ = await journaled(FakeJournal(), ledger).processor.process(
        "t", connector, FakeMessage(DIAL, redelivered=True)
    )
    assert result.ok and connector.calls == 1


async def test_stopped_during_the_pbx_call_the_outcome_is_unknown_and_not_repeated() -> None:
    ledger, connector = CommandLedger(":memory:", 3600), FakeConnector("slow")
    c = journaled(FakeJournal(), ledger)
    delivery = asyncio.create_task(c.processor.process("t", connector, FakeMessage(DIAL)))
    await wait_for(lambda: connector.calls == 1)
    await c.processor.stop()  # the PBX may have it
    assert isinstance((await asyncio.gather(delivery, return_exceptions=True))[0], Exception)
    result, _, _ = await journaled(FakeJournal(), ledger).processor.process(
        "t", connector, FakeMessage(DIAL, redelivered=True)
    )
    assert connector.calls == 1
    assert result.error and "outcome unknown" in result.error.message

