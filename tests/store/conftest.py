from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.context import RequestContext
from app.store.chatkit_store import SqlStore
from app.store.database import create_engine, migrate


@pytest.fixture(params=["postgres", "sqlite"])
async def store_engine(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    """A migrated database of each kind: the same store contract holds on both."""
    if request.param == "postgres":
        engine = create_engine(postgres_url)
    else:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
        await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(store_engine: AsyncEngine) -> SqlStore:
    return SqlStore(store_engine)


def make_context(user_id: str | None = None) -> RequestContext:
    return RequestContext(user_id=user_id or f"user-{uuid.uuid4().hex}", token="t", request_id="r")


@pytest.fixture
def alice() -> RequestContext:
    return make_context()


@pytest.fixture
def bob() -> RequestContext:
    return make_context()
