"""One XSwitch XCC system: its member of the ``pbxs[]`` union (``vendor: xswitch``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.settings_models import PbxSettings, check_secret_source, read_secret

#: Subject names of the XCC controller side (xctrl ``docs/channel.md``: "Ctrl侧为控制侧，订阅
#: ``cn.xswitch.ctrl`` 及 ``cn.xswitch.ctrl.$ctrl-uuid``"; CDRs on their own subject).
CTRL_SUBJECT = "cn.xswitch.ctrl"
NODE_SUBJECT = "cn.xswitch.node"


class XSwitchPbxSettings(PbxSettings):
    """REST credentials (``dev_key``), the NATS server and subjects, JetStream and polling."""

    vendor: Literal["xswitch"]
    base_url: str = Field(pattern=r"^https?://[^\s/]+(:\d+)?/?$", description="XCC REST API")
    dev_key: SecretStr | None = Field(None, description="the XCC developer key")
    dev_key_file: Path | None = None
    dev_key_env: str | None = None
    request_timeout_s: float = Field(10.0, gt=0, description="one REST request")
    nats_url: str = Field(
        "nats://127.0.0.1:4222",
        pattern=r"^(nats|tls)://\S+$",
        description="tls:// requires TLS: the link never sends its CONNECT (credentials) in"
        " clear, even to a server that does not ask for TLS; its certificate is checked against"
        " the system's CAs and the PBX's ca_file",
    )
    nats_tls_handshake_first: bool = Field(
        False,
        description="start TLS before the server's first word (nats-server 2.10 and later, with"
        " tls { handshake_first: true }); needs a tls:// nats_url",
    )
    nats_cert_file: Path | None = Field(
        None, description="client certificate (PEM) for a server that verifies clients"
    )
    nats_key_file: Path | None = Field(None, description="the key of nats_cert_file (PEM)")
    nats_creds_file: Path | None = Field(
        None, description="NATS user credentials (.creds: the user's JWT and nkey seed)"
    )
    nats_nkey_seed_file: Path | None = Field(
        None, description="a file holding the user's nkey seed (SU...), for nkey users"
    )
    subject_prefix: str = Field(
        "",
        pattern=r"^([A-Za-z0-9_-]+\.)*$",
        description="multi-tenant prefix before every subject, e.g. 'from-acme.' (ends in '.')",
    )
    ctrl_uuid: str = Field(
        "pbx-gateway",
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="this controller's id: events on cn.xswitch.ctrl.<ctrl_uuid> are ours too",
    )
    cdr_subjects: list[str] = Field(
        default_factory=lambda: [
            "cn.xswitch.cdr",
            "cn.xswitch.ctrl.event.cdr",
            "cn.xswitch.event.cdr",
        ],
        description="where XCC publishes Event.CDR (the node's cdr-subject; the manuals "
        "configure cn.xswitch.cdr, the SDK also uses the other two)",
    )
    observe_subjects: list[str] = Field(
        default_factory=lambda: ["cn.xswitch.ctrl.*", "cn.xswitch.ctrl.app.>"],
        description="other controllers' own subjects, read as an observer (never answered): "
        "after a controller Accepts a call, the node sends its later events only to "
        "cn.xswitch.ctrl.<that controller's uuid> (ids may contain dots, e.g. app.acd)",
    )
    command_prefix: str = Field(
        "",
        pattern=r"^([A-Za-z0-9_-]+\.)*$",
        description="prefix of subjects the gateway sends to, e.g. 'to-acme.' (ends in '.')",
    )
    jetstream: Literal["auto", "on", "off"] = Field(
        "auto",
        description="capture the XCC subjects in a stream with a durable consumer (auto: when "
        "the server has JetStream)",
    )
    stream: str = Field("", pattern=r"^[A-Za-z0-9_-]*$", description="default XCC_<tenant>")
    stream_max_age_s: float = Field(86400.0, gt=0, description="how long the stream keeps messages")
    stream_max_bytes: int = Field(
        1 << 30, gt=0, description="the stream's size cap; the oldest messages go first"
    )
    ack_wait_s: float = Field(
        10.0, gt=0, description="unacknowledged messages (a cut mid-batch) come again after this"
    )
    config_poll_interval_s: float = Field(60.0, gt=0, description="extensions/queues/IVRs/hotlines")
    ping_interval_s: float = Field(
        20.0, gt=0, description="NATS PING period; two unanswered close the link"
    )
    request_reply_timeout_s: float = Field(5.0, gt=0, description="XNode.* NATS requests")

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_secret_source(self) -> XSwitchPbxSettings:
        check_secret_source("dev_key", self.dev_key, self.dev_key_file, self.dev_key_env)
        return self

    @model_validator(mode="after")
    def _nats_security(self) -> XSwitchPbxSettings:
        tls = self.nats_url.startswith("tls://")
        if self.nats_tls_handshake_first and not tls:
            raise ValueError("nats_tls_handshake_first needs a tls:// nats_url")
        if (self.nats_cert_file is None) != (self.nats_key_file is None):
            raise ValueError("nats_cert_file and nats_key_file go together")
        if self.nats_cert_file is not None and self.nats_key_file is not None:
            if not tls:
                raise ValueError("nats_cert_file (a client certificate) needs a tls:// nats_url")
            import ssl

            try:
                ssl.create_default_context().load_cert_chain(
                    str(self.nats_cert_file), str(self.nats_key_file)
                )
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"nats_cert_file {self.nats_cert_file} / nats_key_file"
                    f" {self.nats_key_file}: no usable certificate and key ({exc})"
                ) from None
        if self.nats_creds_file is not None and self.nats_nkey_seed_file is not None:
            raise ValueError("give nats_creds_file or nats_nkey_seed_file, not both")
        for name in ("nats_creds_file", "nats_nkey_seed_file"):
            path: Path | None = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {path} does not exist")
        return self

    def secret(self) -> str:
        """The developer key, read where the settings say; never logged."""
        return read_secret(self.dev_key, self.dev_key_file, self.dev_key_env)

    def stream_name(self) -> str:
        return self.stream or f"XCC_{self.tenant}"
