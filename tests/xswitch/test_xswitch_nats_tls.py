"""The XSwitch NATS link with ``nats_url: tls://``: TLS is required, never a silent fallback.

nats-py upgrades to TLS only when the server's INFO says ``tls_required``; otherwise it sends
its CONNECT - user and password, token, JWT - in clear. A fake NATS server on loopback that
does not ask for TLS must receive nothing of it. Then the TLS settings against servers that
do TLS: a fake one that starts TLS before its INFO (``nats_tls_handshake_first``) and checks a
client certificate, and a real ``nats-server`` started here with a CA made for the test
(trustme) that verifies clients and knows its user by nkey.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nkeys
import pytest
import trustme
from pydantic import SecretStr, ValidationError

from gateway.connectors.xswitch.link import PlaintextRefused, _encrypted, connect, open_session
from gateway.connectors.xswitch.settings import CTRL_SUBJECT, XSwitchPbxSettings
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

PASSWORD = "n4ts-pa55word-in-the-url"
JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.fake-user-jwt.signature"


def _pbx(**overrides: Any) -> XSwitchPbxSettings:
    values: dict[str, Any] = {
        "tenant": "natstls",
        "vendor": "xswitch",
        "base_url": "http://127.0.0.1:9",  # no REST here: only the NATS session is used
        "dev_key": SecretStr("unused"),
        "jetstream": "off",
        "request_timeout_s": 3.0,
    }
    values.update(overrides)
    return XSwitchPbxSettings(**values)


def _user_seed() -> bytes:
    return nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)  # type: ignore[no-any-return]


def _creds_file(path: Path, seed: bytes) -> Path:
    path.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{JWT}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    return path


@dataclass
class FakeNats:
    """Speaks just enough NATS for a client's connect: INFO, then PONG to every PING."""

    info: dict[str, Any]
    tls: ssl.SSLContext | None = None  # TLS from the first byte (a handshake_first server)
    received: bytearray = field(default_factory=bytearray)
    connects: list[dict[str, Any]] = field(default_factory=list)
    peer_certs: list[Any] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peer_certs.append(writer.get_extra_info("peercert"))
        writer.write(b"INFO " + json.dumps(self.info).encode() + b"\r\n")
        await writer.drain()
        try:
            while line := await reader.readline():
                self.received += line
                if line.startswith(b"CONNECT "):
                    self.connects.append(json.loads(line[8:]))
                elif line.startswith(b"PING"):
                    writer.write(b"PONG\r\n")
                    await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self.closed.set()
            writer.close()


@contextlib.asynccontextmanager
async def fake_nats(server: FakeNats) -> AsyncIterator[FakeNats]:
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=server.tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


def _info(**extra: Any) -> dict[str, Any]:
    return {
        "server_id": "FAKE",
        "version": "2.10.0",
        "proto": 1,
        "headers": True,
        "max_payload": 1048576,
        "auth_required": True,
        **extra,
    }


@pytest.mark.parametrize("credential", ["url password", "creds file"])
async def test_a_tls_url_never_sends_credentials_in_clear(credential: str, tmp_path: Path) -> None:
    """The server's INFO does not ask for TLS: the link sends no CONNECT and fails, with the
    reason, instead of logging in in clear."""
    async with fake_nats(FakeNats(_info(nonce="bm9uY2U"))) as server:
        if credential == "url password":
            pbx = _pbx(nats_url=f"tls://gateway:{PASSWORD}@127.0.0.1:{server.port}")
            secret = PASSWORD.encode()
        else:
            creds = _creds_file(tmp_path / "user.creds", _user_seed())
            pbx = _pbx(nats_url=f"tls://127.0.0.1:{server.port}", nats_creds_file=creds)
            secret = JWT.encode()
        with pytest.raises(PlaintextRefused, match="did not start TLS") as caught:
            await open_session(pbx)
        assert PASSWORD not in str(caught.value)
        await asyncio.wait_for(server.closed.wait(), 5)  # the client hung up
        assert secret not in server.received
        assert b"CONNECT" not in server.received and not server.connects


