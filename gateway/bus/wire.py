"""The AMQP 0-9-1 frames of one event publish, encoded directly: the same bytes pamqp writes.

The publisher's hot path builds ``Basic.Publish``, ``ContentHeader`` (with ``Basic.Properties``)
and ``ContentBody`` objects per stored event and lets pamqp marshal them: generic code that walks
every property, sorts the header table and type-checks each value (~13 % of the gateway under
load, ~5 % more to build the properties). A stored event's frames always have the same shape, so
:func:`publish_frames` writes them with a few ``struct`` packs and joins, and encodes once what a
tenant's events of one type share.

Byte-identical to :func:`message_parts` + ``ChannelFrame.marshall`` (the pamqp path)
(``tests/unit/test_wire.py`` holds it to that). Whatever the fast path cannot encode exactly as
pamqp would (a value that is not a string, a short string over 255 bytes, a timestamp before
1970, a body that is not a JSON object, ...) goes through pamqp itself, so the result, or the
error, is pamqp's. References are to the AMQP 0-9-1 specification (section 4.2: general frame
format, 4.2.6: content frames) and its XML (``basic`` class, ``publish`` method, properties).
"""

from __future__ import annotations

import re
import struct
from datetime import UTC, datetime
from typing import Any

import orjson
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

#: Labels of ``gateway_events_published_total``: tenant, vendor, type.
Labels = tuple[str, str, str]

#: The properties ``message_parts`` gives every event (kept equal to it; the test checks).
CONTENT_TYPE = "application/cloudevents+json"
APP_ID = "pbx-gateway"

# --- 4.2.3 general frame format: type (octet), channel (short), size (long), payload, frame-end
_FRAME_HEAD = struct.Struct(">BHI").pack
_FRAME_METHOD = 1
_FRAME_HEADER = 2
_FRAME_BODY = 3
_FRAME_END = b"\xce"

# --- 4.2.5 field types
_SHORT_STRING_MAX = 255  # shortstr: octet length + UTF-8 bytes
_LONG = struct.Struct(">I").pack  # longstr length, table size
_TIMESTAMP = struct.Struct(">Q").pack  # 64-bit POSIX seconds

# --- basic.publish (class 60, method 40): reserved-1 (short ticket = 0), exchange (shortstr),
# routing-key (shortstr), mandatory + immediate (bits, packed into one octet: both 0)
_PUBLISH_METHOD = struct.pack(">HHH", 60, 40, 0)  # class id, method id, ticket
_PUBLISH_BITS = b"\x00"

# --- 4.2.6.1 content header frame: the frame's head, then class id (short, basic = 60),
# weight (short, 0), body size (longlong), property flags (short), property list
_HEADER_FRAME_HEAD = struct.Struct(">BHIHxxQH").pack
_CLASS_BASIC = 60

# basic properties, in the order of their flag bits (high bit first)
_FLAG_CONTENT_TYPE = 0x8000
_FLAG_HEADERS = 0x2000
_FLAG_DELIVERY_MODE = 0x1000
_FLAG_MESSAGE_ID = 0x0080
_FLAG_TIMESTAMP = 0x0040
_FLAG_TYPE = 0x0020
_FLAG_APP_ID = 0x0008
_ALWAYS = _FLAG_CONTENT_TYPE | _FLAG_HEADERS | _FLAG_DELIVERY_MODE | _FLAG_TIMESTAMP | _FLAG_APP_ID

#: content-type (shortstr)
_CONTENT_TYPE_FIELD = bytes([len(CONTENT_TYPE)]) + CONTENT_TYPE.encode()
#: delivery-mode (octet): 2, persistent
_DELIVERY_MODE_FIELD = b"\x02"
#: app-id (shortstr), the last property present: the frame ends after it
_APP_ID_FIELD_END = bytes([len(APP_ID)]) + APP_ID.encode() + _FRAME_END
#: Content header payload bytes besides the table and the message-id and type fields.
_HEADER_FIXED_SIZE = 14 + len(_CONTENT_TYPE_FIELD) + 4 + 1 + 8 + len(_APP_ID_FIELD_END) - 1

#: Header table field names (shortstr) with the value type 'S' (longstr) that follows each.
_KEY_ID = b"\x0ecloudEvents:idS"
_KEY_SOURCE = b"\x12cloudEvents:sourceS"
_KEY_SPECVERSION = b"\x17cloudEvents:specversionS"
_KEY_SUBJECT = b"\x13cloudEvents:subjectS"
_KEY_TENANT = b"\x12cloudEvents:tenantS"
_KEY_TIME = b"\x10cloudEvents:timeS"
_KEY_TYPE = b"\x10cloudEvents:typeS"
_KEY_VENDOR = b"\x12cloudEvents:vendorS"
_KEY_VENDOREVENT = b"\x17cloudEvents:vendoreventS"

