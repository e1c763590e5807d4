"""The contract documents: ``docs/asyncapi.json`` passes the official AsyncAPI parser
(``@asyncapi/parser`` from npm, run by Node), and the committed documents under ``docs/`` are
what the code generates now.

Nothing is skipped: without Node or the parser the test fails and says how to install them
(``scripts/ensure-asyncapi-parser``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.schema.events import EVENT_TYPES
from gateway.schema.export import asyncapi_document, contract_json_schema, servers

ROOT = Path(__file__).resolve().parents[2]
PARSER_DIR = Path(
    os.environ.get(
        "ASYNCAPI_PARSER_DIR",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "pbx-gateway/asyncapi-parser",
    )
)


def _schemas_script() -> Any:
    spec = importlib.util.spec_from_file_location("schemas", ROOT / "scripts/schemas.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_documents_are_current() -> None:
    for path, text in _schemas_script().documents().items():
        assert path.exists(), f"{path} missing: run python scripts/schemas.py"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} is stale: run python scripts/schemas.py"
        )


def test_official_parser_accepts_the_asyncapi_document() -> None:
    node = shutil.which("node")
    if node is None or not (PARSER_DIR / "node_modules/@asyncapi/parser").is_dir():
        pytest.fail(
            f"the AsyncAPI test needs Node 20 and @asyncapi/parser in {PARSER_DIR}:"
            " run scripts/ensure-asyncapi-parser"
        )
    result = subprocess.run(
        [node, str(ROOT / "scripts/asyncapi-validate.mjs"), str(ROOT / "docs/asyncapi.json")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ASYNCAPI_PARSER_DIR": str(PARSER_DIR)},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 error(s), 0 warning(s)" in result.stdout, result.stdout


def test_asyncapi_commands_answer_on_reply_to_and_events_have_examples() -> None:
    doc = json.loads((ROOT / "docs/asyncapi.json").read_text())
    reply = doc["operations"]["receiveCommands"]["reply"]
    assert reply["address"]["location"] == "$message.header#/reply_to"
    assert doc["components"]["messages"]["commandResult"]["payload"] == {
        "$ref": "#/components/schemas/CommandResult"
    }
    assert doc["servers"]["rabbitmq"]["host"] == "127.0.0.1:5672"
    assert "guest" not in json.dumps(doc["servers"])
    text = json.dumps(doc)
    assert "#/$defs/" not in text, "every reference points into the document"
    with_examples = [m for m in doc["components"]["messages"].values() if m.get("examples")]
    assert len(with_examples) >= len(EVENT_TYPES) * 3 // 4


def test_servers_from_a_cluster_url_never_show_credentials() -> None:
    found = servers("amqps://u:secret@a.example:5671/prod, amqp://u:secret@b.example/")
    assert found == {
        "rabbitmq-1": {
            "host": "a.example:5671",
            "protocol": "amqps",
            "protocolVersion": "0-9-1",
            "pathname": "/prod",
            "description": found["rabbitmq-1"]["description"],
        },
        "rabbitmq-2": {
            "host": "b.example:5672",
            "protocol": "amqp",
            "protocolVersion": "0-9-1",
            "pathname": "/",
            "description": found["rabbitmq-2"]["description"],
        },
    }
    assert "secret" not in json.dumps(asyncapi_document(bus_url="amqp://u:secret@h/"))


def test_json_schema_has_a_root_per_document() -> None:
    contract = contract_json_schema()
    events, commands = contract["events"], contract["commands"]
    assert len(events["oneOf"]) == len(EVENT_TYPES)
    assert events["$schema"] and commands["$schema"]
    assert commands["anyOf"]
