"""Who may run what: a tenant's command policy, and where replies may go.

Anyone allowed to publish on ``pbx.commands`` reaches this point; the broker's topic permissions
on ``<tenant>.<command>`` are the first layer (SECURITY.md), this is the second. The defaults
let ordinary call control and read-only lists through and refuse *sensitive* commands unless
a tenant names them in ``allow_sensitive``: those that delete, set a credential or a
permission, or return credentials.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from gateway.schema.commands import CommandModel, credential_field
from gateway.settings_models import PbxSettings

#: Args flags asking for credentials in the result (SIP passwords, ``ha1`` hashes ...).
SECRET_REQUESTS = ("include_password", "include_secrets")
#: Name patterns of commands that destroy or change who may do what.
DESTRUCTIVE = ("*.delete", "*_auth.update")
#: Direct Reply-to: the broker rewrites it to ``amq.rabbitmq.reply-to.<channel key>``.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


def returns_secrets(command: CommandModel) -> bool:
    """The command asks for credentials in its result."""
    return any(getattr(command.args, flag, False) is True for flag in SECRET_REQUESTS)


def sensitivity(command: CommandModel) -> str | None:
    """Why ``command`` is sensitive (off unless allowed per tenant), or None."""
    if returns_secrets(command):
        return "returns credentials"
    if any(fnmatchcase(command.command, pattern) for pattern in DESTRUCTIVE):
        return "deletes or changes permissions"
    for name in type(command.args).model_fields:
        if credential_field(name) and getattr(command.args, name, None) is not None:
            return "sets a credential"
    return None


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in patterns)


@dataclass(frozen=True, slots=True)
class CommandPolicy:
    allow: Sequence[str] = ("*",)
    deny: Sequence[str] = ()
    allow_sensitive: Sequence[str] = field(default_factory=tuple)

    def refusal(self, command: CommandModel) -> str | None:
        """Why this tenant may not run ``command`` (the ``forbidden`` message), or None."""
        name = command.command
        if _matches(name, self.deny):
            return f"{name} is denied by this PBX's command policy"
        if not _matches(name, self.allow):
            return f"{name} is not allowed by this PBX's command policy"
        why = sensitivity(command)
        if why is not None and not _matches(name, self.allow_sensitive):
            return (
                f"{name} {why}: refused unless this PBX's command policy lists it in"
                " allow_sensitive"
            )
        return None


DEFAULT_POLICY = CommandPolicy()


def command_policy(pbx: PbxSettings) -> CommandPolicy:
    """The policy a PBX's settings give."""
    settings = pbx.command_policy
    return CommandPolicy(
        tuple(settings.allow), tuple(settings.deny), tuple(settings.allow_sensitive)
    )


def reply_allowed(reply_to: str, prefixes: Iterable[str]) -> bool:
    """Whether the gateway may publish a reply into ``reply_to`` (Direct Reply-to, or a queue
    named with one of the configured ``prefixes``)."""
    if reply_to == DIRECT_REPLY_TO or reply_to.startswith(DIRECT_REPLY_TO + "."):
        return True
    return any(reply_to.startswith(prefix) for prefix in prefixes)
