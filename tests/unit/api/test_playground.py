"""The playground's routes without a browser: PLAYGROUND per auth mode, and /api/dev/token."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from app.auth.local_secret import ensure_local_secret
from app.auth.shared_secret import SharedSecretVerifier
from app.main import create_app
from app.settings import Settings, SettingsError, load_settings

SECRET = secrets.token_urlsafe(48)
LOOPBACK = ("127.0.0.1", 50000)
SettingsFor = Callable[..., Settings]


@pytest.fixture
def settings_for(tmp_path: Path, sqlite_url: str) -> SettingsFor:
    """Settings in the local-secret mode over a migrated SQLite file, with overrides."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": sqlite_url,
            "data_dir": tmp_path / "data",
            "auth_jwt_secret": None,
            "auth_jwks_url": None,
            "openai_api_key": None,
            "openai_base_url": None,
            "mcp_server_url": None,
            "cors_origins": [],
            "playground": "auto",
            "auto_migrate": False,  # sqlite_url is migrated already
            "log_level": "WARNING",
            **overrides,
        }
        return Settings(**values)

    return build


def _client(app: Any, client: tuple[str, int] = LOOPBACK) -> httpx2.AsyncClient:
    transport = httpx2.ASGITransport(app=app, client=client)
    return httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8001")


@asynccontextmanager
async def running(
    settings: Settings, client: tuple[str, int] = LOOPBACK
) -> AsyncIterator[httpx2.AsyncClient]:
    """The app with its lifespan (verifier, database) and an HTTP client from `client`."""
    app = create_app(settings)
    async with app.router.lifespan_context(app), _client(app, client) as http:
        yield http


def _assert_json_error(response: httpx2.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "message", "status_code"}
    assert body["status_code"] == status


# ------------------------------------------------------------------ PLAYGROUND


@pytest.mark.parametrize(
    ("playground", "auth", "served", "sign_in"),
    [
        ("auto", {}, True, "name"),
        ("auto", {"auth_jwt_secret": SECRET}, False, None),
        ("auto", {"auth_jwks_url": "http://127.0.0.1:9/jwks"}, False, None),
        ("true", {}, True, "name"),
        ("true", {"auth_jwt_secret": SECRET}, True, "token"),
        ("true", {"auth_jwks_url": "http://127.0.0.1:9/jwks"}, True, "token"),
        ("false", {}, False, None),
        ("false", {"auth_jwt_secret": SECRET}, False, None),
    ],
)
async def test_page_and_config_follow_the_setting(
    settings_for: SettingsFor,
    playground: str,
    auth: dict[str, Any],
    served: bool,
    sign_in: str | None,
) -> None:
    app = create_app(settings_for(playground=playground, **auth))
    async with _client(app) as http:
        page = await http.get("/")
        asset = await http.get("/playground/app.js")
        config = await http.get("/api/playground/config")
    if not served:
        for response in (page, asset, config):
            _assert_json_error(response, 404)
        return
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="playground/app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert asset.status_code == 200
    assert asset.headers["content-type"].startswith("text/javascript")
    assert config.status_code == 200
    assert config.json() == {"sign_in": sign_in}


async def test_assets_are_only_the_shipped_files(settings_for: SettingsFor) -> None:
    app = create_app(settings_for())
    async with _client(app) as http:
        for name in ("app.js", "api.js", "markdown.js", "transcript.js"):
            response = await http.get(f"/playground/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"].startswith("text/javascript")
        css = await http.get("/playground/playground.css")
        assert css.headers["content-type"].startswith("text/css")
        for path in (
            "/playground/missing.js",
            "/playground/index.html",
            "/playground/..%2Fapi%2Fplayground.py",
            "/playground/%2E%2E%2Fsettings.py",
            "/playground/App.js",
        ):
            _assert_json_error(await http.get(path), 404)


def test_playground_setting_values() -> None:
    assert load_settings(playground=" TRUE ").playground == "true"
    assert load_settings(playground="False").playground_enabled is False
    with pytest.raises(SettingsError, match="PLAYGROUND"):
        load_settings(playground="maybe")


# ------------------------------------------------------------------ /api/dev/token


