"""The command edge against a sender with broker access: who may run what, who sent it, ids
replayed for another command, where replies go, and which results may hold credentials."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from gateway.bus.idempotency import CommandLedger, Sender, fingerprint
from gateway.bus.journal import _entry
from gateway.bus.policy import CommandPolicy, command_policy, sensitivity
from gateway.bus.processing import CommandProcessor
from gateway.connectors.registry import command_catalog
from gateway.runtime.watch import Watch
from gateway.schema.commands import ErrorCode
from gateway.settings import PbxSettings


@dataclass
class Delivered:
    body: bytes
    message_id: str | None = "cmd-1"
    routing_key: str | None = None
    redelivered: bool = False
    reply_to: str | None = "amq.rabbitmq.reply-to.g1h2AA"
    user_id: str | None = None
    app_id: str | None = None


class Pbx:
    def __init__(self, vendor: str = "xswitch") -> None:
        self.vendor = vendor
        self.link = Watch("connected")
        self.executed: list[Any] = []

    async def execute(self, command: Any) -> dict[str, Any]:
        self.executed.append(command)
        return {"data": [{"extn": "1000", "ha1": "5f4dcc3b5aa765d61d8327deb882cf99"}]}


def body(command: str, **args: Any) -> bytes:
    return orjson.dumps({"command": command, "args": args})


def processor(policies: dict[str, CommandPolicy] | None = None, **kw: Any) -> CommandProcessor:
    return CommandProcessor(
        CommandLedger(":memory:", 3600), catalog=command_catalog(), policies=policies, **kw
    )


# --- authorization ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("xswitch.extension.delete", {"id": "7"}),
        ("xswitch.extension.update", {"id": "7", "password": "hunter22"}),
        ("xswitch.extension.list", {"include_secrets": True}),
        ("meiqia.sips.list", {"include_password": True}),
        ("uucall.subuser.update", {"subUserId": 5, "password": "abc123"}),
        ("uucall.subuser_auth.update", {"subUserId": 5, "authAppIds": [1]}),
    ],
)
async def test_sensitive_commands_are_forbidden_by_default_never_run_and_dead_lettered(
    command: str, args: dict[str, Any]
) -> None:
    pbx = Pbx(command.split(".")[0])
    result, name, dead = await processor().process("t", pbx, Delivered(body(command, **args)))  # type: ignore[arg-type]
    assert result.error and result.error.code == ErrorCode.FORBIDDEN, result
    assert name == command and dead and not pbx.executed
    assert "allow_sensitive" in result.error.message


async def test_ordinary_call_control_and_read_only_lists_run_by_default() -> None:
    pbx = Pbx()
    p = processor()
    for n, (command, args) in enumerate(
        [
            ("call.dial", {"caller": "2001", "callee": "2002"}),
            ("call.listen", {"channel_id": "PJSIP/1-1", "listener": "2003"}),
            ("xswitch.extension.list", {}),
        ]
    ):
        result, _, dead = await p.process("t", pbx, Delivered(body(command, **args), f"c{n}"))  # type: ignore[arg-type]
        assert result.ok and not dead, result
    assert len(pbx.executed) == 3


async def test_a_tenant_policy_allows_and_denies_by_pattern() -> None:
    settings = PbxSettings.model_validate(
        {
            "tenant": "acme",
            "vendor": "xswitch",
            "command_policy": {
                "allow": ["call.*", "agent.*", "xswitch.extension.*"],
                "deny": ["call.listen"],
                "allow_sensitive": ["xswitch.extension.delete"],
            },
        }
    )
    p, pbx = processor({"acme": command_policy(settings)}), Pbx()
    outcomes = {}
    for n, (command, args) in enumerate(
        [
            ("call.dial", {"caller": "2001", "callee": "2002"}),
            ("call.listen", {"channel_id": "PJSIP/1-1", "listener": "2003", "mode": "barge"}),
            ("xswitch.queue.list", {}),
            ("xswitch.extension.delete", {"id": "7"}),
            ("xswitch.extension.list", {"include_secrets": True}),
        ]
    ):
        result, _, _ = await p.process("acme", pbx, Delivered(body(command, **args), f"c{n}"))  # type: ignore[arg-type]
        outcomes[command] = "ok" if result.ok else result.error.code if result.error else "?"
    assert outcomes == {
        "call.dial": "ok",
        "call.listen": "forbidden",
        "xswitch.queue.list": "forbidden",
        "xswitch.extension.delete": "ok",
        "xswitch.extension.list": "forbidden",  # secrets need their own allow_sensitive
    }
    assert [c.command for c in pbx.executed] == ["call.dial", "xswitch.extension.delete"]
    # the other tenants keep the defaults
    result, _, _ = await p.process(
        "other",
        pbx,
        Delivered(body("xswitch.extension.delete", id="8"), "c9"),  # type: ignore[arg-type]
    )
    assert result.error and result.error.code == ErrorCode.FORBIDDEN


def test_what_is_sensitive() -> None:
    catalog = command_catalog()
    assert sensitivity(catalog.parse(body("xswitch.extension.create", extn="1", password="x")))
    assert sensitivity(catalog.parse(body("uucall.notice.delete", noticeId=3))) is not None
    assert sensitivity(catalog.parse(body("xswitch.extension.update", id="7", name="n"))) is None
    assert sensitivity(catalog.parse(body("meiqia.sips.list"))) is None


# --- audit -----------------------------------------------------------------------------------


class Journal:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def record(
        self,
        tenant: str,
        command_id: str,
        command: str | None,
        result: Any,
        sender: Any = None,
        fingerprint: str | None = None,
    ) -> None:
        self.records.append(
            {"command_id": command_id, "result": result, "sender": sender, "fp": fingerprint}
        )


async def test_the_sender_is_recorded_in_the_ledger_the_journal_and_the_log(tmp_path) -> None:
    ledger, journal = CommandLedger(tmp_path / "commands.sqlite3", 3600), Journal()
    p = CommandProcessor(ledger, journal=journal, catalog=command_catalog())  # type: ignore[arg-type]
    message = Delivered(
        body("call.dial", caller="2001", callee="2002"), user_id="crm-svc", app_id="crm"
    )
    with capture_logs() as logs:
        result, _, _ = await p.process("t", Pbx(), message)  # type: ignore[arg-type]
    assert result.ok
    assert ledger.sender("t", "cmd-1") == Sender("crm-svc", "crm")
    assert [r["sender"] for r in journal.records] == [Sender("crm-svc", "crm")] * 2
    done = [line for line in logs if line["event"] == "command_done"]
    assert done and done[0]["user_id"] == "crm-svc" and done[0]["app_id"] == "crm"
    # another instance learns the sender through the journal
    other = CommandLedger(":memory:", 3600)
    entry = _entry({"command_id": "x", "command": "call.dial", "at": time.time(), **SENDER})
    assert entry is not None
    other.merge("t", [entry])
    assert other.sender("t", "x") == Sender("crm-svc", "crm")


SENDER = {"user_id": "crm-svc", "app_id": "crm"}


async def test_commands_without_user_id_are_forbidden_when_it_is_required() -> None:
    pbx = Pbx()
    p = processor(require_user_id=True)
    dial = body("call.dial", caller="2001", callee="2002")
    result, _, dead = await p.process("t", pbx, Delivered(dial))  # type: ignore[arg-type]
    assert result.error and result.error.code == ErrorCode.FORBIDDEN and dead
    result, _, _ = await p.process("t", pbx, Delivered(dial, "c2", user_id="crm-svc"))  # type: ignore[arg-type]
    assert result.ok and len(pbx.executed) == 1


def test_a_ledger_file_of_the_first_schema_gains_the_sender_columns(tmp_path) -> None:
    path = tmp_path / "commands.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE commands (tenant TEXT NOT NULL, command_id TEXT NOT NULL, command TEXT,"
        " state TEXT NOT NULL, result BLOB, created_at REAL NOT NULL,"
        " PRIMARY KEY (tenant, command_id))"
    )
    db.execute(
        "INSERT INTO commands VALUES ('t', 'old', 'call.dial', 'started', NULL, ?)", (time.time(),)
    )
    db.commit()
    db.close()
    ledger = CommandLedger(path, 3600)
    assert ledger.sender("t", "old") == Sender(None, None)
    assert ledger.claim("t", "new", "call.dial", Sender("u", None)) is None
    assert ledger.sender("t", "new") == Sender("u", None)


# --- ids bound to what they were used for --------------------------------------------------


async def test_a_known_id_with_another_command_is_invalid_never_the_stored_result() -> None:
    """Ids are public (the subject of command.* events): reusing one must not read its result."""
    p, pbx = processor(policies={"t": CommandPolicy(allow_sensitive=("*",))}), Pbx()
    secret = body("xswitch.extension.list", include_secrets=True)
    first, _, _ = await p.process("t", pbx, Delivered(secret, "known", user_id="ops"))  # type: ignore[arg-type]
    assert first.ok
    replays = [
        Delivered(body("xswitch.extension.list"), "known", user_id="ops"),  # other args
        Delivered(body("xswitch.queue.list"), "known", user_id="ops"),  # other command
        Delivered(secret, "known", user_id="intruder"),  # same command, another sender
        Delivered(secret, "known"),  # no sender given
    ]
    for replay in replays:
        result, _, dead = await p.process("t", pbx, replay)  # type: ignore[arg-type]
        assert result.error and result.error.code == ErrorCode.INVALID, result
        assert result.error.message == "command id already used for another command"
        assert result.result is None and dead
    assert len(pbx.executed) == 1
    again, _, dead = await p.process("t", pbx, Delivered(secret, "known", user_id="ops"))  # type: ignore[arg-type]
    assert again.ok and not dead and len(pbx.executed) == 1  # a true redelivery: answered


async def test_concurrent_reuse_of_an_id_in_flight_is_refused_too() -> None:
    p, pbx = processor(), Pbx()
    dial = body("call.dial", caller="2001", callee="2002")
    other = body("call.dial", caller="2001", callee="900123456")
    (a, _, _), (b, _, _) = await asyncio.gather(
        p.process("t", pbx, Delivered(dial, "x")),  # type: ignore[arg-type]
        p.process("t", pbx, Delivered(other, "x")),  # type: ignore[arg-type]
    )
    assert a.ok and b.error and b.error.code == ErrorCode.INVALID
    assert len(pbx.executed) == 1


def test_the_fingerprint_ignores_the_deadline_and_keeps_passwords_out() -> None:
    catalog = command_catalog()
    one = catalog.parse(body("xswitch.extension.update", id="7", password="hunter22"))
    two = catalog.parse(body("xswitch.extension.update", id="7", password="123456"))
    assert fingerprint(one, Sender()) == fingerprint(two, Sender())
    later = catalog.parse(
        body("call.dial", caller="1", callee="2", deadline="2030-01-01T00:00:00Z")
    )
    now = catalog.parse(body("call.dial", caller="1", callee="2"))
    assert fingerprint(later, Sender("u")) == fingerprint(now, Sender("u"))
    assert fingerprint(now, Sender("u")) != fingerprint(now, Sender("v"))
