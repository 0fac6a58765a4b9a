"""The TODO task repository: the only SQL for tasks, every query scoped to one user.

A task's id is its number among its owner's tasks (1, 2, 3, ...): it reveals nothing about
other users, and a number is never given twice, so an id in an old message never names a newer
task. Tool calls are counted per user in fixed windows shared by every process.

Every method is one statement on Postgres (adding a task too: its number and its row in one
statement); on SQLite adding a task is a short transaction of two.
"""

from __future__ import annotations

import builtins
import math
import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    BigInteger,
    Executable,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    case,
    delete,
    false,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.database import autocommit, once_more_if_disconnected
from app.store.sql import Insert, insert_for, is_postgres, utcnow
from app.store.tables import TaskCounterRow, TaskRow
from app.store.usage import WindowCounts

TITLE_MAX_CHARS = 500
DESCRIPTION_MAX_CHARS = 5000
MAX_PAGE_SIZE = 100
# Ids outside a signed 64-bit integer cannot exist; asking the driver for one would crash it.
_MAX_TASK_ID = 2**63 - 1
CALLS_WINDOW_KIND = "todo_mcp_calls"

_tasks: Table = TaskRow.__table__  # type: ignore[attr-defined]
_counters: Table = TaskCounterRow.__table__  # type: ignore[attr-defined]

TaskStatus = Literal["all", "open", "completed"]


class TaskError(Exception):
    """A task request the repository refuses; `message` says why, in words for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TaskNotFound(TaskError):
    """No task with this id belongs to the caller (unknown and foreign ids look the same)."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"Task {task_id} not found.")
        self.task_id = task_id


class InvalidTask(TaskError):
    """A title, description or filter breaks the rules; the message says which."""


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


# What every statement returns of a task. Bound parameter names differ from column names
# (SQLAlchemy keeps those for the VALUES / SET of inserts and updates).
_RETURNED = (
    _tasks.c.number,
    _tasks.c.title,
    _tasks.c.description,
    _tasks.c.completed,
    _tasks.c.created_at,
    _tasks.c.updated_at,
)
_NO_LIMIT = _MAX_TASK_ID


class _Statements:
    """The repository's statements, built once per engine with bound parameters."""

    def __init__(self, insert: Insert, *, postgres: bool) -> None:
        listed = select(*_RETURNED).where(
            _tasks.c.user_id == bindparam("owner"), _tasks.c.number > bindparam("after")
        )
        listed = listed.order_by(_tasks.c.number).limit(bindparam("limit", type_=BigInteger()))
        self.list: dict[str, Select[Any]] = {
            "all": listed,
            "open": listed.where(_tasks.c.completed.is_(False)),
            "completed": listed.where(_tasks.c.completed.is_(True)),
        }
        owned = and_(
            _tasks.c.user_id == bindparam("owner"), _tasks.c.number == bindparam("task_id")
        )
        # Completing again changes nothing, `updated_at` included: one statement either way.
        self.complete: Executable = (
            update(_tasks)
            .where(owned)
            .values(
                completed=True,
                updated_at=case((_tasks.c.completed, _tasks.c.updated_at), else_=bindparam("now")),
            )
            .returning(*_RETURNED)
        )
        changed = update(_tasks).where(owned).returning(*_RETURNED)
        self.update: dict[tuple[bool, bool], Executable] = {
            (True, False): changed.values(
                title=bindparam("new_title"), updated_at=bindparam("now")
            ),
            (False, True): changed.values(
                description=bindparam("new_description"), updated_at=bindparam("now")
            ),
            (True, True): changed.values(
                title=bindparam("new_title"),
                description=bindparam("new_description"),
                updated_at=bindparam("now"),
            ),
        }
        self.delete: Executable = delete(_tasks).where(owned).returning(*_RETURNED)
        # The owner's counter row: created at 1, else bumped. Its row lock, held until the
        # statement's transaction ends, makes one user's concurrent adds take turns.
        counter = insert(_counters).values(user_id=bindparam("owner"), last_number=1)
        self.next_number: Any = counter.on_conflict_do_update(
            index_elements=[_counters.c.user_id],
            set_={"last_number": _counters.c.last_number + 1},
        ).returning(_counters.c.last_number)
        self.insert_task: Executable = (
            insert(_tasks)
            .values(
                user_id=bindparam("owner"),
                number=bindparam("task_number"),
                title=bindparam("new_title"),
                description=bindparam("new_description"),
                completed=False,
                created_at=bindparam("now"),
                updated_at=bindparam("now"),
            )
            .returning(*_RETURNED)
        )
        # Postgres: the number and the row in one statement (a data-modifying CTE).
        self.add: Executable | None = None
        if postgres:
            numbered = self.next_number.cte("numbered")
            row = select(
                bindparam("owner", type_=_tasks.c.user_id.type),
                numbered.c.last_number,
                bindparam("new_title", type_=_tasks.c.title.type),
                bindparam("new_description", type_=_tasks.c.description.type),
                false(),
                bindparam("now", type_=_tasks.c.created_at.type),
                bindparam("now", type_=_tasks.c.updated_at.type),
            )
            columns = ["user_id", "number", "title", "description", "completed"]
            self.add = (
                insert(_tasks)
                .from_select([*columns, "created_at", "updated_at"], row)
                .returning(*_RETURNED)
            )


