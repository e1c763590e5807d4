"""The shared REST layer: every outcome of an exchange is mapped once, the same for every
vendor (real sockets on loopback; a PBX session that refuses redirects, as in production)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import trustme
from aiohttp import web

from gateway.connectors import rest
from gateway.runtime.http_client import pbx_session
from gateway.schema.commands import CommandFailed, ErrorCode

SECRET = "s3cr3t-token-value"


class VendorRefused(rest.AuthRefused):
    """A vendor's own refusal class."""


class VendorLimited(rest.RateLimited):
    """A vendor's own rate limit class."""


@pytest.fixture
async def server() -> AsyncIterator[str]:
    """A server that answers every way a vendor API may."""
    never = asyncio.Event()

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def empty(_: web.Request) -> web.Response:
        return web.Response(status=200)

    async def html(request: web.Request) -> web.Response:
        status = int(request.query.get("status", "200"))
        return web.Response(status=status, text="<html>proxy error</html>")

    async def slow(_: web.Request) -> web.Response:
        await never.wait()  # the client's timeout ends it
        return web.Response()

    async def drop(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        await never.wait()
        return web.Response()

    async def limited(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": "slow down"}, status=429, headers={"Retry-After": request.query["after"]}
        )

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"/elsewhere?token={SECRET}")

    app = web.Application()
    for path, handler in [
        ("/ok", ok),
        ("/empty", empty),
        ("/html", html),
        ("/slow", slow),
        ("/drop", drop),
        ("/limited", limited),
        ("/redirect", redirect),
        ("/elsewhere", ok),
    ]:
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        never.set()
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with pbx_session() as session:
        yield session


def api(http: aiohttp.ClientSession, base_url: str, **options: Any) -> rest.Rest:
    link = rest.Rest(
        http,
        base_url,
        timeout_s=0.3,
        auth_refused=VendorRefused,
        rate_limited=VendorLimited,
        **options,
    )
    link.secrets.keep(SECRET)
    return link


def mapper() -> rest.Rest:
    """A layer that sends nothing: what answers mean."""
    return api(cast(aiohttp.ClientSession, None), "")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the transport -----------------------------------------------------------------------------


@pytest.mark.parametrize("write", [False, True])
async def test_a_server_never_reached_is_unavailable_and_retryable(
    http: aiohttp.ClientSession, write: bool
) -> None:
    """Nothing was sent: a write too may be sent again."""
    link = api(http, f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(CommandFailed) as failed:
        await link.exchange("POST", "/x", where="x", write=write)
    assert failed.value.code is ErrorCode.UNAVAILABLE and failed.value.retryable
    assert failed.value.message.startswith("x: cannot connect: ")
    assert type(failed.value) is CommandFailed


@pytest.mark.parametrize("path", ["/slow", "/drop"])
async def test_no_answer_to_a_read_is_unavailable_and_retryable(
    http: aiohttp.ClientSession, server: str, path: str
) -> None:
    with pytest.raises(CommandFailed) as failed:
        await api(http, server).exchange("GET", path, where="GET list", write=False)
    assert failed.value.code is ErrorCode.UNAVAILABLE and failed.value.retryable
    assert failed.value.message.startswith("GET list: no answer (")


@pytest.mark.parametrize("path", ["/slow", "/drop"])
async def test_no_answer_to_a_write_is_a_timeout_never_retried(
    http: aiohttp.ClientSession, server: str, path: str
) -> None:
    """It may have been run: sending it again could do it twice."""
    link = api(http, server, maybe_done="it may have been done")
    with pytest.raises(CommandFailed) as failed:
        await link.exchange("POST", path, where="callout", write=True)
    assert failed.value.code is ErrorCode.TIMEOUT and not failed.value.retryable
    assert failed.value.message.endswith("; it may have been done")


async def test_without_error_detail_only_the_kind_of_error_shows(
    http: aiohttp.ClientSession, server: str
) -> None:
    """A client whose URLs may hold a credential shows no transport error text."""
    link = api(http, server, error_detail=False)
    with pytest.raises(CommandFailed) as failed:
        await link.exchange("GET", "/slow", where="GET /slow", write=False)
    assert failed.value.message == "GET /slow: no answer (TimeoutError)"


async def test_a_redirect_is_not_followed_and_shows_no_secret(
    http: aiohttp.ClientSession, server: str
) -> None:
    with pytest.raises(CommandFailed) as failed:
        await api(http, server).exchange("GET", "/redirect", where="GET r", write=False)
    assert failed.value.code is ErrorCode.UNAVAILABLE and "RedirectRefused" in failed.value.message
    assert SECRET not in failed.value.message


async def test_send_and_read_map_the_same_way(http: aiohttp.ClientSession, server: str) -> None:
    """A response handed over unread (a download): sending and reading its body fail alike."""
    link = api(http, server)
    with pytest.raises(CommandFailed) as failed:
        await link.send("GET", "/slow", where="GET file", write=False)
    assert failed.value.code is ErrorCode.UNAVAILABLE and failed.value.retryable
    response = await link.send("GET", "/ok", where="GET file", write=False)
    try:
        assert await link.read(response, where="GET file", write=False) == b'{"ok": true}'
    finally:
        response.release()


async def test_the_pbx_ca_file_is_trusted_and_a_foreign_certificate_never_reached(
    tmp_path: Path,
) -> None:
    """A PBX's own CA (``ca_file``) lets the shared layer in; without it the certificate is
    refused: the server was never reached."""
    authority = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)

    async def hello(_: web.Request) -> web.Response:
        return web.json_response({"ok": 1})

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    base = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with pbx_session(ca_file) as own:
            reply = await api(own, base).exchange("GET", "/hello", where="hello", write=False)
            assert reply.status == 200 and reply.body == b'{"ok": 1}'
        async with pbx_session() as system:
            with pytest.raises(CommandFailed) as failed:
                await api(system, base).exchange("GET", "/hello", where="hello", write=False)
        assert (
            failed.value.code is ErrorCode.UNAVAILABLE and "cannot connect" in failed.value.message
        )
    finally:
        await runner.cleanup()


