"""A PBX whose certificate comes from the customer's own CA: trusted through that PBX's
``ca_file`` (its own session, and Yeastar's WebSocket), not by turning verification off.
The broker's ``amqps://`` options likewise. Certificates are made by trustme (test extra)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import pytest
import trustme
from aiohttp import web

from gateway.bus.connection import connect_first
from gateway.connectors.yeastar.connector import _ws_ssl
from gateway.connectors.yeastar.settings import YeastarPbxSettings
from gateway.runtime.http_client import pbx_session


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path / "customer-ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


@pytest.fixture
async def pbx(ca: tuple[trustme.CA, Path]) -> AsyncIterator[str]:
    """An HTTPS server on loopback with a certificate of the customer's CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca[0].issue_cert("127.0.0.1").configure_cert(context)

    async def hello(_: web.Request) -> web.Response:
        return web.json_response({"errcode": 0})

    app = web.Application()
    app.router.add_get("/openapi/v1.0/ping", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}/openapi/v1.0/ping"
    finally:
        await runner.cleanup()


async def test_the_pbx_session_trusts_its_ca_file(pbx: str, ca: tuple[trustme.CA, Path]) -> None:
    async with pbx_session(ca[1]) as session:
        for verify in (True, None):  # the vendors' per-request "verify" asks the default
            kw = {} if verify is None else {"ssl": verify}
            async with session.get(pbx, **kw) as resp:
                assert resp.status == 200
    async with pbx_session() as session:  # without it: refused, not silently accepted
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(pbx)


def test_ca_file_is_a_setting_of_every_pbx(tmp_path: Path, ca: tuple[trustme.CA, Path]) -> None:
    settings = YeastarPbxSettings(
        tenant="t",
        vendor="yeastar",
        base_url="https://pbx.example:8088",
        client_id="id",
        client_secret="s",
        ca_file=ca[1],
    )
    context = _ws_ssl(settings.base_url, settings.verify_tls, settings.ca_file)
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    subjects = [dict(x[0] for x in c["subject"]) for c in context.get_ca_certs()]
    assert any("trustme" in str(s) for s in subjects)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ValueError, match="holds no usable CA certificate"):
        YeastarPbxSettings(**{**settings.model_dump(), "client_secret": "s", "ca_file": junk})


async def test_amqps_url_options_trust_a_private_ca_and_show_a_client_cert(
    ca: tuple[trustme.CA, Path], tmp_path: Path
) -> None:
    """The ``amqps://`` options SECURITY.md documents (``cafile``, ``certfile``, ``keyfile``)
    reach the broker connection: a TLS listener of the customer's CA that requires a client
    certificate receives the AMQP greeting over TLS from the gateway's certificate; without
    ``cafile`` the broker's certificate is refused."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca[0].issue_cert("127.0.0.1").configure_cert(context)
    ca[0].configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    client = ca[0].issue_cert("gateway.example.test")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert_file))
    client.private_key_pem.write_to_path(str(key_file))
    greetings: list[tuple[bytes, Any]] = []

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            greetings.append((await reader.readexactly(8), writer.get_extra_info("peercert")))
        writer.close()  # no AMQP beyond the greeting: the client's connect fails after it

    server = await asyncio.start_server(broker, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    base = f"amqps://guest:guest@127.0.0.1:{port}/"
    try:
        with pytest.raises(Exception):  # noqa: B017 - whatever the closed broker makes of it
            await asyncio.wait_for(
                connect_first([f"{base}?cafile={ca[1]}&certfile={cert_file}&keyfile={key_file}"]),
                10,
            )
        assert len(greetings) == 1
        greeting, peer = greetings[0]
        assert greeting == b"AMQP\x00\x00\x09\x01"
        assert ("DNS", "gateway.example.test") in peer["subjectAltName"]
        without_ca = f"{base}?certfile={cert_file}&keyfile={key_file}"
        with pytest.raises(
            aiormq.exceptions.AMQPConnectionError, match="CERTIFICATE_VERIFY_FAILED"
        ):
            await asyncio.wait_for(connect_first([without_ca]), 10)
        assert len(greetings) == 1
    finally:
        server.close()
        await server.wait_closed()
