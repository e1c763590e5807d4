"""The stable command line (docs/CONTRACT.md section 3): normalize's streams and exit status."""

from __future__ import annotations

import json
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


def test_help_lists_the_contract_commands() -> None:
    result = gateway_cli("--help")
    for command in ("run", "sim", "demo", "normalize"):
        assert command in result.stdout
