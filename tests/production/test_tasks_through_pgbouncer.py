"""The task repository's contract (tests/todo_mcp/test_task_repository.py) and the tool-call
quota through PgBouncer in transaction mode, with DATABASE_POOLER=transaction: every statement
is its own transaction there, the one-statement add and count included."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.database import create_engine
from app.store.tasks import CallQuota, TaskRepository, TooManyCalls
from tests.todo_mcp.test_task_repository import *  # noqa: F403 (the contract tests, collected here too)


@pytest.fixture
async def pooled_engine(neon_pooled_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(neon_pooled_url, pooler="transaction")
    yield engine
    await engine.dispose()


@pytest.fixture  # type: ignore[no-redef]
def tasks(pooled_engine: AsyncEngine) -> TaskRepository:
    """Replaces the repository fixture of the contract tests collected in this module."""
    return TaskRepository(pooled_engine)


async def test_call_quota_through_the_pooler(pooled_engine: AsyncEngine) -> None:
    quota = CallQuota(pooled_engine, limit=2, window_seconds=3600)
    user = f"user-{uuid.uuid4().hex}"
    await quota.spend(user)
    await quota.spend(user)
    with pytest.raises(TooManyCalls):
        await quota.spend(user)
