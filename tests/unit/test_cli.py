"""The stable command line (CONTRACT section 3): normalize's streams and exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/yeastar/30012_internal_cdr.json"


def run(args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_normalize_one_event_per_line_and_errors_with_line_numbers() -> None:
    frame = json.dumps(json.loads(FIXTURE.read_text())["frame"])
    result = run(
        ["normalize", "--vendor", "yeastar", "--tenant", "acme", "--tz", "Asia/Shanghai"],
        f"{frame}\nnot json at all\n\n{frame}\n",
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
    result = run(["normalize", "--vendor", "yeastar", "-"], frame + "\n")
    assert result.returncode == 0 and result.stderr == ""


def test_help_lists_the_contract_commands() -> None:
    result = run(["--help"], "")
    for command in ("run", "sim", "demo", "normalize"):
        assert command in result.stdout
