"""Build the per-request agent."""

from __future__ import annotations

from typing import Any

from agents import Agent, Model, ModelSettings
from agents.mcp import MCPServer

from app.agent.instructions import TODO_AGENT_INSTRUCTIONS


def build_agent(
    *,
    model: Model,
    mcp_servers: list[MCPServer],
    instructions: str = TODO_AGENT_INSTRUCTIONS,
    tool_choice: str | None = None,
) -> Agent[Any]:
    """A fresh agent for one turn, wired to the caller's own MCP connection.

    `instructions` come from `turn_instructions` (never user text); `tool_choice` names a tool
    the model must call first (the agent lets it choose freely after that call).
    """
    return Agent(
        name="TODO assistant",
        instructions=instructions,
        model=model,
        mcp_servers=mcp_servers,
        model_settings=ModelSettings(tool_choice=tool_choice),
    )
