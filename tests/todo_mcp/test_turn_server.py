"""McpConnector.turn_server: no MCP request for a turn without a tool call, one per tool call.

The tool list is fetched once per process and shared by every user's turns; it is fetched
again when it expires or the server says it changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx2
import mcp_types
import pytest
from agents import FunctionTool
from agents.tool_context import ToolContext

from app.auth.shared_secret import SharedSecretVerifier
from app.net import outbound_transport
from app.tools import McpConnector
from app.tools.mcp_connection import McpSessionExpired, TurnMcpServer, mcp_tool_failure
from tests.todo_mcp.conftest import MCP_TIMEOUT, new_user
from tests.todo_mcp.live_server import LiveServer
from tests.todo_mcp.mcp_calls import structured


class CountingTransport(httpx2.AsyncBaseTransport):
    """The real outbound transport, counting MCP requests by JSON-RPC method."""

    def __init__(self) -> None:
        self._inner = outbound_transport(limits=httpx2.Limits())
        self.methods: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            method = json.loads(request.content).get("method") or "response"
        except ValueError:
            method = request.method
        self.methods[method] += 1
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def take(self) -> Counter[str]:
        taken, self.methods = self.methods, Counter()
        return taken


@pytest.fixture
async def counted(todo_server: LiveServer) -> AsyncIterator[tuple[McpConnector, CountingTransport]]:
    transport = CountingTransport()
    connector = McpConnector(todo_server.mcp_url, MCP_TIMEOUT, transport=transport)
    yield connector, transport
    await connector.aclose()


async def test_the_tool_list_is_fetched_once_for_every_turn_and_user(
    counted: tuple[McpConnector, CountingTransport], verifier: SharedSecretVerifier
) -> None:
    connector, requests = counted
    first = connector.turn_server(verifier.mint(new_user()))
    await first.connect()
    names = {tool.name for tool in await first.list_tools()}
    assert {"add_task", "list_tasks"} <= names
    await first.cleanup()
    assert requests.take() == {"server/discover": 1, "tools/list": 1}
    # Later turns, of any user, with or without listing: no request at all.
    for _ in range(3):
        turn = connector.turn_server(verifier.mint(new_user()))
        await turn.connect()
        assert {tool.name for tool in await turn.list_tools()} == names
        await turn.cleanup()
    assert requests.take() == {}


async def test_a_tool_call_is_one_request_and_acts_as_its_caller(
    counted: tuple[McpConnector, CountingTransport], verifier: SharedSecretVerifier
) -> None:
    connector, requests = counted
    alice, bob = new_user(), new_user()
    warm = connector.turn_server(verifier.mint(alice))
    await warm.connect()
    await warm.cleanup()
    requests.take()
    turn = connector.turn_server(verifier.mint(alice))
    await turn.connect()
    added = structured(await turn.call_tool("add_task", {"title": "alice's task"}))
    assert added["title"] == "alice's task"
    assert requests.take() == {"tools/call": 1}
    # A second call in the same turn reuses the session.
    listed = structured(await turn.call_tool("list_tasks", {}))
    assert [task["title"] for task in listed["tasks"]] == ["alice's task"]
    assert requests.take() == {"tools/call": 1}
    await turn.cleanup()
    other = connector.turn_server(verifier.mint(bob))
    await other.connect()
    assert structured(await other.call_tool("list_tasks", {}))["tasks"] == []
    await other.cleanup()


async def test_the_list_is_fetched_again_when_the_server_says_it_changed(
    counted: tuple[McpConnector, CountingTransport], verifier: SharedSecretVerifier
) -> None:
    connector, requests = counted
    turn = connector.turn_server(verifier.mint(new_user()))
    await turn.connect()
    await turn.cleanup()
    requests.take()
    await connector._on_message(mcp_types.ToolListChangedNotification())
    again = connector.turn_server(verifier.mint(new_user()))
    await again.connect()
    await again.cleanup()
    assert requests.take()["tools/list"] == 1


async def test_the_list_is_fetched_again_when_it_expires(
    counted: tuple[McpConnector, CountingTransport],
    verifier: SharedSecretVerifier,
) -> None:
    connector, requests = counted
    first = connector.turn_server(verifier.mint(new_user()))
    await first.connect()
    await first.cleanup()
    listing = await connector.listing("unused: the list is cached")
    assert 290 < listing.expires_at - time.monotonic() <= 300  # the server's ttlMs
    connector._listing = dataclasses.replace(listing, expires_at=time.monotonic() - 1)
    second = connector.turn_server(verifier.mint(new_user()))
    await second.connect()
    await second.cleanup()
    assert requests.take()["tools/list"] == 2


async def test_a_refused_token_is_a_session_that_expired(
    counted: tuple[McpConnector, CountingTransport], verifier: SharedSecretVerifier
) -> None:
    connector, _ = counted
    warm = connector.turn_server(verifier.mint(new_user()))
    await warm.connect()
    await warm.cleanup()
    turn = connector.turn_server(SharedSecretVerifier("x" * 48).mint(new_user()))
    await turn.connect()  # the shared list needs no request
    with pytest.raises(McpSessionExpired) as refused:
        await turn.call_tool("list_tasks", {})
    with pytest.raises(McpSessionExpired):
        mcp_tool_failure(None, refused.value)  # type: ignore[arg-type]
    await turn.cleanup()


async def test_a_session_opened_by_a_tool_task_is_closed_by_the_turn(
    counted: tuple[McpConnector, CountingTransport], verifier: SharedSecretVerifier
) -> None:
    """The agents SDK runs each tool call in a task of its own; the turn cleans up in another."""
    connector, _ = counted
    turn = connector.turn_server(verifier.mint(new_user()))
    await turn.connect()
    first = asyncio.create_task(turn.call_tool("add_task", {"title": "from a task"}))
    assert structured(await first)["title"] == "from a task"
    second = asyncio.create_task(turn.call_tool("list_tasks", {}))
    assert [task["title"] for task in structured(await second)["tasks"]] == ["from a task"]
    await turn.cleanup()  # the session's task group is left in the task that entered it
    await turn.cleanup()  # and twice is harmless


async def test_function_tools_are_built_once_and_call_the_running_turn(
    counted: tuple[McpConnector, CountingTransport], verifier: SharedSecretVerifier
) -> None:
    connector, _ = counted
    alice, bob = new_user(), new_user()
    turns = [connector.turn_server(verifier.mint(user)) for user in (alice, bob)]
    for turn in turns:
        await turn.connect()
    tools = turns[0].function_tools()
    assert tools is turns[1].function_tools()  # the same objects for every turn
    add = next(tool for tool in tools if tool.name == "add_task")

    async def add_as(turn: TurnMcpServer, title: str) -> None:
        with turn.running():
            await asyncio.create_task(turn_call(add, title))

    await add_as(turns[0], "alice's")
    await add_as(turns[1], "bob's")
    for turn, expected in zip(turns, ["alice's", "bob's"], strict=True):
        listed = structured(await turn.call_tool("list_tasks", {}))
        assert [task["title"] for task in listed["tasks"]] == [expected]
        await turn.cleanup()


async def turn_call(tool: FunctionTool, title: str) -> object:
    """Invoke a function tool the way the agents SDK does (a tool context, JSON arguments)."""
    context = ToolContext(
        context=None, tool_name=tool.name, tool_call_id="call_1", tool_arguments="{}"
    )
    return await tool.on_invoke_tool(context, json.dumps({"title": title}))
