"""One Yeastar P-Series PBX: its member of the ``pbxs[]`` union (``vendor: yeastar``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.settings_models import PbxSettings, check_secret_source, read_secret

#: Every event id of the manual's 30005-30026 but 30021 (not an event: no such topic).
ALL_YEASTAR_TOPICS: list[int] = [*range(30005, 30021), *range(30022, 30027)]
#: Ids of newer firmware (Yeastar help center, P-Series Cloud Edition developer guide):
#: 30029 agent status changed, 30034-30036 system event notification (info / warning / alert).
#: A PBX that refuses them is subscribed again without them.
NEWER_YEASTAR_TOPICS: list[int] = [30029, 30034, 30035, 30036]


class YeastarPbxSettings(PbxSettings):
    """OpenAPI v1.0 client credentials, the event topics and the link's timing."""

    vendor: Literal["yeastar"]
    base_url: str = Field(
        pattern=r"^https?://[^\s/]+(:\d+)?/?$", description="the PBX, https://pbx:8088"
    )
    client_id: str = Field(min_length=1, description="the OpenAPI client id")
    client_secret: SecretStr | None = Field(None, description="the OpenAPI client secret")
    client_secret_file: Path | None = None
    client_secret_env: str | None = None
    topics: list[int] = Field(
        default_factory=lambda: [*ALL_YEASTAR_TOPICS, *NEWER_YEASTAR_TOPICS],
        description="event ids to subscribe (ids a PBX refuses are left out on a new try)",
    )
    verify_tls: bool = Field(True, description="false for the PBX's self-signed certificate")
    user_agent: str = Field("pbx-gateway/0.1", description="User-Agent of every request")
    request_timeout_s: float = Field(10.0, gt=0, description="one REST request")
    heartbeat_interval_s: float = Field(
        20.0, gt=0, lt=60, description="inside the PBX's 60 s idle close"
    )
    heartbeat_timeout_s: float = Field(
        10.0, gt=0, description="no heartbeat response in this time: the link is dead"
    )
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
        "%m/%d/%Y %H:%M:%S",
        description="the PBX's date and time display format (System > Date and Time > Display"
        " Format) as a strftime pattern with the whole date and time, e.g. '%d/%m/%Y %H:%M:%S'"
        " or '%Y/%m/%d %I:%M:%S %p'; cdr/search filters in it and CDR times are read with it",
    )
    handover_grace_s: float = Field(
        1.0, ge=0, description="overlap of old and new socket on token move"
    )

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("cdr_time_format")
    @classmethod
    def _full_date_and_time(cls, value: str) -> str:
        """The PBX's display format names the whole date and time (manual line 13814: e.g.
        ``MM/DD/YYYY HH:mm:ss`` or ``YYYY/MM/DD HH:mm:ss AM/PM``); a format that loses any of
        it would misread every CDR time and match no cdr/search filter."""
        sample = datetime(2023, 10, 2, 13, 28, 8)
        try:
            back = datetime.strptime(sample.strftime(value), value)
        except ValueError as exc:
            raise ValueError(f"not a strftime date and time format: {exc}") from None
        if back != sample:
            raise ValueError(
                f"{value!r} must give year, month, day, hour, minute and second"
                " (e.g. '%d/%m/%Y %H:%M:%S' or '%Y/%m/%d %I:%M:%S %p')"
            )
        return value

    @model_validator(mode="after")
    def _one_secret_source(self) -> YeastarPbxSettings:
        check_secret_source(
            "client_secret", self.client_secret, self.client_secret_file, self.client_secret_env
        )
        return self

    def secret(self) -> str:
        """The client secret, read where the settings say; never logged."""
        return read_secret(self.client_secret, self.client_secret_file, self.client_secret_env)
