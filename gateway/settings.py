"""Configuration: a YAML file plus ``GATEWAY__...`` environment overrides, validated at start-up.

Only ``app.py`` and the CLI read settings; components receive the parts they need. The models
that need no vendor registry live in :mod:`gateway.settings_models` (the leaf a plugin imports);
this root adds ``pbxs[]``, a union over the registered plugins' models, and re-exports them.
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, cast

import yaml  # type: ignore[import-untyped]
from pydantic import (
    ConfigDict,
    Field,
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

from gateway.connectors import registry
from gateway.settings_models import (
    AdminListenerSettings,
    BackoffSettings,
    BusSettings,
    CommandSettings,
    HttpSettings,
    LeaseSettings,
    LoggingSettings,
    OutboxSettings,
    PbxSettings,
    PublicListenerSettings,
    RecoverySettings,
    amqp_url_problem,
    check_secret_source,
    read_secret,
    redact_url,
    split_urls,
)

__all__ = [
    "AdminListenerSettings",
    "AnyPbxSettings",
    "BackoffSettings",
    "BusSettings",
    "CommandSettings",
    "HttpSettings",
    "LeaseSettings",
    "LoggingSettings",
    "OutboxSettings",
    "PbxSettings",
    "PublicListenerSettings",
    "RecoverySettings",
    "Settings",
    "SettingsError",
    "amqp_url_problem",
    "check_secret_source",
    "load_settings",
    "read_secret",
    "redact_url",
    "split_urls",
]


class _AnyVendorPbx(PbxSettings):
    """Checks the common fields of a PBX whose vendor no plugin knows."""

    model_config = ConfigDict(extra="ignore")


def _vendor_error(vendor: Any) -> InitErrorDetails:
    if vendor is None:
        return {"type": "missing", "loc": ("vendor",), "input": None}
    return {
        "type": PydanticCustomError(
            "unknown_vendor", "{message}", {"message": registry.unavailable(vendor)}
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
    known = registry.plugins()
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


class _YamlSource(YamlConfigSettingsSource):
    """The config file, read with libyaml when PyYAML has it (five times faster on a file of a
    thousand PBXs, read again at each reload); a file libyaml refuses is read again by the pure
    loader, whose error messages are the ones the gateway has always shown."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        # (pydantic-settings 2.16 widened the argument; the gateway's file is always a Path)
        data = self._parse(Path(str(file_path)))
        if not isinstance(data, dict):
            raise _NotAMapping(_KINDS.get(type(data), type(data).__name__))
        return data

    def _parse(self, file_path: Path) -> Any:
        loader = getattr(yaml, "CSafeLoader", None)
        if loader is not None:
            text = file_path.read_text(encoding=self.yaml_file_encoding)
            try:
                return yaml.load(text, Loader=loader) or {}  # (CSafeLoader: the safe one)
            except yaml.YAMLError:
                pass
        return super()._read_file(file_path)


class _NotAMapping(ValueError):
    """The file's top level is a scalar or a list: ``str()`` says which."""


_KINDS: dict[type, str] = {
    str: "a string",
    list: "a list",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}


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
    shutdown_timeout_s: float = Field(
        10.0, gt=0, description="how long a stop may take to flush the outbox"
    )
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto",
        description="the event loop of `gateway run`: `uvloop` (the `fast` extra, in the image)"
        " takes 5-15 % less CPU per event (docs/performance.md), `asyncio` is Python's"
        " own; `auto`: uvloop when it is installed",
    )
    pbxs: list[AnyPbxSettings] = Field(
        default_factory=list, description="the PBXs, each with the keys of its vendor"
    )

    @field_validator("event_loop")
    @classmethod
    def _loop_installed(cls, value: str) -> str:
        installed = importlib.util.find_spec("uvloop") is not None
        if value == "uvloop" and not installed:
            raise ValueError("uvloop is not installed: pip install 'pbx-gateway[fast]'")
        return value

    def loop_in_use(self) -> str:
        """``event_loop`` with ``auto`` decided: the loop ``gateway run`` runs on."""
        if self.event_loop != "auto":
            return self.event_loop
        return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"

    @model_validator(mode="after")
    def _unique_tenants(self) -> Settings:
        counts = Counter(p.tenant for p in self.pbxs)  # (not list.count: N² at 5,000 PBXs)
        duplicates = sorted(t for t, n in counts.items() if n > 1)
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
            sources.append(_YamlSource(settings_cls, yaml_file=cls.yaml_path))
        return tuple(sources)


class SettingsError(Exception):
    """Invalid configuration; ``str()`` gives every bad field a line of its own, naming it."""


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the YAML file (if any) and the environment; environment wins over the file."""
    if path is not None and not path.is_file():
        why = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise SettingsError(f"config file {path} {why}")

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
        where = _yaml_lines(path)
        lines = [
            f"invalid setting {'.'.join(map(str, err['loc'])) or '(root)'}: {_message(err)}"
            + (_from_environment(tuple(err["loc"])) or where(tuple(err["loc"])))  # env wins
            for err in exc.errors()
        ]
        raise SettingsError("\n".join(lines)) from None
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"config file {path} is not UTF-8 text (byte {exc.start}): is it the right file?"
        ) from None
    except _NotAMapping as exc:
        raise SettingsError(
            f"config file {path} holds {exc}, not a mapping of settings (bus:, http:, pbxs:, ...)"
        ) from None
    except (TypeError, ValueError) as exc:
        raise SettingsError(
            f"config file {path} must hold a mapping of settings (bus:, http:, pbxs:, ...): {exc}"
        ) from None
    return loaded


def _message(err: Any) -> str:
    """Pydantic's message without the "Value error, " it puts before a validator's own words; a
    URL that does not match its field's pattern is described, not shown the regular expression."""
    loc = err.get("loc") or ("",)
    if err.get("type") == "string_pattern_mismatch" and str(loc[-1]).endswith("url"):
        return (
            "must be an http:// or https:// URL without a query, such as"
            f" https://pbx.example.com:8088, not {redact_url(str(err.get('input')))!r}"
        )
    return str(err["msg"]).removeprefix("Value error, ")


def _from_environment(loc: tuple[Any, ...]) -> str:
    """`` (environment variable NAME)`` when the bad value came from ``GATEWAY__*``, else ""."""
    name = "GATEWAY__" + "__".join(str(part) for part in loc).upper()
    present = {key.upper() for key in os.environ}
    return f" (environment variable {name})" if loc and name in present else ""


def _yaml_lines(path: Path | None) -> Any:
    """``loc -> " (line N of FILE)"``: where in the file a bad field is (empty when it is not
    in the file: a default, an environment variable)."""
    root = None
    if path is not None:
        try:
            root = yaml.compose(path.read_text())
        except (OSError, yaml.YAMLError):
            root = None

    def where(loc: tuple[Any, ...]) -> str:
        node, line = root, None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                found = next(
                    (v for k, v in node.value if str(getattr(k, "value", "")).lower() == str(part)),
                    None,
                )
                if found is None:
                    break
                line = next(k for k, v in node.value if v is found).start_mark.line + 1
                node = found
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    break
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return f" (line {line} of {path})" if line is not None else ""

    return where
