"""What every store module shares: times as the columns keep them, and the dialect's INSERT.

Stores use SQLAlchemy Core on an `AsyncEngine`: statements built once with bound parameters,
single statements on the engine's autocommit twin (`database.autocommit`), work of several
statements in one `engine.begin()` transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

# postgresql.insert or sqlite.insert: both offer on_conflict_do_update / _do_nothing,
# `excluded` and RETURNING, with the same arguments for what the stores use.
Insert = Callable[[Table], Any]


def utcnow() -> datetime:
    """Now as the columns keep times: naive UTC (see tables.py)."""
    return datetime.now(UTC).replace(tzinfo=None)


def is_postgres(engine: AsyncEngine) -> bool:
    """Whether `engine` talks to Postgres (else SQLite, the only other database supported)."""
    return engine.dialect.name == "postgresql"


def insert_for(engine: AsyncEngine) -> Insert:
    """The INSERT of `engine`'s dialect, the one that can upsert (ON CONFLICT)."""
    return postgresql.insert if is_postgres(engine) else sqlite.insert