# --- bodies --------------------------------------------------------------------------------------


def error_body(text: str) -> dict[str, Any]:
    return {"message": text}


async def test_a_json_answer_and_an_empty_one(http: aiohttp.ClientSession, server: str) -> None:
    link = api(http, server)
    for path, expected in [("/ok", {"ok": True}), ("/empty", {})]:
        reply = await link.exchange("GET", path, where=path, write=False)
        got = link.json(reply, where=path, write=False, success=True, error_body=error_body)
        assert got == expected


@pytest.mark.parametrize(
    ("write", "code", "retryable"),
    [(False, ErrorCode.UNAVAILABLE, True), (True, ErrorCode.FAILED, False)],
)
async def test_a_success_that_is_not_json(
    http: aiohttp.ClientSession, server: str, write: bool, code: ErrorCode, retryable: bool
) -> None:
    """A read may be asked again; a write was run and is never sent again."""
    link = api(http, server)
    reply = await link.exchange("POST", "/html", where="list", write=write)
    with pytest.raises(CommandFailed) as failed:
        link.json(reply, where="list", write=write, success=True, error_body=error_body)
    assert (failed.value.code, failed.value.retryable) == (code, retryable)
    assert failed.value.message.startswith("list: HTTP 200 answer is not JSON")
    assert failed.value.message.endswith(f"; {rest.MAYBE_MADE}") is write


async def test_an_error_answer_that_is_not_json_is_read_as_the_vendor_error_body(
    http: aiohttp.ClientSession, server: str
) -> None:
    link = api(http, server)
    reply = await link.exchange("GET", "/html?status=502", where="x", write=False)
    got = link.json(reply, where="x", write=False, success=False, error_body=error_body)
    assert reply.status == 502 and got == {"message": "<html>proxy error</html>"}


async def test_error_reply_reads_the_start_of_the_body_and_releases(
    http: aiohttp.ClientSession, server: str
) -> None:
    response = await api(http, server).send("GET", "/html?status=500", where="x", write=False)
    reply = await rest.error_reply(response, limit=6)
    assert (reply.status, reply.body, reply.content_type) == (500, b"<html>", "text/plain")
    assert response.closed


# --- statuses ----------------------------------------------------------------------------------


async def test_retry_after_in_seconds_and_as_an_http_date(
    http: aiohttp.ClientSession, server: str
) -> None:
    link = api(http, server)
    seconds = await link.exchange("GET", "/limited?after=7", where="x", write=False)
    assert seconds.status == 429 and seconds.retry_after_s == 7.0
    when = formatdate(time.time() + 120, usegmt=True)
    dated = await link.exchange("GET", f"/limited?after={when}", where="x", write=False)
    assert dated.retry_after_s is not None and 100 < dated.retry_after_s <= 120
    junk = await link.exchange("GET", "/limited?after=soon", where="x", write=False)
    assert junk.retry_after_s is None


