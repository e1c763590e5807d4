"""The README is the front door: it names the command CI runs (the rest of it is checked with the
documentation site, tests/unit/test_docs_site.py)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_names_the_ci_test_command() -> None:
    ci = (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "scripts/test" in ci and "scripts/test" in readme and "scripts/demo" in readme
