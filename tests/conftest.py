"""Session fixtures: a real Postgres (throwaway cluster or TEST_DATABASE_URL), built by alembic."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.database import create_engine, migrate
from app.store.database_url import normalize_database_url
from tests import xdist_groups
from tests.pg_cluster import PostgresCluster, start_cluster

TEST_DATABASE = "chatkit_test"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster | None]:
    """The session's own cluster, or None when TEST_DATABASE_URL points at an existing one."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


def _plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="session")
async def postgres_url(pg_cluster: PostgresCluster | None) -> str:
    """URL of a freshly migrated Postgres database (`alembic upgrade head`)."""
    if pg_cluster is None:
        # Any URL the server takes (postgres://, ?sslmode=...), through the server's own parser.
        url = normalize_database_url(os.environ["TEST_DATABASE_URL"])
    else:
        admin = await asyncpg.connect(_plain_dsn(pg_cluster.url("postgres")))
        try:
            await admin.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
        finally:
            await admin.close()
        url = pg_cluster.url(TEST_DATABASE)
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return url


@pytest.fixture(scope="session")
async def pg_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    """URL of a migrated SQLite file of this test's own."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return url


# `make test` runs `pytest -n 2 --dist loadgroup`; tests/xdist_groups.py decides which tests
# share a worker.
def pytest_configure(config: pytest.Config) -> None:
    xdist_groups.announce_file(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    xdist_groups.record_groups(items)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    return xdist_groups.make_scheduler(config, log)


@pytest.fixture
def new_user_id() -> str:
    """A user id no other test uses: tests share one database and stay apart by user."""
    return f"user-{uuid.uuid4().hex}"


# Server fixtures live in one place so every test package shares one instance of each
# session fixture (one offline server per run, not one per package).
from tests.server_fixtures import (  # noqa: E402
    fake,
    fake_llm_server,
    make_client,
    minter,
    offline_server,
    server_env,
)

__all__ = ["fake", "fake_llm_server", "make_client", "minter", "offline_server", "server_env"]
