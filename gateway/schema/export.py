"""Machine-readable contract documents generated from the models: JSON Schema and AsyncAPI.

Generated, never hand-written, so the documents cannot drift from what the code publishes. The
committed copies under ``docs/`` (``asyncapi.json``, ``schemas/*.schema.json``) are written by
``scripts/schemas.py`` with the event catalogue's examples; a test keeps them current and runs
the official AsyncAPI parser on ``docs/asyncapi.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.schema.commands import CONTRACT_COMMANDS, CommandCatalog
from gateway.schema.events import EVENT_TYPES, CloudEvent

VERSION = "0.1.0"
DEFAULT_BUS_URL = "amqp://guest:guest@127.0.0.1:5672/"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: AMQP bindings version (asyncapi/bindings amqp, 0.3.0).
_AMQP = "0.3.0"


def _event_def(name: str) -> str:
    return f"Event_{name.replace('.', '_')}"


def events_json_schema() -> dict[str, Any]:
    """A published event (root: one of the event types, told apart by ``type``), with the
    envelope and one payload schema per type under ``$defs``."""
    models: list[tuple[type[BaseModel], Any]] = [(CloudEvent, "serialization")]
    models += [(model, "serialization") for model in dict.fromkeys(EVENT_TYPES.values())]
    _, schema = models_json_schema(models, ref_template="#/$defs/{model}")
    defs: dict[str, Any] = schema.pop("$defs", {})
    for name, model in EVENT_TYPES.items():
        defs[_event_def(name)] = {
            "title": f"event {name}",
            "allOf": [
                {"$ref": "#/$defs/CloudEvent"},
                {
                    "type": "object",
                    "properties": {
                        "type": {"const": name},
                        "data": {"$ref": f"#/$defs/{model.__name__}"},
                    },
                    "required": ["type", "data"],
                },
            ],
        }
    return {
        "$schema": _DIALECT,
        "title": "PBX gateway event",
        "description": "Body of a message on pbx.events (routing key <tenant>.<type>): a"
        " CloudEvents 1.0 structured-mode event whose data depends on its type",
        "oneOf": [{"$ref": f"#/$defs/{_event_def(name)}"} for name in EVENT_TYPES],
        "$defs": dict(sorted(defs.items())),
        "x-event-types": {name: model.__name__ for name, model in EVENT_TYPES.items()},
    }


def commands_json_schema(catalog: CommandCatalog = CONTRACT_COMMANDS) -> dict[str, Any]:
    """A command body on ``pbx.commands`` or its result (root: either)."""
    return {"$schema": _DIALECT, **catalog.json_schema()}


def contract_json_schema(catalog: CommandCatalog = CONTRACT_COMMANDS) -> dict[str, Any]:
    """Events and commands (``catalog``: the contract's plus the registered vendors' own); each
    is a complete JSON Schema document with its own root."""
    return {
        "title": "PBX gateway contract",
        "version": VERSION,
        "events": events_json_schema(),
        "commands": commands_json_schema(catalog),
    }


def servers(bus_url: str) -> dict[str, Any]:
    """AsyncAPI ``servers`` from ``bus.url`` (one per node of a comma-separated cluster list);
    user and password are never written."""
    found: dict[str, Any] = {}
    urls = [u.strip() for u in bus_url.split(",") if u.strip()] or [DEFAULT_BUS_URL]
    for number, url in enumerate(urls, start=1):
        parts = urlsplit(url)
        tls = parts.scheme == "amqps"
        port = parts.port or (5671 if tls else 5672)
        vhost = parts.path[1:] if parts.path not in ("", "/") else "/"
        name = "rabbitmq" if len(urls) == 1 else f"rabbitmq-{number}"
        found[name] = {
            "host": f"{parts.hostname or '127.0.0.1'}:{port}",
            "protocol": "amqps" if tls else "amqp",
            "protocolVersion": "0-9-1",
            "pathname": vhost if vhost.startswith("/") else f"/{vhost}",
            "description": "RabbitMQ, from the gateway's bus.url (virtual host in pathname)",
        }
    return found


def asyncapi_document(
    catalog: CommandCatalog = CONTRACT_COMMANDS,
    *,
    bus_url: str = DEFAULT_BUS_URL,
    events_exchange: str = "pbx.events",
    commands_exchange: str = "pbx.commands",
    examples: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """AsyncAPI 3.0: events out on ``pbx.events``, commands in on ``pbx.commands`` with their
    result as the reply (to the command's ``reply_to``), AMQP bindings, the broker as server.

    ``examples``: event type -> one published event, shown as the message's example."""
    events = events_json_schema()
    commands = catalog.json_schema()
    defs: dict[str, Any] = {**events["$defs"], **commands.get("$defs", {})}
    schemas = _asyncapi_schemas(defs)
    messages: dict[str, Any] = {}
    for name in EVENT_TYPES:
        message: dict[str, Any] = {
            "name": name,
            "title": f"event {name}",
            "summary": f"A {name} event (CloudEvents 1.0, structured mode)",
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{_event_def(name)}"},
            "correlationId": {"location": "$message.payload#/id"},
            "bindings": {
                "amqp": {"contentEncoding": "utf-8", "messageType": name, "bindingVersion": _AMQP}
            },
        }
        example = (examples or {}).get(name)
        if example is not None:
            message["examples"] = [{"name": name, "payload": example}]
        messages[_message_id("event", name)] = message
    command_headers = {
        "type": "object",
        "description": "AMQP properties of a command message",
        "properties": {
            "message_id": {"type": "string", "description": "the command id (deduplicated)"},
            "correlation_id": {"type": "string", "description": "copied to the result"},
            "reply_to": {"type": "string", "description": "queue the result is sent to"},
            "expiration": {"type": "string", "description": "ms; expired commands answer"},
        },
        "required": ["message_id"],
    }
    for name, model in catalog.names.items():
        messages[_message_id("command", name)] = {
            "name": name,
            "title": f"command {name}",
            "summary": f"Command {name}; routing key <tenant>.{name}",
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/CommandHeaders"},
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
            "correlationId": {"location": "$message.header#/correlation_id"},
            "bindings": {
                "amqp": {"contentEncoding": "utf-8", "messageType": name, "bindingVersion": _AMQP}
            },
        }
    messages["commandResult"] = {
        "name": "CommandResult",
        "title": "command result",
        "summary": "The reply to one command, sent to its reply_to queue",
        "contentType": "application/json",
        "payload": {"$ref": "#/components/schemas/CommandResult"},
        "correlationId": {"location": "$message.header#/correlation_id"},
        "bindings": {"amqp": {"contentEncoding": "utf-8", "bindingVersion": _AMQP}},
    }
    schemas["CommandHeaders"] = command_headers
    event_ids = [k for k in messages if k.startswith("event_")]
    command_ids = [k for k in messages if k.startswith("command_")]

    def exchange(name: str) -> dict[str, Any]:
        return {
            "is": "routingKey",
            "exchange": {
                "name": name,
                "type": "topic",
                "durable": True,
                "autoDelete": False,
                "vhost": "/",
            },
            "bindingVersion": _AMQP,
        }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "PBX event gateway",
            "version": VERSION,
            "description": "Normalized PBX events out (CloudEvents 1.0 on the topic exchange"
            f" {events_exchange}), commands in (topic exchange {commands_exchange}), each"
            " command answered with a CommandResult on its reply_to queue.",
        },
        "defaultContentType": "application/json",
        "servers": servers(bus_url),
        "channels": {
            "events": {
                "address": "{tenant}.{type}",
                "title": f"events ({events_exchange})",
                "description": f"Routing keys of the {events_exchange} topic exchange: bind a"
                " queue with e.g. acme-hq.# or *.call.* .",
                "parameters": {
                    "tenant": {"description": "the PBX's tenant name"},
                    "type": {"description": "the event type, e.g. call.answered"},
                },
                "messages": {k: {"$ref": f"#/components/messages/{k}"} for k in event_ids},
                "bindings": {"amqp": exchange(events_exchange)},
            },
            "commands": {
                "address": "{tenant}.{command}",
                "title": f"commands ({commands_exchange})",
                "description": f"Routing keys of the {commands_exchange} topic exchange; each"
                f" tenant's commands wait in the queue {commands_exchange}.<tenant>.",
                "parameters": {
                    "tenant": {"description": "the PBX's tenant name"},
                    "command": {"description": "the command, e.g. call.dial"},
                },
                "messages": {k: {"$ref": f"#/components/messages/{k}"} for k in command_ids},
                "bindings": {"amqp": exchange(commands_exchange)},
            },
            "commandResults": {
                "address": None,
                "title": "command results",
                "description": "The queue named by the command's reply_to (default exchange).",
                "messages": {"commandResult": {"$ref": "#/components/messages/commandResult"}},
            },
        },
        "operations": {
            "publishEvents": {
                "action": "send",
                "title": "the gateway publishes events",
                "channel": {"$ref": "#/channels/events"},
                "messages": [{"$ref": f"#/channels/events/messages/{k}"} for k in event_ids],
                "bindings": {
                    "amqp": {"deliveryMode": 2, "mandatory": False, "bindingVersion": _AMQP}
                },
            },
            "receiveCommands": {
                "action": "receive",
                "title": "the gateway executes commands and answers each",
                "channel": {"$ref": "#/channels/commands"},
                "messages": [{"$ref": f"#/channels/commands/messages/{k}"} for k in command_ids],
                "bindings": {"amqp": {"ack": True, "bindingVersion": _AMQP}},
                "reply": {
                    "address": {
                        "location": "$message.header#/reply_to",
                        "description": "the command's reply_to property",
                    },
                    "channel": {"$ref": "#/channels/commandResults"},
                    "messages": [{"$ref": "#/channels/commandResults/messages/commandResult"}],
                },
            },
        },
        "components": {"schemas": schemas, "messages": messages},
    }


def _message_id(kind: str, name: str) -> str:
    return f"{kind}_{name.replace('.', '_')}"


def _asyncapi_schemas(defs: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema ``$defs`` as AsyncAPI ``components/schemas``: references re-pointed, and an
    OpenAPI-style ``discriminator`` object (pydantic's) turned into AsyncAPI's property name."""
    return {name: _rewrite(schema) for name, schema in sorted(defs.items())}


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                out[key] = value.replace("#/$defs/", "#/components/schemas/")
            elif key == "discriminator" and isinstance(value, dict):
                out[key] = value.get("propertyName")
            else:
                out[key] = _rewrite(value)
        return out
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node
