"""The leaf of the configuration: every settings model that needs no vendor registry.

The per-PBX base model (:class:`PbxSettings`) and the secret helpers are what a vendor plugin
builds its own settings from; the sections of the root ``Settings`` (bus, outbox, ...) are here
too, so the components they configure import them without reaching the plugin registry, which
:mod:`gateway.settings` (the root) needs to read ``pbxs[]``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackoffSettings(_Strict):
    """Exponential backoff with jitter and a cap, reset after a healthy period."""

    initial_s: float = Field(0.5, gt=0)
    max_s: float = Field(30.0, gt=0)
    factor: float = Field(2.0, ge=1)
    jitter: float = Field(0.2, ge=0, le=1)
    reset_after_s: float = Field(60.0, ge=0)


class BusSettings(_Strict):
    url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="one broker, or the nodes of a cluster separated by commas: the gateway"
        " connects to the first that answers and moves to the next one when it loses it",
    )
    events_exchange: str = "pbx.events"
    confirm_window: int = Field(256, ge=1, le=65535, description="unconfirmed publishes in flight")
    reconnect_interval_s: float = Field(1.0, gt=0)
    queue_type: Literal["classic", "quorum"] = Field(
        "classic",
        description="type of the durable queues the gateway declares (commands, their dead"
        " letters, shared PBX state): classic for one broker, quorum for a cluster",
    )

    @field_validator("url")
    @classmethod
    def _amqp_urls(cls, value: SecretStr) -> SecretStr:
        urls = split_urls(value.get_secret_value())
        if not urls:
            raise ValueError("give at least one amqp:// or amqps:// URL")
        bad = [f"{redact_url(u)}: {why}" for u in urls if (why := amqp_url_problem(u))]
        if bad:
            raise ValueError("; ".join(bad))
        return value

    def urls(self) -> list[str]:
        """The broker addresses, in the order they are tried."""
        return split_urls(self.url.get_secret_value())


def split_urls(value: str) -> list[str]:
    """``"amqp://a, amqp://b"`` -> ``["amqp://a", "amqp://b"]``."""
    return [part.strip() for part in value.split(",") if part.strip()]


class CommandSettings(_Strict):
    """The command path: ``pbx.commands`` in, results out, at most one execution per id."""

    enabled: bool = True
    exchange: str = "pbx.commands"
    prefetch: int = Field(8, ge=1, le=1000, description="commands in flight per tenant")
    execute_timeout_s: float = Field(20.0, gt=0, description="a PBX call may take this long")
    drain_timeout_s: float = Field(10.0, gt=0, description="in-flight commands at shutdown")
    result_ttl_s: float = Field(7 * 86400, gt=0, description="how long executed ids are kept")
    shared_ledger: bool = Field(
        True, description="journal ids on a RabbitMQ stream so a new owner never repeats them"
    )
    reply_queue_prefixes: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=lambda: ["pbx.replies."],
        description="queues a command's reply_to may name besides Direct Reply-to"
        " (amq.rabbitmq.reply-to): the gateway publishes replies under its own broker identity,"
        " so any other queue is refused",
    )
    require_user_id: bool = Field(
        False,
        description="refuse (forbidden) commands without the AMQP user_id property, which"
        " RabbitMQ checks against the publisher's login",
    )


class OutboxSettings(_Strict):
    """The durable spool between PBX links and RabbitMQ (see README, Delivery guarantees)."""

    max_events: int = Field(200_000, ge=100, description="spool bound by count")
    max_age_s: float = Field(7 * 86400, gt=0, description="spool bound by age")
    warn_at: float = Field(0.8, gt=0, le=1, description="warn when the spool is this full")


class RecoverySettings(_Strict):
    """What the gateway re-reads from a PBX after any interruption of its event link."""

    enabled: bool = True
    max_window_s: float = Field(86400, gt=0, description="longest gap back-filled from CDRs")
    cdr_settle_s: float = Field(
        2.0,
        ge=0,
        le=30,
        description="seconds of CDRs read past the gap's end; a back-filled record without a"
        " call id waits this long for its live twin",
    )


class LeaseSettings(_Strict):
    """One owner per PBX across instances sharing a RabbitMQ (exclusive lease queues)."""

    enabled: bool = True
    instance_id: str | None = Field(None, description="default: host name + process id")
    heartbeat_s: float = Field(1.0, gt=0, description="presence heartbeat of this instance")
    member_timeout_s: float = Field(3.0, gt=0, description="an instance silent this long is gone")
    acquire_interval_s: float = Field(1.0, gt=0, description="how often free PBXs are tried")


class HttpSettings(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class LoggingSettings(_Strict):
    format: Literal["json", "console"] = "json"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


#: A command name pattern: ``*`` matches any text (dots included), ``?`` one character.
CommandPattern = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.*?-]{1,128}$")]


class CommandPolicySettings(_Strict):
    """Which commands a PBX takes from ``pbx.commands`` (see SECURITY.md).

    A command runs when a pattern of ``allow`` matches its name and none of ``deny`` does. A
    sensitive command - one that deletes, sets a password or permissions, or returns
    credentials (``include_password``, ``include_secrets``) - must also match
    ``allow_sensitive``: it is refused by default.
    """

    allow: list[CommandPattern] = Field(default_factory=lambda: ["*"])
    deny: list[CommandPattern] = Field(default_factory=list)
    allow_sensitive: list[CommandPattern] = Field(default_factory=list)


class PbxSettings(_Strict):
    """What every PBX link has, whatever the vendor; each vendor's plugin subclasses it with its
    own fields and ``vendor: Literal["<name>"]`` (see ``gateway.connectors.plugin``).

    ``tenant`` is the first part of every routing key, so it may not hold dots.
    """

    tenant: str = Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=64)
    vendor: str
    timezone: str = Field("UTC", description="the PBX's wall clock, for its local times")
    include_raw: bool = Field(False, description="copy the vendor payload into data.raw")
    command_policy: CommandPolicySettings = Field(default_factory=CommandPolicySettings)
    backoff: BackoffSettings = Field(default_factory=BackoffSettings)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def amqp_url_problem(url: str) -> str | None:
    """Why ``url`` is no RabbitMQ URL (scheme ``amqp``/``amqps`` and a host), or None. The
    message never repeats the URL's password."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc}): expected amqp://user:password@host:5672/vhost"
    if parts.scheme not in ("amqp", "amqps"):
        shown = f"{parts.scheme!r}" if parts.scheme else "none"
        return (
            f"scheme must be amqp or amqps, not {shown}: expected"
            " amqp://user:password@host:5672/vhost"
        )
    if not parts.hostname:
        return "no host: expected amqp://user:password@host:5672/vhost"
    if port == 0:
        return "port 0 is not a RabbitMQ port"
    return None


def redact_url(url: str) -> str:
    """An AMQP URL safe for a log line."""
    return re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", url)


def check_secret_source(name: str, value: Any, file: Path | None, env: str | None) -> None:
    """Exactly one of ``<name>``, ``<name>_file``, ``<name>_env``; the file and variable exist.

    Shared by every vendor's settings so a secret is given, and kept out of logs, one way.
    """
    given = [x for x in (value, file, env) if x]
    if len(given) != 1:
        raise ValueError(f"give exactly one of {name}, {name}_file, {name}_env")
    if file and not file.is_file():
        raise ValueError(f"{name}_file {file} does not exist")
    if env and env not in os.environ:
        raise ValueError(f"environment variable {env} is not set")


def read_secret(value: SecretStr | None, file: Path | None, env: str | None) -> str:
    """The secret, read where the settings say (value, file or environment); never logged."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return file.read_text().strip()
    return os.environ[env or ""]
