"""The leaf of the configuration: every settings model that needs no vendor registry.

The per-PBX base model (:class:`PbxSettings`) and the secret helpers are what a vendor plugin
builds its own settings from; the sections of the root ``Settings`` (bus, outbox, ...) are here
too, so the components they configure import them without reaching the plugin registry, which
:mod:`gateway.settings` (the root) needs to read ``pbxs[]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackoffSettings(_Strict):
    """Exponential backoff with jitter and a cap, reset after a healthy period."""

    initial_s: float = Field(0.5, gt=0, description="the first wait after a failure")
    max_s: float = Field(30.0, gt=0, description="the longest wait")
    factor: float = Field(2.0, ge=1, description="each wait is this many times the one before")
    jitter: float = Field(0.2, ge=0, le=1, description="each wait varies by up to this share")
    reset_after_s: float = Field(
        60.0, ge=0, description="a link up this long starts again from initial_s"
    )


class BusSettings(_Strict):
    url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="one broker, or the nodes of a cluster separated by commas: the gateway"
        " connects to the first that answers and moves to the next one when it loses it",
    )
    events_exchange: str = Field("pbx.events", description="the topic exchange events go to")
    confirm_window: int = Field(256, ge=1, le=65535, description="unconfirmed publishes in flight")
    coalesce_ms: float = Field(
        2.0,
        ge=0,
        le=100,
        description="live events arriving within this many ms are written to the outbox and"
        " published together (one commit, one socket write, one confirm round); 0: each turn of"
        " the event loop on its own, lower latency but several times the CPU per event at"
        " ordinary rates",
    )
    reconnect_interval_s: float = Field(
        1.0, gt=0, description="pause between two attempts to reach the broker"
    )
    queue_type: Literal["classic", "quorum"] = Field(
        "classic",
        description="type of the durable queues the gateway declares (commands, their dead"
        " letters, shared PBX state): classic for one broker, quorum for a cluster so they"
        " survive losing a node; a queue of the other type stops the start with an error",
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

    enabled: bool = Field(True, description="take commands from RabbitMQ")
    exchange: str = Field("pbx.commands", description="the topic exchange commands arrive on")
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
    """The durable spool between PBX links and RabbitMQ (see the docs, Delivery guarantees)."""

    max_events: int = Field(200_000, ge=100, description="spool bound by count")
    max_age_s: float = Field(7 * 86400, gt=0, description="spool bound by age")
    warn_at: float = Field(0.8, gt=0, le=1, description="warn when the spool is this full")


class RecoverySettings(_Strict):
    """What the gateway re-reads from a PBX after any interruption of its event link."""

    enabled: bool = Field(True, description="re-read what a PBX can tell after an interruption")
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

    enabled: bool = Field(
        True,
        description="one owner per PBX across instances; a single instance may turn it off to"
        " keep its PBX links through a broker outage",
    )
    instance_id: str | None = Field(None, description="default: host name + process id")
    heartbeat_s: float = Field(1.0, gt=0, description="presence heartbeat of this instance")
    member_timeout_s: float = Field(3.0, gt=0, description="an instance silent this long is gone")
    acquire_interval_s: float = Field(1.0, gt=0, description="how often free PBXs are tried")


#: The shortest admin token or password taken (a guessable one protects nothing).
MIN_ADMIN_SECRET = 16


class AdminListenerSettings(_Strict):
    """The operators' listener: the status page, ``/status.json``, ``/metrics`` and the probes.

    Loopback by default. With a token (``Authorization: Bearer``) or a user and password (HTTP
    basic), every path but ``/healthz`` asks for them, and ``/readyz`` without them answers
    its status code with ``{"ready": ...}`` only (what a probe needs)."""

    host: str = Field("127.0.0.1", description="the address the admin listener binds")
    port: int = Field(8080, ge=0, le=65535, description="its port (0: any free port)")
    token: SecretStr | None = Field(
        None,
        description=f"a bearer token (at least {MIN_ADMIN_SECRET} characters) every path but"
        " /healthz asks for",
    )
    token_file: Path | None = None
    token_env: str | None = None
    basic_user: str | None = Field(
        None,
        min_length=1,
        pattern=r"^[^:]+$",
        description="HTTP basic user instead of (or besides) the token, for a browser",
    )
    basic_password: SecretStr | None = Field(None, description="the basic user's password")
    basic_password_file: Path | None = None
    basic_password_env: str | None = None

    @model_validator(mode="after")
    def _auth(self) -> AdminListenerSettings:
        token = optional_secret("token", self.token, self.token_file, self.token_env)
        password = optional_secret(
            "basic_password",
            self.basic_password,
            self.basic_password_file,
            self.basic_password_env,
        )
        if (self.basic_user is None) != (password is None):
            raise ValueError("basic_user and basic_password (or _file / _env) go together")
        for name, value in (("token", token), ("basic_password", password)):
            if value is not None and len(value) < MIN_ADMIN_SECRET:
                raise ValueError(
                    f"the admin {name} holds {len(value)} characters: give at least"
                    f" {MIN_ADMIN_SECRET}"
                )
        return self

    def bearer(self) -> str | None:
        """The token ``Authorization: Bearer`` must carry, or None; never logged."""
        return optional_secret("token", self.token, self.token_file, self.token_env)

    def basic(self) -> tuple[str, str] | None:
        """The user and password HTTP basic must carry, or None; never logged."""
        password = optional_secret(
            "basic_password",
            self.basic_password,
            self.basic_password_file,
            self.basic_password_env,
        )
        if self.basic_user is None or password is None:
            return None
        return self.basic_user, password


class PublicListenerSettings(_Strict):
    """The listener the PBX platforms post to: ``/webhooks/<vendor>/...`` and nothing else."""

    enabled: bool = Field(
        True, description="serve the vendors' webhooks on a listener of their own"
    )
    host: str = Field("127.0.0.1", description="the address the public listener binds")
    port: int = Field(8081, ge=0, le=65535, description="its port (0: any free port)")
    max_in_flight: int = Field(
        256,
        ge=1,
        le=10_000,
        description="requests handled at once; one more is answered 503 with Retry-After: 5 (a"
        " body must arrive within 10 s, else 408)",
    )


class HttpSettings(_Strict):
    """Two listeners: ``admin`` (operators, loopback by default) and ``public`` (webhooks only,
    the one to expose). ``single: true`` serves the webhooks on the admin listener instead, the
    layout of earlier versions; their ``http.host`` / ``http.port`` are read as ``single: true``
    with ``admin.host`` / ``admin.port``."""

    enabled: bool = Field(True, description="the HTTP listeners, started before anything else")
    single: bool = Field(
        False, description="one listener (admin) serves the webhooks too; no public listener"
    )
    admin: AdminListenerSettings = Field(default_factory=AdminListenerSettings)
    public: PublicListenerSettings = Field(default_factory=PublicListenerSettings)
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="a connection to either listener that has not sent a request's headers"
        " this long after it opened or after its previous response is closed (slow clients)",
    )

    @model_validator(mode="before")
    @classmethod
    def _earlier_layout(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        single = {k: value[k] for k in ("host", "port") if value.get(k) is not None}
        if not single:
            return {k: v for k, v in value.items() if k not in ("host", "port")}
        split = sorted({"admin", "public"} & value.keys())
        if split:
            raise ValueError(
                "give http.admin / http.public, or the single listener's http.host /"
                f" http.port, not both (found {', '.join(sorted(single) + split)})"
            )
        rest = {k: v for k, v in value.items() if k not in ("host", "port")}
        return {**rest, "single": True, "admin": single}


class LoggingSettings(_Strict):
    format: Literal["json", "console"] = Field(
        "json", description="one JSON object per line, or a console line"
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="the least severe level written"
    )


#: A command name pattern: ``*`` matches any text (dots included), ``?`` one character.
CommandPattern = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.*?-]{1,128}$")]


class CommandPolicySettings(_Strict):
    """Which commands a PBX takes from ``pbx.commands`` (see SECURITY.md).

    A command runs when a pattern of ``allow`` matches its name and none of ``deny`` does. A
    sensitive command - one that deletes, sets a password or permissions, or returns
    credentials (``include_password``, ``include_secrets``) - must also match
    ``allow_sensitive``: it is refused by default.
    """

    allow: list[CommandPattern] = Field(
        default_factory=lambda: ["*"], description="command name patterns this PBX takes"
    )
    deny: list[CommandPattern] = Field(
        default_factory=list, description="patterns refused even when allowed"
    )
    allow_sensitive: list[CommandPattern] = Field(
        default_factory=list, description="the sensitive commands this PBX takes besides"
    )


class PbxSettings(_Strict):
    """What every PBX link has, whatever the vendor; each vendor's plugin subclasses it with its
    own fields and ``vendor: Literal["<name>"]`` (see ``gateway.connectors.plugin``).

    ``tenant`` is the first part of every routing key, so it may not hold dots.
    """

    tenant: str = Field(
        pattern=r"^[A-Za-z0-9_-]+$",
        max_length=64,
        description="the PBX's name: first part of every routing key (letters, digits, - and _)",
    )
    vendor: str = Field(description="a registered vendor plugin (see gateway --help)")
    timezone: str = Field(
        "UTC",
        description="the PBX's time zone; its local times are converted with it",
    )
    include_raw: bool = Field(False, description="copy the vendor payload into data.raw")
    command_policy: CommandPolicySettings = Field(default_factory=CommandPolicySettings)
    backoff: BackoffSettings = Field(default_factory=BackoffSettings)
    ca_file: Path | None = Field(
        None,
        description="PEM certificates of the CA that signed the PBX's certificate (a customer's"
        " own CA), trusted for this PBX's HTTPS, WebSocket and NATS links besides the system's",
    )

    @field_validator("ca_file")
    @classmethod
    def _ca_readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            import ssl

            try:
                ssl.create_default_context(cafile=str(value))
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"ca_file {value} holds no usable CA certificate: {exc}") from None
        return value

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
    except ValueError:  # (its message may quote a part of the password)
        return (
            "not a valid URL (a password with '/', '@' or ':' must be percent-encoded):"
            " expected amqp://user:password@host:5672/vhost"
        )
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
    """A URL safe for a log line or an error: everything between ``//`` and the *last* ``@``
    after it is user information, whatever it holds (a raw ``/`` or ``@`` in a password
    included); the user name is kept, the password replaced."""
    scheme, sep, rest = url.partition("//")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if "/" in user:  # no user name to keep: not even a part of it
        user = "***"
    return f"{scheme}//{user}{':***' if colon else ''}@{host}"


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


def optional_secret(
    name: str, value: SecretStr | None, file: Path | None, env: str | None
) -> str | None:
    """At most one of ``<name>``, ``<name>_file``, ``<name>_env``: the secret, or None."""
    given = [x for x in (value, file, env) if x is not None]
    if not given:
        return None
    if len(given) > 1:
        raise ValueError(f"give at most one of {name}, {name}_file, {name}_env")
    if file is not None and not file.is_file():
        raise ValueError(f"{name}_file {file} does not exist")
    if env is not None and env not in os.environ:
        raise ValueError(f"environment variable {env} is not set")
    return read_secret(value, file, env)


def read_secret(value: SecretStr | None, file: Path | None, env: str | None) -> str:
    """The secret, read where the settings say (value, file or environment); never logged."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return file.read_text().strip()
    return os.environ[env or ""]
