"""The XCC REST client against the simulator on loopback: lazy single-flight authentication,
one re-authentication after a 401 then failure, backoff after refused keys, secrets kept out of
errors and logs, writes never sent twice but after a 401, error mapping, paging."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from gateway.connectors.xswitch.client import XccAuthRejected, XccClient, is_write
from gateway.schema.commands import CommandFailed, ErrorCode
from gateway.sim.xswitch.rest import API, XccRestSimulator
from tests.conftest import wait_for
from tests.xswitch.rest_helpers import DEV_KEY, api_calls, pbx_settings

EXTENSIONS = API + "extensions/list"
ADD = API + "extensions/add"


class Clock:
    """A monotonic clock the test moves (token lifetimes without waiting)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def new_extension(extn: str = "1030") -> dict[str, Any]:
    """The document's add example (line 214)."""
    return {
        "name": f"EXT_{extn}",
        "extn": extn,
        "password": "$VeryGoodPassw0rd",
        "context": "default",
        "domain": "xswitch.cn",
    }


# --- authentication ------------------------------------------------------------------------------


async def test_authentication_is_lazy_and_reused(
    rest_sim: XccRestSimulator, xcc: XccClient
) -> None:
    assert rest_sim.auth_requests == 0, "no request before the first call"
    first = await xcc.call(EXTENSIONS, {"page_size": "2"})
    await xcc.call(API + "queues/list", {})
    assert first["row_count"] == 22
    assert rest_sim.auth_requests == 1 and xcc.auth_count == 1
    auth = rest_sim.calls(API + "sessions/auth")
    assert auth[0].body == {"dev_key": DEV_KEY}
    assert [status for _, _, status in api_calls(rest_sim)] == [200, 200]


async def test_concurrent_first_calls_share_one_authentication(
    rest_sim: XccRestSimulator, xcc: XccClient
) -> None:
    answers = await asyncio.gather(*(xcc.call(EXTENSIONS, {}) for _ in range(20)))
    assert all(a["row_count"] == 22 for a in answers)
    assert rest_sim.auth_requests == 1 and xcc.auth_count == 1


async def test_expired_token_is_replaced_once_and_the_call_retried(
    rest_sim: XccRestSimulator, xcc: XccClient
) -> None:
    await xcc.call(EXTENSIONS, {})
    rest_sim.expire_tokens()
    answers = await asyncio.gather(*(xcc.call(EXTENSIONS, {}) for _ in range(10)))
    assert all(a["row_count"] == 22 for a in answers)
    assert rest_sim.auth_requests == 2, "ten refused calls, one new token"
    statuses = [status for _, _, status in api_calls(rest_sim)]
    assert statuses.count(401) == 10 and statuses.count(200) == 11


async def test_token_lifetime_on_the_server_clock(http_session: aiohttp.ClientSession) -> None:
    clock = Clock()
    sim = XccRestSimulator(DEV_KEY, token_ttl_s=60, clock=clock)
    await sim.start()
    try:
        client = XccClient(http_session, pbx_settings(sim.base_url))
        await client.call(EXTENSIONS, {})
        clock.now += 59
        await client.call(EXTENSIONS, {})
        assert sim.auth_requests == 1
        clock.now += 2  # the document's "expires": 0 tells the client nothing: a 401 does
        await client.call(EXTENSIONS, {})
        assert sim.auth_requests == 2
        assert [s for _, _, s in api_calls(sim)] == [200, 200, 401, 200]
    finally:
        await sim.stop()


