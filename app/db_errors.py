"""Recognising a database that does not answer, whatever the driver."""

from __future__ import annotations

import sqlalchemy.exc


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database could not be reached, not that a query was wrong."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return True
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # pool exhausted
        return True
    return isinstance(exc, ConnectionError | OSError) and not isinstance(exc, FileNotFoundError)


def database_failure_message(exc: BaseException) -> str | None:
    """What to tell the user when `exc` is the database not answering, else None."""
    if isinstance(exc, sqlalchemy.exc.TimeoutError):
        return "The server is busy right now. Please retry shortly."
    if database_unavailable(exc):
        return "The database is unavailable right now. Please retry shortly."
    return None
