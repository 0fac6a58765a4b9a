"""Alembic environment: runs on the connection handed in by `app.store.database.migrate`."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from app.store import tables

target_metadata = tables.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone() -> None:
    # `alembic upgrade head` from the command line: the server's own settings name the database
    # (DATABASE_MIGRATION_URL when set, else DATABASE_URL), parsed like the server parses them.
    from app.settings import SettingsError, load_settings
    from app.store.database import create_engine

    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None
    if settings.database_migration_url is not None:
        engine = create_engine(settings.database_migration_url, pooled=False)
    else:
        engine = create_engine(settings.database_url, pooled=False, pooler=settings.database_pooler)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_standalone())
