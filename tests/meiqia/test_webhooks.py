"""Webhook signatures (``Meiqia-Signature`` / ``Meiqia-Sign``) and the route's answers, on a
real loopback HTTP server with the gateway's own web app (no RabbitMQ: the owner's
connector is a recorder)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.connectors.meiqia import webhooks as webhook
from gateway.connectors.meiqia.metrics import WEBHOOKS
from gateway.connectors.meiqia.settings import MeiqiaPbxSettings
from gateway.connectors.meiqia.webhooks import signature, signature_header, verify
from gateway.connectors.plugin import VendorRoutes
from gateway.web.server import build_web_app

SECRET = "whsec-0123456789"
BODY = b'{"id":"sub_x_1","event":"cdr.hangup","cdr":{"call_uuid":"c-1"}}'


def fresh(delivery: str = "sub_x_1", created_at: float | None = None) -> bytes:
    """A delivery created now (or at ``created_at``), within the replay window."""
    stamp = int(time.time() if created_at is None else created_at)
    return b'{"id":"%s","event":"cdr.hangup","created_at":%d,"cdr":{"call_uuid":"c-1"}}' % (
        delivery.encode(),
        stamp,
    )


def test_the_signature_is_sha1_of_body_then_secret() -> None:
    assert signature(BODY, SECRET) == hashlib.sha1(BODY + SECRET.encode()).hexdigest()
    assert len(signature(BODY, SECRET)) == 40


@pytest.mark.parametrize(
    ("sent", "ok"),
    [
        (signature(BODY, SECRET), True),
        (signature(BODY, SECRET).upper(), True),  # hex in either case
        (f" {signature(BODY, SECRET)} ", True),
        (signature(BODY, SECRET + "x"), False),  # another secret
        (signature(BODY + b" ", SECRET), False),  # another body
        (signature(BODY, SECRET)[:-1], False),  # truncated
        ("", False),
        (None, False),
        ("不是签名", False),
    ],
)
def test_verify(sent: str | None, ok: bool) -> None:
    assert verify(BODY, SECRET, sent) is ok


def test_both_header_names_and_the_first_is_preferred() -> None:
    good, bad = signature(BODY, SECRET), signature(BODY, "other")
    assert signature_header(CIMultiDict({"Meiqia-Signature": good})) == good
    assert signature_header(CIMultiDict({"Meiqia-Sign": good})) == good
    assert signature_header(CIMultiDict({"meiqia-sign": good})) == good  # any case
    both = CIMultiDict({"Meiqia-Sign": good, "Meiqia-Signature": bad})
    assert signature_header(both) == bad  # only Meiqia-Signature counts when both are sent
    assert signature_header(CIMultiDict({"X-Other": good})) is None


def test_the_compare_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return a == b

    monkeypatch.setattr(webhook.hmac, "compare_digest", spy)
    assert verify(BODY, SECRET, signature(BODY, SECRET)) is True
    assert verify(BODY, SECRET, "0" * 40) is False
    assert len(calls) == 2
    assert calls[0][0] == signature(BODY, SECRET).encode()


# --- the route -------------------------------------------------------------------------------


class Owner:
    """Stands in for the owner's connector: records what it was given."""

    def __init__(self) -> None:
        self.deliveries: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.busy = False

    async def take_delivery(
        self, envelope: dict[str, Any], delivery: str | None = None
    ) -> tuple[int, bool]:
        if self.busy:
            raise TimeoutError("the link is not running")
        key = delivery or envelope["id"]
        duplicate = key in self.keys
        self.keys.append(key)
        self.deliveries.append(envelope)
        return (0, True) if duplicate else (1, False)


def pbx(tenant: str, **kw: Any) -> MeiqiaPbxSettings:
    values: dict[str, Any] = {
        "tenant": tenant,
        "vendor": "meiqia",
        "base_url": "http://127.0.0.1:9",
        "token": "t",
        "webhook_secret": SECRET,
        "webhook_max_bytes": 2048,
    }
    values.update(kw)
    return MeiqiaPbxSettings(**values)


Post = Callable[..., Any]


