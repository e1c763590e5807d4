"""The README's event catalogue is generated; it must match what the normalizer produces now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_event_catalogue_is_current() -> None:
    spec = importlib.util.spec_from_file_location("catalogue", ROOT / "scripts/catalogue.py")
    assert spec and spec.loader
    catalogue = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(catalogue)
    readme = (ROOT / "README.md").read_text()
    assert catalogue.render() in readme, "run `python scripts/catalogue.py` to refresh the README"


def test_readme_names_the_ci_test_command() -> None:
    ci = (ROOT / ".ci/run").read_text()
    assert "scripts/test" in ci and "scripts/test" in (ROOT / "README.md").read_text()
