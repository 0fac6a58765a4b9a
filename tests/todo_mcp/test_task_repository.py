"""The task repository's contract, on Postgres and on SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from app.store.database import create_engine
from app.store.tasks import (
    DESCRIPTION_MAX_CHARS,
    TITLE_MAX_CHARS,
    InvalidTask,
    TaskNotFound,
    TaskRepository,
)
from tests.todo_mcp.conftest import new_user


@pytest.fixture(params=["postgres", "sqlite"])
async def tasks(
    request: pytest.FixtureRequest, postgres_url: str, sqlite_url: str
) -> AsyncIterator[TaskRepository]:
    """The same repository on both databases (each migrated by alembic)."""
    engine = create_engine(postgres_url if request.param == "postgres" else sqlite_url)
    yield TaskRepository(engine)
    await engine.dispose()


async def test_add_then_list_returns_clean_records(tasks: TaskRepository) -> None:
    user = new_user()
    added = await tasks.add(user_id=user, title="  Buy milk  ", description="two litres")

    assert added.title == "Buy milk"
    assert added.description == "two litres"
    assert added.completed is False
    assert datetime.fromisoformat(added.created_at).utcoffset() == timedelta(0)
    assert added.updated_at == added.created_at
    assert await tasks.list(user_id=user) == [added]


async def test_status_filters_and_order(tasks: TaskRepository) -> None:
    user = new_user()
    first = await tasks.add(user_id=user, title="first")
    second = await tasks.add(user_id=user, title="second")
    third = await tasks.add(user_id=user, title="third")
    done = await tasks.complete(user_id=user, task_id=second.id)

    assert [t.id for t in await tasks.list(user_id=user)] == [first.id, second.id, third.id]
    assert [t.id for t in await tasks.list(user_id=user, status="open")] == [first.id, third.id]
    assert await tasks.list(user_id=user, status="completed") == [done]
    assert done.completed is True
    assert done.updated_at >= done.created_at


async def test_complete_twice_is_harmless(tasks: TaskRepository) -> None:
    user = new_user()
    task = await tasks.add(user_id=user, title="once")
    done = await tasks.complete(user_id=user, task_id=task.id)
    again = await tasks.complete(user_id=user, task_id=task.id)
    assert again == done


async def test_update_changes_only_what_is_given(tasks: TaskRepository) -> None:
    user = new_user()
    task = await tasks.add(user_id=user, title="draft", description="keep me")

    renamed = await tasks.update(user_id=user, task_id=task.id, title=" final ")
    assert (renamed.title, renamed.description) == ("final", "keep me")

    cleared = await tasks.update(user_id=user, task_id=task.id, description="")
    assert (cleared.title, cleared.description) == ("final", "")
    assert cleared.created_at == task.created_at

    with pytest.raises(InvalidTask):
        await tasks.update(user_id=user, task_id=task.id)


async def test_delete_returns_the_task_and_removes_it(tasks: TaskRepository) -> None:
    user = new_user()
    keep = await tasks.add(user_id=user, title="keep")
    gone = await tasks.add(user_id=user, title="gone")

    assert await tasks.delete(user_id=user, task_id=gone.id) == gone
    assert await tasks.list(user_id=user) == [keep]
    with pytest.raises(TaskNotFound):
        await tasks.delete(user_id=user, task_id=gone.id)


async def test_another_users_task_looks_like_an_unknown_one(tasks: TaskRepository) -> None:
    owner, intruder = new_user(), new_user()
    task = await tasks.add(user_id=owner, title="private", description="secret plans")

    assert await tasks.list(user_id=intruder) == []
    for attempt in (
        tasks.complete(user_id=intruder, task_id=task.id),
        tasks.update(user_id=intruder, task_id=task.id, title="pwned"),
        tasks.delete(user_id=intruder, task_id=task.id),
    ):
        with pytest.raises(TaskNotFound) as caught:
            await attempt
        assert caught.value.message == f"Task {task.id} not found."

    assert await tasks.list(user_id=owner) == [task]


@pytest.mark.parametrize("task_id", [0, -1, 2**31 + 7, 2**63, 2**80])
async def test_unknown_or_impossible_ids_are_not_found(tasks: TaskRepository, task_id: int) -> None:
    user = new_user()
    with pytest.raises(TaskNotFound):
        await tasks.complete(user_id=user, task_id=task_id)
    with pytest.raises(TaskNotFound):
        await tasks.update(user_id=user, task_id=task_id, title="x")
    with pytest.raises(TaskNotFound):
        await tasks.delete(user_id=user, task_id=task_id)


@pytest.mark.parametrize(
    ("title", "description"),
    [
        ("", ""),
        ("   \n\t", ""),
        ("x" * (TITLE_MAX_CHARS + 1), ""),
        ("nul\x00inside", ""),
        ("fine", "y" * (DESCRIPTION_MAX_CHARS + 1)),
        ("fine", "nul\x00inside"),
    ],
)
async def test_invalid_input_is_refused_and_nothing_is_stored(
    tasks: TaskRepository, title: str, description: str
) -> None:
    user = new_user()
    with pytest.raises(InvalidTask):
        await tasks.add(user_id=user, title=title, description=description)
    assert await tasks.list(user_id=user) == []


async def test_limits_are_inclusive(tasks: TaskRepository) -> None:
    user = new_user()
    title, description = "t" * TITLE_MAX_CHARS, "d" * DESCRIPTION_MAX_CHARS
    task = await tasks.add(user_id=user, title=title, description=description)
    assert (task.title, task.description) == (title, description)
    with pytest.raises(InvalidTask):
        await tasks.update(user_id=user, task_id=task.id, title=" ")
    assert await tasks.list(user_id=user) == [task]


async def test_concurrent_adds_of_one_user_get_distinct_consecutive_numbers(
    tasks: TaskRepository,
) -> None:
    user, other = new_user(), new_user()
    first = await tasks.add(user_id=user, title="first")
    added = await asyncio.gather(
        *(tasks.add(user_id=user, title=f"at once {n}") for n in range(12)),
        *(tasks.add(user_id=other, title=f"other {n}") for n in range(3)),
    )

    mine = [task.id for task in added[:12]]
    assert sorted(mine) == list(range(first.id + 1, first.id + 13))
    assert sorted(task.id for task in added[12:]) == [1, 2, 3]
    listed = await tasks.list(user_id=user)
    assert [task.id for task in listed] == [first.id, *sorted(mine)]


async def test_numbers_are_never_given_twice_even_after_a_delete(tasks: TaskRepository) -> None:
    user = new_user()
    one = await tasks.add(user_id=user, title="one")
    two = await tasks.add(user_id=user, title="two")
    await tasks.delete(user_id=user, task_id=two.id)
    three = await tasks.add(user_id=user, title="three")
    assert (one.id, two.id, three.id) == (1, 2, 3)