async def test_an_announced_lifetime_is_renewed_before_the_server_refuses(
    http_session: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    sim = XccRestSimulator(DEV_KEY, token_ttl_s=60, announce_expiry=True, clock=clock)
    await sim.start()
    try:
        client = XccClient(http_session, pbx_settings(sim.base_url), clock=clock)
        await client.call(EXTENSIONS, {})
        clock.now += 55  # within the last tenth of the lifetime
        await client.call(EXTENSIONS, {})
        assert sim.auth_requests == 2
        assert 401 not in [s for _, _, s in api_calls(sim)]
    finally:
        await sim.stop()


async def test_a_token_refused_again_after_reauthentication_fails(
    rest_sim: XccRestSimulator, xcc: XccClient
) -> None:
    await xcc.call(EXTENSIONS, {})
    rest_sim.reject_tokens = True
    with pytest.raises(CommandFailed) as failed:
        await xcc.call(EXTENSIONS, {})
    assert failed.value.code is ErrorCode.UNAVAILABLE and failed.value.retryable
    assert failed.value.vendor_code == "401"
    assert rest_sim.auth_requests == 2, "one re-authentication, not a loop"
    assert [s for _, _, s in api_calls(rest_sim)] == [200, 401, 401]


async def test_an_expired_token_answer_in_an_http_200_counts_too(
    rest_sim: XccRestSimulator, xcc: XccClient
) -> None:
    rest_sim.script(EXTENSIONS, status=200, body={"code": 401, "message": "token expired"})
    answer = await xcc.call(EXTENSIONS, {})
    assert answer["row_count"] == 22 and rest_sim.auth_requests == 2


async def test_refused_dev_key_backs_off_and_is_never_shown(
    rest_sim: XccRestSimulator, http_session: aiohttp.ClientSession
) -> None:
    wrong = "0badc0de-wrong-key-0000"
    with capture_logs() as logs:
        client = XccClient(http_session, pbx_settings(rest_sim.base_url, dev_key=wrong))
        with pytest.raises(XccAuthRejected) as refused:
            await client.call(EXTENSIONS, {})
        assert refused.value.code is ErrorCode.FORBIDDEN and not refused.value.retryable
        with pytest.raises(CommandFailed) as waiting:
            await client.call(EXTENSIONS, {})
        assert waiting.value.code is ErrorCode.UNAVAILABLE and "next attempt" in str(waiting.value)
        assert rest_sim.auth_requests == 1, "no second attempt within the backoff"

        async def tried_again() -> bool:
            try:
                await client.call(EXTENSIONS, {})
            except XccAuthRejected:
                return True
            except CommandFailed:
                return False
            return False

        await wait_for(tried_again, timeout=5)
        assert rest_sim.auth_requests == 2 and client.auth_rejections == 2
    text = " ".join(map(str, (refused.value, waiting.value, logs)))
    assert wrong not in text
    assert any(entry["event"] == "auth_failed" for entry in logs)
    assert not api_calls(rest_sim), "nothing but authentication was sent"


async def test_secrets_in_an_error_answer_are_redacted(
    rest_sim: XccRestSimulator, http_session: aiohttp.ClientSession
) -> None:
    with capture_logs() as logs:
        client = XccClient(http_session, pbx_settings(rest_sim.base_url))
        for _ in range(6):  # many tokens later, the key is still known as a secret
            rest_sim.expire_tokens()
            await client.call(EXTENSIONS, {})
        token = rest_sim.tokens[-1]
        rest_sim.script(
            EXTENSIONS, status=400, body={"message": f"bad query from {token} key {DEV_KEY}"}
        )
        with pytest.raises(CommandFailed) as failed:
            await client.call(EXTENSIONS, {})
    assert failed.value.code is ErrorCode.INVALID
    assert "***" in failed.value.message
    for secret in (token, DEV_KEY):
        assert secret not in str(failed.value) and secret not in str(logs)


# --- writes and failures -------------------------------------------------------------------------


def test_write_paths() -> None:
    assert is_write(API + "extensions/add") and is_write(API + "hostlines/del")
    assert is_write(API + "timeDef/set")
    assert not is_write(API + "extensions/get") and not is_write(API + "sessions/getExtnToken")


async def test_a_write_is_sent_again_only_after_a_401(
    rest_sim: XccRestSimulator, xcc: XccClient
) -> None:
    await xcc.call(EXTENSIONS, {})
    rest_sim.expire_tokens()
    answer = await xcc.call(ADD, new_extension())
    assert [s for p, _, s in api_calls(rest_sim) if p == ADD] == [401, 200]
    assert [r for r in rest_sim.extensions.values() if r["extn"] == "1030"] == [
        rest_sim.extensions[answer["id"]]
    ]


async def test_a_write_answered_500_is_not_sent_again(
    rest_sim: XccRestSimulator, xcc: XccClient
) -> None:
    rest_sim.script(ADD, status=500)
    with pytest.raises(CommandFailed) as failed:
        await xcc.call(ADD, new_extension())
    assert failed.value.code is ErrorCode.FAILED and not failed.value.retryable
    assert "may have been made" in failed.value.message
    assert len(rest_sim.calls(ADD)) == 1


async def test_a_write_without_an_answer_is_not_sent_again(
    rest_sim: XccRestSimulator, http_session: aiohttp.ClientSession
) -> None:
    client = XccClient(http_session, pbx_settings(rest_sim.base_url, request_timeout_s=0.3))
    await client.call(EXTENSIONS, {})
    rest_sim.script(ADD, delay_s=1.0)  # the server makes the change, too late to answer
    with pytest.raises(CommandFailed) as failed:
        await client.call(ADD, new_extension())
    assert failed.value.code is ErrorCode.TIMEOUT and not failed.value.retryable
    await wait_for(lambda: any(r["extn"] == "1030" for r in rest_sim.extensions.values()))
    assert rest_sim.requests[ADD] == 1, "a resend would have made a second extension"


async def test_a_read_without_an_answer_is_unavailable_and_retryable(
    rest_sim: XccRestSimulator, http_session: aiohttp.ClientSession
) -> None:
    client = XccClient(http_session, pbx_settings(rest_sim.base_url, request_timeout_s=0.3))
    rest_sim.script(EXTENSIONS, delay_s=1.0)
    with pytest.raises(CommandFailed) as failed:
        await client.call(EXTENSIONS, {})
    assert failed.value.code is ErrorCode.UNAVAILABLE and failed.value.retryable
    assert rest_sim.requests[EXTENSIONS] == 1


@pytest.mark.parametrize(
    ("path", "status", "body", "code", "retryable"),
    [
        (EXTENSIONS, 400, None, ErrorCode.INVALID, False),
        (EXTENSIONS, 403, None, ErrorCode.FORBIDDEN, False),
        (EXTENSIONS, 404, None, ErrorCode.NOT_FOUND, False),
        (ADD, 409, None, ErrorCode.CONFLICT, False),
        (ADD, 422, None, ErrorCode.INVALID, False),
        (EXTENSIONS, 500, None, ErrorCode.UNAVAILABLE, True),
        (ADD, 500, None, ErrorCode.FAILED, False),
        (EXTENSIONS, 503, None, ErrorCode.UNAVAILABLE, True),
        (ADD, 503, None, ErrorCode.UNAVAILABLE, True),  # refused before running
        (ADD, 429, None, ErrorCode.UNAVAILABLE, True),
        (EXTENSIONS, 501, None, ErrorCode.UNSUPPORTED, False),
        (
            EXTENSIONS,
            200,
            {"code": 404, "message": "no such extension"},
            ErrorCode.NOT_FOUND,
            False,
        ),
        (EXTENSIONS, 200, {"code": "500", "msg": "db down"}, ErrorCode.UNAVAILABLE, True),
    ],
)
async def test_error_answers_map_to_neutral_codes(
    rest_sim: XccRestSimulator,
    xcc: XccClient,
    path: str,
    status: int,
    body: Any,
    code: ErrorCode,
    retryable: bool,
) -> None:
    rest_sim.script(path, status=status, body=body)
    with pytest.raises(CommandFailed) as failed:
        await xcc.call(path, new_extension() if path == ADD else {})
    assert (failed.value.code, failed.value.retryable) == (code, retryable)
    assert failed.value.vendor_code in (str(status), str((body or {}).get("code")))
    assert rest_sim.requests[path] == 1


async def test_a_closed_port_is_unavailable_for_reads_and_writes(
    http_session: aiohttp.ClientSession,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = XccClient(http_session, pbx_settings(f"http://127.0.0.1:{port}"))
    for path in (EXTENSIONS, ADD):
        with pytest.raises(CommandFailed) as failed:
            await client.call(path, {})
        assert failed.value.code is ErrorCode.UNAVAILABLE and failed.value.retryable


async def test_only_api_paths_are_called(rest_sim: XccRestSimulator, xcc: XccClient) -> None:
    with pytest.raises(CommandFailed) as failed:
        await xcc.call("/etc/passwd", {})
    assert failed.value.code is ErrorCode.INVALID and not rest_sim.received


# --- answers -------------------------------------------------------------------------------------


async def test_a_bare_array_answer_comes_back_as_data(xcc: XccClient) -> None:
    assert await xcc.call(API + "freeswitch/list", {}) == {
        "data": [{"ip": "192.168.1.7", "name": "fs1"}]
    }


async def test_extension_token(rest_sim: XccRestSimulator, xcc: XccClient) -> None:
    answer = await xcc.extn_token("1001")
    assert answer["extn_id"] == "192" and answer["domain"] == "xswitch.cn" and answer["token"]
    with pytest.raises(CommandFailed) as failed:
        await xcc.extn_token("9999")
    assert failed.value.code is ErrorCode.NOT_FOUND


async def test_list_all_reads_every_page(rest_sim: XccRestSimulator, xcc: XccClient) -> None:
    rows = await xcc.list_all(EXTENSIONS, {}, page_size=5)
    assert sorted(r["extn"] for r in rows) == [str(n) for n in range(1000, 1022)]
    bodies = [body for path, body, _ in api_calls(rest_sim) if path == EXTENSIONS]
    assert bodies == [{"page": str(p), "page_size": "5"} for p in range(1, 6)]


async def test_list_all_tolerates_text_counts_and_null_data(
    rest_sim: XccRestSimulator, xcc: XccClient
) -> None:
    rest_sim.script(
        EXTENSIONS,
        status=200,
        body={"page": "1", "page_count": "2", "row_count": "3", "data": [{"id": 1}, {"id": "2"}]},
    )
    rest_sim.script(
        EXTENSIONS, status=200, body={"page": "2", "page_count": "2", "data": [{"id": 3}]}
    )
    assert [r["id"] for r in await xcc.list_all(EXTENSIONS, {})] == [1, "2", 3]
    for empty in (None, {}, []):
        rest_sim.script(
            EXTENSIONS, status=200, body={"page": 1, "data": empty, "row_count": 0, "page_count": 0}
        )
        assert await xcc.list_all(EXTENSIONS, {}) == []
    none = await xcc.list_all(EXTENSIONS, {"search_field": "extn", "search_key": "77"})
    assert none == [], "the simulator's own empty page (data: null)"


async def test_list_all_stops_without_page_count(
    rest_sim: XccRestSimulator, xcc: XccClient
) -> None:
    rest_sim.script(EXTENSIONS, status=200, body={"data": [{"id": 1}, {"id": 2}], "row_count": 3})
    rest_sim.script(EXTENSIONS, status=200, body={"data": [{"id": 3}], "row_count": 3})
    assert len(await xcc.list_all(EXTENSIONS, {}, page_size=2)) == 3
    # a server that ignores "page" repeats its rows: the second page brings nothing new
    same = {"data": [{"id": 1}, {"id": 2}]}
    rest_sim.script(EXTENSIONS, status=200, body=same, times=2)
    assert len(await xcc.list_all(EXTENSIONS, {}, page_size=2)) == 2
    assert rest_sim.requests[EXTENSIONS] == 4


async def test_list_all_never_returns_a_partial_list(
    rest_sim: XccRestSimulator, xcc: XccClient
) -> None:
    with pytest.raises(CommandFailed) as failed:
        await xcc.list_all(EXTENSIONS, {}, page_size=5, max_pages=2)
    assert failed.value.code is ErrorCode.FAILED and rest_sim.requests[EXTENSIONS] == 2
