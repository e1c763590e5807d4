"""gateway.bus.wire: the publisher's frames encoded directly, byte for byte what pamqp writes
(``message_parts`` + ``ChannelFrame.marshall``, as ``EventPublisher._write`` does it)."""

from __future__ import annotations

import time as time_module
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiormq
import orjson
import pytest
from aiormq.abc import ChannelFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from gateway.bus import wire
from gateway.bus.wire import publish_frames
from gateway.connectors import registry
from gateway.schema.events import (
    CloudEvent,
    NormalizeContext,
    StreamMemory,
    connection_event,
    gap_event,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXCHANGE = "pbx.events"
#: frame_max values a broker may tune: RabbitMQ's default, the protocol's minimum
FRAME_MAX = (131_072, 4_096)


def max_content_size(frame_max: int) -> int:
    """What an aiormq channel splits bodies at for this frame_max."""
    return frame_max - aiormq.Channel.CONTENT_FRAME_SIZE


#: The publisher's pamqp path for one publish (the fast path's fallback), held at import: the
#: fixtures below replace ``wire.pamqp_frames`` to watch the fallback, never this reference.
reference = wire.pamqp_frames


def outcome(encode: Callable[..., Any], *args: Any) -> Any:
    """The result, or the error as (type, message): a fallback must fail as pamqp fails."""
    try:
        return encode(*args)
    except Exception as exc:
        return type(exc), str(exc)


def assert_same(
    body: bytes, *, channel: int = 1, frame_max: int = 131_072, max_content: int | None = None
) -> None:
    step = max_content_size(frame_max) if max_content is None else max_content
    args = (channel, EXCHANGE, body, step)
    expected = outcome(reference, *args)
    assert outcome(publish_frames, *args) == expected, body[:300]


@pytest.fixture
def fast_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path must encode these itself: no falling back to pamqp."""

    def no_fallback(*args: Any) -> Any:
        raise AssertionError("fell back to pamqp")

    monkeypatch.setattr(wire, "pamqp_frames", no_fallback)


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bodies the fast path handed to pamqp."""
    seen: list[bytes] = []
    original = wire.pamqp_frames

    def spy(channel_number: int, exchange: str, body: bytes, max_content: int) -> Any:
        seen.append(body)
        return original(channel_number, exchange, body, max_content)

    monkeypatch.setattr(wire, "pamqp_frames", spy)
    return seen


def fixture_bodies() -> Iterator[bytes]:
    """Every vendor's recorded sample messages normalized to stored events, with and without
    the raw payload, at times with and without microseconds, in two time zones; and the
    gateway's own link events (no vendorevent)."""
    received = (datetime(2024, 5, 1, 8, 0, tzinfo=UTC), datetime(2024, 5, 1, 8, 0, 1, 250, UTC))
    for vendor, plugin in sorted(registry.plugins().items()):
        path = FIXTURES / vendor / "sample.jsonl"
        if not path.is_file():
            continue
        for at, zone, include_raw in (
            (received[0], "UTC", False),
            (received[1], "Asia/Shanghai", True),
        ):
            memory = StreamMemory()
            for line in path.read_text().splitlines():
                if line.strip():
                    ctx = NormalizeContext("acme", vendor, ZoneInfo(zone), at, include_raw, memory)
                    yield from (event.to_json() for event in plugin.normalize(line, ctx))
            ctx = NormalizeContext("acme", vendor, ZoneInfo(zone), at, include_raw, memory)
            yield connection_event(ctx, "disconnected", "连接被重置 (reset)").to_json()
            yield gap_event(ctx, at - timedelta(minutes=5), at, recovered=3).to_json()


def envelope(**changes: Any) -> dict[str, Any]:
    """A stored event's JSON object, with ``changes`` (None: the attribute is null)."""
    event = CloudEvent(
        id="66204906-203e-b017-4928-22438ba50501",
        source="pbx://acme",
        type="call.ringing",
        time=datetime(2024, 5, 1, 8, 0, 3, 456789, tzinfo=UTC),
        subject="1648801160.110",
        tenant="acme",
        vendor="yeastar",
        vendorevent="30011",
        data={"call_id": "1648801160.110", "state": "ringing"},
    )
    return {**orjson.loads(event.to_json()), **changes}


def body_of(**changes: Any) -> bytes:
    return orjson.dumps(envelope(**changes))


# --- recorded events ---------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_only")
def test_recorded_events_match_pamqp() -> None:
    bodies = list(fixture_bodies())
    vendors = {orjson.loads(body)["vendor"] for body in bodies}
    assert {"fakepbx", "meiqia", "uucall", "xswitch", "yeastar"} <= vendors
    assert any(b'"subject":null' in body for body in bodies), "events without a subject"
    assert any(b'"vendorevent":null' in body for body in bodies), "events without vendorevent"
    assert any(len(body) > 2 * 512 for body in bodies), "bodies split in several frames"
    for body in bodies:
        for max_content in (*map(max_content_size, FRAME_MAX), 512):
            for channel in (1, 7):
                assert_same(body, channel=channel, max_content=max_content)


def test_labels_and_frames_decode() -> None:
    """The frames are what pamqp reads back: one publish, its properties, the body in parts."""
    body = body_of(subject="分机 2001 → 外线", data={"text": "话" * 3000})
    frame_max = 4096
    encoded, labels = publish_frames(3, EXCHANGE, body, max_content_size(frame_max))
    assert labels == ("acme", "yeastar", "call.ringing")
    decoded = []
    while encoded:
        used, channel, value = pamqp_frame.unmarshal(encoded)
        assert channel == 3 and used <= frame_max
        decoded.append(value)
        encoded = encoded[used:]
    publish, header, *parts = decoded
    assert isinstance(publish, Basic.Publish)
    assert (publish.exchange, publish.routing_key) == (EXCHANGE, "acme.call.ringing")
    assert not publish.mandatory and not publish.immediate
    assert isinstance(header, ContentHeader) and header.body_size == len(body)
    properties = header.properties
    assert properties.delivery_mode == 2 and properties.app_id == "pbx-gateway"
    assert properties.timestamp == datetime(2024, 5, 1, 8, 0, 3, tzinfo=UTC)
    assert properties.headers is not None
    assert properties.headers["cloudEvents:subject"] == "分机 2001 → 外线"
    assert properties.headers["cloudEvents:time"] == "2024-05-01T08:00:03.456789+00:00"
    assert len(parts) == 3 and b"".join(part.value for part in parts) == body


def test_a_batch_is_the_publishes_one_after_another() -> None:
    """The publisher writes a batch as one ChannelFrame: the same as joining the publishes."""
    bodies = [body_of(id=f"e-{n}", data={"n": "x" * n * 1500}) for n in range(6)]
    step = max_content_size(4096)
    frames: list[Any] = []
    for body in bodies:
        routing_key, properties, _ = wire.message_parts(body)
        frames.append(Basic.Publish(exchange=EXCHANGE, routing_key=routing_key))
        frames.append(ContentHeader(properties=properties, body_size=len(body)))
        frames.extend(ContentBody(body[at : at + step]) for at in range(0, len(body), step))
    written = ChannelFrame.marshall(channel_number=5, frames=frames).payload
    assert b"".join(publish_frames(5, EXCHANGE, body, step)[0] for body in bodies) == written


# --- attributes --------------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_only")
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"subject": None},
        {"vendorevent": None},
        {"subject": None, "vendorevent": None, "source": None, "specversion": None},
        {"tenant": "租户-一", "subject": "客户 ☎ 13800000000", "vendorevent": "Événement"},
        {"type": "call.😀", "source": "pbx://ü", "vendor": "x" * 200},
        {"subject": "s" * 70_000, "vendorevent": ""},  # a longstr over 64 KiB, an empty one
        {"id": "", "type": ""},  # pamqp leaves empty message-id and type out
        {"id": "i" * 255, "tenant": "t" * 100, "type": "y" * 154},  # at the shortstr limit
    ],
)
@pytest.mark.parametrize("frame_max", FRAME_MAX)
def test_attributes_match_pamqp(changes: dict[str, Any], frame_max: int) -> None:
    assert_same(body_of(**changes), frame_max=frame_max)


