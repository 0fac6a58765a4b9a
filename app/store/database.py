"""Engine creation and schema migration (alembic is the only way the schema changes)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.db_errors import connect_asyncpg
from app.startup_failure import StartupAbort
from app.store.database_url import describe_target, parse_database_url

if TYPE_CHECKING:
    from app.settings import Settings

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
Pooler = Literal["none", "transaction"]
# Any fixed number: serialises concurrent migrations of several processes on one Postgres.
_MIGRATION_LOCK_KEY = 7_201_998_311


def create_engine(
    url: str,
    *,
    pool_size: int = 20,
    max_overflow: int = 20,
    pool_timeout: float = 30.0,
    pooler: Pooler = "none",
    pooled: bool = True,
    statement_timeout: float | None = None,
) -> AsyncEngine:
    """Create the async engine: pooled on Postgres, WAL + busy timeout on SQLite.

    `url` may be any DATABASE_URL (libpq parameters included, see `database_url`). Statement
    parameters are hidden from exception text: they carry users' messages. `pooler="transaction"`
    makes the engine safe behind PgBouncer in transaction mode; `pooled=False` opens a connection
    per use (for one-off work such as migrations). `statement_timeout` (seconds) bounds every
    statement on Postgres.
    """
    parsed = parse_database_url(url)
    for note in parsed.notes:
        logger.warning("database.url_note", extra={"note": note, "database": parsed.target})
    if not parsed.is_postgres:
        _ensure_sqlite_dir(parsed.url.database)
        engine = create_async_engine(parsed.url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # The driver's OS errors at connect become SQLAlchemy errors like every other outage.
    connect_args: dict[str, Any] = {**parsed.connect_args, "async_creator_fn": connect_asyncpg}
    if pooler == "transaction":
        connect_args.update(_TRANSACTION_POOLER_ARGS)
    elif statement_timeout:
        # A held lock or a runaway query ends in an error instead of stalling a turn (and the
        # slots it holds) forever. Poolers in transaction mode refuse startup settings: there,
        # set it on the database role (ALTER ROLE ... SET statement_timeout).
        connect_args["server_settings"] = {
            **connect_args.get("server_settings", {}),
            "statement_timeout": str(round(statement_timeout * 1000)),
        }
    pool_args: dict[str, Any] = (
        {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            # No ping per checkout (two statements each time): a connection the server dropped
            # fails its first statement, SQLAlchemy then recycles every older connection, and
            # `once_more_if_disconnected` gives the work one more go on a fresh one.
            "pool_recycle": 1800,
            "pool_timeout": pool_timeout,
        }
        if pooled
        else {"poolclass": NullPool}
    )
    return create_async_engine(
        parsed.url,
        connect_args=connect_args,
        hide_parameters=True,
        execution_options={_POOLER_OPTION: pooler},
        **pool_args,
    )


_POOLER_OPTION = "chatkit_pooler"


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """`engine` sending single statements without BEGIN/COMMIT around them.

    Not behind a transaction-mode pooler: there a statement outside a transaction is prepared
    on one server connection and may run on another, so every statement keeps its transaction.
    """
    if engine.get_execution_options().get(_POOLER_OPTION) == "transaction":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


T = TypeVar("T")


async def once_more_if_disconnected(work: Callable[[], Awaitable[T]]) -> T:
    """Run `work`, and once more if it failed on a connection the server had dropped.

    Without a ping per checkout, the first use of a pooled connection after a database restart
    is what finds it dead (the statement never ran). Work given here must be safe to repeat.
    """
    try:
        return await work()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return await work()


def _unique_statement_name() -> str:
    return f"__chatkit_{uuid.uuid4().hex}__"


# Behind a transaction-mode pooler consecutive transactions of one client connection run on
# different server connections, and one server connection serves many clients. A prepared
# statement must therefore live within one transaction: no statement caches (asyncpg's own and
# SQLAlchemy's), and names unique across every client (asyncpg numbers them per process, so two
# processes both prepare `__asyncpg_stmt_1__`). asyncpg's internal queries then use unnamed
# statements, which the pooler keeps on one server connection until the query is done.
_TRANSACTION_POOLER_ARGS: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": _unique_statement_name,
}


def _ensure_sqlite_dir(path: str | None) -> None:
    if path and path != ":memory:":
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL keeps the database consistent; it only skips an fsync per commit.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    command.upgrade(alembic_config(connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    """Apply every pending migration (`alembic upgrade head`) in one transaction."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def ping(engine: AsyncEngine) -> None:
    """Raise if the database does not answer."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


class DatabaseUnreachable(StartupAbort):
    """The database did not answer at startup; the message is the one line that says why."""


# Errors that waiting does not cure: refused credentials or TLS, a wrong database name.
_PERMANENT_SQLSTATE_CLASSES = ("28", "3D")


def _root_cause(exc: BaseException) -> BaseException:
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "orig", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


def _is_permanent(cause: BaseException) -> bool:
    if isinstance(cause, ssl.SSLCertVerificationError):
        return True
    sqlstate = getattr(cause, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in _PERMANENT_SQLSTATE_CLASSES


def describe_cause(exc: BaseException) -> str:
    """The innermost error as one short line: its type and first line of text."""
    cause = _root_cause(exc)
    first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    name = type(cause).__name__
    return f"{name}: {first_line}"[:300] if first_line else name


async def wait_for_database(engine: AsyncEngine, seconds: float) -> None:
    """Retry connecting with backoff for `seconds`; raise DatabaseUnreachable after that.

    Each failed attempt logs `database.waiting` with the host and the cause (never the
    password). Refused credentials, certificates or a missing database end the wait at once.
    """
    target = describe_target(engine.url)
    password = engine.url.password
    deadline = time.monotonic() + seconds
    delay = 0.25
    while True:
        remaining = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(remaining, 1.0)):
                await ping(engine)
            return
        except Exception as exc:  # any failure to connect is a reason to wait or to stop
            cause = describe_cause(exc)
            if password:  # no driver quotes it; this keeps it that way
                cause = cause.replace(password, "***")
            if _is_permanent(_root_cause(exc)):
                logger.error("database.refused", extra={"host": target, "cause": cause})
                raise DatabaseUnreachable(
                    f"database {target} refused the connection: {cause}"
                ) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.error(
                    "database.unreachable",
                    extra={"host": target, "cause": cause, "waited_seconds": seconds},
                )
                raise DatabaseUnreachable(
                    f"database {target} did not answer within {seconds:g} s: {cause}"
                ) from None
            pause = min(delay, remaining)
            logger.warning(
                "database.waiting",
                extra={"host": target, "cause": cause, "retry_in_seconds": round(pause, 2)},
            )
            await asyncio.sleep(pause)
            delay = min(delay * 2, 5.0)


async def prepare_database(engine: AsyncEngine, settings: Settings) -> None:
    """Startup: wait for the database, then apply migrations when AUTO_MIGRATE is on.

    Migrations run on DATABASE_MIGRATION_URL when it is set (a direct connection, for hosts whose
    DATABASE_URL is a pooler), else on `engine`. Both work behind a transaction-mode pooler: the
    whole upgrade is one transaction and its lock is transaction-scoped.
    """
    await wait_for_database(engine, settings.database_startup_timeout)
    if not settings.auto_migrate:
        return
    if settings.database_migration_url is None:
        await migrate(engine)
        return
    direct = create_engine(settings.database_migration_url, pooled=False)
    try:
        await wait_for_database(direct, settings.database_startup_timeout)
        await migrate(direct)
    finally:
        await direct.dispose()
