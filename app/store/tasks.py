"""The TODO task repository: the only SQL for tasks, every query scoped to one user.

A task's id is its number among its owner's tasks (1, 2, 3, ...): it reveals nothing about
other users, and a number is never given twice, so an id in an old message never names a newer
task. Tool calls are counted per user in fixed windows shared by every process.
"""

from __future__ import annotations

import builtins
import math
import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Table, delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.errors import BadRequestError, NotFoundError
from app.store.tables import TaskCounterRow, TaskRow, UsageWindowRow

TITLE_MAX_CHARS = 500
DESCRIPTION_MAX_CHARS = 5000
MAX_PAGE_SIZE = 100
# Ids outside a signed 64-bit integer cannot exist; asking the driver for one would crash it.
_MAX_TASK_ID = 2**63 - 1
CALLS_WINDOW_KIND = "todo_mcp_calls"

_counters: Table = TaskCounterRow.__table__  # type: ignore[attr-defined]
_windows: Table = UsageWindowRow.__table__  # type: ignore[attr-defined]

TaskStatus = Literal["all", "open", "completed"]


class TaskNotFound(NotFoundError):
    """No task with this id belongs to the caller (unknown and foreign ids look the same)."""

    type = "task_not_found"

    def __init__(self, task_id: int) -> None:
        super().__init__(f"Task {task_id} not found.")
        self.task_id = task_id


class InvalidTask(BadRequestError):
    """A title or description breaks the rules; the message says which."""

    type = "invalid_task"


class TooManyCalls(Exception):
    """The user made `limit` tool calls in the current window; `retry_after` seconds to wait."""

    def __init__(self, *, limit: int, window_seconds: int, retry_after: int) -> None:
        super().__init__(f"at most {limit} calls per {window_seconds} s")
        self.limit = limit
        self.window_seconds = window_seconds
        self.retry_after = retry_after


class Task(BaseModel):
    """One task as callers see it; timestamps are ISO 8601 in UTC."""

    model_config = ConfigDict(frozen=True)

    id: int = Field(description="The task's id among the user's tasks (1, 2, 3, ...).")
    title: str = Field(description="Short title.")
    description: str = Field(description="Details; may be empty.")
    completed: bool = Field(description="Whether the task is done.")
    created_at: str = Field(description="Creation time, ISO 8601 in UTC.")
    updated_at: str = Field(description="Last change, ISO 8601 in UTC.")


class TaskPage(BaseModel):
    """Some of the caller's tasks, and whether more follow the last one."""

    model_config = ConfigDict(frozen=True)

    tasks: builtins.list[Task]
    has_more: bool


class TaskRepository:
    """Tasks of many users; each method is one short transaction scoped by `user_id`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def list(
        self,
        *,
        user_id: str,
        status: TaskStatus = "all",
        after: int = 0,
        limit: int | None = None,
    ) -> builtins.list[Task]:
        """The caller's tasks in creation order with an id above `after`, at most `limit`."""
        statement = select(TaskRow).where(TaskRow.user_id == user_id, TaskRow.number > after)
        if status == "open":
            statement = statement.where(col(TaskRow.completed).is_(False))
        elif status == "completed":
            statement = statement.where(col(TaskRow.completed).is_(True))
        elif status != "all":
            raise InvalidTask("status must be one of: all, open, completed.")
        statement = statement.order_by(col(TaskRow.number))
        if limit is not None:
            statement = statement.limit(limit)
        async with self._sessions.begin() as session:
            rows = (await session.exec(statement)).all()
            return [_to_task(row) for row in rows]

    async def page(
        self,
        *,
        user_id: str,
        status: TaskStatus = "all",
        after: int = 0,
        limit: int = MAX_PAGE_SIZE,
    ) -> TaskPage:
        """Up to `limit` (1..MAX_PAGE_SIZE) of the caller's tasks after task `after`."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidTask(f"limit must be between 1 and {MAX_PAGE_SIZE}.")
        found = await self.list(
            user_id=user_id, status=status, after=min(max(after, 0), _MAX_TASK_ID), limit=limit + 1
        )
        return TaskPage(tasks=found[:limit], has_more=len(found) > limit)

    async def add(self, *, user_id: str, title: str, description: str = "") -> Task:
        """Create an open task for the caller, numbered after the last one they ever had."""
        clean_title = _valid_title(title)
        clean_description = _valid_description(description)
        now = _utcnow()
        async with self._sessions.begin() as session:
            # The counter row stays locked until commit: one user's adds take turns.
            number = await _next_number(session, user_id)
            row = TaskRow(
                user_id=user_id,
                number=number,
                title=clean_title,
                description=clean_description,
                completed=False,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            await session.flush()
            return _to_task(row)

    async def complete(self, *, user_id: str, task_id: int) -> Task:
        """Mark the caller's task completed (completing it again changes nothing)."""
        _check_id(task_id)
        async with self._sessions.begin() as session:
            result = await session.exec(
                update(TaskRow)
                .where(col(TaskRow.number) == task_id, col(TaskRow.user_id) == user_id)
                .where(col(TaskRow.completed).is_(False))
                .values(completed=True, updated_at=_utcnow())
                .returning(TaskRow)
            )
            row = result.scalars().one_or_none()
            if row is None:
                # Either it is already completed, or it is not the caller's: tell which.
                row = await _owned_row(session, user_id=user_id, task_id=task_id)
            return _to_task(row)

    async def update(
        self,
        *,
        user_id: str,
        task_id: int,
        title: str | None = None,
        description: str | None = None,
    ) -> Task:
        """Change the title and/or description of the caller's task."""
        _check_id(task_id)
        values: dict[str, object] = {}
        if title is not None:
            values["title"] = _valid_title(title)
        if description is not None:
            values["description"] = _valid_description(description)
        if not values:
            raise InvalidTask("Give a new title or a new description (or both).")
        values["updated_at"] = _utcnow()
        async with self._sessions.begin() as session:
            result = await session.exec(
                update(TaskRow)
                .where(col(TaskRow.number) == task_id, col(TaskRow.user_id) == user_id)
                .values(**values)
                .returning(TaskRow)
            )
            row = result.scalars().one_or_none()
            if row is None:
                raise TaskNotFound(task_id)
            return _to_task(row)

    async def delete(self, *, user_id: str, task_id: int) -> Task:
        """Delete the caller's task and return it as it was."""
        _check_id(task_id)
        async with self._sessions.begin() as session:
            result = await session.exec(
                delete(TaskRow)
                .where(col(TaskRow.number) == task_id, col(TaskRow.user_id) == user_id)
                .returning(TaskRow)
            )
            row = result.scalars().one_or_none()
            if row is None:
                raise TaskNotFound(task_id)
            return _to_task(row)


