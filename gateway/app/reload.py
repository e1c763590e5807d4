"""Configuration reload: what changed between two configurations, and when to look again.

A reload reads and validates the whole file first; only a valid file whose changes are all
live-changeable (the PBXs) is applied, PBX by PBX (:class:`ConfigDiff`). Everything else
(``bus``, ``state_dir``, ``http``, ...) is read once at start: a change there is refused with the
setting's name and the advice to restart, and nothing changes.

PBXs are compared by fingerprint: a hash of every setting of the PBX and of the content of each
``*_file`` it names (a Kubernetes Secret rotated in place is a change). Fingerprints are salted
per instance, so the admin endpoint that serves them (``/config.json``) gives nothing to look a
secret up by; ``gateway config check --against`` computes its own with the same salt.

:class:`ConfigWatcher` notices a changed file by polling its ``stat()`` (following symlinks:
Kubernetes swaps a mounted ConfigMap by repointing ``..data``, which changes the inode the path
resolves to, not the file's own mtime), waits until the file has stopped changing (a storm of
rewrites applies once, the last version), and is also woken by SIGHUP.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, SecretBytes, SecretStr

from gateway.logging import get_logger
from gateway.runtime.metrics import (
    CONFIG_GENERATION,
    CONFIG_LAST_RELOAD,
    CONFIG_LAST_RELOAD_OK,
    CONFIG_RELOADS,
)
from gateway.settings import PbxSettings, Settings, SettingsError

#: Advice given with a setting that cannot change while the gateway runs.
RESTART_ADVICE = "read once at start: restart the gateway (instance by instance) to change it"


def plain(value: Any) -> Any:
    """A settings value as plain JSON-able data, secrets revealed (for hashing, never shown)."""
    if isinstance(value, BaseModel):
        return {k: plain(v) for k, v in value if not k.startswith("_")}
    if isinstance(value, SecretStr | SecretBytes):
        secret = value.get_secret_value()
        return secret.decode() if isinstance(secret, bytes) else secret
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [plain(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def one_line(text: str) -> str:
    """A multi-line error (one bad field a line) as one log line: ``head: a; b; c``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else text
    return f"{lines[0]} {'; '.join(lines[1:])}"


def _hash(salt: str, data: Any) -> str:
    raw = orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(salt.encode() + b"\0" + raw).hexdigest()[:32]


