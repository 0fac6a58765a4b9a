"""Times stored before UTC (the writer's local time) are converted by migration 0006."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.database import alembic_config, create_engine
from tests.e2e.harness import REPO_ROOT

BEFORE_UTC = "0005"
TOKYO_OFFSET = timedelta(hours=9)
# What a server under TZ=Asia/Tokyo wrote for a thread and two items at 09:00 UTC.
TOKYO_TIMES = [datetime(2026, 1, 10, 18, 0, 0, 250_000) + timedelta(seconds=n) for n in range(3)]


@pytest.fixture(params=["postgres", "sqlite"])
async def database_url(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    name = f"utc_{uuid.uuid4().hex[:12]}"
    admin_dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    admin = await asyncpg.connect(admin_dsn)
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


def migrate_in_zone(database_url: str, zone: str, action: str = "upgrade:head") -> None:
    """Run a migration in a process of its own whose local time zone is `zone`."""
    verb, revision = action.split(":")
    script = (
        "import asyncio, sys\n"
        "from alembic import command\n"
        "from app.store.database import alembic_config, create_engine\n"
        "async def main():\n"
        "    engine = create_engine(sys.argv[1])\n"
        "    async with engine.begin() as conn:\n"
        f"        await conn.run_sync(lambda c: command.{verb}(alembic_config(c), '{revision}'))\n"
        "    await engine.dispose()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, database_url],
        cwd=REPO_ROOT,
        env={"TZ": zone, "PATH": "/usr/bin:/bin"},
        check=True,
        timeout=120,
    )


async def stored_times(engine: AsyncEngine, thread_id: str) -> list[datetime]:
    async with engine.connect() as conn:
        thread = (
            await conn.execute(
                text("select created_at from chat_threads where id = :t"), {"t": thread_id}
            )
        ).scalar_one()
        items = (
            await conn.execute(
                text("select created_at from chat_items where thread_id = :t order by seq"),
                {"t": thread_id},
            )
        ).scalars()
        values = [thread, *items]
    # SQLite hands back text through a plain query.
    return [v if isinstance(v, datetime) else datetime.fromisoformat(v) for v in values]


async def test_local_times_of_old_rows_become_utc(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate_to(engine, BEFORE_UTC)
        thread_id = f"thr_{uuid.uuid4().hex}"
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "insert into chat_threads (id, user_id, created_at, updated_at, data) "
                    "values (:id, 'u', :at, :at, '{}')"
                ),
                {"id": thread_id, "at": TOKYO_TIMES[0]},
            )
            for n, at in enumerate(TOKYO_TIMES[1:]):
                await conn.execute(
                    text(
                        "insert into chat_items (id, thread_id, user_id, type, created_at, data) "
                        "values (:id, :thread, 'u', 'user_message', :at, '{}')"
                    ),
                    {"id": f"msg_{n}", "thread": thread_id, "at": at},
                )
        await engine.dispose()

        migrate_in_zone(database_url, "Asia/Tokyo")
        assert await stored_times(engine, thread_id) == [t - TOKYO_OFFSET for t in TOKYO_TIMES]

        # Back down (in the same zone) restores what was there; up again in UTC changes nothing.
        migrate_in_zone(database_url, "Asia/Tokyo", f"downgrade:{BEFORE_UTC}")
        assert await stored_times(engine, thread_id) == TOKYO_TIMES
        migrate_in_zone(database_url, "UTC")
        assert await stored_times(engine, thread_id) == TOKYO_TIMES
    finally:
        await engine.dispose()
