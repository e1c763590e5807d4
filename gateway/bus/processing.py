"""The command path's decisions, without AMQP: validate -> allowed? -> supported? -> ledger ->
deadline -> execute. The consumer (:mod:`gateway.bus.consumer`) feeds it deliveries and does the
replying, acking and dead-lettering; tests drive it directly.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.bus.idempotency import CommandLedger, Sender, fingerprint
from gateway.bus.journal import CommandJournal, JournalError
from gateway.bus.policy import (
    DEFAULT_POLICY,
    DIRECT_REPLY_TO,
    CommandPolicy,
    reply_allowed,
    returns_secrets,
)
from gateway.connectors.base import Connector
from gateway.logging import get_logger
from gateway.schema.commands import (
    CONTRACT_COMMANDS,
    CommandCatalog,
    CommandError,
    CommandFailed,
    CommandInvalid,
    CommandModel,
    CommandResult,
    ErrorCode,
)

#: Ids put back unstarted while a link was down, remembered so their redelivery is not "unknown".
PUT_BACK_MEMORY = 10_000


class Delivery(Protocol):
    """What a decision needs of one delivered command message."""

    @property
    def message_id(self) -> str | None: ...

    @property
    def body(self) -> bytes: ...

    @property
    def routing_key(self) -> str | None: ...

    @property
    def redelivered(self) -> bool | None: ...

    @property
    def reply_to(self) -> str | None: ...

    @property
    def user_id(self) -> str | None: ...

    @property
    def app_id(self) -> str | None: ...


class CommandInterrupted(RuntimeError):
    """The gateway stopped the command's execution (shutdown); the delivery is put back."""


def failure(command_id: str, code: ErrorCode, message: str, **extra: object) -> CommandResult:
    return CommandResult(
        command_id=command_id,
        ok=False,
        error=CommandError(code=code, message=message, **extra),
    )


def redacted(result: CommandResult) -> CommandResult:
    """What the ledgers keep of a result that held credentials: its outcome, not its data."""
    if result.result is None:
        return result
    return result.model_copy(
        update={
            "result": {
                "redacted": "the result held credentials and was not kept:"
                " send the command again with a new id"
            }
        }
    )


