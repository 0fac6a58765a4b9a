"""Which exceptions mean "the database is unavailable": decided from database types only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.chat.failures import user_message_for
from app.db_errors import (
    BUSY_MESSAGE,
    UNAVAILABLE_MESSAGE,
    database_failure_message,
    database_unavailable,
)
from app.store.database import create_engine
from tests.pg_cluster import PostgresCluster, free_port


def plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
async def engine(own_cluster: PostgresCluster) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(own_cluster.url("postgres"), pool_size=2, max_overflow=0)
    yield engine
    await engine.dispose()


async def failure_of(engine: AsyncEngine, sql: str) -> BaseException:
    with pytest.raises(Exception) as caught:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    return caught.value


@pytest.mark.parametrize(
    "error",
    [
        TimeoutError("a model or an MCP call timed out"),
        PermissionError(13, "Permission denied", "/some/file"),
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        OSError(28, "No space left on device"),
        RuntimeError("boom"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_from_elsewhere_are_not_a_database_outage(error: BaseException) -> None:
    assert database_unavailable(error) is False
    assert database_failure_message(error) is None
    assert "database" not in user_message_for(error)


async def test_nothing_listening_is_an_outage() -> None:
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x")
    try:
        error = await failure_of(engine, "select 1")
    finally:
        await engine.dispose()
    assert database_unavailable(error)
    assert database_failure_message(error) == UNAVAILABLE_MESSAGE
    assert "database" in user_message_for(error)


async def test_wrong_sql_and_broken_rules_are_not_an_outage(engine: AsyncEngine) -> None:
    for sql in ("select * from no_such_table", "select 1/0", "select 'x'::int"):
        error = await failure_of(engine, sql)
        assert not database_unavailable(error), (sql, error)


async def test_a_cancelled_statement_means_busy(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("set statement_timeout = 50"))
        with pytest.raises(Exception) as caught:
            await conn.execute(text("select pg_sleep(5)"))
    assert database_failure_message(caught.value) == BUSY_MESSAGE


async def test_cannot_connect_now_while_shutting_down_is_an_outage(
    engine: AsyncEngine, own_cluster: PostgresCluster
) -> None:
    """A smart shutdown waits for open sessions and refuses new ones with SQLSTATE 57P03."""
    holder = await asyncpg.connect(plain_dsn(own_cluster.url("postgres")))
    try:
        command = ["pg_ctl", "-D", str(own_cluster.datadir), "-m", "smart", "-W", "stop"]
        own_cluster._run(*command)
        error = await wait_for_refusal(engine)
    finally:
        await holder.close()
        wait_until_stopped(own_cluster)
        own_cluster.start()
    leaves = chain_types(error)
    assert asyncpg.exceptions.CannotConnectNowError in leaves, leaves
    assert database_unavailable(error)
    assert database_failure_message(error) == UNAVAILABLE_MESSAGE


async def wait_for_refusal(engine: AsyncEngine) -> BaseException:
    """The first error of a new connection once the server stopped accepting them."""
    for _ in range(100):
        await engine.dispose()  # no pooled connection: each try opens a new one
        try:
            async with engine.connect() as conn:
                await conn.execute(text("select 1"))
        except Exception as exc:
            return exc
        await asyncio.sleep(0.05)
    raise AssertionError("the server kept accepting connections")


def wait_until_stopped(cluster: PostgresCluster) -> None:
    deadline = time.monotonic() + 30
    while (cluster.datadir / "postmaster.pid").exists():
        if time.monotonic() > deadline:
            raise AssertionError("the cluster did not stop")
        time.sleep(0.05)


def chain_types(error: BaseException) -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    current: BaseException | None = error
    while current is not None and len(found) < 10:
        found.append(type(current))
        current = getattr(current, "orig", None) or current.__cause__
    return found
