"""Calling one TODO tool outside a model run (widget actions, task search) as the caller."""

from __future__ import annotations

import logging
import re

import anyio
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult
from mcp_types import REQUEST_TIMEOUT

from app.tools.mcp_connection import McpConnector

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class TaskServiceUnavailable(Exception):
    """The TODO MCP server could not be reached or did not answer in time."""


class TaskToolRefused(Exception):
    """The tool ran and reported an error (for example an unknown task id)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _error_text(result: CallToolResult) -> str:
    text = " ".join(part.text for part in result.content if part.type == "text")
    text = _CONTROL.sub(" ", text).strip() or "the task service reported an error"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


async def call_task_tool(
    connector: McpConnector, token: str, tool: str, arguments: dict[str, object]
) -> CallToolResult:
    """Call `tool` with the caller's own token; raises TaskServiceUnavailable / TaskToolRefused."""
    server = connector.server_for(token)
    try:
        try:
            await server.connect()  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise TaskServiceUnavailable("could not connect to the task service") from exc
        try:
            result = await server.call_tool(tool, dict(arguments))
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise TaskServiceUnavailable("the task service did not answer") from exc
            raise TaskToolRefused(_CONTROL.sub(" ", str(exc))[:MAX_ERROR_CHARS]) from exc
        except Exception as exc:
            raise TaskServiceUnavailable("the task service did not answer") from exc
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await server.cleanup()  # type: ignore[no-untyped-call]
            except Exception:
                logger.warning("mcp.cleanup_failed", exc_info=True)
    if result.is_error:
        raise TaskToolRefused(_error_text(result))
    return result
