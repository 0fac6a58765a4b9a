"""Logging a failure without its text when the text may quote the user.

A provider's 400 often echoes the input, the database driver quotes the failing row, pydantic
quotes the value it refused, a tool-argument error carries the arguments: the message of such an
exception can hold a user's words, a title or a task. Those failures are logged by what they are
(type, HTTP status, SQLSTATE), without a traceback; anything else is our own bug and keeps its
traceback.
"""

from __future__ import annotations

import functools

from app.causes import chain
from app.db_errors import DatabaseFailure, sqlstate_of


@functools.cache
def _quoting() -> tuple[type[BaseException], ...]:
    """Families whose messages can carry what the user wrote (or what was written for them).

    Imported at first use: `app.settings` reaches this module (through `app.errors`), and the
    agents and openai SDKs take seconds to import, which a settings error or the token command
    should not wait for.
    """
    import httpx2
    import openai
    import pydantic
    import sqlalchemy.exc
    from agents.exceptions import AgentsException
    from mcp.shared.exceptions import MCPError

    return (
        openai.APIError,
        AgentsException,
        MCPError,
        httpx2.HTTPError,
        sqlalchemy.exc.SQLAlchemyError,
        DatabaseFailure,
        pydantic.ValidationError,
    )


def may_quote_user_data(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) is of a family whose text can quote users."""
    return any(isinstance(error, _quoting()) for error in chain(exc))


def failure_fields(exc: BaseException) -> dict[str, object]:
    """What failed, safe to log: the exception types of the chain, an HTTP status, a SQLSTATE."""
    from openai import APIStatusError  # see _quoting: loaded by the time anything fails

    errors = chain(exc)
    fields: dict[str, object] = {
        "error": type(exc).__name__,
        "error_chain": " <- ".join(type(error).__name__ for error in errors[1:]) or None,
    }
    status = next(
        (error.status_code for error in errors if isinstance(error, APIStatusError)), None
    )
    if status is not None:
        fields["status_code"] = status
    sqlstate = sqlstate_of(exc) or next(
        (error.sqlstate for error in errors if isinstance(error, DatabaseFailure)), None
    )
    if sqlstate is not None:
        fields["sqlstate"] = sqlstate
    return {key: value for key, value in fields.items() if value is not None}
