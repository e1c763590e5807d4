"""One Yeastar P-Series PBX: its member of the ``pbxs[]`` union (``vendor: yeastar``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.settings import PbxSettings, check_secret_source, read_secret

#: Every event id of the manual's 30005-30026 but 30021 (not an event: no such topic).
ALL_YEASTAR_TOPICS: list[int] = [*range(30005, 30021), *range(30022, 30027)]


class YeastarPbxSettings(PbxSettings):
    """OpenAPI v1.0 client credentials, the event topics and the link's timing."""

    vendor: Literal["yeastar"]
    base_url: str = Field(pattern=r"^https?://[^\s/]+(:\d+)?/?$")
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    client_secret_env: str | None = None
    topics: list[int] = Field(default_factory=lambda: list(ALL_YEASTAR_TOPICS))
    verify_tls: bool = True
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

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_secret_source(self) -> YeastarPbxSettings:
        check_secret_source(
            "client_secret", self.client_secret, self.client_secret_file, self.client_secret_env
        )
        return self

    def secret(self) -> str:
        """The client secret, read where the settings say; never logged."""
        return read_secret(self.client_secret, self.client_secret_file, self.client_secret_env)