@pytest.mark.usefixtures("fast_only")
@pytest.mark.parametrize("extra", [-1, 0, 1, 2, 4088 * 3])
def test_body_split_at_the_max_content_size(extra: int) -> None:
    """Bodies just under, at and over the frame boundary, and several frames long."""
    step = max_content_size(4096)
    base = body_of(data={})
    body = body_of(data={"pad": "p" * (step - len(base) - 8 + extra)})
    assert len(body) == step + extra
    assert_same(body, frame_max=4096)


@pytest.mark.usefixtures("fast_only")
@pytest.mark.parametrize(
    "time",
    [
        "2024-05-01T08:00:03Z",
        "2024-05-01T08:00:03.456789Z",
        "2024-05-01T08:00:03.999999Z",  # truncated, not rounded
        "2024-05-01T08:00:03.000000Z",  # isoformat drops a zero fraction
        "2024-05-01T08:00:03.000001+08:00",
        "2024-05-01T08:00:03-05:30",
        "2024-05-01T08:00:03+00:00",
        "2024-05-01T08:00:03-00:00",  # isoformat: +00:00
        "2024-05-01T08:00:03+05:60",  # isoformat: +06:00
        "2024-05-01T08:00:03.4Z",
        "2024-05-01T08:00:03.1234567Z",
        "2024-05-01T08:00:03,5+01:00",
        "2024-05-01 08:00:03+01:00",
        "20240501T080003Z",
        "2024-05-01T08:00:03",  # naive: pamqp takes it as UTC
        "2024-05-01T08:00:03.5",
        "2024-05-01",
        "1970-01-01T00:00:00Z",
        "1969-12-31T23:59:59.5Z",  # -0.5 s: int() truncates it to 0, which encodes
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59.999999-23:59",
        "2024-05-01T08:00:03+05:30:15",
    ],
)
def test_times_match_pamqp(time: str) -> None:
    assert_same(body_of(time=time))


