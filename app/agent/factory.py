"""Build the per-request agent."""

from __future__ import annotations

from typing import Any

from agents import Agent, Model, ModelSettings, Tool
from agents.mcp import MCPServer

from app.agent.instructions import TODO_AGENT_INSTRUCTIONS


def build_agent(
    *,
    model: Model,
    mcp_servers: list[MCPServer] | None = None,
    tools: list[Tool] | None = None,
    instructions: str = TODO_AGENT_INSTRUCTIONS,
    tool_choice: str | None = None,
) -> Agent[Any]:
    """A fresh agent for one turn, wired to the caller's own MCP connection.

    The MCP tools come either as `mcp_servers` (listed and converted on every model call) or
    already converted as `tools`. `instructions` come from `turn_instructions` (never user
    text); `tool_choice` names a tool the model must call first (free after that call).
    """
    return Agent(
        name="TODO assistant",
        instructions=instructions,
        model=model,
        tools=list(tools or []),
        mcp_servers=list(mcp_servers or []),
        model_settings=ModelSettings(tool_choice=tool_choice),
    )
