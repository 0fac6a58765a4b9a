"""Recognising a database that does not answer, from SQLAlchemy's and the driver's exception types.

Only exceptions that came out of the database layer count: a `TimeoutError` or `PermissionError`
raised anywhere else is a bug or another service's problem, not a database outage. The one place
where the driver raises plain OS errors, opening a connection, is wrapped by `connect_asyncpg` so
that those arrive as SQLAlchemy's `OperationalError` too.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import sqlalchemy.exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

from app.causes import MAX_DEPTH, caused_by, chain

# SQLSTATE classes 08 (connection), 53 (insufficient resources: too many connections),
# 57 (operator intervention: shutting down, starting up, statement cancelled) and 58 (system).
_ASYNCPG_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.PostgresSystemError,
)
_ASYNCPG_BUSY: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.TooManyConnectionsError,
)

BUSY_MESSAGE = "The server is busy right now. Please retry shortly."
UNAVAILABLE_MESSAGE = "The database is unavailable right now. Please retry shortly."


async def connect_asyncpg(*args: Any, **kwargs: Any) -> Any:
    """`asyncpg.connect`, with the OS errors of opening a connection reported as the driver's.

    asyncpg lets `ConnectionRefusedError`, `ConnectionResetError` and its connect `TimeoutError`
    escape as they are, and SQLAlchemy passes non-driver errors through unwrapped; as the driver's
    `OperationalError` they become `sqlalchemy.exc.OperationalError` like every other outage.
    """
    try:
        return await asyncpg.connect(*args, **kwargs)
    except (OSError, TimeoutError) as exc:
        message = f"could not connect to the database: {type(exc).__name__}"
        driver_error = AsyncAdapt_asyncpg_dbapi.OperationalError
        raise driver_error(message, exc) from exc  # type: ignore[no-untyped-call]


class DatabaseFailure(Exception):
    """A statement failed, reported without the statement, its values or the driver's text.

    Code whose statements carry users' data raises a subclass `from None`: a driver message can
    quote the failing row (asyncpg appends its DETAIL, "Failing row contains (...)"), so neither
    it nor the statement may reach a log. `unavailable` says whether retrying later can help.
    """

    message: str
    unavailable: bool
    sqlstate: str | None


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE the database gave for `exc`, if it gave one (safe to log: a code, no data)."""
    error = _database_error(exc)
    if not isinstance(error, sqlalchemy.exc.DBAPIError):
        return None
    for cause in _driver_errors(error):
        code = getattr(cause, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


def _driver_errors(exc: sqlalchemy.exc.DBAPIError) -> list[BaseException]:
    """The driver's own exceptions behind `exc` (the adapter error and what it wraps)."""
    found: list[BaseException] = []
    current: BaseException | None = exc.orig
    while current is not None and len(found) < MAX_DEPTH:
        found.append(current)
        current = current.__cause__
    return found


def _database_error(exc: BaseException) -> BaseException | None:
    """The first SQLAlchemy exception in `exc`'s chain, if any."""
    return caused_by(exc, sqlalchemy.exc.SQLAlchemyError)


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database could not be reached, not that a query was wrong."""
    return _classify(exc) is not None


def database_failure_message(exc: BaseException) -> str | None:
    """What to tell the user when `exc` is the database not answering, else None."""
    return _classify(exc)


def _classify(exc: BaseException) -> str | None:
    # A failure on a connection the database just dropped (say the rollback after it) masks
    # the drop it was raised while handling: any outage in the chain counts.
    for error in chain(exc):
        message = _classify_one(error)
        if message is not None:
            return message
    return None


def _classify_one(error: BaseException) -> str | None:
    if isinstance(error, DatabaseFailure):
        return error.message if error.unavailable else None
    if isinstance(error, sqlalchemy.exc.TimeoutError):  # the connection pool is exhausted
        return BUSY_MESSAGE
    if not isinstance(error, sqlalchemy.exc.DBAPIError):
        return None
    driver = _driver_errors(error)
    if any(isinstance(cause, _ASYNCPG_BUSY) for cause in driver):
        return BUSY_MESSAGE
    if error.connection_invalidated or isinstance(error, sqlalchemy.exc.OperationalError):
        return UNAVAILABLE_MESSAGE
    if any(isinstance(cause, _ASYNCPG_UNAVAILABLE) for cause in driver):
        return UNAVAILABLE_MESSAGE
    return None
