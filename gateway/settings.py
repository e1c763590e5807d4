"""Configuration: a YAML file plus ``GATEWAY__...`` environment overrides, validated at start-up.

Only ``app.py`` and the CLI read settings; components receive the parts they need.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

ALL_YEASTAR_TOPICS: list[int] = [*range(30005, 30021), *range(30022, 30027)]


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
    url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    events_exchange: str = "pbx.events"
    confirm_window: int = Field(64, ge=1, le=65535, description="unconfirmed publishes in flight")
    reconnect_interval_s: float = Field(1.0, gt=0)


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


class PbxSettings(_Strict):
    """One PBX link. ``tenant`` is the first part of every routing key, so it may not hold dots."""

    tenant: str = Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=64)
    vendor: Literal["yeastar"]
    base_url: str = Field(pattern=r"^https?://[^\s/]+(:\d+)?/?$")
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    client_secret_env: str | None = None
    topics: list[int] = Field(default_factory=lambda: list(ALL_YEASTAR_TOPICS))
    timezone: str = "UTC"
    verify_tls: bool = True
    include_raw: bool = False
    user_agent: str = "pbx-gateway/0.1"
    request_timeout_s: float = Field(10.0, gt=0)
    heartbeat_interval_s: float = Field(
        20.0, gt=0, lt=60, description="inside the PBX's 60 s idle close"
    )
    heartbeat_timeout_s: float = Field(10.0, gt=0)
    refresh_at: float = Field(
        0.8, gt=0.1, lt=1, description="refresh tokens at this share of their life"
    )
    max_auth_failures: int = Field(
        3, ge=1, le=4, description="credential rejections before giving up (the PBX bans at 5)"
    )
    blocked_retry_s: float = Field(
        600.0, gt=0, description="wait before one new try once IP-banned"
    )
    cdr_time_format: str = Field(
        "%m/%d/%Y %H:%M:%S", description="the PBX's display date format, used by cdr/search"
    )
    handover_grace_s: float = Field(
        1.0, ge=0, description="overlap of old and new socket on token move"
    )
    backoff: BackoffSettings = Field(default_factory=BackoffSettings)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_secret_source(self) -> PbxSettings:
        given = [
            x for x in (self.client_secret, self.client_secret_file, self.client_secret_env) if x
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of client_secret, client_secret_file, client_secret_env"
            )
        if self.client_secret_file and not self.client_secret_file.is_file():
            raise ValueError(f"client_secret_file {self.client_secret_file} does not exist")
        if self.client_secret_env and self.client_secret_env not in os.environ:
            raise ValueError(f"environment variable {self.client_secret_env} is not set")
        return self

    def secret(self) -> str:
        """The client secret, read where the settings say; never logged."""
        if self.client_secret is not None:
            return self.client_secret.get_secret_value()
        if self.client_secret_file is not None:
            return self.client_secret_file.read_text().strip()
        return os.environ[self.client_secret_env or ""]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


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
    pbxs: list[PbxSettings] = Field(default_factory=list)

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
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(map(str, err['loc'])) or '(root)'}: {err['msg']}" for err in exc.errors()
        ]
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None
    return loaded


def redact_url(url: str) -> str:
    """An AMQP URL safe for a log line."""
    return re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", url)
