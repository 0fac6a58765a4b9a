"""A real TODO MCP server over the session's Postgres, tokens minted with a shared secret."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.shared_secret import SharedSecretVerifier
from app.tools import McpConnector
from tests.todo_mcp.live_server import LiveServer, serve_todo

SECRET = secrets.token_urlsafe(48)
MCP_TIMEOUT = 10.0


@pytest.fixture(scope="session")
def verifier() -> SharedSecretVerifier:
    """Verifies (and mints) the tokens the test server accepts."""
    return SharedSecretVerifier(SECRET)


@pytest.fixture(scope="session")
def todo_server(postgres_url: str, verifier: SharedSecretVerifier) -> Iterator[LiveServer]:
    """One TODO MCP server for the session, over the migrated Postgres."""
    with serve_todo(database_url=postgres_url, verifier=verifier) as server:
        yield server


@pytest.fixture
async def connector(todo_server: LiveServer) -> AsyncIterator[McpConnector]:
    connector = McpConnector(todo_server.mcp_url, MCP_TIMEOUT)
    yield connector
    await connector.aclose()


def new_user() -> str:
    return f"user-{uuid.uuid4().hex}"


async def stored_tasks(engine: AsyncEngine, user_id: str) -> list[dict[str, object]]:
    """The user's rows straight from the table, to check what the tools really wrote."""
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                # `number` is the id the user sees (numbered per user).
                "select number as id, user_id, title, description, completed from todo_tasks "
                "where user_id = :user_id order by number"
            ),
            {"user_id": user_id},
        )
        return [dict(row._mapping) for row in result]
