"""Configuration: a YAML file plus ``GATEWAY__...`` environment overrides, validated at start-up.

Only ``app.py`` and the CLI read settings; components receive the parts they need.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml  # type: ignore[import-untyped]
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings import (
    SettingsError as PydanticSettingsError,
)


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


class _AnyVendorPbx(PbxSettings):
    """Checks the common fields of a PBX whose vendor no plugin knows."""

    model_config = ConfigDict(extra="ignore")


def _vendor_error(vendor: Any) -> InitErrorDetails:
    from gateway.connectors.registry import unavailable  # late: plugins import this module

    if vendor is None:
        return {"type": "missing", "loc": ("vendor",), "input": None}
    return {
        "type": PydanticCustomError(
            "unknown_vendor", "{message}", {"message": unavailable(vendor)}
        ),
        "loc": ("vendor",),
        "input": vendor,
    }


def _by_vendor(value: Any, handler: ValidatorFunctionWrapHandler) -> PbxSettings:
    """``pbxs[]`` is a union discriminated by ``vendor`` over the registered plugins' models.

    The plugins are looked up when a config is read, not when this module is imported, so a
    vendor shipped as its own package needs no change here. An unknown vendor still gets its
    common fields checked, so every bad field is listed at once.
    """
    from gateway.connectors.registry import plugins  # late: plugins import this module

    known = plugins()
    if isinstance(value, PbxSettings):  # built in code (tests, the demo): the vendor's own model
        plugin = known.get(value.vendor)
        if plugin is not None and isinstance(value, plugin.settings):
            return value
        value = value.model_dump()
    vendor = value.get("vendor") if isinstance(value, dict) else None
    plugin = known.get(vendor) if isinstance(vendor, str) else None
    if plugin is not None:
        return plugin.settings.model_validate(value)
    if not isinstance(value, dict):
        return cast(PbxSettings, handler(value))
    errors = [_vendor_error(vendor)]
    try:
        _AnyVendorPbx.model_validate({**value, "vendor": "?"})
    except ValidationError as exc:
        for err in exc.errors():
            errors.append(
                {
                    "type": PydanticCustomError(err["type"], err["msg"]),
                    "loc": err["loc"],
                    "input": err.get("input"),
                }
            )
    raise ValidationError.from_exception_data("PbxSettings", errors)


#: A PBX of any registered vendor; serialized as its vendor's model (all of its fields).
AnyPbxSettings = Annotated[SerializeAsAny[PbxSettings], WrapValidator(_by_vendor)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY__", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )
    yaml_path: ClassVar[Path | None] = None

    bus: BusSettings = Field(default_factory=BusSettings)
    state_dir: Path = Field(Path("var"), description="this instance's spool, ledger and watermarks")
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    lease: LeaseSettings = Field(default_factory=LeaseSettings)
    commands: CommandSettings = Field(default_factory=CommandSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    shutdown_timeout_s: float = Field(10.0, gt=0)
    pbxs: list[AnyPbxSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_tenants(self) -> Settings:
        tenants = [p.tenant for p in self.pbxs]
        duplicates = sorted({t for t in tenants if tenants.count(t) > 1})
        if duplicates:
            raise ValueError(f"tenant names must be unique, repeated: {', '.join(duplicates)}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.yaml_path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=cls.yaml_path))
        return tuple(sources)


class SettingsError(Exception):
    """Invalid configuration; ``str()`` lists every bad field on its own line."""


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the YAML file (if any) and the environment; environment wins over the file."""
    if path is not None and not path.is_file():
        raise SettingsError(f"config file {path} does not exist")

    class _FromFile(Settings):
        yaml_path = path

    try:
        loaded = _FromFile(**overrides)
    except PydanticSettingsError as exc:  # e.g. GATEWAY__PBXS that is not JSON
        raise SettingsError(f"invalid settings: {exc}") from None
    except yaml.YAMLError as exc:  # the file is no YAML: say where, in one line
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SettingsError(f"config file {path} is not valid YAML{where}: {problem}") from None
    except OSError as exc:  # unreadable (permissions, a directory)
        raise SettingsError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(map(str, err['loc'])) or '(root)'}: {err['msg']}" for err in exc.errors()
        ]
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None
    except (TypeError, ValueError) as exc:  # e.g. a file holding a list, not a mapping
        raise SettingsError(
            f"config file {path} must hold a mapping of settings (bus:, http:, pbxs:, ...): {exc}"
        ) from None
    return loaded


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


def read_secret(value: SecretStr | None, file: Path | None, env: str | None) -> str:
    """The secret, read where the settings say (value, file or environment); never logged."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return file.read_text().strip()
    return os.environ[env or ""]