#: A time as the schema stores it (RFC 3339, 0 or 6 fraction digits): ``datetime.isoformat``
#: of it can be read off the text, which is several times cheaper than calling it.
_CANONICAL_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{6})?(Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)


class _Unsupported(Exception):
    """A value the fast path does not encode exactly as pamqp would: let pamqp do it."""


def publish_frames(
    channel_number: int, exchange: str, body: bytes, max_content_size: int
) -> tuple[bytes, Labels]:
    """The frames (method, content header, content bodies) publishing one stored structured-mode
    CloudEvent to ``exchange`` with routing key ``<tenant>.<type>``, and its metric labels.

    ``max_content_size`` is the aiormq channel's (``frame_max`` minus the 8 bytes of frame
    overhead): the body is split into content body frames of at most that many bytes.
    """
    event = orjson.loads(body)
    try:
        return _encode(channel_number, exchange, body, max_content_size, event)
    except _Unsupported:
        return pamqp_frames(channel_number, exchange, body, max_content_size)


def _encode(
    channel_number: int, exchange: str, body: bytes, max_content_size: int, event: Any
) -> tuple[bytes, Labels]:
    """The fast path; raises :class:`_Unsupported` where its bytes could differ from pamqp's."""
    if type(event) is not dict or type(max_content_size) is not int or max_content_size <= 0:
        raise _Unsupported
    tenant = event.get("tenant")
    vendor = event.get("vendor")
    type_ = event.get("type")
    id_ = event.get("id")
    time = event.get("time")
    source = event.get("source")
    specversion = event.get("specversion")
    if not (
        type(tenant) is str
        and type(vendor) is str
        and type(type_) is str
        and type(id_) is str
        and type(time) is str
        and (source is None or type(source) is str)
        and (specversion is None or type(specversion) is str)
    ):
        raise _Unsupported

    # timestamp (64-bit POSIX seconds): pamqp takes a naive time as UTC and truncates
    when = datetime.fromisoformat(time)
    if when.tzinfo is None or when.tzinfo.utcoffset(when) is None:
        seconds = int(when.replace(tzinfo=UTC).timestamp())
    else:
        seconds = int(when.timestamp())
    if seconds < 0:  # pamqp fails on it: its error
        raise _Unsupported
    # the header carries the time as ``message_parts`` renders it: ``when.isoformat()``
    canonical = _CANONICAL_TIME.fullmatch(time)
    if canonical is None:
        iso = when.isoformat().encode()
    else:
        fraction, zone = canonical.groups()
        iso = "".join(
            (
                time[:19],
                "" if fraction is None or fraction == ".000000" else fraction,
                "+00:00" if zone == "Z" or zone == "-00:00" else zone,
            )
        ).encode()

    key = (channel_number, exchange, tenant, vendor, type_, source, specversion)
    fixed = _FIXED.get(key)
    if fixed is None:
        fixed = _fixed_parts(*key)
    method_frame, source_specversion, tenant_field, type_vendor, message_type, flags, labels = fixed

    # the event's own header table fields and message-id; absent (null) attributes are left out
    id_bytes = id_.encode()
    if len(id_bytes) > _SHORT_STRING_MAX:
        raise _Unsupported
    subject = _optional(_KEY_SUBJECT, event.get("subject"))
    vendorevent = _optional(_KEY_VENDOREVENT, event.get("vendorevent"))
    headers = b"".join(  # in pamqp's order: it sorts the keys
        (
            _KEY_ID,
            _LONG(len(id_bytes)),
            id_bytes,
            source_specversion,
            subject,
            tenant_field,
            _KEY_TIME,
            _LONG(len(iso)),
            iso,
            type_vendor,
            vendorevent,
        )
    )
    if id_bytes:  # pamqp leaves an empty message-id out (its flag bit clear)
        flags |= _FLAG_MESSAGE_ID
        message_id = bytes((len(id_bytes),)) + id_bytes
    else:
        message_id = b""

    frames = [
        method_frame,
        _HEADER_FRAME_HEAD(
            _FRAME_HEADER,
            channel_number,
            _HEADER_FIXED_SIZE + len(headers) + len(message_id) + len(message_type),
            _CLASS_BASIC,
            len(body),
            flags,
        ),
        _CONTENT_TYPE_FIELD,
        _LONG(len(headers)),
        headers,
        _DELIVERY_MODE_FIELD,
        message_id,
        _TIMESTAMP(seconds),
        message_type,
        _APP_ID_FIELD_END,
    ]
    # 4.2.6.2 content body frames, split as the publisher does (none for an empty body)
    if len(body) <= max_content_size:
        if body:
            frames += (_FRAME_HEAD(_FRAME_BODY, channel_number, len(body)), body, _FRAME_END)
    else:
        for at in range(0, len(body), max_content_size):
            part = body[at : at + max_content_size]
            frames += (_FRAME_HEAD(_FRAME_BODY, channel_number, len(part)), part, _FRAME_END)
    return b"".join(frames), labels