async def test_a_tls_url_to_the_plaintext_nats_server_is_refused() -> None:
    """The same against a real server without TLS (the shared one on 4222)."""
    with pytest.raises(PlaintextRefused):
        await open_session(_pbx(nats_url=f"tls://gateway:{PASSWORD}@127.0.0.1:4222"))


async def test_a_nats_url_still_connects_in_clear_when_asked_to() -> None:
    """``nats://`` is the operator's choice of a plaintext link: unchanged."""
    session = await open_session(_pbx(nats_url="nats://127.0.0.1:4222"))
    await session.close()


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    """The customer's own CA, its certificate in the PBX's ``ca_file``."""
    authority = trustme.CA()
    path = tmp_path / "customer-ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


def _client_cert(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    cert = ca.issue_cert("gateway-client.example.test")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return cert_file, key_file


async def test_handshake_first_with_ca_file_client_cert_and_creds(
    ca: tuple[trustme.CA, Path], tmp_path: Path
) -> None:
    """A server that starts TLS before its INFO, with a certificate of the customer's CA and
    verifying the client's: the link trusts ``ca_file``, shows ``nats_cert_file`` and logs in
    with ``nats_creds_file`` (JWT and the nonce signed with the seed), all inside TLS."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca[0].issue_cert("127.0.0.1").configure_cert(context)
    ca[0].configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    seed = _user_seed()
    creds = _creds_file(tmp_path / "user.creds", seed)
    cert_file, key_file = _client_cert(ca[0], tmp_path)
    nonce = "c29tZS1ub25jZQ"
    async with fake_nats(FakeNats(_info(nonce=nonce, tls_required=True), tls=context)) as server:
        pbx = _pbx(
            nats_url=f"tls://127.0.0.1:{server.port}",
            nats_tls_handshake_first=True,
            ca_file=ca[1],
            nats_cert_file=cert_file,
            nats_key_file=key_file,
            nats_creds_file=creds,
        )
        session = await open_session(pbx)
        try:
            assert session.nc.is_connected
        finally:
            await session.close()
        (hello,) = server.connects
        assert hello["jwt"] == JWT
        signature = base64.urlsafe_b64decode(hello["sig"] + "==")
        assert nkeys.from_seed(bytearray(seed)).verify(nonce.encode(), signature)
        assert ("DNS", "gateway-client.example.test") in server.peer_certs[0]["subjectAltName"]
        # Without the customer's CA the server's certificate is not trusted: no fallback.
        with pytest.raises(ssl.SSLCertVerificationError):
            await open_session(pbx.model_copy(update={"ca_file": None}))
        assert len(server.connects) == 1


def test_nats_security_settings_are_checked(ca: tuple[trustme.CA, Path], tmp_path: Path) -> None:
    cert_file, key_file = _client_cert(ca[0], tmp_path)
    creds = _creds_file(tmp_path / "user.creds", _user_seed())
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(_user_seed())
    cases: list[tuple[dict[str, Any], str]] = [
        ({"nats_tls_handshake_first": True}, "needs a tls:// nats_url"),
        ({"nats_url": "tls://h:4222", "nats_cert_file": cert_file}, "go together"),
        ({"nats_cert_file": cert_file, "nats_key_file": key_file}, "needs a tls:// nats_url"),
        (
            {"nats_url": "tls://h:4222", "nats_cert_file": cert_file, "nats_key_file": creds},
            "no usable certificate and key",
        ),
        ({"nats_creds_file": creds, "nats_nkey_seed_file": seed_file}, "not both"),
        ({"nats_creds_file": tmp_path / "missing.creds"}, "does not exist"),
    ]
    for overrides, message in cases:
        with pytest.raises(ValidationError, match=re.escape(message)):
            _pbx(**overrides)


@contextlib.asynccontextmanager
async def nats_server(config: str, tmp_path: Path) -> AsyncIterator[int]:
    """A ``nats-server`` of its own on a free loopback port, stopped and removed after."""
    binary = shutil.which("nats-server")
    if binary is None:
        pytest.skip("no nats-server binary")
    conf = tmp_path / "nats.conf"
    conf.write_text(config)
    proc = await asyncio.create_subprocess_exec(
        binary, "-c", str(conf), stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        port = 0
        async with asyncio.timeout(10):
            while not port:
                line = (await proc.stderr.readline()).decode()
                assert line, "nats-server stopped before it listened"
                if found := re.search(r"client connections on [\d.]+:(\d+)", line):
                    port = int(found.group(1))
        drain = asyncio.ensure_future(_drain(proc.stderr.readline))
        yield port
        drain.cancel()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()


async def _drain(read: Callable[[], Awaitable[bytes]]) -> None:
    while await read():
        pass


def _server_cert(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    server_cert = ca.issue_cert("127.0.0.1")
    server_pem, server_key = tmp_path / "server.pem", tmp_path / "server.key"
    server_cert.cert_chain_pems[0].write_to_path(str(server_pem))
    server_cert.private_key_pem.write_to_path(str(server_key))
    return server_pem, server_key


async def test_a_server_that_only_offers_tls_is_used_with_tls(
    ca: tuple[trustme.CA, Path], tmp_path: Path
) -> None:
    """A real ``nats-server`` with ``allow_non_tls`` announces ``tls_available``, not
    ``tls_required``: nats-py alone would stay in clear (and the link refuse); the link
    upgrades, as NATS's Go client does."""
    server_pem, server_key = _server_cert(ca[0], tmp_path)
    config = f"""
host: 127.0.0.1
port: -1
allow_non_tls: true
tls {{
  cert_file: "{server_pem}"
  key_file: "{server_key}"
  timeout: 3
}}
"""
    async with nats_server(config, tmp_path) as port:
        session = await open_session(_pbx(nats_url=f"tls://127.0.0.1:{port}", ca_file=ca[1]))
        try:
            assert session.nc.is_connected and _encrypted(session.nc._transport)
        finally:
            await session.close()


async def test_real_nats_server_with_tls_client_cert_and_nkey(
    ca: tuple[trustme.CA, Path], tmp_path: Path
) -> None:
    """A real ``nats-server`` that asks for TLS in its INFO (the upgrade path), verifies the
    client's certificate and knows the gateway by nkey: the link connects and receives."""
    server_pem, server_key = _server_cert(ca[0], tmp_path)
    cert_file, key_file = _client_cert(ca[0], tmp_path)
    seed = _user_seed()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    config = f"""
host: 127.0.0.1
port: -1
tls {{
  cert_file: "{server_pem}"
  key_file: "{server_key}"
  ca_file: "{ca[1]}"
  verify: true
  timeout: 3
}}
authorization {{
  users: [ {{ nkey: "{public}" }} ]
}}
"""
    async with nats_server(config, tmp_path) as port:
        pbx = _pbx(
            nats_url=f"tls://127.0.0.1:{port}",
            ca_file=ca[1],
            nats_cert_file=cert_file,
            nats_key_file=key_file,
            nats_nkey_seed_file=seed_file,
        )
        session = await open_session(pbx)
        try:
            sender = await connect(pbx)
            try:
                await sender.publish(CTRL_SUBJECT, b"over tls")
                await sender.flush()
            finally:
                await sender.close()
            await wait_for(lambda: not session.queue.empty())
            assert session.queue.get_nowait().data == b"over tls"
        finally:
            await session.close()
        # No client certificate: the server refuses the link (it does not get in unverified).
        bare = pbx.model_copy(update={"nats_cert_file": None, "nats_key_file": None})
        with pytest.raises(Exception):  # noqa: B017 - the TLS alert's type varies by OpenSSL
            await open_session(bare)
