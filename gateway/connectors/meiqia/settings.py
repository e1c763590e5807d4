"""One Meiqia call center (one enterprise): its member of the ``pbxs[]`` union (``vendor:
meiqia``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.settings_models import PbxSettings, check_secret_source, read_secret

#: The shortest webhook secret taken: the signature is SHA-1 of the body and the secret, so an
#: empty or short one lets anyone sign a delivery.
MIN_WEBHOOK_SECRET: Final = 16


class MeiqiaPbxSettings(PbxSettings):
    """The unified call OpenAPI's host and access token, the webhook secret and the polling.

    The access token is permanent and requesting a new one invalidates the old (seed 001, the
    ``callout`` section's ``Authorization`` row), so the gateway never requests one: it uses
    the token given here until it is refused.
    """

    vendor: Literal["meiqia"]
    base_url: str = Field(
        pattern=r"^https?://[^\s/]+(:\d+)?/?$",
        description="the API host ({{host}} of the document); paths are /unified-api/call/...",
    )
    token: SecretStr | None = Field(
        None, description="the access token (设置 / 开发者 / APIs); required"
    )
    token_file: Path | None = None
    token_env: str | None = None
    webhook_secret: SecretStr | None = Field(
        None,
        description=f"the secret webhook deliveries are signed with, at least"
        f" {MIN_WEBHOOK_SECRET} characters; none: webhooks off (their route answers 404)",
    )
    webhook_secret_file: Path | None = None
    webhook_secret_env: str | None = None
    request_timeout_s: float = Field(10.0, gt=0, description="one REST request")
    records_poll_interval_s: float = Field(10.0, gt=0, description="how often `records` is read")
    records_overlap_s: float = Field(
        1800.0,
        gt=0,
        description="each window starts this long before the previous one ended: more than the"
        " longest call plus the time Meiqia takes to list its record",
    )
    records_page_size: int = Field(
        100, ge=1, le=1000, description="page_size asked for (a server giving fewer is paged on)"
    )
    seats_poll_interval_s: float = Field(
        30.0, ge=0, description="how often `sips` is compared (0: seat state is not polled)"
    )
    webhook_max_bytes: int = Field(
        256 * 1024, ge=1024, le=16 * 1024 * 1024, description="larger deliveries get 413"
    )
    webhook_max_skew_s: float = Field(
        300.0,
        ge=30,
        le=43200,
        description="a delivery whose created_at is further than this from the gateway's clock"
        " is refused (400) as a replay; delivery ids are kept longer than this",
    )
    max_retry_after_s: float = Field(
        300.0, gt=0, description="the longest Retry-After honoured (a longer one is capped)"
    )

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _secret_sources(self) -> MeiqiaPbxSettings:
        check_secret_source("token", self.token, self.token_file, self.token_env)
        given = [
            x
            for x in (self.webhook_secret, self.webhook_secret_file, self.webhook_secret_env)
            if x is not None
        ]
        if len(given) > 1:
            raise ValueError(
                "give at most one of webhook_secret, webhook_secret_file, webhook_secret_env"
            )
        if self.webhook_secret_file and not self.webhook_secret_file.is_file():
            raise ValueError(f"webhook_secret_file {self.webhook_secret_file} does not exist")
        if self.webhook_secret_env and self.webhook_secret_env not in os.environ:
            raise ValueError(f"environment variable {self.webhook_secret_env} is not set")
        if given:
            self._check_webhook_key()
        return self

    def _check_webhook_key(self) -> None:
        where = (
            f"webhook_secret_file {self.webhook_secret_file}"
            if self.webhook_secret_file
            else f"environment variable {self.webhook_secret_env}"
            if self.webhook_secret_env
            else "webhook_secret"
        )
        size = len(self.webhook_key())
        if size < MIN_WEBHOOK_SECRET:
            held = "is empty" if size == 0 else f"holds only {size} characters"
            raise ValueError(
                f"the webhook secret in {where} {held}: give at least {MIN_WEBHOOK_SECRET}"
                " (anyone could sign a delivery with a short one)"
            )

    def secret(self) -> str:
        """The access token, read where the settings say; never logged."""
        return read_secret(self.token, self.token_file, self.token_env)

    @property
    def webhooks(self) -> bool:
        """Whether deliveries are taken (a webhook secret is configured)."""
        return any(
            x is not None
            for x in (self.webhook_secret, self.webhook_secret_file, self.webhook_secret_env)
        )

    def webhook_key(self) -> str:
        """The webhook secret (``Meiqia-Signature`` = SHA-1 of body + secret); never logged."""
        return read_secret(self.webhook_secret, self.webhook_secret_file, self.webhook_secret_env)