async def test_dev_token_mints_a_token_that_works_on_the_chatkit_endpoint(
    settings_for: SettingsFor,
) -> None:
    settings = settings_for()
    async with running(settings) as http:
        response = await http.post("/api/dev/token", json={"user": "  alice  "})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"token", "expires_in"}
        assert body["expires_in"] == 3600
        token = body["token"]
        listed = await http.post(
            "/api/chatkit",
            headers={"Authorization": f"Bearer {token}"},
            json={"type": "threads.list", "params": {"limit": 5}},
        )
        assert listed.status_code == 200, listed.text
        assert listed.json()["data"] == []
    # Signed with the generated local secret, for the trimmed name, valid for an hour.
    verifier = SharedSecretVerifier(ensure_local_secret(settings.data_dir))
    principal = await verifier.verify(token)
    assert principal.user_id == "alice"
    assert principal.claims["exp"] - principal.claims["iat"] == 3600


async def test_dev_token_lifetime_stays_under_the_accepted_maximum(
    settings_for: SettingsFor,
) -> None:
    async with running(settings_for(auth_max_token_lifetime_seconds=600)) as http:
        response = await http.post("/api/dev/token", json={"user": "bob"})
    assert response.json()["expires_in"] == 600


@pytest.mark.parametrize("client_host", ["::1", "::ffff:127.0.0.1", "127.3.4.5"])
async def test_dev_token_answers_every_loopback_address(
    settings_for: SettingsFor, client_host: str
) -> None:
    async with running(settings_for(), client=(client_host, 40000)) as http:
        response = await http.post("/api/dev/token", json={"user": "carol"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "client_host", ["203.0.113.7", "10.0.0.2", "192.168.1.20", "2001:db8::1", "testclient"]
)
async def test_dev_token_is_404_for_other_addresses(
    settings_for: SettingsFor, client_host: str
) -> None:
    async with running(settings_for(), client=(client_host, 40000)) as http:
        # Even a body that would be a 400 from a local caller: nothing says the route exists.
        for body in ({"user": "mallory"}, {"user": ""}):
            _assert_json_error(await http.post("/api/dev/token", json=body), 404)
        _assert_json_error(await http.post("/api/dev/token", content=b"{not json"), 404)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "127.0.0.1"},
        {"X-Forwarded-For": "203.0.113.7"},
        {"Forwarded": "for=203.0.113.7"},
        {"X-Real-IP": "203.0.113.7"},
        {"Host": "evil.example"},
        {"Host": "127.0.0.1.nip.example:8001"},
    ],
)
async def test_dev_token_refuses_proxied_or_rebound_requests(
    settings_for: SettingsFor, headers: dict[str, str]
) -> None:
    async with running(settings_for()) as http:
        response = await http.post("/api/dev/token", json={"user": "dave"}, headers=headers)
    _assert_json_error(response, 404)


@pytest.mark.parametrize("host", ["localhost:8001", "LOCALHOST", "[::1]:8001", "127.0.0.1"])
async def test_dev_token_accepts_loopback_host_names(settings_for: SettingsFor, host: str) -> None:
    async with running(settings_for()) as http:
        response = await http.post("/api/dev/token", json={"user": "erin"}, headers={"Host": host})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "auth",
    [
        {"auth_jwt_secret": SECRET, "playground": "true"},
        {"auth_jwt_secret": SECRET},
        {"auth_jwks_url": "http://127.0.0.1:9/jwks", "playground": "true"},
        {"playground": "false"},
    ],
)
async def test_dev_token_is_404_outside_the_local_secret_playground(
    settings_for: SettingsFor, auth: dict[str, Any]
) -> None:
    app = create_app(settings_for(**auth))
    async with _client(app) as http:
        _assert_json_error(await http.post("/api/dev/token", json={"user": "alice"}), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"user": ""},
        {"user": "   "},
        {"user": "x" * 65},
        {"user": "line\nbreak"},
        {"user": "nul\u0000"},
        {"user": "bidi\u202eoverride"},
        {"user": 42},
        {"name": "alice"},
        [],
        "alice",
    ],
)
async def test_dev_token_rejects_bad_names_with_400(settings_for: SettingsFor, body: Any) -> None:
    async with running(settings_for()) as http:
        response = await http.post("/api/dev/token", content=json.dumps(body).encode())
    _assert_json_error(response, 400)
    assert response.json()["type"] == "bad_request"


async def test_dev_token_rejects_malformed_and_oversized_bodies(settings_for: SettingsFor) -> None:
    async with running(settings_for()) as http:
        _assert_json_error(await http.post("/api/dev/token", content=b"{not json"), 400)
        big = json.dumps({"user": "a", "pad": "x" * 10_000}).encode()
        _assert_json_error(await http.post("/api/dev/token", content=big), 413)
        accepted = await http.post("/api/dev/token", json={"user": "x" * 64})
    assert accepted.status_code == 200
