"""The bearer-token dependency: where the token may come from, and what the route receives."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import pytest
from fastapi import FastAPI, Request, Response

from app.auth.base import Principal
from app.auth.dependency import CurrentCaller
from app.auth.shared_secret import SharedSecretVerifier
from app.errors import ServiceUnavailableError, install_error_handlers

SECRET = "d" * 48


class CountingVerifier:
    """Wraps a verifier and counts calls, to prove some requests never reach it."""

    def __init__(self, inner: SharedSecretVerifier) -> None:
        self.inner = inner
        self.calls = 0

    async def verify(self, token: str) -> Principal:
        self.calls += 1
        return await self.inner.verify(token)

    async def aclose(self) -> None:
        return None


class DownVerifier:
    async def verify(self, token: str) -> Principal:
        raise ServiceUnavailableError("signing keys are unavailable; try again later")

    async def aclose(self) -> None:
        return None


def make_app(verifier: object, *, with_request_id: bool = False) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.state.verifier = verifier

    if with_request_id:

        @app.middleware("http")
        async def request_id(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            request.state.request_id = "req-from-middleware"
            return await call_next(request)

    @app.get("/whoami")
    async def whoami(request: Request, caller: CurrentCaller) -> dict[str, str]:
        return {
            "user_id": caller.user_id,
            "request_id": caller.request_id,
            "state_user_id": request.state.user_id,
            "token_matches": str(caller.token == request.headers["authorization"].split(" ")[1]),
        }

    return app


@pytest.fixture
def verifier() -> CountingVerifier:
    return CountingVerifier(SharedSecretVerifier(SECRET))


@pytest.fixture
async def client(verifier: CountingVerifier) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=make_app(verifier))
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_accepts_the_bearer_scheme_in_any_case(
    scheme: str, client: httpx2.AsyncClient, verifier: CountingVerifier
) -> None:
    token = verifier.inner.mint("alice")
    response = await client.get("/whoami", headers={"Authorization": f"{scheme} {token}"})
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "alice"
    assert body["state_user_id"] == "alice"
    assert body["token_matches"] == "True"
    assert len(body["request_id"]) == 32  # a fresh uuid4 hex


async def test_uses_the_request_id_set_by_middleware(verifier: CountingVerifier) -> None:
    transport = httpx2.ASGITransport(app=make_app(verifier, with_request_id=True))
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
        token = verifier.inner.mint("alice")
        response = await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.json()["request_id"] == "req-from-middleware"


async def test_ignores_tokens_in_the_query_string_and_cookies(
    client: httpx2.AsyncClient, verifier: CountingVerifier
) -> None:
    token = verifier.inner.mint("alice")
    response = await client.get(
        "/whoami",
        params={"access_token": token, "token": token},
        headers={"Cookie": f"access_token={token}; token={token}"},
    )
    assert response.status_code == 401
    assert verifier.calls == 0


async def test_refuses_two_authorization_headers(
    client: httpx2.AsyncClient, verifier: CountingVerifier
) -> None:
    token = verifier.inner.mint("alice")
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    response = await client.get("/whoami", headers=headers)
    assert response.status_code == 401
    assert verifier.calls == 0


async def test_refuses_an_oversized_header_before_verifying(
    client: httpx2.AsyncClient, verifier: CountingVerifier
) -> None:
    response = await client.get("/whoami", headers={"Authorization": "Bearer " + "a" * 8200})
    assert response.status_code == 401
    assert response.json()["message"] == "token too large"
    assert verifier.calls == 0


async def test_rejections_are_logged_without_the_token(
    client: httpx2.AsyncClient, verifier: CountingVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    token = SharedSecretVerifier("x" * 48).mint("mallory")
    with caplog.at_level(logging.INFO, logger="app.auth.dependency"):
        response = await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert [record.getMessage() for record in caplog.records] == ["auth.rejected"]
    for record in caplog.records:
        assert token not in str(record.__dict__)


async def test_unavailable_keys_are_a_503_not_a_401() -> None:
    transport = httpx2.ASGITransport(app=make_app(DownVerifier()))
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/whoami", headers={"Authorization": "Bearer a.b.c"})
    assert response.status_code == 503
    assert response.json() == {
        "type": "service_unavailable",
        "message": "signing keys are unavailable; try again later",
        "status_code": 503,
    }
