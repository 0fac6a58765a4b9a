"""Database fixtures: a real Postgres (throwaway cluster or TEST_DATABASE_URL), built by alembic.

Registered by tests/conftest.py in every process that runs tests. A `make test` worker starts
its cluster and migrates it in a thread while it is still collecting (`start_early`): about 5 s
of initdb, pg_ctl and alembic that would otherwise come before the worker's first database test.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.database import create_engine, migrate
from app.store.database_url import normalize_database_url
from tests.pg_cluster import PostgresCluster, start_cluster

TEST_DATABASE = "chatkit_test"


def _plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _create_migrated_database(cluster: PostgresCluster) -> str:
    admin = await asyncpg.connect(_plain_dsn(cluster.url("postgres")))
    try:
        await admin.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
    finally:
        await admin.close()
    url = cluster.url(TEST_DATABASE)
    await _migrate(url)
    return url


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


class _Database:
    """The session's cluster and its migrated database, made once (maybe ahead, in a thread)."""

    def __init__(self) -> None:
        self._made: Future[tuple[PostgresCluster, str]] | None = None
        self._lock = threading.Lock()

    def start_early(self) -> None:
        with self._lock:
            if self._made is None:
                self._made = Future()
                threading.Thread(
                    target=self._make, args=(self._made,), name="early-postgres", daemon=True
                ).start()

    @staticmethod
    def _make(made: Future[tuple[PostgresCluster, str]]) -> None:
        cluster: PostgresCluster | None = None
        try:
            cluster = start_cluster()
            url = asyncio.run(_create_migrated_database(cluster))
        except BaseException as exc:  # handed to the first test that needs the database
            if cluster is not None:
                cluster.destroy()
            made.set_exception(exc)
        else:
            made.set_result((cluster, url))

    def get(self) -> tuple[PostgresCluster, str]:
        self.start_early()
        assert self._made is not None
        return self._made.result()

    def destroy(self) -> None:
        """At the session's end: remove the cluster, whether a test used it or not."""
        with self._lock:
            made, self._made = self._made, None
        if made is not None and made.exception() is None:
            made.result()[0].destroy()


database = _Database()


def start_early() -> None:
    """In a `make test` worker, before collection: start making the database."""
    if os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("TEST_DATABASE_URL"):
        database.start_early()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster | None]:
    """The session's own cluster, or None when TEST_DATABASE_URL points at an existing one."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    cluster, _ = database.get()
    try:
        yield cluster
    finally:
        database.destroy()


@pytest.fixture(scope="session")
async def postgres_url(pg_cluster: PostgresCluster | None) -> str:
    """URL of a freshly migrated Postgres database (`alembic upgrade head`)."""
    if pg_cluster is None:
        # Any URL the server takes (postgres://, ?sslmode=...), through the server's own parser.
        url = normalize_database_url(os.environ["TEST_DATABASE_URL"])
        await _migrate(url)
        return url
    return database.get()[1]


@pytest.fixture(scope="session")
async def pg_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    """URL of a migrated SQLite file of this test's own."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    await _migrate(url)
    return url
