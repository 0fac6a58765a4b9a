"""Turn failures into messages a user can act on."""

from __future__ import annotations

import asyncio

import httpx2
import openai
from agents.exceptions import MaxTurnsExceeded, ModelBehaviorError

from app.db_errors import database_failure_message
from app.tools.mcp_connection import McpToolUnavailable


class McpUnavailableError(Exception):
    """The TODO task server could not be reached when the turn started."""


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, kind):
            return True
        current, seen = current.__cause__ or current.__context__, seen + 1
    return False


def user_message_for(exc: BaseException) -> str:
    """A short explanation of why the answer failed, without internals or secrets."""
    if isinstance(exc, McpUnavailableError):
        return (
            "The task service is unreachable right now, so I cannot work with your tasks. "
            "Please try again in a moment."
        )
    if _caused_by(exc, McpToolUnavailable):
        return (
            "The task service did not answer in time, so your tasks may be unchanged. "
            "Please try again in a moment."
        )
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
