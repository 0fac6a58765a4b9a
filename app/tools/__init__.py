"""Tools the agent reaches over the network: MCP, per request, on the caller's token."""

from app.tools.mcp_connection import McpConnector

__all__ = ["McpConnector"]
