"""A delivery's body as the typed event of its ``type``.

The payload models are the contract's own (``gateway.schema.events.EVENT_TYPES``, the models the
JSON Schema is generated from), so ``event.data`` of a ``cdr.created`` is a
:class:`~gateway.schema.events.CdrData`. What cannot be typed stays usable: a type this version
does not know, or a payload its model refuses, gives an event whose ``data`` is the plain dict and
whose ``problem`` says why. Only a body that is no CloudEvent at all raises (:class:`NotAnEvent`);
the runner dead-letters those, so nothing a gateway or anyone else publishes stops a consumer.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.schema.events import EVENT_TYPES

DataT = TypeVar("DataT")


class NotAnEvent(ValueError):
    """The body is not a CloudEvent of the gateway's envelope (the reason is the message)."""


class Event(BaseModel, Generic[DataT]):
    """A published event: the CloudEvents envelope with the gateway's attributes, and ``data``
    typed by ``type`` (``Event[CdrData]``), or a dict when it could not be typed."""

    # Attributes a newer gateway adds are kept (extensions), never a reason to fail.
    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: str
    id: str
    source: str
    type: str
    time: datetime
    subject: str | None = None
    datacontenttype: str | None = None
    tenant: str
    vendor: str
    vendorevent: str | None = None
    data: DataT
    #: Why ``data`` is a plain dict: the type is unknown here, or its model refused the payload.
    problem: str | None = None

    @property
    def typed(self) -> bool:
        return self.problem is None


#: An event whose ``data`` could not be typed (or was not asked to be).
GenericEvent = Event[dict[str, Any]]


@cache
def _event_model(data_model: type[BaseModel]) -> type[Event[Any]]:
    return Event[data_model]  # type: ignore[valid-type]


@cache
def _known_keys(data_model: type[BaseModel]) -> frozenset[str]:
    keys: set[str] = set()
    for name, info in data_model.model_fields.items():
        keys.add(info.alias or name)
        keys.add(name)
    return frozenset(keys)


def _short(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "data"
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def parse_event(body: bytes | str | dict[str, Any]) -> Event[Any]:
    """The event in ``body`` (JSON text, or already decoded), typed by its ``type``.

    Payload fields this version does not know (a newer gateway's) are left out of the typed
    ``data``; the body keeps them. Raises :class:`NotAnEvent` only when ``body`` is no
    CloudEvent of the gateway's envelope.
    """
    if isinstance(body, dict):
        document: Any = body
    else:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise NotAnEvent(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise NotAnEvent(f"not a JSON object but {type(document).__name__}")
    data = document.get("data")
    if not isinstance(data, dict):
        raise NotAnEvent("no 'data' object")
    model = EVENT_TYPES.get(str(document.get("type")))
    problem: str | None = None
    if model is not None:
        known = _known_keys(model)
        typed = {**document, "data": {k: v for k, v in data.items() if k in known}}
        try:
            return _event_model(model).model_validate(typed)
        except ValidationError as exc:
            if any(str(e.get("loc", ("",))[0]) != "data" for e in exc.errors()):
                raise NotAnEvent(f"not a gateway event: {_short(exc)}") from None
            problem = f"{document.get('type')} payload not as in the contract: {_short(exc)}"
    else:
        problem = f"event type {document.get('type')!r} unknown to this version"
    try:
        return GenericEvent.model_validate({**document, "problem": problem})
    except ValidationError as exc:
        raise NotAnEvent(f"not a gateway event: {_short(exc)}") from None