class CallQuota:
    """At most `limit` tool calls per user in each fixed window of `window_seconds`.

    The count lives in `usage_windows` (kind `todo_mcp_calls`), so every process sees it.
    A `limit` of 0 turns the quota off.
    """

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, limit: int, window_seconds: int = 60
    ) -> None:
        if limit < 0 or window_seconds < 1:
            raise ValueError("limit must be >= 0 and window_seconds >= 1")
        self._sessions = sessions
        self.limit = limit
        self.window_seconds = window_seconds

    async def spend(self, user_id: str) -> None:
        """Count one call of `user_id`; raise TooManyCalls once the window holds `limit`."""
        if not self.limit:
            return
        now = time.time()
        window_start = int(now // self.window_seconds) * self.window_seconds
        async with self._sessions.begin() as session:
            insert = _dialect_insert(session)
            statement = insert(_windows).values(
                user_id=user_id, kind=CALLS_WINDOW_KIND, window_start=window_start, count=1
            )
            statement = statement.on_conflict_do_update(
                index_elements=[_windows.c.user_id, _windows.c.kind, _windows.c.window_start],
                set_={"count": _windows.c.count + 1},
            ).returning(_windows.c.count)
            count = int((await session.exec(statement)).scalar_one())
            if count == 1:  # a new window: the user's older ones are over
                await session.exec(
                    delete(_windows).where(
                        _windows.c.user_id == user_id,
                        _windows.c.kind == CALLS_WINDOW_KIND,
                        _windows.c.window_start < window_start,
                    )
                )
        if count > self.limit:
            raise TooManyCalls(
                limit=self.limit,
                window_seconds=self.window_seconds,
                retry_after=max(1, math.ceil(window_start + self.window_seconds - now)),
            )


def _dialect_insert(session: AsyncSession) -> Any:
    assert session.bind is not None
    return (postgresql if session.bind.dialect.name == "postgresql" else sqlite).insert


async def _next_number(session: AsyncSession, user_id: str) -> int:
    statement = _dialect_insert(session)(_counters).values(user_id=user_id, last_number=1)
    statement = statement.on_conflict_do_update(
        index_elements=[_counters.c.user_id],
        set_={"last_number": _counters.c.last_number + 1},
    ).returning(_counters.c.last_number)
    return int((await session.exec(statement)).scalar_one())


async def _owned_row(session: AsyncSession, *, user_id: str, task_id: int) -> TaskRow:
    statement = select(TaskRow).where(TaskRow.number == task_id, TaskRow.user_id == user_id)
    row = (await session.exec(statement)).one_or_none()
    if row is None:
        raise TaskNotFound(task_id)
    return row


def _valid_title(title: str) -> str:
    clean = title.strip()
    if "\x00" in clean:
        raise InvalidTask("The title must not contain NUL characters.")
    if not clean:
        raise InvalidTask("The title must not be empty.")
    if len(clean) > TITLE_MAX_CHARS:
        raise InvalidTask(f"The title must be at most {TITLE_MAX_CHARS} characters.")
    return clean


def _valid_description(description: str) -> str:
    # Postgres text cannot hold NUL; refuse it everywhere so both databases agree.
    if "\x00" in description:
        raise InvalidTask("The description must not contain NUL characters.")
    if len(description) > DESCRIPTION_MAX_CHARS:
        raise InvalidTask(f"The description must be at most {DESCRIPTION_MAX_CHARS} characters.")
    return description


def _check_id(task_id: int) -> None:
    if not 1 <= task_id <= _MAX_TASK_ID:
        raise TaskNotFound(task_id)


def _utcnow() -> datetime:
    # Columns are naive UTC (see tables.py).
    return datetime.now(UTC).replace(tzinfo=None)


def _iso(value: datetime) -> str:
    return value.replace(tzinfo=UTC).isoformat()


def _to_task(row: TaskRow) -> Task:
    return Task(
        id=row.number,
        title=row.title,
        description=row.description,
        completed=row.completed,
        created_at=_iso(row.created_at),
        updated_at=_iso(row.updated_at),
    )
