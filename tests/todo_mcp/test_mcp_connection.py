"""McpConnector: one shared pool, a per-request client carrying only its caller's token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from agents.exceptions import UserError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.shared_secret import SharedSecretVerifier
from app.tools import McpConnector
from tests.todo_mcp.conftest import new_user
from tests.todo_mcp.live_server import LiveServer, serve_todo
from tests.todo_mcp.mcp_calls import call, structured

USERS = 20


async def test_concurrent_users_through_one_connector_each_get_their_own_task(
    connector: McpConnector, verifier: SharedSecretVerifier, pg_engine: AsyncEngine
) -> None:
    users = [new_user() for _ in range(USERS)]
    start = asyncio.Event()

    async def add_and_list(user: str) -> tuple[str, list[str]]:
        async with connector.server_for(verifier.mint(user)) as server:
            await start.wait()  # every connection open before anyone writes
            added = structured(await call(server, "add_task", title=f"task of {user}"))
            listed = structured(await call(server, "list_tasks"))
            return added["title"], [task["title"] for task in listed["tasks"]]

    runs = [asyncio.create_task(add_and_list(user)) for user in users]
    await asyncio.sleep(0.2)
    start.set()
    results = await asyncio.gather(*runs)

    for user, (added, listed) in zip(users, results, strict=True):
        assert added == f"task of {user}"
        assert listed == [f"task of {user}"]
    async with pg_engine.connect() as conn:
        rows = (
            await conn.execute(
                text("select user_id, title from todo_tasks where user_id = any(:users)"),
                {"users": users},
            )
        ).all()
    assert sorted((row.user_id, row.title) for row in rows) == sorted(
        (user, f"task of {user}") for user in users
    )


async def test_each_server_carries_exactly_its_callers_token(connector: McpConnector) -> None:
    first, second = connector.server_for("token-one"), connector.server_for("token-two")

    assert first.params.get("headers") == {"Authorization": "Bearer token-one"}
    assert second.params.get("headers") == {"Authorization": "Bearer token-two"}
    assert first.params.get("timeout") == connector.timeout_seconds
    assert first.cache_tools_list is True
    assert first.client_session_timeout_seconds == connector.timeout_seconds
    factory = first.params.get("httpx_client_factory")
    assert factory is not None
    client_one = factory(headers=first.params.get("headers"))
    client_two = factory(headers=second.params.get("headers"))
    try:
        assert client_one.headers["authorization"] == "Bearer token-one"
        assert client_two.headers["authorization"] == "Bearer token-two"
    finally:
        await client_one.aclose()
        await client_two.aclose()
    # Closing per-request clients leaves the shared pool usable.
    assert not connector.closed
    connector.server_for("token-three")


@pytest.mark.parametrize("token", ["", "a\r\nX-Injected: 1", "a\nb"])
def test_malformed_tokens_are_refused(connector: McpConnector, token: str) -> None:
    with pytest.raises(ValueError, match="token"):
        connector.server_for(token)


def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@pytest.fixture
def own_server(postgres_url: str, verifier: SharedSecretVerifier) -> Iterator[LiveServer]:
    """A server of the test's own, so the connections it sees are this test's alone."""
    with serve_todo(database_url=postgres_url, verifier=verifier) as server:
        yield server


async def test_per_request_clients_reuse_one_pooled_connection(
    own_server: LiveServer, verifier: SharedSecretVerifier
) -> None:
    connector = McpConnector(own_server.mcp_url, 10)
    seen: set[int] = set()
    try:
        for _ in range(5):
            async with connector.server_for(verifier.mint(new_user())) as server:
                structured(await call(server, "list_tasks"))
            seen.update(id(conn) for conn in own_server.open_connections())
        assert len(seen) == 1
        assert len(own_server.open_connections()) == 1
    finally:
        await connector.aclose()


async def test_aclose_closes_the_shared_pool(
    own_server: LiveServer, verifier: SharedSecretVerifier
) -> None:
    connector = McpConnector(own_server.mcp_url, 10)
    async with connector.server_for(verifier.mint(new_user())) as server:
        structured(await call(server, "list_tasks"))
    built_before_close = connector.server_for(verifier.mint(new_user()))
    assert len(own_server.open_connections()) == 1

    await connector.aclose()

    assert connector.closed
    assert _wait_until(lambda: not own_server.open_connections())
    with pytest.raises(RuntimeError, match="closed"):
        connector.server_for(verifier.mint(new_user()))
    with pytest.raises(UserError, match="Could not reach the server"):
        await built_before_close.connect()  # type: ignore[no-untyped-call]  # unannotated in agents
    await connector.aclose()  # idempotent
