from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.database import alembic_config


async def test_postgres_is_migrated_to_head(pg_engine: AsyncEngine) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    async with pg_engine.connect() as conn:
        version = (await conn.execute(text("select version_num from alembic_version"))).scalar()
        tables = (
            (await conn.execute(text("select tablename from pg_tables where schemaname='public'")))
            .scalars()
            .all()
        )
    assert version == head
    assert {"chat_threads", "chat_items", "todo_tasks", "usage_windows", "stream_leases"} <= set(
        tables
    )
