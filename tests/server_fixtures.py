"""Fixtures for tests that drive real servers (registered by tests/conftest.py)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from app.auth.shared_secret import SharedSecretVerifier
from tests.e2e.harness import ChatKitClient, InProcessServer
from tests.fake_llm import FakeLLM

SECRET = secrets.token_urlsafe(48)


@pytest.fixture(scope="session")
def minter() -> SharedSecretVerifier:
    return SharedSecretVerifier(SECRET)


@pytest.fixture(scope="session")
def server_env(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        "DATABASE_URL": postgres_url,
        "AUTH_JWT_SECRET": SECRET,
        "DATA_DIR": str(tmp_path_factory.mktemp("data")),
    }


@pytest.fixture(scope="session")
def offline_server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessServer]:
    """One server on the embedded defaults (offline model, embedded MCP) over Postgres."""
    server = InProcessServer(
        env=server_env, log_path=tmp_path_factory.mktemp("logs") / "offline.log"
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeLLM]:
    """The session's one fake model server; tests script it through a channel of their own."""
    with FakeLLM() as server:
        yield server


@pytest.fixture(scope="module")
def fake(fake_llm_server: FakeLLM, request: pytest.FixtureRequest) -> Iterator[FakeLLM]:
    """This module's own fake model: a channel of the session's server, named after the module."""
    channel = fake_llm_server.channel(request.module.__name__)
    channel.reset()
    yield channel
    channel.reset()


ClientFactory = Callable[..., ChatKitClient]


@pytest.fixture
async def make_client(minter: SharedSecretVerifier) -> AsyncIterator[ClientFactory]:
    """Clients for fresh users (or a named one), closed after the test."""
    clients: list[ChatKitClient] = []

    def factory(base_url: str, user_id: str | None = None) -> ChatKitClient:
        client = ChatKitClient(base_url, minter.mint(user_id or f"user-{uuid.uuid4().hex}"))
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()
