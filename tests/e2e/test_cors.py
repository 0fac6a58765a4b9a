"""CORS as the ChatKit web component meets it: its own headers, listed origins only."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest

from app.main import create_app
from app.settings import Settings

PAGE = "http://localhost:3000"
# What the component's preflight asks for; the set changes over time, so none is special.
COMPONENT_HEADERS = (
    "authorization,content-type,chatkit-frame-instance-id,x-page-context,"
    "chatkit-session-id,chatkit-device-id,accept-language,x-some-future-header"
)
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": COMPONENT_HEADERS,
}


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[[list[str]], Settings]:
    def build(origins: list[str]) -> Settings:
        return Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}",
            data_dir=tmp_path,
            cors_origins=origins,
        )

    return build


async def _http(settings: Settings) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_app(settings)), base_url="http://test"
    )


async def test_preflight_from_listed_origin_grants_any_requested_header(
    settings_for: Callable[[list[str]], Settings],
) -> None:
    async with await _http(settings_for([PAGE, "https://app.example"])) as http:
        response = await http.options("/api/chatkit", headers={"Origin": PAGE, **PREFLIGHT})
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == PAGE
    granted = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert granted == set(COMPONENT_HEADERS.split(","))
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "Origin" in response.headers["vary"]
    assert "access-control-allow-credentials" not in response.headers


async def test_simple_response_to_listed_origin_exposes_request_id_and_retry_after(
    settings_for: Callable[[list[str]], Settings],
) -> None:
    async with await _http(settings_for([PAGE])) as http:
        response = await http.get("/health", headers={"Origin": PAGE})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == PAGE
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "retry-after" in exposed
    assert "Origin" in response.headers["vary"]


async def test_unlisted_origin_gets_no_cors_headers_at_all(
    settings_for: Callable[[list[str]], Settings],
) -> None:
    async with await _http(settings_for([PAGE])) as http:
        for origin in ("http://evil.example", "http://localhost:3001", PAGE + ".evil.example"):
            preflight = await http.options("/api/chatkit", headers={"Origin": origin, **PREFLIGHT})
            simple = await http.get("/health", headers={"Origin": origin})
            for response in (preflight, simple):
                cors = [h for h in response.headers if h.lower().startswith("access-control-")]
                assert cors == [], (origin, response.status_code, cors)
            assert preflight.status_code >= 400


async def test_no_origins_configured_means_no_cors(
    settings_for: Callable[[list[str]], Settings],
) -> None:
    async with await _http(settings_for([])) as http:
        response = await http.options("/api/chatkit", headers={"Origin": PAGE, **PREFLIGHT})
    assert "access-control-allow-origin" not in response.headers


async def test_any_origin_is_accepted_with_a_startup_warning(
    settings_for: Callable[[list[str]], Settings], caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings_for(["*"]))
    with caplog.at_level(logging.WARNING):
        async with (
            app.router.lifespan_context(app),
            httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=app), base_url="http://test"
            ) as http,
        ):
            response = await http.options(
                "/api/chatkit", headers={"Origin": "http://anywhere.example", **PREFLIGHT}
            )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert any("cors.any_origin" in record.getMessage() for record in caplog.records)


def test_cors_origins_setting_reads_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", f"{PAGE}, https://app.example")
    assert Settings().cors_origins == [PAGE, "https://app.example"]
