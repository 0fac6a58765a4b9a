"""The TODO MCP server end to end: real uvicorn, real Postgres, real MCP clients, real tokens."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx2
import jwt
import pytest
from mcp.shared.exceptions import MCPError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.base import Principal
from app.auth.shared_secret import SharedSecretVerifier
from app.errors import ServiceUnavailableError
from app.todo_mcp import build_todo_mcp
from app.tools import McpConnector
from tests.todo_mcp.conftest import SECRET, new_user, stored_tasks
from tests.todo_mcp.live_server import PUBLIC_HOST, LiveServer
from tests.todo_mcp.mcp_calls import (
    ACCEPT,
    call,
    error_text,
    jsonrpc,
    mcp_client,
    modern,
    raw_post,
    structured,
)

TOOLS = {"list_tasks", "add_task", "complete_task", "update_task", "delete_task"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tools_are_the_public_contract(
    connector: McpConnector, verifier: SharedSecretVerifier
) -> None:
    async with connector.server_for(verifier.mint(new_user())) as server:
        tools = {tool.name: tool for tool in await server.list_tools()}

    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and len(tool.description) > 30
        assert tool.output_schema is not None
    assert tools["list_tasks"].input_schema["properties"]["status"]["enum"] == [
        "all",
        "open",
        "completed",
    ]
    assert tools["add_task"].input_schema["required"] == ["title"]
    for name in ("complete_task", "update_task", "delete_task"):
        assert tools[name].input_schema["properties"]["task_id"]["type"] == "integer"
        assert tools[name].input_schema["required"] == ["task_id"]
    assert tools["list_tasks"].annotations is not None
    assert tools["list_tasks"].annotations.read_only_hint is True
    assert tools["delete_task"].annotations is not None
    assert tools["delete_task"].annotations.destructive_hint is True


async def test_task_lifecycle_through_the_agents_client(
    connector: McpConnector, verifier: SharedSecretVerifier, pg_engine: AsyncEngine
) -> None:
    user = new_user()
    async with connector.server_for(verifier.mint(user)) as server:
        milk = structured(await call(server, "add_task", title=" Buy milk ", description="2 l"))
        bread = structured(await call(server, "add_task", title="Buy bread"))
        assert (milk["title"], milk["description"], milk["completed"]) == ("Buy milk", "2 l", False)
        assert bread["description"] == ""

        everything = structured(await call(server, "list_tasks"))
        assert everything["count"] == 2
        assert [t["id"] for t in everything["tasks"]] == [milk["id"], bread["id"]]

        done = structured(await call(server, "complete_task", task_id=milk["id"]))
        assert done["completed"] is True
        open_ = structured(await call(server, "list_tasks", status="open"))
        completed = structured(await call(server, "list_tasks", status="completed"))
        assert [t["id"] for t in open_["tasks"]] == [bread["id"]]
        assert [t["id"] for t in completed["tasks"]] == [milk["id"]]

        updated = structured(
            await call(server, "update_task", task_id=bread["id"], description="wholemeal")
        )
        assert (updated["title"], updated["description"]) == ("Buy bread", "wholemeal")
        renamed = structured(await call(server, "update_task", task_id=bread["id"], title="Rye"))
        assert (renamed["title"], renamed["description"]) == ("Rye", "wholemeal")

        deleted = structured(await call(server, "delete_task", task_id=milk["id"]))
        assert deleted["deleted"] is True
        assert deleted["task"]["id"] == milk["id"]
        remaining = structured(await call(server, "list_tasks"))
        assert [t["id"] for t in remaining["tasks"]] == [bread["id"]]

    rows = await stored_tasks(pg_engine, user)
    assert [(r["id"], r["title"], r["description"], r["completed"]) for r in rows] == [
        (bread["id"], "Rye", "wholemeal", False)
    ]


@pytest.mark.parametrize(("mode", "version"), [("auto", "2026-07-28"), ("legacy", None)])
async def test_mcp_client_in_both_protocol_eras(
    todo_server: LiveServer, verifier: SharedSecretVerifier, mode: str, version: str | None
) -> None:
    user = new_user()
    async with mcp_client(todo_server.mcp_url, headers=bearer(verifier.mint(user)), mode=mode) as c:
        if version is not None:
            assert c.protocol_version == version
        else:
            assert c.protocol_version < "2026"
        added = await c.call_tool("add_task", {"title": f"via {mode}"})
        assert not added.is_error
        assert added.structured_content is not None
        listed = await c.call_tool("list_tasks", {})
        assert listed.structured_content is not None
        assert [t["title"] for t in listed.structured_content["tasks"]] == [f"via {mode}"]


async def test_users_cannot_see_or_change_each_others_tasks(
    connector: McpConnector, verifier: SharedSecretVerifier, pg_engine: AsyncEngine
) -> None:
    alice, bob = new_user(), new_user()
    async with connector.server_for(verifier.mint(alice)) as as_alice:
        task = structured(await call(as_alice, "add_task", title="Alice's", description="private"))
    before = await stored_tasks(pg_engine, alice)

    async with connector.server_for(verifier.mint(bob)) as as_bob:
        assert structured(await call(as_bob, "list_tasks"))["tasks"] == []
        attempts = [
            await call(as_bob, "complete_task", task_id=task["id"]),
            await call(as_bob, "update_task", task_id=task["id"], title="Bob's now"),
            await call(as_bob, "delete_task", task_id=task["id"]),
        ]
        unknown = await call(as_bob, "complete_task", task_id=task["id"] + 10_000_000)
    for result in attempts:
        assert result.is_error
        # Word for word what an unknown id gets: existence is not revealed.
        assert error_text(result).endswith(f"Task {task['id']} not found.")
        assert "private" not in error_text(result)
    assert error_text(unknown).endswith(f"Task {task['id'] + 10_000_000} not found.")

    assert await stored_tasks(pg_engine, alice) == before
    async with connector.server_for(verifier.mint(alice)) as as_alice:
        assert structured(await call(as_alice, "list_tasks"))["tasks"] == [task]


async def test_identity_comes_from_the_token_never_from_headers(
    todo_server: LiveServer, verifier: SharedSecretVerifier, pg_engine: AsyncEngine
) -> None:
    alice, bob = new_user(), new_user()
    spoofed = {
        **bearer(verifier.mint(bob)),
        "X-User-Id": alice,
        "X-Forwarded-User": alice,
        "X-Auth-Request-User": alice,
    }
    async with mcp_client(todo_server.mcp_url, headers=spoofed) as client:
        await client.call_tool("add_task", {"title": "whose?"})
    assert [r["title"] for r in await stored_tasks(pg_engine, bob)] == ["whose?"]
    assert await stored_tasks(pg_engine, alice) == []


async def test_unknown_task_is_a_tool_error_and_the_session_goes_on(
    connector: McpConnector, verifier: SharedSecretVerifier
) -> None:
    async with connector.server_for(verifier.mint(new_user())) as server:
        for tool, extra in (
            ("complete_task", {}),
            ("update_task", {"title": "x"}),
            ("delete_task", {}),
        ):
            result = await call(server, tool, task_id=987_654_321, **extra)
            assert result.is_error
            assert error_text(result).endswith("Task 987654321 not found.")
        huge = await call(server, "delete_task", task_id=2**70)
        assert huge.is_error and "not found" in error_text(huge)
        assert structured(await call(server, "list_tasks"))["count"] == 0


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("add_task", {"title": ""}, "The title must not be empty."),
        ("add_task", {"title": "   "}, "The title must not be empty."),
        ("add_task", {"title": "x" * 501}, "at most 500 characters"),
        ("add_task", {"title": "ok", "description": "d" * 5001}, "at most 5000 characters"),
        ("add_task", {}, "title"),
        ("update_task", {"task_id": 1}, "Give a new title or a new description"),
        ("complete_task", {"task_id": 0}, "task_id"),
        ("complete_task", {"task_id": "seven"}, "task_id"),
        ("list_tasks", {"status": "done"}, "status"),
    ],
)
async def test_invalid_arguments_are_tool_errors(
    connector: McpConnector,
    verifier: SharedSecretVerifier,
    pg_engine: AsyncEngine,
    tool: str,
    arguments: dict[str, Any],
    message: str,
) -> None:
    user = new_user()
    async with connector.server_for(verifier.mint(user)) as server:
        result = await call(server, tool, **arguments)
    assert result.is_error
    assert message in error_text(result)
    assert await stored_tasks(pg_engine, user) == []


def _expired_token(user: str) -> str:
    past = int(time.time()) - 3600
    return jwt.encode({"sub": user, "iat": past - 60, "exp": past}, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Bearer not-a-jwt",
        "Bearer {other_secret}",
        "Bearer {expired}",
        "Bearer {no_sub}",
        "Basic {good}",
        "{good}",
    ],
)
@pytest.mark.parametrize("era", ["modern", "handshake"])
async def test_no_valid_token_is_401_before_any_tool_runs(
    todo_server: LiveServer,
    verifier: SharedSecretVerifier,
    pg_engine: AsyncEngine,
    authorization: str | None,
    era: str,
) -> None:
    user = new_user()
    title = f"must not exist {uuid.uuid4().hex}"
    tokens = {
        "good": verifier.mint(user),
        "other_secret": SharedSecretVerifier("another-secret-" + "z" * 40).mint(user),
        "expired": _expired_token(user),
        "no_sub": jwt.encode({"iat": int(time.time()), "exp": int(time.time()) + 60}, SECRET),
    }
    params = {"name": "add_task", "arguments": {"title": title}}
    if era == "modern":
        body, headers = modern("tools/call", params)
    else:
        body, headers = jsonrpc("tools/call", params), {}
    if authorization is not None:
        headers["Authorization"] = authorization.format(**tokens)

    response = await raw_post(todo_server.mcp_url, body, headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert response.json()["error"] == "invalid_token"
    assert await stored_tasks(pg_engine, user) == []


async def test_a_good_token_gets_200_on_the_same_raw_requests(
    todo_server: LiveServer, verifier: SharedSecretVerifier, pg_engine: AsyncEngine
) -> None:
    user = new_user()
    body, headers = modern("tools/call", {"name": "add_task", "arguments": {"title": "raw"}})
    response = await raw_post(todo_server.mcp_url, body, {**headers, **bearer(verifier.mint(user))})
    assert response.status_code == 200, response.text
    assert response.json()["result"]["structuredContent"]["title"] == "raw"
    assert [r["title"] for r in await stored_tasks(pg_engine, user)] == ["raw"]


async def test_bad_token_fails_the_mcp_connection(todo_server: LiveServer) -> None:
    connector = McpConnector(todo_server.mcp_url, 5)
    try:
        server = connector.server_for(SharedSecretVerifier("w" * 40).mint(new_user()))
        with pytest.raises(BaseException) as caught:
            await server.connect()  # type: ignore[no-untyped-call]  # agents leaves it unannotated
        leaves = _leaves(caught.value)
        assert any(isinstance(leaf, MCPError) for leaf in leaves), leaves
        await server.cleanup()  # type: ignore[no-untyped-call]
    finally:
        await connector.aclose()


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


@pytest.mark.parametrize("era", ["modern", "handshake"])
async def test_host_header_is_checked(
    todo_server: LiveServer, verifier: SharedSecretVerifier, era: str
) -> None:
    token = bearer(verifier.mint(new_user()))
    if era == "modern":
        body, routing = modern("tools/list")
    else:
        body, routing = jsonrpc("tools/list"), {}

    async def status_with_host(host: str) -> int:
        response = await raw_post(todo_server.mcp_url, body, {**routing, **token, "Host": host})
        return response.status_code

    port = todo_server.port
    assert await status_with_host("evil.example") == 421
    assert await status_with_host(f"evil.example:{port}") == 421
    assert await status_with_host(f"127.0.0.1:{port + 1}") == 421
    assert await status_with_host(f"127.0.0.1:{port}") == 200
    assert await status_with_host(f"localhost:{port}") == 200
    assert await status_with_host(PUBLIC_HOST) == 200


async def test_endpoint_is_exactly_slash_mcp_next_to_other_routes(
    todo_server: LiveServer, verifier: SharedSecretVerifier
) -> None:
    token = bearer(verifier.mint(new_user()))
    body, routing = modern("tools/list")
    response = await raw_post(todo_server.mcp_url, body, {**routing, **token})
    assert response.status_code == 200, response.text
    assert {t["name"] for t in response.json()["result"]["tools"]} == TOOLS

    async with httpx2.AsyncClient(base_url=todo_server.base_url) as http:
        assert (await http.get("/health")).json() == {"status": "ok"}
        assert (await http.post("/mcp/x", json={}, headers=token)).status_code == 404


class _KeysUnavailable:
    """A verifier whose key source is down (what a JWKS outage looks like)."""

    async def verify(self, token: str) -> Principal:
        raise ServiceUnavailableError("signing keys are unavailable")

    async def aclose(self) -> None:
        return None


async def test_key_outage_is_503_not_401(pg_engine: AsyncEngine) -> None:
    todo = build_todo_mcp(
        verifier=_KeysUnavailable(),
        engine=pg_engine,
        public_url_hosts=[],
        port=80,
    )
    body, routing = modern("tools/list")
    async with (
        todo.running(),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=todo.asgi_app), base_url="http://localhost"
        ) as http,
    ):
        response = await http.post(
            "/mcp", json=body, headers={**routing, "Accept": ACCEPT, **bearer("anything")}
        )
    assert response.status_code == 503
    assert response.json()["type"] == "service_unavailable"


@pytest.mark.parametrize("path", ["", "/", "mcp", "/mcp/"])
def test_path_must_be_one_exact_segment_path(pg_engine: AsyncEngine, path: str) -> None:
    with pytest.raises(ValueError, match="path"):
        build_todo_mcp(
            verifier=SharedSecretVerifier(SECRET),
            engine=pg_engine,
            public_url_hosts=[],
            port=3000,
            path=path,
        )


async def test_token_within_the_verifiers_leeway_is_accepted_like_the_api_does(
    todo_server: LiveServer, verifier: SharedSecretVerifier, pg_engine: AsyncEngine
) -> None:
    user = new_user()
    now = int(time.time())
    # Expired 5 s ago: inside the verifier's 30 s leeway, so the chat API would accept it.
    token = jwt.encode({"sub": user, "iat": now - 120, "exp": now - 5}, SECRET, algorithm="HS256")
    async with mcp_client(todo_server.mcp_url, headers=bearer(token)) as client:
        result = await client.call_tool("add_task", {"title": "just in time"})
    assert not result.is_error
    assert [r["title"] for r in await stored_tasks(pg_engine, user)] == ["just in time"]
