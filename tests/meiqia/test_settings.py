"""A webhook secret that anyone could sign with is refused when the settings are read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from gateway import cli
from gateway.connectors.meiqia.settings import MIN_WEBHOOK_SECRET, MeiqiaPbxSettings
from gateway.settings import SettingsError, load_settings

GOOD = "whsec-0123456789abcdef"


def config(tmp_path: Path, **secret: str) -> Path:
    path = tmp_path / "gateway.yaml"
    pbx = {
        "tenant": "mq",
        "vendor": "meiqia",
        "base_url": "http://127.0.0.1:9",
        "token": "t",
        **secret,
    }
    path.write_text(yaml.safe_dump({"pbxs": [pbx]}))
    return path


@pytest.mark.parametrize("content", ["", "\n", "  \n", "short-secret"])
def test_an_empty_or_short_secret_file_is_refused(tmp_path: Path, content: str) -> None:
    secret = tmp_path / "hook.secret"
    secret.write_text(content)
    with pytest.raises(SettingsError, match=r"webhook_secret_file .*hook\.secret"):
        load_settings(config(tmp_path, webhook_secret_file=str(secret)))


@pytest.mark.parametrize("value", ["", "x" * (MIN_WEBHOOK_SECRET - 1)])
def test_an_empty_or_short_secret_variable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MQ_HOOK_SECRET", value)
    with pytest.raises(SettingsError, match="environment variable MQ_HOOK_SECRET"):
        load_settings(config(tmp_path, webhook_secret_env="MQ_HOOK_SECRET"))


def test_an_empty_inline_secret_is_refused_not_taken_as_webhooks_off() -> None:
    with pytest.raises(ValueError, match="webhook secret in webhook_secret is empty"):
        MeiqiaPbxSettings(
            tenant="mq", vendor="meiqia", base_url="http://h", token="t", webhook_secret=""
        )


def test_a_long_enough_secret_is_taken(tmp_path: Path) -> None:
    secret = tmp_path / "hook.secret"
    secret.write_text(GOOD + "\n")
    pbx = load_settings(config(tmp_path, webhook_secret_file=str(secret))).pbxs[0]
    assert isinstance(pbx, MeiqiaPbxSettings) and pbx.webhooks and pbx.webhook_key() == GOOD


def test_run_exits_2_with_the_reason_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "hook.secret"
    secret.write_text("")
    assert (
        cli._main(["run", "--config", str(config(tmp_path, webhook_secret_file=str(secret)))]) == 2
    )
    err = capsys.readouterr().err
    assert "webhook_secret_file" in err and "is empty" in err and "Traceback" not in err
    reasons = [line for line in err.splitlines() if "webhook secret" in line]
    assert len(reasons) == 1
