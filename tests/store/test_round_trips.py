"""What a turn's store calls send to Postgres: one statement each, no pings, no BEGIN around a
read, a repeat read of the newest items answered from the turn, a task tool call in two
statements, and a restart survived."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime

import asyncpg
import pytest
from chatkit.store import NotFoundError
from chatkit.types import AssistantMessageContent, AssistantMessageItem, ThreadMetadata
from sqlalchemy.ext.asyncio import AsyncEngine

from app.context import RecentItems, RequestContext
from app.store.chatkit_store import SqlStore, ThreadGoneError, new_item_id, new_thread_id
from app.store.database import create_engine, migrate
from app.store.tasks import CallQuota, TaskNotFound, TaskRepository
from tests.pg_cluster import PostgresCluster, start_cluster
from tests.pg_statements import StatementLog, log_statements, verbs

ROLE = "round_trips"


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster of this module's own: it logs statements, and one test restarts it."""
    cluster = start_cluster()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="module")
async def database_url(own_cluster: PostgresCluster) -> str:
    admin = await asyncpg.connect(own_cluster.socket_dsn())
    try:
        await admin.execute("CREATE DATABASE round_trips")
        await log_statements(admin, ROLE)
    finally:
        await admin.close()
    url = own_cluster.url("round_trips").replace("postgres@", f"{ROLE}@")
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


class Statements(StatementLog):
    async def sent(self) -> list[str]:
        """The verbs of what the store's role sent since the last call."""
        return verbs((await self.take()).get(ROLE, []))


@pytest.fixture
async def statements(own_cluster: PostgresCluster) -> AsyncIterator[Statements]:
    log = Statements(own_cluster)
    yield log
    await log.aclose()


def turn_context(user_id: str) -> RequestContext:
    return RequestContext(user_id=user_id, token="t", request_id="r", recent_items=RecentItems())


def message(thread_id: str, text: str) -> AssistantMessageItem:
    return AssistantMessageItem(
        id=new_item_id("message"),
        thread_id=thread_id,
        created_at=datetime.now(),
        content=[AssistantMessageContent(text=text, annotations=[])],
    )


async def new_thread(store: SqlStore, context: RequestContext) -> ThreadMetadata:
    thread = ThreadMetadata(id=new_thread_id(), created_at=datetime.now())
    await store.save_thread(thread, context)
    return thread


async def test_turn_calls_are_one_statement_each(
    engine: AsyncEngine, statements: Statements
) -> None:
    store = SqlStore(engine)
    context = turn_context(f"user-{uuid.uuid4().hex}")
    with pytest.raises(NotFoundError):  # the engine's first connection sets itself up
        await store.load_thread("thr_none", context)
    await statements.sent()
    thread = await new_thread(store, context)
    assert await statements.sent() == ["INSERT"]
    await store.add_thread_item(thread.id, message(thread.id, "one"), context)
    assert await statements.sent() == ["INSERT"]
    await store.load_thread(thread.id, context)
    assert await statements.sent() == ["SELECT"]
    history = await store.load_thread_items(thread.id, None, 20, "desc", context)
    assert await statements.sent() == ["SELECT"]
    # The SDK's read of the two newest items right after: answered from the turn.
    newest = await store.load_thread_items(thread.id, None, 2, "desc", context)
    assert await statements.sent() == []
    assert [item.id for item in newest.data] == [item.id for item in history.data[:2]]
    assert newest.has_more is False


async def test_a_write_makes_the_next_read_go_to_the_database(engine: AsyncEngine) -> None:
    store = SqlStore(engine)
    context = turn_context(f"user-{uuid.uuid4().hex}")
    thread = await new_thread(store, context)
    first = message(thread.id, "first")
    await store.add_thread_item(thread.id, first, context)
    await store.load_thread_items(thread.id, None, 20, "desc", context)
    second = message(thread.id, "second")
    await store.add_thread_item(thread.id, second, context)
    newest = await store.load_thread_items(thread.id, None, 2, "desc", context)
    assert [item.id for item in newest.data] == [second.id, first.id]
    # More items than were read: not answered from memory either.
    third = message(thread.id, "third")
    await store.add_thread_item(thread.id, third, context)
    await store.load_thread_items(thread.id, None, 1, "desc", context)
    page = await store.load_thread_items(thread.id, None, 3, "desc", context)
    assert [item.id for item in page.data] == [third.id, second.id, first.id]


