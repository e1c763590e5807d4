"""The documentation site: its generated pages are what the code produces now, every page the
navigation names exists, and the examples outside the consumer test at least compile.

``mkdocs build --strict`` itself runs in ``scripts/test`` (a broken link or a missing page fails
the suite); tests/operator/test_docs_browser.py opens the built site in a browser.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]


def _gen_docs() -> Any:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts/gen_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_pages_are_current() -> None:
    """The configuration and command references, the catalogue, the layers and the decision
    index; ``scripts/gen-docs`` rewrites them."""
    documents = _gen_docs().documents()
    assert documents, "nothing generated"
    for path, text in documents.items():
        assert path.exists(), f"{path.relative_to(ROOT)} missing: run scripts/gen-docs"
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is stale: run scripts/gen-docs"
    extra = set((ROOT / "docs/generated").glob("*.md")) - set(documents)
    assert not extra, f"left over, not generated any more: {sorted(map(str, extra))}"


def test_every_settings_field_is_described() -> None:
    """The configuration reference is generated: a field without a description fails it."""
    gen = _gen_docs()
    text = gen.service_settings() + gen.pbx_settings()
    assert "`bus.url`" in text and "`pbxs[].tenant`" in text and "`http.admin.port`" in text
    for vendor in gen.BUILT_IN:
        assert "| `pbxs[].base_url`" in gen.vendor_settings(vendor), vendor


def test_catalogue_shows_every_event_type() -> None:
    from gateway.schema.events import EVENT_TYPES

    page = (ROOT / "docs/generated/catalogue.md").read_text()
    for type_ in EVENT_TYPES:
        assert f"## `{type_}`" in page, type_
    assert "No example yet." not in page


def _nav_files(items: Any) -> list[str]:
    found: list[str] = []
    for item in items:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            found += _nav_files(value)
        else:
            found.append(value)
    return found


def test_navigation_names_existing_pages() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = _nav_files(config["nav"])
    assert len(pages) >= 20
    missing = [p for p in pages if not (ROOT / "docs" / p).is_file()]
    assert not missing, f"mkdocs.yml names missing pages: {missing}"


def test_every_dependency_is_justified() -> None:
    """Each package pyproject.toml asks for has its line on the Dependencies page."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        wanted += extra
    page = (ROOT / "docs/architecture/dependencies.md").read_text().lower()
    names = {re.split(r"[\[<>=!~ ]", spec, maxsplit=1)[0].lower() for spec in wanted}
    missing = sorted(n for n in names if f"| {n}" not in page and f", {n}" not in page)
    assert not missing, f"docs/architecture/dependencies.md lacks a line for {missing}"


def test_readme_is_the_front_door() -> None:
    """At most 200 lines; its links into the repository resolve."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to missing {target}"


def _check_python(block: str, where: str) -> None:
    """The block parses, and what it imports from a module exists there."""
    tree = ast.parse(block, filename=where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)


def test_readme_examples_compile() -> None:
    """The README's short examples name real modules and names."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- readme-example:[^\n]*-->\n```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    for block in blocks:
        _check_python(block, "README.md")


def test_every_python_example_of_the_docs_compiles() -> None:
    """Every Python block of the pages (the consumer library's example is also run, against the
    real RabbitMQ, by tests/consumer/test_consumer_runner.py)."""
    found = 0
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for block in re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M):
            _check_python(block, str(page.relative_to(ROOT)))
            found += 1
    assert found >= 2
