"""The whole Store contract (tests/store/test_chatkit_store.py) through PgBouncer in transaction
mode, with DATABASE_POOLER=transaction and Neon's pooled URL shape."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.database import create_engine
from tests.store.conftest import alice, bob, store
from tests.store.test_chatkit_store import *  # noqa: F403 (the contract tests, collected here too)


@pytest.fixture
async def store_engine(neon_pooled_url: str) -> AsyncIterator[AsyncEngine]:
    """Replaces the engine fixture of tests/store for the tests collected in this module."""
    engine = create_engine(neon_pooled_url, pooler="transaction")
    yield engine
    await engine.dispose()


__all__ = ["alice", "bob", "store"]
