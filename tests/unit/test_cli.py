"""The stable command line (docs/CONTRACT.md section 3): normalize's streams and exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import gateway_cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/yeastar/30012_internal_cdr.json"


def test_normalize_one_event_per_line_and_errors_with_line_numbers() -> None:
    frame = json.dumps(json.loads(FIXTURE.read_text())["frame"])
    result = gateway_cli(
        *("normalize", "--vendor", "yeastar", "--tenant", "acme", "--tz", "Asia/Shanghai"),
        stdin=f"{frame}\nnot json at all\n\n{frame}\n",
    )
    assert result.returncode == 3
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in events] == ["cdr.created", "cdr.created"]
    assert events[0]["id"] == events[1]["id"], "same CDR, same id"
    assert events[0]["time"] == "2022-04-27T11:04:36Z"
    errors = [json.loads(line) for line in result.stderr.splitlines()]
    assert len(errors) == 1 and errors[0]["line"] == 2 and errors[0]["error"]


def test_normalize_clean_input_exits_zero() -> None:
    frame = json.dumps(json.loads(FIXTURE.read_text())["frame"])
    result = gateway_cli("normalize", "--vendor", "yeastar", "-", stdin=frame + "\n")
    assert result.returncode == 0 and result.stderr == ""


def test_help_lists_every_command_and_the_docs_too() -> None:
    result = gateway_cli("--help")
    page = (Path(__file__).resolve().parents[2] / "docs/operating/cli.md").read_text()
    commands = "run sim demo tail sink normalize send schema config outbox".split()
    for command in commands:
        assert f"    {command} " in result.stdout, command
        assert f"| `gateway {command}" in page, f"the docs' command table lacks {command}"
    assert "exit status" in result.stdout and "docs/CONTRACT.md" in result.stdout


def test_every_option_shows_its_default() -> None:
    for args in (("demo",), ("send",), ("normalize",), ("sim", "yeastar")):
        text = gateway_cli(*args, "--help").stdout
        assert "(default:" in text, args
    assert "without it: defaults" in gateway_cli("run", "--help").stdout, "--config says it"
    sim = " ".join(gateway_cli("sim", "yeastar", "--help").stdout.split())
    assert "--calls-per-second CALLS_PER_SECOND" in sim and "(default: 1.0)" in sim
    assert "(default: Asia/Shanghai)" in sim, "the simulator keeps the example config's zone"
    example = (Path(__file__).resolve().parents[2] / "config/gateway.example.yaml").read_text()
    assert "timezone: Asia/Shanghai" in example


def test_help_shows_no_empty_default_and_no_password() -> None:
    """A default worth nothing ("None", "False", "[]") or already told in words is not
    repeated; a URL's password taken from the environment never reaches the terminal."""
    env = {
        "GATEWAY__BUS__URL": "amqp://user:env-secret@rabbit:5672/",
        "GATEWAY_SINK_DSN": "host=db password=dsn-secret",
        "GATEWAY_DEMO_AMQP": "amqp://user:demo-secret@rabbit:5672/",
    }
    for args in (("run",), ("demo",), ("tail",), ("send",), ("sink", "postgres"), ("schema",)):
        text = _help_with_env(env, *args)
        for empty in ("(default: None)", "(default: False)", "(default: [])"):
            assert empty not in text, (args, empty)
        assert text.count("default: the defaults") <= 1, args
        assert "secret" not in text, args
    send = _help_with_env(env, "send")
    assert "(default: amqp://user:***@rabbit:5672/)" in send


def _help_with_env(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=True,
    )
    return " ".join(result.stdout.split())


def test_demo_refuses_a_bad_duration_or_tenant_in_one_line() -> None:
    for args, said in (
        (("--duration", "-1"), "gateway: --duration must be more than 0 seconds"),
        (("--duration", "0"), "gateway: --duration must be more than 0 seconds"),
        (("--tenant", "a.b"), "gateway: --tenant 'a.b': letters, digits, - and _ only"),
    ):
        result = gateway_cli("demo", *args)
        assert result.returncode == 2, args
        assert result.stderr.startswith(said) and result.stderr.count("\n") == 1, result.stderr


def test_schema_checks_a_config_file_it_is_given(tmp_path: Path) -> None:
    result = gateway_cli("schema", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().endswith("missing.yaml does not exist")
