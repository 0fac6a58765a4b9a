"""Build the per-request agent."""

from __future__ import annotations

from typing import Any

from agents import Agent, Model
from agents.mcp import MCPServer

from app.agent.instructions import TODO_AGENT_INSTRUCTIONS


def build_agent(*, model: Model, mcp_servers: list[MCPServer]) -> Agent[Any]:
    """A fresh agent for one turn, wired to the caller's own MCP connection."""
    return Agent(
        name="TODO assistant",
        instructions=TODO_AGENT_INSTRUCTIONS,
        model=model,
        mcp_servers=mcp_servers,
    )
