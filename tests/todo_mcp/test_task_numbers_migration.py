"""Migration 0007: existing tasks keep the ids their owners know; new ones are numbered per user."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.database import alembic_config, create_engine, migrate
from app.store.tasks import TaskNotFound, TaskRepository

BEFORE_NUMBERS = "0006"


@pytest.fixture(params=["postgres", "sqlite"])
async def database_url(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    name = f"numbers_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"


async def migrate_to(engine: AsyncEngine, revision: str) -> None:
    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def test_old_ids_stay_valid_and_new_tasks_are_numbered_per_user(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate_to(engine, BEFORE_NUMBERS)
        # Before: one global sequence. Alice got 1 and 3, Bob 2, 4 and 5.
        async with engine.begin() as conn:
            for owner in ("alice", "bob", "alice", "bob", "bob"):
                await conn.execute(
                    text(
                        "insert into todo_tasks (user_id, title, description, completed, "
                        "created_at, updated_at) values (:u, :t, '', false, :now, :now)"
                    ),
                    {"u": owner, "t": f"old task of {owner}", "now": datetime(2026, 1, 1)},
                )
        await migrate(engine)

        tasks = TaskRepository(engine)
        assert [t.id for t in await tasks.list(user_id="alice")] == [1, 3]
        assert [t.id for t in await tasks.list(user_id="bob")] == [2, 4, 5]
        assert (await tasks.complete(user_id="alice", task_id=3)).completed
        with pytest.raises(TaskNotFound):
            await tasks.complete(user_id="alice", task_id=2)  # Bob's, as before

        assert (await tasks.add(user_id="alice", title="new")).id == 4
        assert (await tasks.add(user_id="bob", title="new")).id == 6
        assert (await tasks.add(user_id="carol", title="first")).id == 1
        assert [t.id for t in await tasks.list(user_id="alice")] == [1, 3, 4]
    finally:
        await engine.dispose()