@pytest.fixture
async def route(unique: str) -> AsyncIterator[tuple[Post, Owner, str]]:
    """The gateway's web app with the Meiqia routes; tenant ``a<unique>`` is owned here,
    ``b<unique>`` is owned elsewhere, ``c<unique>`` has no webhook secret."""
    owner = Owner()
    owned, elsewhere, plain = f"a{unique}", f"b{unique}", f"c{unique}"
    pbxs = {
        owned: pbx(owned),
        elsewhere: pbx(elsewhere),
        plain: pbx(plain, webhook_secret=None),
    }

    async def emit(_event: Any) -> None:
        raise AssertionError("the route publishes through the owner's connector only")

    ctx = VendorRoutes(pbxs, emit, lambda tenant: owner if tenant == owned else None)  # type: ignore[arg-type,return-value]
    app = build_web_app(lambda: {"ready": True}, {"meiqia": list(webhook.routes(ctx))})
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/meiqia"
    async with aiohttp.ClientSession() as session:

        async def post(tenant: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
            async with session.post(f"{base}/{tenant}", data=body, headers=headers or {}) as resp:
                return resp.status, await resp.json(), resp.headers

        try:
            yield post, owner, unique
        finally:
            await runner.cleanup()


def signed(body: bytes, header: str = "Meiqia-Signature") -> dict[str, str]:
    return {header: signature(body, SECRET)}


def metric(tenant: str, result: str) -> float:
    return WEBHOOKS.labels(tenant, result)._value.get()


async def test_the_route_answers(route: tuple[Post, Owner, str]) -> None:
    post, owner, unique = route
    owned = f"a{unique}"
    body = fresh()
    status, answer, _ = await post(owned, body, signed(body))
    assert (status, answer) == (200, {"published": 1, "duplicate": False})
    status, answer, _ = await post(owned, body, signed(body, "Meiqia-Sign"))
    assert (status, answer) == (200, {"published": 0, "duplicate": True})
    assert [d["id"] for d in owner.deliveries] == ["sub_x_1", "sub_x_1"]
    assert metric(owned, "accepted") == 1 and metric(owned, "duplicate") == 1


@pytest.mark.parametrize(
    ("tenant", "body", "headers", "status", "result"),
    [
        ("a", BODY, {}, 401, "unsigned"),
        ("a", BODY, {"Meiqia-Signature": signature(BODY, "wrong")}, 401, "bad_signature"),
        (
            "a",
            BODY,
            {"Meiqia-Signature": signature(BODY, "wrong"), "Meiqia-Sign": signature(BODY, SECRET)},
            401,
            "bad_signature",
        ),
        ("a", b"not json", "sign", 400, "not_json"),
        ("a", b"x" * 4096, "sign", 413, "too_large"),
        ("a", b'{"id": "d", "event": "cdr.hangup"}', "sign", 400, "invalid"),
        ("a", b'{"id": "d", "event": "cdr.hangup", "created_at": "x"}', "sign", 400, "invalid"),
        ("c", "fresh", "sign", 404, "disabled"),
        ("b", "fresh", "sign", 503, "not_owner"),
    ],
)
async def test_refusals(
    route: tuple[Post, Owner, str],
    tenant: str,
    body: Any,
    headers: Any,
    status: int,
    result: str,
) -> None:
    post, owner, unique = route
    name = f"{tenant}{unique}"
    body = fresh() if body == "fresh" else body
    before = metric(name, result)
    got, answer, response_headers = await post(
        name, body, signed(body) if headers == "sign" else headers
    )
    assert got == status
    assert isinstance(answer["error"], str) and answer["error"]
    assert metric(name, result) == before + 1
    assert owner.deliveries == []
    if status == 503:
        assert response_headers["Retry-After"] == "5"


async def test_an_unknown_tenant_is_404_and_not_a_label(route: tuple[Post, Owner, str]) -> None:
    post, _owner, unique = route
    before = metric("", "unknown_tenant")
    status, answer, _ = await post(f"nobody{unique}", BODY, signed(BODY))
    assert (status, answer) == (404, {"error": "not found"})
    assert metric("", "unknown_tenant") == before + 1


async def test_the_signature_is_checked_before_the_body_is_read_as_json(
    route: tuple[Post, Owner, str],
) -> None:
    post, _owner, unique = route
    status, _answer, _ = await post(f"a{unique}", b"not json", {})
    assert status == 401  # an unsigned body learns nothing about its parsing


async def test_an_owner_that_cannot_take_it_now_answers_503(route: tuple[Post, Owner, str]) -> None:
    post, owner, unique = route
    owner.busy = True
    before = metric(f"a{unique}", "busy")
    body = fresh()
    status, answer, headers = await post(f"a{unique}", body, signed(body))
    assert (status, headers["Retry-After"]) == (503, "5") and "deliver again" in answer["error"]
    assert metric(f"a{unique}", "busy") == before + 1


# --- topics the gateway does not know ------------------------------------------------------------
#
# Sources: Meiqia publishes no call-center webhook payloads; its webhook help page's example is
# a chat topic (data under ``conversation``). Meiqia's SDK push signing and its real sample:
# repository Meiqia/MeiqiaSDK-Push-Signature-Example, README.md (header ``Authorization``,
# HMAC-SHA1 keyed by the Secret-Key), Python/signature.py (``meiqia_sign:`` + base64 of the hex
# digest) and sample.txt (key, texts and their signatures, and a chat message pushed with no
# ``id`` or ``event``), pinned below as given there.

SDK_SAMPLE_KEY = "$2a$12$skg8Mk3UJ3ylnmciryxCQ.IyjKTqi2ujRYwH0ak/BMXYiFBacZbx6"
SDK_SAMPLE = [
    (
        "美洽，在线客服软件的漂亮之选",
        "meiqia_sign:YTgyMmFkMDY5OWJjYzI1ODRkNjBhNzAyMTdlY2M4YjU2NDNiYjhkZA==",
    ),
    (
        "NOTICE: 美洽，在线客服软件的漂亮之选",
        "meiqia_sign:OGU4NGJhYTZlZGU4NDJkNmJjMzg0OTY1ZTkyMDk0ODQ3MTVmMjBmNg==",
    ),
    (
        "👏 美洽，在线客服软件的漂亮之选 👏",
        "meiqia_sign:NzgwYzM4ZGUwNGNmNWM3NmQ3N2NkOTJkZGEwYzg0ZjkxMTY0YzU3OQ==",
    ),
]
#: sample.txt's chat message (its ``customizedData`` left out: the sample nests unescaped
#: quotes in it, which no JSON parser reads).
SDK_CHAT = (
    '{"clientId":"12vc86d41d1611e69e6f029346effd31","content":"test","contentType":"text",'
    '"deviceOS":"Android","deviceToken":"d2433d6ad2861515e24316ddcbdg05eea23d","fromName":"美洽",'
    '"messageId":"111","messageTime":"2016-01-01T00:00:00.622580"}'
).encode()
def chat_topic() -> bytes:
    """A chat topic delivered now (within the replay window)."""
    return (
        b'{"id":"sub_x_9","event":"conversation.message","enterprise_token":"e","created_at":%d,'
        b'"conversation":{"id":9,"content":"test"}}' % int(time.time())
    )


@pytest.mark.parametrize(("text", "sign"), SDK_SAMPLE)
def test_the_sdk_signature_matches_meiqias_sample(text: str, sign: str) -> None:
    assert webhook.sdk_signature(text.encode(), SDK_SAMPLE_KEY) == sign
    assert webhook.verify_request(text.encode(), SDK_SAMPLE_KEY, {"Authorization": sign}) == (
        True,
        True,
    )
    assert webhook.verify_request(text.encode(), "other", {"Authorization": sign}) == (False, True)


@pytest.mark.parametrize("header", ["Meiqia-Signature", "Meiqia-Sign", "Authorization"])
async def test_an_unknown_topic_is_taken_never_refused(
    route: tuple[Post, Owner, str], header: str
) -> None:
    """A 4xx would make Meiqia deliver it for ever: every signed JSON body is taken (the
    connector publishes it as vendor.unknown); a repeat is a duplicate."""
    post, owner, unique = route
    owned = f"a{unique}"

    def sign(body: bytes) -> dict[str, str]:
        if header == "Authorization":
            return {header: webhook.sdk_signature(body, SECRET)}
        return signed(body, header)

    for body in (chat_topic(), SDK_CHAT, b"[1,2,3]", b'{"event": "cdr.hangup"}'):
        status, answer, _ = await post(owned, body, sign(body))
        assert (status, answer) == (200, {"published": 1, "duplicate": False}), body
        status, answer, _ = await post(owned, body, sign(body))
        assert (status, answer) == (200, {"published": 0, "duplicate": True}), body
    assert owner.keys[0] == "sub_x_9"
    assert owner.keys[2] == "sha256:" + hashlib.sha256(SDK_CHAT).hexdigest()
    assert owner.deliveries[4] == {"body": [1, 2, 3]}
    status, _answer, _ = await post(owned, SDK_CHAT, {"Authorization": "meiqia_sign:AAAA"})
    assert status == 401


def test_unknown_topics_and_sdk_pushes_are_vendor_unknown() -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    import orjson

    from gateway.connectors.meiqia.normalize import delivery_events
    from gateway.schema.events import NormalizeContext

    ctx = NormalizeContext(
        tenant="t",
        vendor="meiqia",
        tz=ZoneInfo("Asia/Shanghai"),
        received_at=datetime(2024, 1, 1, tzinfo=UTC),
    )
    (chat,) = delivery_events(orjson.loads(chat_topic()), ctx)
    assert (chat.type, chat.vendorevent, chat.data["event"]) == (
        "vendor.unknown",
        "conversation.message",
        "conversation.message",
    )
    key = "sha256:" + hashlib.sha256(SDK_CHAT).hexdigest()
    (push,) = delivery_events(orjson.loads(SDK_CHAT), ctx, key)
    assert (push.type, push.vendorevent) == ("vendor.unknown", "webhook")
    assert push.data["raw"]["messageId"] == "111"
    (again,) = delivery_events(orjson.loads(SDK_CHAT), ctx, key)
    assert again.id == push.id  # a repeat gets the same event id
