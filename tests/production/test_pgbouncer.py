"""Behind PgBouncer in transaction mode (a real one, TLS on both sides): DATABASE_POOLER."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import httpx2
import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from app.store.database import DatabaseUnreachable, create_engine, migrate, prepare_database
from tests.e2e.harness import ServerProcess
from tests.e2e.test_metrics import wait_for
from tests.pgbouncer import PgBouncer
from tests.production.conftest import TlsPostgres, assert_no_password
from tests.production.workers import start_with_workers
from tests.server_fixtures import ClientFactory


async def _interleave(engine: AsyncEngine) -> None:
    """Two clients whose transactions overlap, then a third transaction of the second client.

    PgBouncer gives each transaction whichever server connection is free and reuses the most
    recently released one first, so the last transaction runs on the server connection the
    first client used, not on the one where the second client prepared its statements."""
    query_a = text("SELECT count(*) FROM chat_threads WHERE user_id = :u")
    query_b = text("SELECT count(*) FROM chat_threads WHERE id = :u")
    async with engine.connect() as first, engine.connect() as second:
        first_tx = await first.begin()
        await first.execute(query_a, {"u": "a"})
        async with second.begin():
            await second.execute(query_b, {"u": "b"})
        await first_tx.commit()
        async with second.begin():
            await second.execute(query_b, {"u": "b"})


async def test_without_the_setting_prepared_statements_break(neon_pooled_url: str) -> None:
    engine = create_engine(neon_pooled_url, pooler="none")
    try:
        with pytest.raises(sqlalchemy.exc.DBAPIError) as caught:
            for _ in range(3):
                await _interleave(engine)
    finally:
        await engine.dispose()
    # The second client's statement was prepared on another server connection.
    assert re.search(r'prepared statement "__asyncpg_stmt_\w+__" does not exist', str(caught.value))


async def test_with_the_setting_the_same_work_succeeds(neon_pooled_url: str) -> None:
    engine = create_engine(neon_pooled_url, pooler="transaction")
    try:
        for _ in range(10):
            await _interleave(engine)
    finally:
        await engine.dispose()


async def test_migrations_run_through_the_pooler(
    tls_postgres: TlsPostgres, pgbouncer: PgBouncer
) -> None:
    """The upgrade is one transaction with a transaction-scoped lock: safe behind the pooler,
    also when two processes start at once."""
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    await tls_postgres.create_database(name)
    pooled = tls_postgres.url("sslmode=require", port=pgbouncer.port, database=name)
    engines = [create_engine(pooled, pooler="transaction") for _ in range(2)]
    try:
        await asyncio.gather(*(migrate(engine) for engine in engines))
        async with engines[0].connect() as connection:
            version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            tables = await connection.scalar(
                text("SELECT count(*) FROM pg_tables WHERE tablename = 'chat_threads'")
            )
    finally:
        for engine in engines:
            await engine.dispose()
    assert version and tables == 1


async def test_database_migration_url_is_used_for_migrations(
    tls_postgres: TlsPostgres, neon_pooled_url: str
) -> None:
    """With DATABASE_MIGRATION_URL set, migrations go there: a wrong password there stops
    startup naming that database, while DATABASE_URL itself is fine."""
    wrong = tls_postgres.url("sslmode=require").replace("@localhost", "x@localhost")
    settings = Settings(
        database_url=neon_pooled_url,
        database_pooler="transaction",
        database_migration_url=wrong,
        database_startup_timeout=5,
    )
    engine = create_engine(settings.database_url, pooler="transaction")
    try:
        with pytest.raises(DatabaseUnreachable) as caught:
            await prepare_database(engine, settings)
    finally:
        await engine.dispose()
    message = str(caught.value)
    assert f"localhost:{tls_postgres.port}/chatkit_prod" in message  # the direct one
    assert "password authentication failed" in message
    assert_no_password(message)


async def test_two_workers_serve_tool_turns_through_pgbouncer(
    tls_postgres: TlsPostgres,
    pgbouncer: PgBouncer,
    server_env: dict[str, str],
    make_client: ClientFactory,
    tmp_path: Path,
) -> None:
    """TLS Postgres, PgBouncer in transaction mode, Neon-shaped URLs, two workers, tool turns."""
    name = f"pooled_{uuid.uuid4().hex[:8]}"
    await tls_postgres.create_database(name)
    neon = "sslmode=require&channel_binding=require"
    server = ServerProcess(
        env={
            **server_env,
            "DATABASE_URL": tls_postgres.url(neon, port=pgbouncer.port, database=name),
            "DATABASE_POOLER": "transaction",
            "DATABASE_MIGRATION_URL": tls_postgres.url(neon, database=name),
            "WEB_CONCURRENCY": "2",
        },
        log_path=tmp_path / "pooled.log",
    )
    start_with_workers(server, 2)
    try:
        async with httpx2.AsyncClient(base_url=server.base_url) as http:
            ready = await http.get("/ready")
            assert ready.status_code == 200, ready.text

        async def tool_turns(index: int) -> None:
            client = make_client(server.base_url)
            added = await client.send(f"add task buy milk {index}")
            assert added.status == 200
            assert "Added task" in added.assistant_text(), added.raw
            listed = await client.send("list tasks", added.thread_id)
            assert f"buy milk {index}" in listed.assistant_text()

        await asyncio.gather(*(tool_turns(index) for index in range(8)))
        # /metrics sums both workers: 16 turns, 8 tool calls of each kind.
        turns = await wait_for(server.base_url, "chatkit_turns_total", 16, outcome="ok")
        assert turns.value("chatkit_turns_total", outcome="ok") == 16
        for tool in ("add_task", "list_tasks"):
            assert turns.value("chatkit_tool_calls_total", tool=tool, outcome="ok") == 8
    finally:
        server.stop()
    logs = server.logs()
    assert "prepared statement" not in logs
    assert_no_password(logs)
