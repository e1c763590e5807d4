"""Machine-readable contract documents generated from the models: JSON Schema and AsyncAPI.

Generated, never hand-written, so the documents cannot drift from what the code publishes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.schema.commands import CONTRACT_COMMANDS, CommandCatalog
from gateway.schema.events import EVENT_TYPES, CloudEvent

VERSION = "0.1.0"


def events_json_schema() -> dict[str, Any]:
    """The envelope plus one payload schema per event type."""
    models: list[tuple[type[BaseModel], Any]] = [(CloudEvent, "serialization")]
    models += [(model, "serialization") for model in dict.fromkeys(EVENT_TYPES.values())]
    _, schema = models_json_schema(models, ref_template="#/$defs/{model}")
    schema["title"] = "PBX gateway events"
    schema["x-event-types"] = {name: model.__name__ for name, model in EVENT_TYPES.items()}
    return schema


def contract_json_schema(catalog: CommandCatalog = CONTRACT_COMMANDS) -> dict[str, Any]:
    """Events and commands (``catalog``: the contract's plus the registered vendors' own)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "PBX gateway contract",
        "version": VERSION,
        "events": events_json_schema(),
        "commands": catalog.json_schema(),
    }


def asyncapi_document(catalog: CommandCatalog = CONTRACT_COMMANDS) -> dict[str, Any]:
    """AsyncAPI 3.0: the two exchanges, one message per event type and per command."""
    events = events_json_schema()
    commands = catalog.json_schema()
    defs: dict[str, Any] = {**events.get("$defs", {}), **commands.get("$defs", {})}
    messages: dict[str, Any] = {}
    for name, model in EVENT_TYPES.items():
        messages[_message_id("event", name)] = {
            "name": name,
            "title": f"event {name}",
            "contentType": "application/cloudevents+json",
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/CloudEvent"},
                    {
                        "properties": {
                            "type": {"const": name},
                            "data": {"$ref": f"#/components/schemas/{model.__name__}"},
                        }
                    },
                ]
            },
        }
    for name, model in catalog.names.items():
        messages[_message_id("command", name)] = {
            "name": name,
            "title": f"command {name}",
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
        }
    event_refs = {
        k: {"$ref": f"#/components/messages/{k}"} for k in messages if k.startswith("event")
    }
    command_refs = {
        k: {"$ref": f"#/components/messages/{k}"} for k in messages if k.startswith("command")
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "PBX event gateway",
            "version": VERSION,
            "description": "Normalized PBX events out, call-control commands in.",
        },
        "defaultContentType": "application/json",
        "channels": {
            "events": {
                "address": "pbx.events/{tenant}.{type}",
                "parameters": {"tenant": {}, "type": {}},
                "messages": event_refs,
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {"name": "pbx.events", "type": "topic", "durable": True},
                    }
                },
            },
            "commands": {
                "address": "pbx.commands/{tenant}.{command}",
                "parameters": {"tenant": {}, "command": {}},
                "messages": command_refs,
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {"name": "pbx.commands", "type": "topic", "durable": True},
                    }
                },
            },
        },
        "operations": {
            "publishEvents": {"action": "send", "channel": {"$ref": "#/channels/events"}},
            "receiveCommands": {"action": "receive", "channel": {"$ref": "#/channels/commands"}},
        },
        "components": {"schemas": _rewrite_refs(defs), "messages": messages},
    }


def _message_id(kind: str, name: str) -> str:
    return f"{kind}_{name.replace('.', '_')}"


def _rewrite_refs(node: Any) -> Any:
    """Point JSON Schema ``$defs`` references at AsyncAPI's ``components/schemas``."""
    if isinstance(node, dict):
        return {
            k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" else _rewrite_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node
