"""The PBX links' shared HTTP session refuses redirects: a credential in a body, header or query
never travels to the place a redirect points to (another origin included)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway.runtime.http_client import RedirectRefused, pbx_session


@pytest.fixture
async def origins() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A PBX that redirects everything (307 to another origin, or to itself: a loop), and the
    other origin, recording what reaches it."""
    reached: list[web.Request] = []

    async def elsewhere(request: web.Request) -> web.Response:
        reached.append(request)
        return web.json_response({"errcode": 0})

    other = web.Application()
    other.router.add_route("*", "/{tail:.*}", elsewhere)
    other_runner = web.AppRunner(other)
    await other_runner.setup()
    await web.TCPSite(other_runner, "127.0.0.1", 0).start()
    other_url = f"http://127.0.0.1:{other_runner.addresses[0][1]}"

    async def redirect(request: web.Request) -> web.Response:
        if request.path.startswith("/loop"):
            raise web.HTTPTemporaryRedirect(str(request.rel_url))
        raise web.HTTPTemporaryRedirect(f"{other_url}{request.rel_url}")

    pbx = web.Application()
    pbx.router.add_route("*", "/{tail:.*}", redirect)
    runner = web.AppRunner(pbx)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", reached
    finally:
        await runner.cleanup()
        await other_runner.cleanup()


@pytest.mark.parametrize(
    ("path", "kw"),
    [
        # Yeastar get_token: client id and secret in the body (seed 003, lines 1054-1250)
        ("/openapi/v1.0/get_token", {"json": {"username": "id", "password": "client-secret"}}),
        # XSwitch: dev_key in the body, then the token header (seed 002)
        ("/api/auth", {"json": {"dev_key": "dev-key-secret"}}),
        ("/api/extensions", {"headers": {"token": "xcc-token-secret"}}),
    ],
)
async def test_a_redirect_is_refused_and_nothing_reaches_the_other_origin(
    origins: tuple[str, list[web.Request]], path: str, kw: dict
) -> None:
    base, reached = origins
    async with pbx_session() as session:
        with pytest.raises(RedirectRefused) as caught:
            await session.post(f"{base}{path}", **kw)
    assert isinstance(caught.value, aiohttp.ClientError) and caught.value.status == 307
    assert reached == []


async def test_a_redirect_loop_puts_no_token_into_the_error(
    origins: tuple[str, list[web.Request]],
) -> None:
    base, _ = origins
    async with pbx_session() as session:
        with pytest.raises(RedirectRefused) as caught:
            await session.get(f"{base}/loop/openapi/v1.0/cdr/list?access_token=tok-secret")
    assert "tok-secret" not in str(caught.value) and "access_token" not in str(caught.value)
