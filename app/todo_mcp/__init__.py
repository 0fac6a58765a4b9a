"""The embedded TODO MCP server: streamable HTTP, bearer-authenticated, scoped to the caller."""

from app.todo_mcp.server import TodoMcp, build_todo_mcp

__all__ = ["TodoMcp", "build_todo_mcp"]