#: (method frame, source + specversion fields, tenant field, type + vendor fields, type
#: property, property flags, labels) by (channel, exchange, tenant, vendor, type, source,
#: specversion): a gateway publishes few such combinations, over and over.
_Fixed = tuple[bytes, bytes, bytes, bytes, bytes, int, Labels]
_FIXED: dict[tuple[int, str, str, str, str, str | None, str | None], _Fixed] = {}
_FIXED_MAX = 4096


def _fixed_parts(
    channel_number: int,
    exchange: str,
    tenant: str,
    vendor: str,
    type_: str,
    source: str | None,
    specversion: str | None,
) -> _Fixed:
    """Encode (and remember) what a publish shares with others of its tenant and type."""
    routing_key = f"{tenant}.{type_}".encode()
    type_bytes = type_.encode()
    if len(routing_key) > _SHORT_STRING_MAX or len(type_bytes) > _SHORT_STRING_MAX:
        raise _Unsupported
    Basic.Publish(exchange=exchange)  # pamqp's check of the name (ValueError), not re-done here
    exchange_bytes = exchange.encode()  # valid: at most 127 ASCII characters
    method = b"".join(
        (
            _PUBLISH_METHOD,
            bytes((len(exchange_bytes),)),
            exchange_bytes,
            bytes((len(routing_key),)),
            routing_key,
            _PUBLISH_BITS,
        )
    )
    flags = _ALWAYS
    message_type = b""
    if type_bytes:  # pamqp leaves an empty type out (its flag bit clear)
        flags |= _FLAG_TYPE
        message_type = bytes((len(type_bytes),)) + type_bytes
    fixed = (
        _FRAME_HEAD(_FRAME_METHOD, channel_number, len(method)) + method + _FRAME_END,
        _optional(_KEY_SOURCE, source) + _optional(_KEY_SPECVERSION, specversion),
        _optional(_KEY_TENANT, tenant),
        _optional(_KEY_TYPE, type_) + _optional(_KEY_VENDOR, vendor),
        message_type,
        flags,
        (tenant, vendor, type_),
    )
    if len(_FIXED) >= _FIXED_MAX:
        _FIXED.clear()
    _FIXED[(channel_number, exchange, tenant, vendor, type_, source, specversion)] = fixed
    return fixed


def _optional(key: bytes, value: object) -> bytes:
    """A header table field (name, 'S', longstr), or nothing for an absent (null) attribute;
    pamqp encodes values other than strings by their type, which the fast path does not."""
    if value is None:
        return b""
    if type(value) is not str:
        raise _Unsupported
    encoded = value.encode()
    return key + _LONG(len(encoded)) + encoded


#: the attributes mirrored as ``cloudEvents:*`` headers (CloudEvents AMQP binding)
_HEADER_ATTRIBUTES = (
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "tenant",
    "vendor",
    "vendorevent",
)


def message_parts(body: bytes) -> tuple[str, Basic.Properties, tuple[str, str, str]]:
    """Routing key, AMQP properties and metric labels (tenant, vendor, type) of a stored
    structured-mode CloudEvent, as pamqp objects, read from its JSON: the attributes mirrored as
    in the CloudEvents AMQP binding (the reference :func:`publish_frames` is held to, and its
    fallback)."""
    event = orjson.loads(body)
    headers = {
        f"cloudEvents:{name}": event[name]
        for name in _HEADER_ATTRIBUTES
        if event.get(name) is not None
    }
    # the same instant, as the model gives it: an aware datetime rendered with +00:00
    when = datetime.fromisoformat(event["time"])
    headers["cloudEvents:time"] = when.isoformat()
    properties = Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=2,
        message_id=event["id"],
        message_type=event["type"],
        timestamp=when,
        app_id=APP_ID,
        headers=headers,
    )
    labels = (event["tenant"], event["vendor"], event["type"])
    return f"{event['tenant']}.{event['type']}", properties, labels


def pamqp_frames(
    channel_number: int, exchange: str, body: bytes, max_content_size: int
) -> tuple[bytes, Labels]:
    """What pamqp writes for the event (or raises): the fallback for what the fast path does not
    encode, and the reference the tests hold the fast path to."""
    routing_key, properties, labels = message_parts(body)
    frames: list[Any] = [
        Basic.Publish(exchange=exchange, routing_key=routing_key),
        ContentHeader(properties=properties, body_size=len(body)),
    ]
    step = max_content_size
    frames.extend(ContentBody(body[at : at + step]) for at in range(0, len(body), step))
    return ChannelFrame.marshall(channel_number=channel_number, frames=frames).payload, labels
