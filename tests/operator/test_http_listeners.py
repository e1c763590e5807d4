"""The admin listener (status page, /status.json, /metrics, probes; loopback by default,
optionally behind credentials) and the public one (webhooks only), on real loopback sockets."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml  # type: ignore[import-untyped]
from aiohttp import web

from gateway.settings import HttpSettings, SettingsError, load_settings
from gateway.web.server import AdminAuth, WebServer

TOKEN = "admin-token-0123456789"
ADMIN_PATHS = ["/", "/status", "/status.json", "/metrics", "/readyz", "/healthz"]


def status() -> dict[str, Any]:
    return {"ready": True, "reasons": [], "pbxs": [{"tenant": "acme", "vendor": "meiqia"}]}


async def hook(request: web.Request) -> web.Response:
    return web.json_response({"tenant": request.match_info["tenant"]})


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[WebServer]:
    auth = getattr(request, "param", None)
    web_server = WebServer(
        status,
        "127.0.0.1",
        0,
        {"meiqia": [web.post("/{tenant}", hook)]},
        public=("127.0.0.1", 0),
        auth=auth,
    )
    await web_server.start()
    try:
        yield web_server
    finally:
        await web_server.stop()


async def fetch(port: int | None, path: str, method: str = "GET", **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"http://127.0.0.1:{port}{path}", **kw) as resp:
            body = await resp.read()
            return resp.status, body


async def test_the_public_listener_serves_the_webhooks_only(server: WebServer) -> None:
    assert server.public_port and server.public_port != server.port
    answers = {path: await fetch(server.public_port, path) for path in [*ADMIN_PATHS, "/x"]}
    assert answers == {path: (404, b'{"error": "not found"}') for path in answers}
    assert await fetch(server.public_port, "/webhooks/meiqia/acme", "POST") == (
        200,
        b'{"tenant": "acme"}',
    )


async def test_the_admin_listener_serves_no_webhooks(server: WebServer) -> None:
    for path in ADMIN_PATHS:
        assert (await fetch(server.port, path))[0] == 200, path
    assert (await fetch(server.port, "/webhooks/meiqia/acme", "POST"))[0] == 404


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    "server", [AdminAuth(bearer=TOKEN, basic=("ops", "ops-password-0123"))], indirect=True
)
async def test_admin_credentials(server: WebServer) -> None:
    for path in ["/", "/status.json", "/metrics"]:
        assert (await fetch(server.port, path))[0] == 401, path
        bad = {"Authorization": f"Bearer {TOKEN}x"}
        assert (await fetch(server.port, path, headers=bad))[0] == 401, path
        assert (await fetch(server.port, path, headers=basic("ops", "wrong")))[0] == 401, path
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert (await fetch(server.port, path, headers=good))[0] == 200, path
        assert (await fetch(server.port, path, headers=basic("ops", "ops-password-0123")))[0] == 200
    # the probes: liveness open; readiness open but its status code and nothing more
    assert (await fetch(server.port, "/healthz"))[0] == 200
    assert await fetch(server.port, "/readyz") == (200, b'{"ready": true}')
    full = await fetch(server.port, "/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert b"acme" in full[1]


async def test_a_challenge_names_the_scheme() -> None:
    assert AdminAuth(bearer=TOKEN).challenge().startswith("Bearer")
    assert AdminAuth(basic=("a", "b")).challenge().startswith("Basic")
    assert not AdminAuth()


def test_the_defaults_split_admin_and_public_on_loopback() -> None:
    http = HttpSettings()
    assert not http.single
    assert (http.admin.host, http.admin.port) == ("127.0.0.1", 8080)
    assert (http.public.enabled, http.public.host, http.public.port) == (True, "127.0.0.1", 8081)


def write(tmp_path: Path, http: dict[str, Any]) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"http": http}))
    return path


def test_an_earlier_single_listener_config_still_reads(tmp_path: Path) -> None:
    http = load_settings(write(tmp_path, {"host": "0.0.0.0", "port": 9000})).http
    assert http.single and (http.admin.host, http.admin.port) == ("0.0.0.0", 9000)
    again = load_settings(write(tmp_path, http.model_dump(mode="json"))).http
    assert again == http


def test_both_layouts_at_once_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not both"):
        load_settings(write(tmp_path, {"port": 9000, "public": {"port": 9001}}))


@pytest.mark.parametrize(
    ("admin", "error"),
    [
        ({"token": "short"}, "at least 16"),
        ({"basic_user": "ops"}, "go together"),
        ({"basic_password": "p" * 20}, "go together"),
        ({"token": TOKEN, "token_env": "X"}, "at most one"),
    ],
)
def test_admin_credentials_are_checked(tmp_path: Path, admin: dict[str, Any], error: str) -> None:
    with pytest.raises(SettingsError, match=error):
        load_settings(write(tmp_path, {"admin": admin}))


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_kubernetes_manifest_exposes_the_public_port_only() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    config = yaml.safe_load(kinds["ConfigMap"]["data"]["gateway.yaml"])
    http = HttpSettings.model_validate(config["http"])
    assert not http.single and http.public.enabled
    container = kinds["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"admin": http.admin.port, "public": http.public.port}
    assert container["livenessProbe"]["httpGet"]["port"] == "admin"
    assert container["readinessProbe"]["httpGet"]["port"] == "admin"
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    (rule,) = kinds["Ingress"]["spec"]["rules"]
    for path in rule["http"]["paths"]:
        backend = path["backend"]["service"]
        assert path["path"].startswith("/webhooks/")
        target = services[backend["name"]]["spec"]["ports"]
        assert [p["targetPort"] for p in target] == ["public"]


def test_the_compose_files_keep_the_admin_port_on_loopback() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    published = compose["services"]["gateway"]["ports"]
    assert "127.0.0.1:8080:8080" in published and "8081:8081" in published
    assert not [p for p in published if p.endswith(":8080") and not p.startswith("127.0.0.1:")]
    http = HttpSettings.model_validate(
        yaml.safe_load((DEPLOY / "gateway.compose.yaml").read_text())["http"]
    )
    assert not http.single and (http.admin.port, http.public.port) == (8080, 8081)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "EXPOSE 8080 8081" in dockerfile and "GATEWAY__HTTP__HOST" not in dockerfile