class TaskRepository:
    """Tasks of many users; each method is one unit of work scoped by `user_id`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # One statement needs no BEGIN/COMMIT around it (except behind a transaction pooler).
        self._autocommit = autocommit(engine)
        self._statements = _Statements(insert_for(engine), postgres=is_postgres(engine))

    async def list(
        self,
        *,
        user_id: str,
        status: TaskStatus = "all",
        after: int = 0,
        limit: int | None = None,
    ) -> builtins.list[Task]:
        """The caller's tasks in creation order with an id above `after`, at most `limit`."""
        statement = self._statements.list.get(status)
        if statement is None:
            raise InvalidTask("status must be one of: all, open, completed.")
        values = {
            "owner": user_id,
            "after": after,
            "limit": _NO_LIMIT if limit is None else limit,
        }

        async def read() -> builtins.list[Task]:
            async with self._autocommit.connect() as conn:
                return [_to_task(row) for row in await conn.execute(statement, values)]

        return await once_more_if_disconnected(read)

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
        values: dict[str, Any] = {
            "owner": user_id,
            "new_title": _valid_title(title),
            "new_description": _valid_description(description),
            "now": utcnow(),
        }
        # Not repeated on a dropped connection: the task may have been added already.
        if self._statements.add is not None:
            async with self._autocommit.begin() as conn:
                return _to_task((await conn.execute(self._statements.add, values)).one())
        async with self._engine.begin() as conn:
            number = (await conn.execute(self._statements.next_number, values)).scalar_one()
            values["task_number"] = number
            return _to_task((await conn.execute(self._statements.insert_task, values)).one())

    async def complete(self, *, user_id: str, task_id: int) -> Task:
        """Mark the caller's task completed (completing it again changes nothing)."""
        _check_id(task_id)
        values = {"owner": user_id, "task_id": task_id, "now": utcnow()}
        return await self._one(self._statements.complete, values, task_id, repeatable=True)

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
        if title is None and description is None:
            raise InvalidTask("Give a new title or a new description (or both).")
        values: dict[str, Any] = {"owner": user_id, "task_id": task_id, "now": utcnow()}
        if title is not None:
            values["new_title"] = _valid_title(title)
        if description is not None:
            values["new_description"] = _valid_description(description)
        statement = self._statements.update[(title is not None, description is not None)]
        return await self._one(statement, values, task_id, repeatable=True)

    async def delete(self, *, user_id: str, task_id: int) -> Task:
        """Delete the caller's task and return it as it was."""
        _check_id(task_id)
        values = {"owner": user_id, "task_id": task_id}
        return await self._one(self._statements.delete, values, task_id, repeatable=False)

    async def _one(
        self, statement: Executable, values: dict[str, Any], task_id: int, *, repeatable: bool
    ) -> Task:
        """Run a one-task write; no row means the caller has no such task."""

        async def write() -> Row[Any] | None:
            async with self._autocommit.begin() as conn:
                return (await conn.execute(statement, values)).one_or_none()

        row = await (once_more_if_disconnected(write) if repeatable else write())
        if row is None:
            raise TaskNotFound(task_id)
        return _to_task(row)


class CallQuota:
    """At most `limit` tool calls per user in each fixed window of `window_seconds`.

    The count lives in `usage_windows` (kind `todo_mcp_calls`), so every process sees it; a
    call is counted in one statement. A `limit` of 0 turns the quota off.
    """

    def __init__(self, engine: AsyncEngine, *, limit: int, window_seconds: int = 60) -> None:
        if limit < 0 or window_seconds < 1:
            raise ValueError("limit must be >= 0 and window_seconds >= 1")
        self._counts = WindowCounts(engine)
        self.limit = limit
        self.window_seconds = window_seconds

    async def spend(self, user_id: str) -> None:
        """Count one call of `user_id`; raise TooManyCalls once the window holds `limit`."""
        if not self.limit:
            return
        now = time.time()
        window_start = int(now // self.window_seconds) * self.window_seconds
        count = await self._counts.add_one(
            user_id=user_id, kind=CALLS_WINDOW_KIND, window_start=window_start
        )
        if count > self.limit:
            raise TooManyCalls(
                limit=self.limit,
                window_seconds=self.window_seconds,
                retry_after=max(1, math.ceil(window_start + self.window_seconds - now)),
            )


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


def _iso(value: datetime) -> str:
    return value.replace(tzinfo=UTC).isoformat()


def _to_task(row: Row[Any]) -> Task:
    return Task(
        id=row.number,
        title=row.title,
        description=row.description,
        completed=row.completed,
        created_at=_iso(row.created_at),
        updated_at=_iso(row.updated_at),
    )
