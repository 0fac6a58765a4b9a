"""Turn failures into messages a user can act on."""

from __future__ import annotations

import asyncio

import httpx2
import openai
from agents.exceptions import MaxTurnsExceeded, ModelBehaviorError
from chatkit.errors import CustomStreamError
from chatkit.store import NotFoundError
from mcp.shared.exceptions import MCPError
from mcp_types import REQUEST_TIMEOUT

from app.causes import caused_by, chain
from app.db_errors import database_failure_message
from app.tools.mcp_connection import McpSessionExpired, McpToolUnavailable

MCP_TIMEOUT_MESSAGE = (
    "The task service did not answer in time, so your tasks may be unchanged. "
    "Please try again in a moment."
)
SESSION_EXPIRED_MESSAGE = (
    "Your session expired while I was working on this, so I stopped. Sign in again and retry."
)
THREAD_GONE_MESSAGE = "This conversation no longer exists, so the answer was not saved."


class McpUnavailableError(Exception):
    """The TODO task server could not be reached when the turn started."""


def _mcp_timed_out(exc: BaseException) -> bool:
    """An MCP request (listing the tools, a tool call) got no answer within MCP_TIMEOUT."""
    return any(
        (isinstance(error, MCPError) and error.code == REQUEST_TIMEOUT)
        or isinstance(error, httpx2.TimeoutException)
        for error in chain(exc)
    )


def user_message_for(exc: BaseException) -> str:
    """A short explanation of why the answer failed, without internals or secrets."""
    if isinstance(exc, McpUnavailableError) and not _mcp_timed_out(exc):
        return (
            "The task service is unreachable right now, so I cannot work with your tasks. "
            "Please try again in a moment."
        )
    if caused_by(exc, McpSessionExpired) is not None:
        return SESSION_EXPIRED_MESSAGE
    if caused_by(exc, McpToolUnavailable) is not None or _mcp_timed_out(exc):
        return MCP_TIMEOUT_MESSAGE
    if isinstance(exc, CustomStreamError):  # already worded for the user (e.g. a failed save)
        return exc.message
    if isinstance(exc, NotFoundError):
        return THREAD_GONE_MESSAGE
    if isinstance(exc, openai.APITimeoutError | asyncio.TimeoutError | httpx2.TimeoutException):
        return "The language model took too long to answer. Please try again."
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return (
            "The server's language model credentials were rejected. "
            "Ask the operator to check OPENAI_API_KEY."
        )
    if isinstance(exc, openai.RateLimitError):
        return "The language model is rate limited right now. Please wait a moment and retry."
    if isinstance(exc, openai.NotFoundError):
        return (
            "The configured language model was not found. Ask the operator to check OPENAI_MODEL."
        )
    if isinstance(exc, openai.APIStatusError):
        return f"The language model service failed (HTTP {exc.status_code}). Please try again."
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return "The connection to the language model broke off. Please try again."
    if isinstance(exc, openai.APIError):
        return "The language model's answer broke off midway. Please try again."
    if isinstance(exc, MaxTurnsExceeded):
        return "The assistant needed too many steps for this request. Try a simpler request."
    if isinstance(exc, ModelBehaviorError):
        return "The language model gave an answer the server could not use. Please try again."
    return (
        database_failure_message(exc) or "Something went wrong while answering. Please try again."
    )
