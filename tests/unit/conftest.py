"""Unit-test fixtures: one migrated SQLite file per test module, for units that sit on the store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.database import create_engine, migrate


@pytest.fixture(scope="module")
async def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncEngine]:
    """The app's own engine over a SQLite file built by the migrations, shared by one module.

    Tests sharing it keep apart by using fresh user and thread ids.
    """
    path = tmp_path_factory.mktemp("unit-db") / "chat.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await migrate(engine)
    yield engine
    await engine.dispose()
