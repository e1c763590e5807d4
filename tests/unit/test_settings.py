from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from gateway.connectors.yeastar.settings import ALL_YEASTAR_TOPICS, NEWER_YEASTAR_TOPICS
from gateway.settings import SettingsError, load_settings, redact_url

GOOD_PBX = {
    "tenant": "acme-hq",
    "vendor": "yeastar",
    "base_url": "https://192.0.2.10:8088/",
    "client_id": "id",
    "client_secret": "s3cret-value",
    "timezone": "Asia/Shanghai",
}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_example_file_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_HQ_CLIENT_SECRET", "x")
    monkeypatch.setenv("ACME_CC_DEV_KEY", "k")
    monkeypatch.setenv("ACME_FIN_UUCALL_TOKEN", "u")
    monkeypatch.setenv("ACME_MQ_TOKEN", "mq-token")
    monkeypatch.setenv("ACME_MQ_WEBHOOK_SECRET", "mq-hook-0123456789")
    settings = load_settings(Path("config/gateway.example.yaml"))
    http = settings.http  # the two listeners, not the single one of earlier versions
    assert not http.single and (http.admin.port, http.public.port) == (8080, 8081)
    yeastar, xswitch = settings.pbxs[:2]
    assert (yeastar.tenant, yeastar.vendor, yeastar.secret()) == ("acme-hq", "yeastar", "x")
    assert (xswitch.tenant, xswitch.vendor, xswitch.secret()) == ("acme-cc", "xswitch", "k")
    uucall = next(p for p in settings.pbxs if p.vendor == "uucall")
    assert (uucall.tenant, uucall.uid, uucall.read_secret()) == ("acme-fin", "10001", "u")
    meiqia = next(p for p in settings.pbxs if p.vendor == "meiqia")
    assert (meiqia.tenant, meiqia.secret(), meiqia.webhook_key()) == (
        "acme-mq",
        "mq-token",
        "mq-hook-0123456789",
    )


def test_defaults_and_normalization(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {"pbxs": [GOOD_PBX]}))
    pbx = settings.pbxs[0]
    assert pbx.base_url == "https://192.0.2.10:8088"
    assert pbx.topics == [*ALL_YEASTAR_TOPICS, *NEWER_YEASTAR_TOPICS] and 30021 not in pbx.topics
    assert pbx.heartbeat_interval_s < 60


def test_every_bad_field_is_listed(tmp_path: Path) -> None:
    bad = {
        "tenant": "has.dot",
        "vendor": "yeastar",
        "base_url": "ftp://x",
        "client_id": "",
        "timezone": "Mars/Base",
        "heartbeat_interval_s": 90,
    }
    with pytest.raises(SettingsError) as err:
        load_settings(write(tmp_path, {"bus": {"confirm_window": 0}, "pbxs": [bad], "typo": 1}))
    text = str(err.value)
    for field in (
        "bus.confirm_window",
        "pbxs.0.tenant",
        "pbxs.0.base_url",
        "pbxs.0.client_id",
        "pbxs.0.timezone",
        "pbxs.0.heartbeat_interval_s",
        "typo",
    ):
        assert field in text, field


def test_an_unknown_vendor_is_named_with_the_registered_ones_and_common_fields_checked(
    tmp_path: Path,
) -> None:
    bad = {"tenant": "has.dot", "vendor": "nope", "timezone": "Mars/Base", "base_url": "x"}
    with pytest.raises(SettingsError) as err:
        load_settings(write(tmp_path, {"pbxs": [bad, {**GOOD_PBX, "client_id": ""}]}))
    text = str(err.value)
    assert "pbxs.0.vendor: unknown vendor 'nope'; registered: " in text and "yeastar" in text
    assert "pbxs.0.tenant" in text and "pbxs.0.timezone" in text
    assert "base_url" not in text, "a field only the unknown vendor could judge is not guessed"
    assert "pbxs.1.client_id" in text, "the other PBXs are still checked"


