"""The TODO MCP server called directly with a user's own token (issue 9, item 9).

A user can call the tools without the chat: the server must bound how often (a per-user limit),
how much one answer holds (list_tasks pages, 100 by default), how long an idle stream stays open
(GET streams), and its task ids must say nothing about other users (numbered per user).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.shared_secret import SharedSecretVerifier
from app.store.tasks import TaskRepository
from app.tools import McpConnector
from tests.todo_mcp.conftest import MCP_TIMEOUT, new_user, stored_tasks
from tests.todo_mcp.live_server import LiveServer, serve_todo
from tests.todo_mcp.mcp_calls import ACCEPT, call, error_text, structured

CALL_LIMIT = 20
# A long window: a burst of calls never straddles two of them (see `clear_of_window_edge`).
CALL_WINDOW_SECONDS = 3600
IDLE_SECONDS = 1.0


@pytest.fixture(scope="module")
def limited_server(postgres_url: str, verifier: SharedSecretVerifier) -> Iterator[LiveServer]:
    with serve_todo(
        database_url=postgres_url,
        verifier=verifier,
        calls_per_window=CALL_LIMIT,
        call_window_seconds=CALL_WINDOW_SECONDS,
        stream_idle_seconds=IDLE_SECONDS,
    ) as server:
        yield server


@pytest.fixture
async def limited(limited_server: LiveServer) -> AsyncIterator[McpConnector]:
    connector = McpConnector(limited_server.mcp_url, MCP_TIMEOUT)
    yield connector
    await connector.aclose()


def clear_of_window_edge(window: int, margin: float = 30.0) -> None:
    """Wait, if needed, so the next `margin` seconds lie inside one fixed window."""
    left = window - time.time() % window
    if left < margin:
        time.sleep(left + 0.1)


async def test_calls_beyond_the_per_user_limit_are_refused(
    limited: McpConnector, verifier: SharedSecretVerifier, pg_engine: AsyncEngine
) -> None:
    user, other = new_user(), new_user()
    clear_of_window_edge(CALL_WINDOW_SECONDS)
    async with limited.server_for(verifier.mint(user)) as server:
        results = [
            await call(server, "add_task", title=f"task {n}") for n in range(CALL_LIMIT + 10)
        ]
        listed = await call(server, "list_tasks")

    accepted = [result for result in results if not result.is_error]
    refused = [error_text(result) for result in results if result.is_error]
    assert len(accepted) == CALL_LIMIT
    assert len(refused) == 10 and all("Too many task requests" in text for text in refused)
    assert listed.is_error and "Too many task requests" in error_text(listed)
    assert len(await stored_tasks(pg_engine, user)) == CALL_LIMIT
    # Another user's calls are counted apart.
    async with limited.server_for(verifier.mint(other)) as server:
        assert structured(await call(server, "add_task", title="mine"))["title"] == "mine"


async def test_list_tasks_pages_100_at_a_time(
    connector: McpConnector, verifier: SharedSecretVerifier, pg_engine: AsyncEngine
) -> None:
    user = new_user()
    repository = TaskRepository(pg_engine)
    for n in range(250):
        await repository.add(user_id=user, title=f"task {n:03}")

    seen: list[dict[str, Any]] = []
    async with connector.server_for(verifier.mint(user)) as server:
        first = structured(await call(server, "list_tasks"))
        assert (first["count"], first["has_more"]) == (100, True)
        page = first
        while True:
            seen += page["tasks"]
            if not page["has_more"]:
                assert page["next_after"] is None
                break
            assert page["next_after"] == page["tasks"][-1]["id"]
            page = structured(await call(server, "list_tasks", after=page["next_after"]))
        small = structured(await call(server, "list_tasks", limit=7, after=seen[9]["id"]))
        too_many = await call(server, "list_tasks", limit=101)
        none = await call(server, "list_tasks", limit=0)

    assert [task["title"] for task in seen] == [f"task {n:03}" for n in range(250)]
    ids = [task["id"] for task in seen]
    assert ids == sorted(set(ids))  # in order, no task twice
    assert [task["id"] for task in small["tasks"]] == ids[10:17] and small["has_more"]
    assert too_many.is_error and "limit" in error_text(too_many)
    assert none.is_error and "limit" in error_text(none)


async def test_status_filter_pages_too(
    connector: McpConnector, verifier: SharedSecretVerifier, pg_engine: AsyncEngine
) -> None:
    user = new_user()
    repository = TaskRepository(pg_engine)
    added = [await repository.add(user_id=user, title=f"t{n}") for n in range(12)]
    for task in added[::3]:
        await repository.complete(user_id=user, task_id=task.id)
    async with connector.server_for(verifier.mint(user)) as server:
        one = structured(await call(server, "list_tasks", status="open", limit=5))
        two = structured(
            await call(server, "list_tasks", status="open", limit=5, after=one["next_after"])
        )
    open_ids = [task.id for task in added if task not in added[::3]]
    assert [t["id"] for t in one["tasks"] + two["tasks"]] == open_ids[:8]
    assert two["has_more"] is False


async def test_idle_get_stream_is_closed(
    limited_server: LiveServer, verifier: SharedSecretVerifier
) -> None:
    headers = {"Authorization": f"Bearer {verifier.mint(new_user())}", "Accept": ACCEPT}
    timeout = httpx2.Timeout(10.0, read=IDLE_SECONDS + 10)
    started = time.monotonic()
    async with (
        httpx2.AsyncClient(timeout=timeout) as http,
        http.stream("GET", limited_server.mcp_url, headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for _ in response.aiter_bytes():
            pass  # until the server ends the stream
    assert time.monotonic() - started < IDLE_SECONDS + 8
    # The server itself is fine afterwards.
    assert len(limited_server.open_connections()) <= 1


async def test_task_ids_are_numbered_per_user(
    connector: McpConnector, verifier: SharedSecretVerifier
) -> None:
    alice, bob = new_user(), new_user()
    async with (
        connector.server_for(verifier.mint(alice)) as as_alice,
        connector.server_for(verifier.mint(bob)) as as_bob,
    ):
        first = structured(await call(as_alice, "add_task", title="alice 1"))
        bobs = [structured(await call(as_bob, "add_task", title=f"bob {n}")) for n in range(3)]
        second = structured(await call(as_alice, "add_task", title="alice 2"))
        # Deleting does not free a number: an id in old messages never names a newer task.
        await call(as_alice, "delete_task", task_id=second["id"])
        third = structured(await call(as_alice, "add_task", title="alice 3"))
        done = structured(await call(as_bob, "complete_task", task_id=1))
        alices = structured(await call(as_alice, "list_tasks"))

    assert [first["id"], second["id"], third["id"]] == [1, 2, 3]
    assert [task["id"] for task in bobs] == [1, 2, 3]
    assert (done["title"], done["completed"]) == ("bob 0", True)
    assert [(t["id"], t["title"], t["completed"]) for t in alices["tasks"]] == [
        (1, "alice 1", False),
        (3, "alice 3", False),
    ]