@pytest.mark.parametrize("write", [False, True])
def test_401_is_the_vendor_auth_refusal(write: bool) -> None:
    failure = mapper().failure(401, "x: 401 token refused", write=write)
    assert isinstance(failure, VendorRefused) and failure.status == 401
    assert (failure.code, failure.vendor_code, failure.retryable) == (
        ErrorCode.FORBIDDEN,
        "401",
        False,
    )


def test_403_is_forbidden_but_not_an_auth_refusal() -> None:
    """The credentials work; these rights are missing (a vendor may say otherwise)."""
    failure = mapper().failure(403, "x: 403", write=False)
    assert failure.code is ErrorCode.FORBIDDEN and failure.vendor_code == "403"
    assert not isinstance(failure, rest.AuthRefused)


@pytest.mark.parametrize("write", [False, True])
@pytest.mark.parametrize("after", [None, 7.0])
def test_429_is_rate_limited_with_its_retry_after(write: bool, after: float | None) -> None:
    """A 429 was not run: retryable, reads and writes alike."""
    failure = mapper().failure(429, "x: 429", write=write, retry_after_s=after)
    assert isinstance(failure, VendorLimited) and failure.retry_after_s == after
    assert (failure.code, failure.vendor_code, failure.retryable) == (
        ErrorCode.UNAVAILABLE,
        "429",
        True,
    )


@pytest.mark.parametrize(
    ("status", "write", "after", "limited", "code", "retryable"),
    [
        (500, False, None, False, ErrorCode.UNAVAILABLE, True),
        (500, True, None, False, ErrorCode.FAILED, False),  # it may have been run
        (500, False, 3.0, True, ErrorCode.UNAVAILABLE, True),  # overloaded: come back then
        (500, True, 3.0, False, ErrorCode.FAILED, False),  # a write answered 500 may have run
        (503, True, 3.0, True, ErrorCode.UNAVAILABLE, True),  # 503: not run
        (503, True, None, False, ErrorCode.UNAVAILABLE, True),
        (502, True, None, False, ErrorCode.FAILED, False),
    ],
)
def test_5xx(
    status: int,
    write: bool,
    after: float | None,
    limited: bool,
    code: ErrorCode,
    retryable: bool,
) -> None:
    failure = mapper().failure(status, "x", write=write, retry_after_s=after)
    assert isinstance(failure, VendorLimited) is limited
    assert (failure.code, failure.retryable, failure.vendor_code) == (code, retryable, str(status))
    if code is ErrorCode.FAILED:
        assert failure.message.endswith("may have been made")


def test_the_vendor_body_decides_before_the_status() -> None:
    link = mapper()
    refused = link.failure(400, "x", write=False, vendor_code="Unauthenticated", refused=True)
    assert isinstance(refused, VendorRefused) and refused.vendor_code == "Unauthenticated"
    limited = link.failure(400, "x", write=False, limited=True, retry_after_s=2.0)
    assert isinstance(limited, VendorLimited) and limited.retry_after_s == 2.0
    named = link.failure(400, "x", write=False, code=ErrorCode.NOT_FOUND)
    assert named.code is ErrorCode.NOT_FOUND and named.vendor_code == "400"
    assert link.failure(418, "x", write=False, otherwise=ErrorCode.INVALID).code is (
        ErrorCode.INVALID
    )


# --- secrets -----------------------------------------------------------------------------------


def test_secrets_are_redacted_longest_first_and_short_values_ignored() -> None:
    secrets = rest.Secrets()
    secrets.keep("abc", "token-1", "token-1-and-more")
    assert secrets.redact("token-1-and-more token-1 abc") == "*** *** abc"


def test_recent_secrets_are_the_last_ones() -> None:
    secrets = rest.Secrets(recent=2)
    secrets.recent("sig-one", "sig-two")
    secrets.recent("sig-one")  # used again: the newest
    secrets.recent("sig-three")
    assert secrets.redact("sig-one sig-two sig-three") == "*** sig-two ***"


async def test_secrets_never_show_in_a_transport_error(http: aiohttp.ClientSession) -> None:
    link = api(http, f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(CommandFailed) as failed:
        await link.exchange("GET", f"/x?token={SECRET}", where=f"x?token={SECRET}", write=False)
    assert SECRET not in failed.value.message and "x?token=***: cannot connect" in (
        failed.value.message
    )
    text = link.transport_failure(
        "x", aiohttp.ClientPayloadError(f"broken body near {SECRET}"), write=True
    ).message
    assert text == f"x: no answer (ClientPayloadError: broken body near ***); {rest.MAYBE_MADE}"