def test_each_vendor_gets_its_own_model(tmp_path: Path) -> None:
    from gateway.connectors.yeastar.settings import YeastarPbxSettings

    settings = load_settings(write(tmp_path, {"pbxs": [GOOD_PBX]}))
    assert type(settings.pbxs[0]) is YeastarPbxSettings


def test_secret_sources_are_exclusive_and_checked(tmp_path: Path) -> None:
    both = {**GOOD_PBX, "client_secret_env": "X"}
    with pytest.raises(SettingsError, match="exactly one"):
        load_settings(write(tmp_path, {"pbxs": [both]}))
    missing_env = {k: v for k, v in GOOD_PBX.items() if k != "client_secret"}
    missing_env["client_secret_env"] = "SURELY_NOT_SET_1234"
    with pytest.raises(SettingsError, match="SURELY_NOT_SET_1234"):
        load_settings(write(tmp_path, {"pbxs": [missing_env]}))


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    pbx = {k: v for k, v in GOOD_PBX.items() if k != "client_secret"}
    pbx["client_secret_file"] = str(secret)
    assert load_settings(write(tmp_path, {"pbxs": [pbx]})).pbxs[0].secret() == "from-file"


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY__LOGGING__FORMAT", "console")
    monkeypatch.setenv("GATEWAY__BUS__URL", "amqp://u:p@rabbit:5672/")
    settings = load_settings(write(tmp_path, {"logging": {"format": "json"}, "pbxs": [GOOD_PBX]}))
    assert settings.logging.format == "console"
    assert settings.bus.url.get_secret_value() == "amqp://u:p@rabbit:5672/"


def test_duplicate_tenants_rejected(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="acme-hq"):
        load_settings(write(tmp_path, {"pbxs": [GOOD_PBX, GOOD_PBX]}))


def test_secrets_never_printed(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {"pbxs": [GOOD_PBX]}))
    assert "s3cret-value" not in repr(settings) and "s3cret-value" not in str(settings.model_dump())
    assert redact_url("amqp://guest:guest@h:5672/") == "amqp://guest:***@h:5672/"


def test_deploy_configs_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PBX_SECRET", "x")
    monkeypatch.setenv("ACME_HQ_CLIENT_SECRET", "x")
    assert load_settings(Path("deploy/gateway.compose.yaml")).pbxs[0].tenant == "demo"
    docs = list(yaml.safe_load_all(Path("deploy/kubernetes.yaml").read_text()))
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    path = tmp_path / "k8s.yaml"
    path.write_text(config_map["data"]["gateway.yaml"])
    assert load_settings(path).pbxs[0].tenant == "acme-hq"


def test_a_pbx_without_a_vendor_or_of_a_foreign_model_is_refused(tmp_path: Path) -> None:
    from gateway.settings import PbxSettings, Settings

    no_vendor = {k: v for k, v in GOOD_PBX.items() if k != "vendor"}
    with pytest.raises(SettingsError, match=r"pbxs\.0\.vendor: Field required"):
        load_settings(write(tmp_path, {"pbxs": [no_vendor]}))
    with pytest.raises(ValueError, match="unknown vendor 'nope'"):
        Settings(pbxs=[PbxSettings(tenant="x", vendor="nope")])


def test_a_dump_keeps_every_vendor_field_and_loads_back(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {"pbxs": [GOOD_PBX]}))
    dumped = settings.model_dump(mode="json")
    assert dumped["pbxs"][0]["client_id"] == "id" and "topics" in dumped["pbxs"][0]
    dumped["pbxs"][0]["client_secret"] = "s3cret-value"  # dumps redact it
    dumped["bus"]["url"] = settings.bus.url.get_secret_value()  # and the broker's URL
    again = load_settings(write(tmp_path, dumped))
    assert again.pbxs[0] == settings.pbxs[0]


