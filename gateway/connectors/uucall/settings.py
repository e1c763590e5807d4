"""One UUCall enterprise account: its member of the ``pbxs[]`` union (``vendor: uucall``).

The document (seed 000) says nothing about authentication, so it is a setting: ``auth: header``
sends the secret as the value of the header ``auth_header`` (``Authorization`` by default: put
``Bearer ...`` in the secret if the account's gateway wants that scheme), ``auth: basic`` sends
``username`` and the secret as HTTP basic credentials, ``auth: none`` sends nothing.
``auth: signed`` is the scheme of UUCall's API wiki (see ``signing.py``): each request is
signed with ``account_id`` and the secret (the account's token) and names ``app_id``; its
``base_url`` there ends in ``/uucall_restapi/rest``. The secret is given exactly one way
(inline, a file, an environment variable) and never logged, nor are ``account_id`` and
``app_id``.

Money: every amount of the document is an ``int64`` whose unit it never names; ``minor_unit``
says how many of them make one currency unit (100: fen). Events carry the integer as sent and
that integer divided by ``minor_unit`` as a decimal string.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.settings_models import PbxSettings, check_secret_source, read_secret

#: The document's host and base path (section 1.3: ``cloud.uucall.cn:80``, ``/rest``, HTTP).
DEFAULT_BASE_URL = "http://cloud.uucall.cn/rest"
#: ``minor_unit`` must divide into an exact decimal string: 1, 10, 100, ... 1,000,000.
MINOR_UNITS = tuple(10**n for n in range(7))
#: ``account_id`` and ``app_id`` of ``auth: signed`` (the wiki's are 32 hex digits).
_SIGNED_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class UucallPbxSettings(PbxSettings):
    """The enterprise (``uid``, ``uid_name``), how to authenticate, what to poll how often."""

    vendor: Literal["uucall"]
    base_url: str = Field(
        DEFAULT_BASE_URL,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="the REST API including its base path (/rest; the vendor wiki's deployments"
        " use http://host:port/uucall_restapi/rest)",
    )
    uid: str = Field(pattern=r"^[0-9]{1,19}$", description="企业帐号ID: the enterprise id")
    uid_name: str = Field(
        min_length=1,
        max_length=128,
        description="企业帐号/企业名称: the enterprise account name the bill endpoints take",
    )
    auth: Literal["header", "basic", "none", "signed"] = Field(
        "header",
        description="header: the secret is the value of auth_header; basic: username and the"
        " secret; signed: every request signed with account_id and the secret; none",
    )
    auth_header: str = Field(
        "Authorization",
        pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$",
        description="the header's name with auth: header (put 'Bearer ...' in the secret for"
        " that scheme)",
    )
    username: str | None = Field(None, min_length=1, max_length=128, description="auth: basic")
    account_id: SecretStr | None = Field(
        None, description="auth: signed: the account id the requests are signed with"
    )
    app_id: SecretStr | None = Field(None, description="auth: signed: the header appid")
    secret: SecretStr | None = Field(
        None,
        description="the token (header, signed) or password (basic); none with auth: none;"
        " never sent with auth: signed",
    )
    secret_file: Path | None = None
    secret_env: str | None = None
    request_timeout_s: float = Field(10.0, gt=0, description="one REST request")
    minor_unit: int = Field(100, description="int64 amounts per currency unit (100: fen)")
    low_balance_threshold: int | None = Field(
        None, description="account.low_balance below this balance, in the API's unit; None: off"
    )
    account_poll_s: float = Field(60.0, ge=0, description="/account/{uid}: the balance; 0: off")
    cashlog_poll_s: float = Field(300.0, ge=0, description="/account/cashlog: recharges; 0: off")
    bill_poll_s: float = Field(600.0, ge=0, description="/account/chargebill: bills; 0: off")
    oplog_poll_s: float = Field(60.0, ge=0, description="/power/oplog: the operation log; 0: off")
    notice_poll_s: float = Field(300.0, ge=0, description="/power/notice: notices; 0: off")
    history_s: float = Field(
        7 * 86400.0,
        ge=0,
        description="first poll ever: recharges, log entries and notices this young are published",
    )
    cashlog_window_s: float = Field(
        7 * 86400.0, gt=0, description="a recharge this late (by its time) is still found"
    )
    oplog_window_s: float = Field(
        600.0, gt=0, description="each oplog poll re-reads this far back (late entries)"
    )
    page_size: int = Field(100, ge=1, le=1000, description="rows per page of paged lists")
    max_pages: int = Field(100, ge=1, le=10_000, description="pages read per list at most")
    read_retries: int = Field(2, ge=0, le=10, description="a read answered 5xx is tried again")
    rate_limit_retries: int = Field(
        3, ge=0, le=20, description="429 answers a request waits out before it fails"
    )
    max_retry_after_s: float = Field(60.0, gt=0, description="longest Retry-After honoured")
    max_auth_rejections: int = Field(
        3, ge=1, description="401/403 answers in a row before polling stops (auth_failed)"
    )
    download_dir: Path | None = Field(
        None, description="bill file downloads go here; None: download commands unsupported"
    )
    max_download_bytes: int = Field(
        100 * 1024 * 1024, gt=0, description="a larger bill file fails the download"
    )

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("minor_unit")
    @classmethod
    def _power_of_ten(cls, value: int) -> int:
        if value not in MINOR_UNITS:
            raise ValueError(f"must be one of {', '.join(map(str, MINOR_UNITS))}")
        return value

    @model_validator(mode="after")
    def _something_polled(self) -> UucallPbxSettings:
        if not any(interval > 0 for interval in self.poll_intervals().values()):
            raise ValueError("poll at least one source: the link's state comes from polling")
        return self

    def poll_intervals(self) -> dict[str, float]:
        """Poller name -> seconds between polls (0: that source is not polled)."""
        return {
            "account": self.account_poll_s,
            "cashlog": self.cashlog_poll_s,
            "bill": self.bill_poll_s,
            "oplog": self.oplog_poll_s,
            "notice": self.notice_poll_s,
        }

    @model_validator(mode="after")
    def _credentials(self) -> UucallPbxSettings:
        if self.auth != "signed" and (self.account_id or self.app_id):
            raise ValueError("account_id and app_id are only used with auth: signed")
        if self.auth == "none":
            if self.secret or self.secret_file or self.secret_env or self.username:
                raise ValueError("auth: none takes no secret and no username")
            return self
        check_secret_source("secret", self.secret, self.secret_file, self.secret_env)
        if self.auth == "basic" and not self.username:
            raise ValueError("auth: basic needs a username")
        if self.auth in ("header", "signed") and self.username:
            raise ValueError("a username is only used with auth: basic")
        if self.auth == "signed":
            for name, value in (("account_id", self.account_id), ("app_id", self.app_id)):
                if value is None:
                    raise ValueError(f"auth: signed needs {name}")
                if not _SIGNED_ID.match(value.get_secret_value()):
                    raise ValueError(f"{name} must be 1-64 letters, digits, '_' or '-'")
        return self

    def read_secret(self) -> str:
        """The token (header, signed) or password (basic), read where the settings say; never
        logged."""
        if self.auth == "none":
            return ""
        return read_secret(self.secret, self.secret_file, self.secret_env)
