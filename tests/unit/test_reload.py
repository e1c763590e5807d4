"""Reload without a broker: fingerprints, the diff, and the file watcher (ConfigMap swaps)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from gateway.app.reload import ConfigDiff, ConfigReloader, ReloadRefused, diff, fingerprints
from gateway.settings import Settings, load_settings
from tests.conftest import wait_for


def yeastar(tenant: str, **extra: Any) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "vendor": "yeastar",
        "base_url": "http://127.0.0.1:1",
        "client_id": "id",
        "client_secret": "very-secret-value",
        **extra,
    }


def settings(*pbxs: dict[str, Any], **extra: Any) -> Settings:
    return Settings(pbxs=list(pbxs), **extra)


def test_diff_names_added_removed_changed_and_unchangeable() -> None:
    old = fingerprints(settings(yeastar("a"), yeastar("b"), yeastar("c")), "salt")
    new = fingerprints(
        settings(
            yeastar("a"),
            yeastar("c", client_secret="rotated-secret"),
            yeastar("d"),
            bus={"url": "amqp://guest:guest@elsewhere:5672/"},
        ),
        "salt",
    )
    changes = diff(old, new)
    assert (changes.added, changes.removed, changes.changed, changes.unchanged) == (
        ["d"],
        ["b"],
        ["c"],
        ["a"],
    )
    assert changes.unchangeable == ["bus.url"]
    refusal = changes.refusal()
    assert refusal is not None and "bus.url" in refusal and "restart" in refusal


def test_naming_the_loop_auto_picks_is_no_change_another_loop_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = fingerprints(settings(yeastar("a")), "salt")  # auto: uvloop, installed here
    same = fingerprints(settings(yeastar("a"), event_loop="uvloop"), "salt")
    assert diff(running, same).unchangeable == []
    other = fingerprints(settings(yeastar("a"), event_loop="asyncio"), "salt")
    assert diff(running, other).unchangeable == ["event_loop"]
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    without_uvloop = fingerprints(settings(yeastar("a")), "salt")  # auto: asyncio
    assert diff(without_uvloop, other).unchangeable == []


def test_fingerprints_carry_no_secret_and_follow_secret_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("first-secret")
    pbx = yeastar("a", client_secret=None, client_secret_file=str(secret))
    served = fingerprints(settings(pbx), "s1")
    text = orjson.dumps(served).decode()
    assert "first-secret" not in text and "very-secret-value" not in text
    assert fingerprints(settings(pbx), "s2")["pbxs"]["a"] != served["pbxs"]["a"]  # salted
    secret.write_text("second-secret")  # the file rotated in place, the config unchanged
    assert diff(served, fingerprints(settings(pbx), "s1")).changed == ["a"]
    assert ConfigDiff().empty


async def test_watcher_follows_a_configmap_symlink_swap_and_settles(tmp_path: Path) -> None:
    """Kubernetes mounts ``gateway.yaml -> ..data/gateway.yaml`` and ``..data -> ..<stamp>``,
    and replaces a ConfigMap by repointing ``..data`` at a new directory."""
    mount = tmp_path / "config"
    mount.mkdir()

    def publish(stamp: str, pbxs: list[dict[str, Any]]) -> None:
        folder = mount / f"..{stamp}"
        folder.mkdir()
        (folder / "gateway.yaml").write_text(yaml.safe_dump({"pbxs": pbxs}))
        link = mount / "..data_tmp"
        link.symlink_to(folder.name)
        os.replace(link, mount / "..data")

    publish("v1", [yeastar("a")])
    (mount / "gateway.yaml").symlink_to("..data/gateway.yaml")
    path = mount / "gateway.yaml"
    applied: list[list[str]] = []
    current = fingerprints(load_settings(path), "s")

    async def apply(new: Settings) -> ConfigDiff:
        nonlocal current
        fresh = fingerprints(new, "s")
        changes = diff(current, fresh)
        if changes.refusal():
            raise ReloadRefused(changes.refusal() or "")
        current = fresh
        applied.append([p.tenant for p in new.pbxs])
        return changes

    reloader = ConfigReloader(path, load_settings, apply, poll_s=0.02, settle_s=0.2)
    watching = asyncio.create_task(reloader.run())
    try:
        publish("v2", [yeastar("a"), yeastar("b")])
        await wait_for(lambda: applied == [["a", "b"]], timeout=5)
        for n in range(30):  # a storm of swaps: only the last is applied
            publish(f"s{n}", [yeastar("a"), yeastar(f"x{n}")])
            await asyncio.sleep(0.005)
        await wait_for(lambda: len(applied) == 2, timeout=5)
        await asyncio.sleep(0.5)
        assert applied == [["a", "b"], ["a", "x29"]]
        assert reloader.record.generation == 3
        reloader.request()  # SIGHUP: read again, nothing changed, applied (empty) once
        await wait_for(lambda: reloader.record.reloads == 3, timeout=5)
        assert reloader.record.last_changes == {
            "added": [],
            "removed": [],
            "changed": [],
            "unchanged": 2,
        }
        publish("bad", [yeastar("a"), yeastar("a")])
        await wait_for(lambda: reloader.record.reloads == 4, timeout=5)
        assert reloader.record.last_ok is False and "unique" in (reloader.record.last_error or "")
        assert len(applied) == 3  # nothing applied
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