@pytest.mark.usefixtures("fast_only")
def test_naive_times_are_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """pamqp takes a naive time as UTC, not as the process's local time."""
    monkeypatch.setenv("TZ", "America/St_Johns")
    time_module.tzset()
    try:
        for time in ("2024-05-01T08:00:03", "2024-05-01T08:00:03.999999", "1970-01-01T00:00:00"):
            assert_same(body_of(time=time))
    finally:
        monkeypatch.undo()
        time_module.tzset()


@pytest.mark.parametrize(
    "body",
    [
        body_of(subject=42),  # pamqp encodes other types by type
        body_of(vendorevent=["a"]),
        body_of(source={"a": 1}),
        body_of(specversion=1.0),
        body_of(subject=True),
        body_of(id="i" * 256),  # message-id over a shortstr
        body_of(type="é" * 128),
        body_of(tenant="t" * 243),  # routing key over a shortstr (256 bytes)
        body_of(tenant=7),
        body_of(time="1969-12-31T23:00:00Z"),  # before 1970: pamqp's struct.error
        b"[1, 2]",
    ],
)
def test_what_the_fast_path_cannot_encode_goes_to_pamqp(
    body: bytes, fallbacks: list[bytes]
) -> None:
    assert_same(body)
    assert fallbacks == [body]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        body_of(time="2024-02-30T00:00:00Z"),
        body_of(time="2024-05-01T24:00:00Z"),
        body_of(time=None),
        orjson.dumps({k: v for k, v in envelope().items() if k != "id"}),
    ],
)
def test_errors_are_pamqps(body: bytes) -> None:
    assert isinstance(outcome(reference, 1, EXCHANGE, body, 4088)[0], type)
    assert_same(body)


def test_invalid_exchange_or_frame_size_fails_as_pamqp_does() -> None:
    body = body_of()
    for args in ((1, "bad exchange!", body, 4088), (1, "x" * 128, body, 4088), (1, "", body, 0)):
        expected = outcome(reference, *args)
        assert outcome(publish_frames, *args) == expected
    assert outcome(publish_frames, 1, "", b"{}", 0) == outcome(reference, 1, "", b"{}", 0)
    assert_same(body, channel=65_535)
    assert_same(body, channel=65_536)


# --- generated ---------------------------------------------------------------------------------

#: text as JSON carries it (no lone surrogates)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=90)
OPTIONAL = st.none() | TEXT
ZONES = st.none() | st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
).map(lambda offset: timezone(timedelta(minutes=offset // timedelta(minutes=1))))
TIMES = st.builds(
    lambda when, zone, render: render(when.replace(tzinfo=zone)),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)),
    ZONES,
    st.sampled_from(
        [
            datetime.isoformat,
            lambda when: orjson.loads(orjson.dumps(when)),
            lambda when: when.isoformat(sep=" ", timespec="milliseconds"),
            lambda when: when.isoformat().replace("+00:00", "Z"),
        ]
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    id_=TEXT,
    source=OPTIONAL,
    type_=TEXT,
    time=TIMES,
    subject=OPTIONAL,
    tenant=TEXT,
    vendor=TEXT,
    vendorevent=OPTIONAL,
    payload=st.text(max_size=6000),
    frame_max=st.sampled_from([4096, 4097, 8192, 131_072]),
    channel=st.integers(1, 2047),
)
def test_generated_events_match_pamqp(
    id_: str,
    source: str | None,
    type_: str,
    time: str,
    subject: str | None,
    tenant: str,
    vendor: str,
    vendorevent: str | None,
    payload: str,
    frame_max: int,
    channel: int,
) -> None:
    body = body_of(
        id=id_,
        source=source,
        type=type_,
        time=time,
        subject=subject,
        tenant=tenant,
        vendor=vendor,
        vendorevent=vendorevent,
        data={"text": payload},
    )
    assert_same(body, channel=channel, frame_max=frame_max)
