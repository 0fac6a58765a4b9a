"""Small helpers to call the TODO MCP server the ways clients do: agents, mcp's Client, raw HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from agents.mcp import MCPServerStreamableHttp
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from tests.client_tls import shared_tls

MODERN_VERSION = "2026-07-28"
ACCEPT = "application/json, text/event-stream"


def structured(result: CallToolResult) -> dict[str, Any]:
    """The structured content of a successful call."""
    assert not result.is_error, error_text(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


def error_text(result: CallToolResult) -> str:
    """The text of a tool error (every text block, joined)."""
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


async def call(server: MCPServerStreamableHttp, tool: str, **arguments: Any) -> CallToolResult:
    return await server.call_tool(tool, arguments)


@asynccontextmanager
async def mcp_client(
    url: str, *, headers: dict[str, str], mode: str = "auto"
) -> AsyncIterator[Client]:
    """mcp's own high-level client, with exactly the given HTTP headers."""
    async with (
        httpx2.AsyncClient(headers=headers, timeout=10, verify=shared_tls()) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode, cache=None) as client,
    ):
        yield client


def jsonrpc(method: str, params: dict[str, Any] | None = None, *, id: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def modern(
    method: str, params: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 request body and its routing headers, as the SDK's client sends them."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = jsonrpc(method, {**(params or {}), "_meta": meta})
    headers = {"MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": method}
    if params and "name" in params:
        headers["Mcp-Name"] = params["name"]
    return body, headers


async def raw_post(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx2.Response:
    """One POST, redirects not followed, so a 307 would show."""
    async with httpx2.AsyncClient(follow_redirects=False, timeout=10, verify=shared_tls()) as http:
        return await http.post(url, json=body, headers={"Accept": ACCEPT, **(headers or {})})