def test_repeated_tenants_are_named_once_each(tmp_path: Path) -> None:
    pbxs = [{**GOOD_PBX, "tenant": t} for t in ("b", "a", "b", "c", "a", "b")]
    with pytest.raises(SettingsError, match=r"repeated: a, b$"):
        load_settings(write(tmp_path, {"pbxs": pbxs}))


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"just a string\n", "holds a string, not a mapping of settings"),
        (b"- a\n- b\n", "holds a list, not a mapping of settings"),
        (b"42\n", "holds a number, not a mapping of settings"),
        (b"bus: \x85\xff\n", "is not UTF-8 text (byte 5)"),
    ],
    ids=["string", "list", "number", "binary"],
)
def test_a_file_that_is_no_mapping_is_named_plainly(
    tmp_path: Path, content: bytes, said: str
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(content)
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert str(err.value) == f"config file {path} {said}" + (
        " (bus:, http:, pbxs:, ...)" if "mapping" in said else ": is it the right file?"
    )


def test_a_directory_is_not_called_missing(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="is a directory, not a file"):
        load_settings(tmp_path)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_a_validator_message_has_no_pydantic_prefix(tmp_path: Path) -> None:
    pbx = {**GOOD_PBX, "client_secret": None, "client_secret_env": "NEWBIE_UNSET_SECRET_VAR"}
    with pytest.raises(SettingsError) as err:
        load_settings(write(tmp_path, {"pbxs": [pbx]}))
    text = str(err.value)
    assert "environment variable NEWBIE_UNSET_SECRET_VAR is not set" in text
    assert "Value error" not in text


def test_the_event_loop_is_uvloop_when_installed_or_asked_for_else_asyncio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = load_settings(write(tmp_path, {}))
    assert default.event_loop == "auto" and default.loop_in_use() == "uvloop"  # the test extras
    uvloop = load_settings(write(tmp_path, {"event_loop": "uvloop"}))
    assert uvloop.loop_in_use() == "uvloop"
    assert load_settings(write(tmp_path, {"event_loop": "asyncio"})).loop_in_use() == "asyncio"
    with pytest.raises(SettingsError, match="event_loop") as err:
        load_settings(write(tmp_path, {"event_loop": "trio"}))
    assert "'auto', 'asyncio' or 'uvloop'" in str(err.value)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    assert default.loop_in_use() == "asyncio"  # auto without uvloop installed
    with pytest.raises(SettingsError) as err:
        load_settings(write(tmp_path, {"event_loop": "uvloop"}))
    line = str(err.value)
    assert "event_loop" in line and "uvloop is not installed" in line and "[fast]" in line


@pytest.mark.parametrize("url", ["192.0.2.10:8088", "ftp://pbx", "https://pbx:8088/x?y=1"])
def test_a_bad_base_url_is_described_not_shown_a_regular_expression(
    tmp_path: Path, url: str
) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(write(tmp_path, {"pbxs": [{**GOOD_PBX, "base_url": url}]}))
    (line,) = str(err.value).splitlines()
    assert line.startswith("invalid setting pbxs.0.base_url: must be an http:// or https:// URL")
    assert repr(url) in line and "line " in line and "^" not in line


def test_a_bad_environment_value_names_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY__EVENT_LOOP", "trio")
    monkeypatch.setenv("GATEWAY__BUS__CONFIRM_WINDOW", "0")
    with pytest.raises(SettingsError) as err:
        load_settings(write(tmp_path, {"shutdown_timeout_s": -1}))
    lines = str(err.value).splitlines()
    assert any(
        line.startswith("invalid setting event_loop:")
        and line.endswith("(environment variable GATEWAY__EVENT_LOOP)")
        for line in lines
    ), lines
    window = "(environment variable GATEWAY__BUS__CONFIRM_WINDOW)"
    assert any(line.endswith(window) for line in lines), lines
    in_file = f"(line 1 of {tmp_path / 'gateway.yaml'})"
    assert any(line.endswith(in_file) for line in lines), lines


def test_a_bad_base_url_never_shows_its_password(tmp_path: Path) -> None:
    url = "https://admin:pbx-password-7@192.0.2.10:8088/api?x=1"
    with pytest.raises(SettingsError) as err:
        load_settings(write(tmp_path, {"pbxs": [{**GOOD_PBX, "base_url": url}]}))
    assert "pbx-password-7" not in str(err.value)
    assert "https://admin:***@192.0.2.10:8088/api?x=1" in str(err.value)