async def test_an_item_goes_only_into_the_callers_own_thread(engine: AsyncEngine) -> None:
    store = SqlStore(engine)
    alice, bob = (turn_context(f"user-{uuid.uuid4().hex}") for _ in range(2))
    thread = await new_thread(store, alice)
    with pytest.raises(ThreadGoneError):
        await store.add_thread_item(thread.id, message(thread.id, "intruder"), bob)
    with pytest.raises(ThreadGoneError):
        await store.add_thread_item("thr_missing", message("thr_missing", "nowhere"), alice)
    page = await store.load_thread_items(thread.id, None, 10, "desc", alice)
    assert page.data == []


async def test_a_task_tool_call_is_two_statements(
    engine: AsyncEngine, statements: Statements
) -> None:
    """The quota's count and the tool's work: one statement each, no BEGIN/COMMIT around."""
    tasks = TaskRepository(engine)
    quota = CallQuota(engine, limit=100)
    user, other = (f"user-{uuid.uuid4().hex}" for _ in range(2))
    await tasks.list(user_id=user)  # the engine's first connection sets itself up
    await statements.sent()

    await quota.spend(user)  # a new window: counted, older windows forgotten, one statement
    assert await statements.sent() == ["WITH"]
    await quota.spend(user)
    assert await statements.sent() == ["WITH"]
    added = await tasks.add(user_id=user, title="one")  # number and row together
    assert await statements.sent() == ["WITH"]
    second = await tasks.add(user_id=user, title="two")
    assert await statements.sent() == ["WITH"]
    assert (added.id, second.id) == (1, 2)
    page = await tasks.page(user_id=user)
    assert await statements.sent() == ["SELECT"]
    assert page.tasks == [added, second]
    await tasks.complete(user_id=user, task_id=added.id)
    await tasks.complete(user_id=user, task_id=added.id)
    await tasks.update(user_id=user, task_id=added.id, title="renamed")
    assert await statements.sent() == ["UPDATE", "UPDATE", "UPDATE"]
    await tasks.delete(user_id=user, task_id=second.id)
    assert await statements.sent() == ["DELETE"]
    with pytest.raises(TaskNotFound):
        await tasks.complete(user_id=other, task_id=added.id)
    assert await statements.sent() == ["UPDATE"]


def restart(cluster: PostgresCluster) -> None:
    options = f"-p {cluster.port} -k {cluster.root} -c listen_addresses=127.0.0.1"
    command = [
        str(cluster.bindir / "pg_ctl"),
        *("-D", str(cluster.datadir), "-m", "fast", "-o", options),
        *("-l", str(cluster.root / "server.log"), "-w", "-t", "60", "restart"),
    ]
    if cluster.as_user:
        command = ["runuser", "-u", cluster.as_user, "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


async def test_pooled_connections_dropped_by_a_restart_cost_no_failure(
    own_cluster: PostgresCluster, database_url: str
) -> None:
    engine = create_engine(database_url, pool_size=3, max_overflow=0)
    store = SqlStore(engine)
    context = turn_context(f"user-{uuid.uuid4().hex}")
    try:
        thread = await new_thread(store, context)
        restart(own_cluster)
        # The pooled connection is dead: the write finds out, and goes through on a new one.
        await store.add_thread_item(thread.id, message(thread.id, "after"), context)
        loaded = await store.load_thread(thread.id, context)
        assert loaded.id == thread.id
    finally:
        await engine.dispose()


async def test_a_task_tool_call_after_a_restart_goes_through(
    own_cluster: PostgresCluster, database_url: str
) -> None:
    engine = create_engine(database_url, pool_size=3, max_overflow=0)
    tasks = TaskRepository(engine)
    quota = CallQuota(engine, limit=100)
    user = f"user-{uuid.uuid4().hex}"
    try:
        first = await tasks.add(user_id=user, title="before")
        restart(own_cluster)
        # The quota's count finds the pooled connection dead and counts on a new one.
        await quota.spend(user)
        second = await tasks.add(user_id=user, title="after")
        assert [task.id for task in await tasks.list(user_id=user)] == [first.id, second.id]
    finally:
        await engine.dispose()
