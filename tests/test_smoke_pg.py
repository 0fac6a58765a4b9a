from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def test_postgres_is_migrated(pg_engine: AsyncEngine) -> None:
    async with pg_engine.connect() as conn:
        version = (await conn.execute(text("select version_num from alembic_version"))).scalar()
        tables = (
            (await conn.execute(text("select tablename from pg_tables where schemaname='public'")))
            .scalars()
            .all()
        )
    assert version == "0001"
    assert {"chat_threads", "chat_items", "todo_tasks"} <= set(tables)
