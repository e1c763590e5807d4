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

from gateway.connectors.meiqia import webhook
from gateway.connectors.meiqia.metrics import WEBHOOKS
from gateway.connectors.meiqia.settings import MeiqiaPbxSettings
from gateway.connectors.meiqia.webhook import signature, signature_header, verify
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
        self.busy = False

    async def take_delivery(self, envelope: dict[str, Any]) -> tuple[int, bool]:
        if self.busy:
            raise TimeoutError("the link is not running")
        duplicate = any(d["id"] == envelope["id"] for d in self.deliveries)
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
        ("a", b"[1,2,3]", "sign", 400, "invalid"),
        ("a", b'{"event": "cdr.hangup"}', "sign", 400, "invalid"),
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
