"""The TODO task repository: the only SQL for tasks, every query scoped to one user."""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.errors import BadRequestError, NotFoundError
from app.store.tables import TaskRow

TITLE_MAX_CHARS = 500
DESCRIPTION_MAX_CHARS = 5000
# Ids outside a signed 64-bit integer cannot exist; asking the driver for one would crash it.
_MAX_TASK_ID = 2**63 - 1

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


class Task(BaseModel):
    """One task as callers see it; timestamps are ISO 8601 in UTC."""

    model_config = ConfigDict(frozen=True)

    id: int = Field(description="The task's id.")
    title: str = Field(description="Short title.")
    description: str = Field(description="Details; may be empty.")
    completed: bool = Field(description="Whether the task is done.")
    created_at: str = Field(description="Creation time, ISO 8601 in UTC.")
    updated_at: str = Field(description="Last change, ISO 8601 in UTC.")


class TaskRepository:
    """Tasks of many users; each method is one short transaction scoped by `user_id`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def list(self, *, user_id: str, status: TaskStatus = "all") -> builtins.list[Task]:
        """The caller's tasks in creation order, optionally only open or completed ones."""
        statement = select(TaskRow).where(TaskRow.user_id == user_id)
        if status == "open":
            statement = statement.where(col(TaskRow.completed).is_(False))
        elif status == "completed":
            statement = statement.where(col(TaskRow.completed).is_(True))
        elif status != "all":
            raise InvalidTask("status must be one of: all, open, completed.")
        async with self._sessions.begin() as session:
            rows = (await session.exec(statement.order_by(col(TaskRow.id)))).all()
            return [_to_task(row) for row in rows]

    async def add(self, *, user_id: str, title: str, description: str = "") -> Task:
        """Create an open task for the caller."""
        clean_title = _valid_title(title)
        clean_description = _valid_description(description)
        now = _utcnow()
        row = TaskRow(
            user_id=user_id,
            title=clean_title,
            description=clean_description,
            completed=False,
            created_at=now,
            updated_at=now,
        )
        async with self._sessions.begin() as session:
            session.add(row)
            await session.flush()
            return _to_task(row)

    async def complete(self, *, user_id: str, task_id: int) -> Task:
        """Mark the caller's task completed (completing it again changes nothing)."""
        _check_id(task_id)
        async with self._sessions.begin() as session:
            result = await session.exec(
                update(TaskRow)
                .where(col(TaskRow.id) == task_id, col(TaskRow.user_id) == user_id)
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
                .where(col(TaskRow.id) == task_id, col(TaskRow.user_id) == user_id)
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
                .where(col(TaskRow.id) == task_id, col(TaskRow.user_id) == user_id)
                .returning(TaskRow)
            )
            row = result.scalars().one_or_none()
            if row is None:
                raise TaskNotFound(task_id)
            return _to_task(row)


async def _owned_row(session: AsyncSession, *, user_id: str, task_id: int) -> TaskRow:
    statement = select(TaskRow).where(TaskRow.id == task_id, TaskRow.user_id == user_id)
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
    assert row.id is not None
    return Task(
        id=row.id,
        title=row.title,
        description=row.description,
        completed=row.completed,
        created_at=_iso(row.created_at),
        updated_at=_iso(row.updated_at),
    )
