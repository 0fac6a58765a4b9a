"""Session fixtures: a real Postgres (throwaway cluster or TEST_DATABASE_URL), built by alembic."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.database import create_engine, migrate
from app.store.database_url import normalize_database_url
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


# `make test` runs `pytest -n 2 --dist loadgroup`. A test that uses a module-, class- or
# package-scoped fixture runs on the worker of its module (or package), so the servers such
# fixtures start are started once; other tests go to whichever worker is free. A module's fake
# model (`fake`) is only a channel of the worker's fake server: it costs nothing to have twice.
# The suites that drive a browser or build a Node project share one group, so two of them never
# run at once on this two-core machine.
_ONE_AT_A_TIME = ("tests/browser/", "tests/examples/")
_FREE_TO_REPEAT = frozenset({"fake"})


def _xdist_group(item: pytest.Item) -> str:
    module = item.nodeid.split("::", 1)[0]
    if module.startswith(_ONE_AT_A_TIME):
        return "browser-and-node"
    fixture_info = getattr(item, "_fixtureinfo", None)
    scopes = {
        definitions[-1].scope
        for name, definitions in (fixture_info.name2fixturedefs.items() if fixture_info else ())
        if definitions and name not in _FREE_TO_REPEAT
    }
    if "package" in scopes:
        return module.rsplit("/", 1)[0]
    if scopes & {"module", "class"}:
        return module
    return item.nodeid


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(_xdist_group(item)))


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