class CommandProcessor:
    """One decision per delivery: ``(result, command name or None, dead-letter?)``.

    ``catalog`` parses commands (the contract's plus the plugins' own); ``supported`` maps a
    vendor name to the commands its plugin declares: any other command is answered
    ``unsupported`` without reaching the PBX (and without a ledger entry: nothing ran).
    ``policies`` maps a tenant to its :class:`CommandPolicy` (default: :data:`DEFAULT_POLICY`);
    a command it refuses is answered ``forbidden`` and dead-lettered, never executed.
    """

    def __init__(
        self,
        ledger: CommandLedger,
        *,
        journal: CommandJournal | None = None,
        catalog: CommandCatalog = CONTRACT_COMMANDS,
        supported: Mapping[str, frozenset[str]] | None = None,
        policies: Mapping[str, CommandPolicy] | None = None,
        require_user_id: bool = False,
        reply_prefixes: Sequence[str] = ("pbx.replies.",),
        execute_timeout_s: float = 20.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._ledger = ledger
        self._policies = policies if policies is not None else {}
        self._require_user_id = require_user_id
        self.reply_prefixes = tuple(reply_prefixes)
        self._journal = journal
        self._catalog = catalog
        self._supported = supported
        self._execute_timeout_s = execute_timeout_s
        self._clock = clock
        #: (tenant, id) -> the execution under way and the fingerprint of its command
        self._running: dict[tuple[str, str], tuple[asyncio.Future[CommandResult], str]] = {}
        self._put_back: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._runs: set[asyncio.Task[None]] = set()
        self._log = get_logger("bus.commands")

    def put_back(self, tenant: str, message_id: str) -> None:
        """The command was returned to its queue unstarted (the link went down as it came)."""
        self._put_back[(tenant, message_id)] = None
        while len(self._put_back) > PUT_BACK_MEMORY:
            self._put_back.popitem(last=False)

    async def process(
        self, tenant: str, connector: Connector, message: Delivery
    ) -> tuple[CommandResult, str | None, bool]:
        """The result, the command name, and whether the message goes to the dead letters."""
        command_id = message.message_id or ""
        sender = Sender(message.user_id or None, message.app_id or None)
        log = self._log.bind(
            tenant=tenant, command_id=command_id, user_id=sender.user_id, app_id=sender.app_id
        )
        try:
            if not command_id:
                raise CommandInvalid(
                    [{"field": "message_id", "message": "the command id is required"}]
                )
            command = self._catalog.parse(message.body)
            expected = f"{tenant}.{command.command}"
            if message.routing_key and message.routing_key != expected:
                raise CommandInvalid(
                    [
                        {
                            "field": "routing_key",
                            "message": f"{message.routing_key!r} does not match the body:"
                            f" use {expected!r}",
                        }
                    ]
                )
        except CommandInvalid as exc:
            log.warning("command_invalid", error=str(exc)[:500])
            return CommandResult(command_id=command_id, ok=False, error=exc.to_error()), None, True

        refusal = self._refusal(tenant, command, message, sender)
        if refusal is not None:
            log.warning("command_forbidden", command=command.command, reason=refusal)
            return failure(command_id, ErrorCode.FORBIDDEN, refusal), command.command, True
        secret = returns_secrets(command)
        if secret and not message.reply_to:
            # A result event reaches every consumer of pbx.events: credentials go by RPC only.
            log.warning("command_invalid", command=command.command, error="secrets without reply")
            return (
                failure(
                    command_id,
                    ErrorCode.INVALID,
                    "a result holding credentials is only sent as an RPC reply: set reply_to",
                ),
                command.command,
                True,
            )

        if self._supported is not None and command.command not in self._supported.get(
            connector.vendor, frozenset()
        ):
            log.info("command_unsupported", command=command.command, vendor=connector.vendor)
            return (
                failure(
                    command_id,
                    ErrorCode.UNSUPPORTED,
                    f"{command.command} is not supported by vendor {connector.vendor!r}",
                ),
                command.command,
                False,
            )

        key = (tenant, command_id)
        asked = fingerprint(command, sender)
        running = self._running.get(key)
        if running is not None:  # the same id delivered twice at once: one execution
            if running[1] != asked:
                return self._reused(log, command_id, command.command)
            return await asyncio.shield(running[0]), command.command, False
        seen = self._ledger.claim(tenant, command_id, command.command, sender, asked)
        if seen is not None:
            if not seen.same(command.command, asked):
                return self._reused(log, command_id, command.command)
            log.info("command_duplicate", state=seen.state)
            if seen.result is not None:
                return seen.result, command.command, False
            return (
                failure(
                    command_id,
                    ErrorCode.FAILED,
                    "outcome unknown: the gateway stopped while executing this command;"
                    " not repeated",
                ),
                command.command,
                False,
            )

        never_started = key in self._put_back  # put back by this instance, link down
        self._put_back.pop(key, None)
        if message.redelivered and self._journal is None and not never_started:
            # New to this ledger, yet delivered before to a consumer that is gone (another
            # instance, or this one before a reconnect): it may have run there. Never twice.
            # (With the journal an unknown id was never sent to the PBX, so it may run.)
            log.warning("command_redelivered_unknown", command=command.command)
            result = failure(
                command_id,
                ErrorCode.FAILED,
                "outcome unknown: the command was taken by a gateway instance that stopped"
                " before answering; not executed again (send it with a new id to retry)",
            )
            self._ledger.finish(tenant, result)
            return result, command.command, False

        # The execution is the processor's, not the delivery's: a channel closing under the
        # delivery (its handler cancelled) neither abandons a command half-way nor leaves its id
        # "started" for ever; the redelivery waits for this execution's result instead.
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._running[key] = (future, asked)
        run = asyncio.create_task(
            self._run(tenant, command_id, command, connector, future, sender, asked, secret),
            name=f"command-{tenant}-{command_id}",
        )
        self._runs.add(run)
        run.add_done_callback(self._runs.discard)
        result = await asyncio.shield(future)
        return result, command.command, False

    async def _run(
        self,
        tenant: str,
        command_id: str,
        command: CommandModel,
        connector: Connector,
        future: asyncio.Future[CommandResult],
        sender: Sender,
        asked: str,
        secret: bool,
    ) -> None:
        """Journal the start, call the PBX, record the result; ``future`` gets the result, or
        the reason the command was not executed (then its id is free again)."""
        key = (tenant, command_id)
        log = self._log.bind(
            tenant=tenant, command_id=command_id, user_id=sender.user_id, app_id=sender.app_id
        )
        sent = False  # the PBX may have been called from here on
        try:
            if self._journal is not None:
                await self._journal.record(tenant, command_id, command.command, None, sender, asked)
            sent = True
            result = await self._execute(command_id, command, connector)
            stored = redacted(result) if secret else result  # ledgers never keep credentials
            self._ledger.finish(tenant, stored)
            await self._journal_result(tenant, command.command, stored, sender, asked)
        except BaseException as exc:
            if not sent:  # never sent: may be taken again (on redelivery, once)
                self._release(tenant, command_id)
            # else: stopped mid-call, the PBX may have it; "started" answers "outcome unknown"
            if not future.done():
                future.set_exception(
                    exc
                    if isinstance(exc, Exception)
                    else CommandInterrupted(
                        "stopped before the PBX answered" if sent else "stopped before sending"
                    )
                )
                future.exception()  # (marked retrieved: the delivery may be gone)
            if isinstance(exc, Exception) and not isinstance(exc, JournalError):
                log.exception("command_run_failed")
            return
        finally:
            self._running.pop(key, None)
        if not future.done():
            future.set_result(result)
        log.info(
            "command_done",
            command=command.command,
            ok=result.ok,
            code=result.error.code if result.error else None,
        )

    def _release(self, tenant: str, command_id: str) -> None:
        try:
            self._ledger.release(tenant, command_id)
        except Exception as exc:  # (a closed ledger at shutdown: the id stays "started")
            self._log.warning(
                "ledger_release_failed", tenant=tenant, command_id=command_id, error=str(exc)
            )

    @property
    def running(self) -> int:
        """Commands being executed now."""
        return len(self._runs)

    async def settle(self) -> None:
        """Wait for the commands being executed (their deliveries may be gone)."""
        while self._runs:
            await asyncio.gather(*list(self._runs), return_exceptions=True)

    async def stop(self) -> None:
        """Interrupt what still runs: an id never sent is freed, one sent stays "started"."""
        runs = list(self._runs)
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)

    def _refusal(
        self, tenant: str, command: CommandModel, message: Delivery, sender: Sender
    ) -> str | None:
        """Why this command may not run here (answered ``forbidden``), or None."""
        if message.reply_to and not reply_allowed(message.reply_to, self.reply_prefixes):
            # The gateway publishes replies under its own broker identity: not into any queue.
            shown = ", ".join(f"{p}..." for p in self.reply_prefixes)
            return (
                f"reply_to {message.reply_to[:200]!r} is not allowed: use Direct Reply-to"
                f" ({DIRECT_REPLY_TO})" + (f" or a queue named {shown}" if shown else "")
            )
        refusal = self._policies.get(tenant, DEFAULT_POLICY).refusal(command)
        if refusal is None and self._require_user_id and sender.user_id is None:
            return "the AMQP user_id property is required (the gateway records the sender)"
        return refusal

    def _reused(
        self, log: Any, command_id: str, name: str
    ) -> tuple[CommandResult, str | None, bool]:
        """An id already recorded for another command (or args, or sender): never its result."""
        log.warning("command_id_reused", command=name)
        result = failure(
            command_id, ErrorCode.INVALID, "command id already used for another command"
        )
        return result, name, True

    async def _execute(
        self, command_id: str, command: CommandModel, connector: Connector
    ) -> CommandResult:
        deadline = command.args.deadline
        if deadline is not None and deadline <= self._clock():
            return failure(
                command_id,
                ErrorCode.EXPIRED,
                f"deadline {deadline.isoformat()} passed before execution",
            )
        timeout = self._execute_timeout_s
        if deadline is not None:
            timeout = min(timeout, max(0.0, (deadline - self._clock()).total_seconds()))
        try:
            async with asyncio.timeout(timeout):
                result = await connector.execute(command)
        except CommandFailed as exc:
            return CommandResult(command_id=command_id, ok=False, error=exc.to_error())
        except TimeoutError:
            return failure(
                command_id,
                ErrorCode.TIMEOUT,
                f"no answer from the PBX within {timeout:.1f} s; the outcome is unknown",
            )
        except Exception as exc:
            self._log.exception("command_crashed", command_id=command_id)
            return failure(command_id, ErrorCode.FAILED, f"{type(exc).__name__}: {exc}")
        return CommandResult(command_id=command_id, ok=True, result=result)

    async def _journal_result(
        self, tenant: str, name: str, result: CommandResult, sender: Sender, asked: str
    ) -> None:
        if self._journal is None:
            return
        try:
            await self._journal.record(tenant, result.command_id, name, result, sender, asked)
        except JournalError as exc:  # answered all the same; a takeover sees it as started
            self._log.warning("ledger_journal_failed", tenant=tenant, error=str(exc))
