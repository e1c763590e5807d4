"""One fake PBX: its member of the ``pbxs[]`` union (``vendor: fakepbx``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.sdk import PbxSettings, check_secret_source, read_secret


class FakePbxSettings(PbxSettings):
    vendor: Literal["fakepbx"]
    base_url: str = Field(pattern=r"^http://[^\s/]+(:\d+)?/?$")
    poll_interval_s: float = Field(0.2, gt=0)
    token: SecretStr | None = None
    token_file: Path | None = None
    token_env: str | None = None

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_secret_source(self) -> FakePbxSettings:
        check_secret_source("token", self.token, self.token_file, self.token_env)
        return self

    def secret(self) -> str:
        return read_secret(self.token, self.token_file, self.token_env)