def _file_digest(path: Any) -> str:
    try:
        return hashlib.sha256(Path(str(path)).read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"


def pbx_fingerprint(pbx: PbxSettings, salt: str) -> str:
    """Every setting of the PBX and the content of each file it names (``*_file``)."""
    data = plain(pbx)
    files = {
        name: _file_digest(value)
        for name, value in sorted(data.items())
        if name.endswith("_file") and value is not None
    }
    return _hash(salt, {"settings": data, "files": files})


def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def fingerprints(settings: Settings, salt: str) -> dict[str, Any]:
    """What ``/config.json`` serves: per PBX its vendor and fingerprint, per other setting a
    fingerprint (no value, no secret)."""
    rest = plain(settings)
    rest.pop("pbxs", None)
    rest["event_loop"] = settings.loop_in_use()  # `auto` is the loop it picks: no change
    return {
        "salt": salt,
        "pbxs": {
            p.tenant: {"vendor": p.vendor, "fingerprint": pbx_fingerprint(p, salt)}
            for p in settings.pbxs
        },
        "settings": {name: _hash(salt, value) for name, value in _leaves(rest).items()},
    }


def named_files(settings: Settings) -> list[Path]:
    """The files the PBXs' settings name (``*_file``: secrets, CAs): watched like the config."""
    return [
        value
        for pbx in settings.pbxs
        for name in _file_fields(type(pbx))
        if isinstance(value := getattr(pbx, name, None), Path)
    ]


@functools.cache
def _file_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """A settings model's ``*_file`` fields: looked up once per vendor, not per PBX and poll."""
    return tuple(name for name in model.model_fields if name.endswith("_file"))


def new_salt() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class ConfigDiff:
    """PBXs added, removed and changed, and the settings that changed but cannot live."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    unchangeable: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.unchangeable)

    def summary(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "unchanged": len(self.unchanged),
        }

    def refusal(self) -> str | None:
        """The one-line error of a reload that changes what cannot change live, or None."""
        if not self.unchangeable:
            return None
        return f"cannot change while running: {', '.join(self.unchangeable)} ({RESTART_ADVICE})"


def diff(old: dict[str, Any], new: dict[str, Any]) -> ConfigDiff:
    """Compare two :func:`fingerprints` made with the same salt."""
    old_pbxs, new_pbxs = old["pbxs"], new["pbxs"]
    settings = sorted(set(old["settings"]) | set(new["settings"]))
    return ConfigDiff(
        added=[t for t in new_pbxs if t not in old_pbxs],
        removed=[t for t in old_pbxs if t not in new_pbxs],
        changed=[t for t in new_pbxs if t in old_pbxs and old_pbxs[t] != new_pbxs[t]],
        unchanged=[t for t in new_pbxs if t in old_pbxs and old_pbxs[t] == new_pbxs[t]],
        unchangeable=[
            name for name in settings if old["settings"].get(name) != new["settings"].get(name)
        ],
    )


@dataclass
class ReloadRecord:
    """The outcome of the last reload, for the status page, ``/readyz`` and the metrics."""

    generation: int = 1
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    last_at: str | None = None
    last_ok: bool | None = None
    last_error: str | None = None
    last_changes: dict[str, Any] | None = None
    reloads: int = 0

    def report(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "loaded_at": self.loaded_at,
            "last_reload": None
            if self.last_at is None
            else {
                "at": self.last_at,
                "ok": self.last_ok,
                "error": self.last_error,
                "changes": self.last_changes,
            },
        }


def _failed(record: ReloadRecord, error: str) -> str:
    """Record a reload that failed (status page, metrics); its error."""
    record.last_ok, record.last_error, record.last_changes = False, error, None
    CONFIG_RELOADS.labels("failed").inc()
    CONFIG_LAST_RELOAD_OK.set(0)
    return error


class ReloadRefused(Exception):
    """A reload that changes nothing: the file is invalid or changes what cannot change live."""


#: Applies a validated configuration; returns what changed, raises :class:`ReloadRefused`.
Apply = Callable[[Settings], Awaitable[ConfigDiff]]


class ConfigReloader:
    """Reads the file again on request (SIGHUP, the file changing) and applies it."""

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], Settings],
        apply: Apply,
        *,
        watch_files: Callable[[], Iterable[Path]] = tuple,
        poll_s: float = 0.5,
        settle_s: float = 0.5,
    ) -> None:
        self.path = path
        self._load = load
        self._apply = apply
        self._watch_files = watch_files
        self._poll_s = poll_s
        self._settle_s = settle_s
        self.record = ReloadRecord()
        self._requested = asyncio.Event()
        self._lock = asyncio.Lock()
        self._log = get_logger("config")
        # taken now, when the running settings were read: a change before the watch starts counts
        self._seen = self._signature()
        CONFIG_GENERATION.set(self.record.generation)

    def report(self) -> dict[str, Any]:
        """The ``config`` section of the status (``/status.json``, ``/readyz``)."""
        return {**self.record.report(), "file": str(self.path)}

    @staticmethod
    def unwatched() -> dict[str, Any]:
        """The ``config`` section of an instance started without a file (nothing to reload)."""
        return {"generation": 1, "file": None, "loaded_at": None, "last_reload": None}

    def request(self) -> None:
        """Reload soon (SIGHUP): coalesced with any other request not yet served."""
        self._requested.set()

    def _signature(self) -> tuple[Any, ...]:
        """What changes when the file or a secret file it names is replaced or rewritten."""
        out: list[Any] = []
        for path in (self.path, *self._watch_files()):
            try:
                st = os.stat(path)  # follows symlinks: a ConfigMap's ..data swap shows
                out.append((str(path), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError as exc:
                out.append((str(path), exc.errno))
        return tuple(out)

    async def run(self) -> None:
        """Watch until cancelled: a change (or a request) is applied once the files have been
        still for ``settle_s``."""
        seen = self._seen
        while True:
            try:
                async with asyncio.timeout(self._poll_s):
                    await self._requested.wait()
            except TimeoutError:
                pass
            current = self._signature()
            if current == seen and not self._requested.is_set():
                continue
            # Wait for the writes to stop: the last version of a storm is applied, once.
            while True:
                await asyncio.sleep(self._settle_s)
                settled = self._signature()
                if settled == current:
                    break
                current = settled
            self._requested.clear()
            seen = self._seen = current
            await self.reload()

    async def reload(self) -> bool:
        """Read, validate and apply the file; False (and nothing changed) if refused."""
        async with self._lock:
            started = time.monotonic()
            record = self.record
            record.reloads += 1
            record.last_at = datetime.now(UTC).isoformat()
            CONFIG_LAST_RELOAD.set(time.time())
            try:
                settings = self._load(self.path)
                read_s = time.monotonic() - started
                changes = await self._apply(settings)
            except (SettingsError, ReloadRefused) as exc:
                error = _failed(record, one_line(str(exc)))
                self._log.error(
                    "config_reload_failed",
                    file=str(self.path),
                    error=error,
                    generation=record.generation,
                    detail="nothing changed: the running configuration stays",
                )
                return False
            except Exception as exc:  # e.g. the broker refusing a new PBX's queue
                error = _failed(record, f"{type(exc).__name__}: {exc}")
                self._log.exception(
                    "config_reload_failed",
                    file=str(self.path),
                    error=error,
                    detail="applied in part: reload again (SIGHUP) once the cause is fixed",
                )
                return False
            record.generation += 1
            record.loaded_at = record.last_at
            record.last_ok, record.last_error = True, None
            record.last_changes = changes.summary()
            CONFIG_GENERATION.set(record.generation)
            CONFIG_RELOADS.labels("ok").inc()
            CONFIG_LAST_RELOAD_OK.set(1)
            self._log.info(
                "config_reloaded",
                file=str(self.path),
                generation=record.generation,
                took_s=round(time.monotonic() - started, 3),
                read_s=round(read_s, 3),  # reading and validating the whole file
                **changes.summary(),
            )
            return True


def fetch_running(
    url: str, token: str | None, basic: tuple[str, str] | None, timeout: float
) -> dict[str, Any]:
    """A running instance's ``/config.json``; :class:`OSError` with a readable reason if not."""
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url.rstrip("/") + "/config.json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    elif basic:
        pair = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {pair}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        why = "refused the credentials (--token)" if exc.code in (401, 403) else f"HTTP {exc.code}"
        if exc.code == 404:
            why = "has no /config.json (an older gateway version?)"
        raise OSError(why) from None
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None
    except (TimeoutError, orjson.JSONDecodeError) as exc:
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    if not isinstance(body, dict) or not {"salt", "pbxs", "settings"} <= body.keys():
        raise OSError("answered something else than a gateway's /config.json")
    return body


def check_against(
    settings: Settings,
    url: str,
    token: str | None,
    basic: tuple[str, str] | None,
    timeout: float = 5.0,
) -> tuple[str, bool]:
    """What a reload of ``settings`` would change on the instance at ``url``, as text, and
    whether the reload would be refused."""
    try:
        running = fetch_running(url, token, basic, timeout)
    except OSError as exc:
        return f"no diff: the instance at {url} did not answer ({exc})", False
    changes = diff(running, fingerprints(settings, str(running["salt"])))
    lines = [f"against {url} (configuration generation {running.get('generation', '?')}):"]
    for label, tenants in (
        ("added", changes.added),
        ("removed", changes.removed),
        ("changed (restarted alone)", changes.changed),
    ):
        lines.append(f"  {label}: {', '.join(tenants) if tenants else 'none'}")
    lines.append(f"  unchanged: {len(changes.unchanged)} PBX(s), left running as they are")
    refusal = changes.refusal()
    if refusal is not None:
        lines.append(f"  a reload would be refused: {refusal}")
    elif changes.empty:
        lines.append("  nothing to apply")
    return "\n".join(lines), refusal is not None
