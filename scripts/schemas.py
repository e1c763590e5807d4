"""Write the committed contract documents under docs/: the AsyncAPI 3.0 document (with the event
catalogue's example of every event type) and the JSON Schemas of events and commands.

    python scripts/schemas.py           # rewrite docs/asyncapi.json and docs/schemas/*.schema.json
    python scripts/schemas.py --check   # exit 1 if any of them is stale

The documents describe the contract's commands and those of the vendors shipped in this
repository (``gateway schema`` prints the same for whatever plugins are installed).
tests/unit/test_schema_docs.py fails when they are stale.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.connectors.registry import plugins  # noqa: E402
from gateway.schema.commands import CommandCatalog  # noqa: E402
from gateway.schema.export import (  # noqa: E402
    asyncapi_document,
    commands_json_schema,
    events_json_schema,
)

BUILT_IN = ("yeastar", "xswitch", "uucall", "meiqia")


def _catalogue() -> Any:
    spec = importlib.util.spec_from_file_location("catalogue", ROOT / "scripts/catalogue.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def catalog() -> CommandCatalog:
    """The contract's commands plus those of the vendors shipped here (not test plugins)."""
    found = plugins()
    extra = [model for name in BUILT_IN if name in found for model in found[name].command_models]
    return CommandCatalog(extra)


def documents() -> dict[Path, str]:
    examples = {
        name: event.model_dump(mode="json") for name, event in _catalogue().examples().items()
    }
    commands = catalog()
    docs = {
        ROOT / "docs/asyncapi.json": asyncapi_document(commands, examples=examples),
        ROOT / "docs/schemas/event.schema.json": events_json_schema(),
        ROOT / "docs/schemas/command.schema.json": commands_json_schema(commands),
    }
    return {
        path: json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
        for path, doc in docs.items()
    }


def main(argv: list[str]) -> int:
    stale = []
    for path, text in documents().items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path.relative_to(ROOT))
        if "--check" not in argv:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale and "--check" in argv:
        print("stale (run python scripts/schemas.py):", *stale, file=sys.stderr)
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
