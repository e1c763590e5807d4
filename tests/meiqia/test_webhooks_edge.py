"""What the webhook route tells a stranger: one answer for every tenant that takes no webhooks
(before anything of the body counts), and no publishing of an old delivery replayed.

The envelope's ``created_at`` (Unix seconds) is the one Meiqia's Webhooks help page documents
(quoted in ``gateway/connectors/meiqia/webhooks.py``); the simulator's sender writes it the same
way (``gateway/sim/meiqia/webhooks.py``)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from tests.meiqia.test_webhooks import Owner, Post, fresh, metric, route, signed

__all__ = ["route"]  # the fixture, shared


async def answer_of(post: Post, tenant: str, body: bytes, headers: dict[str, str]) -> Any:
    status, answer, response_headers = await post(tenant, body, headers)
    return status, orjson.dumps(answer), response_headers.get("Content-Type")


async def test_unknown_and_webhookless_tenants_get_one_uniform_404(
    route: tuple[Post, Owner, str],
) -> None:
    post, owner, unique = route
    body = fresh()
    big = b"x" * 4096  # over the limit: a 413 would tell the tenant exists
    answers = {
        await answer_of(post, tenant, payload, headers)
        for tenant in (f"nobody{unique}", f"c{unique}")
        for payload, headers in ((body, signed(body)), (body, {}), (big, signed(big)))
    }
    assert answers == {(404, b'{"error":"not found"}', "application/json; charset=utf-8")}
    assert owner.deliveries == []


async def test_a_webhook_tenant_answers_401_only_after_the_tenant_check(
    route: tuple[Post, Owner, str],
) -> None:
    post, _owner, unique = route
    status, _answer, _ = await post(f"a{unique}", fresh(), {"Meiqia-Signature": "0" * 40})
    assert status == 401


@pytest.mark.parametrize(
    ("age_s", "result"),
    [
        (-(time.time() - 978307200), "stale"),  # created in 2001
        (-301, "stale"),
        (301, "stale"),  # from the future
        (-290, "accepted"),  # within the window (clock skew)
        (290, "accepted"),
    ],
    ids=["2001", "past", "future", "skew-past", "skew-future"],
)
async def test_a_delivery_outside_the_replay_window_is_refused(
    route: tuple[Post, Owner, str], age_s: float, result: str
) -> None:
    post, owner, unique = route
    tenant = f"a{unique}"
    body = fresh(f"sub_old_{unique}", time.time() + age_s)
    before = metric(tenant, result)
    status, answer, _ = await post(tenant, body, signed(body))
    assert metric(tenant, result) == before + 1
    if result == "stale":
        assert status == 400 and "created_at" in answer["error"]
        assert owner.deliveries == []
    else:
        assert status == 200 and len(owner.deliveries) == 1


async def test_a_replay_inside_the_window_is_acknowledged_once(
    route: tuple[Post, Owner, str],
) -> None:
    post, _owner, unique = route
    body = fresh(f"sub_again_{unique}")
    first = await post(f"a{unique}", body, signed(body))
    again = await post(f"a{unique}", body, signed(body))
    assert (first[0], first[1]["duplicate"]) == (200, False)
    assert (again[0], again[1]["duplicate"]) == (200, True)
