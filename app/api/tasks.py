"""GET /api/tasks: the caller's tasks matching a text, for a page's @-mention search."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from app.api.deps import ChatServerDep
from app.auth.dependency import CurrentCaller
from app.logging import user_id_var

router = APIRouter()
MAX_QUERY_CHARS = 200
MAX_LIMIT = 100


class TaskEntry(BaseModel):
    """One task: its id (as the TODO service gives it), title and whether it is done."""

    id: int | str
    title: str
    completed: bool


class TaskSearchResult(BaseModel):
    """Matching tasks, in the order the TODO service lists them."""

    data: list[TaskEntry] = Field(description="At most `limit` tasks.")


@router.get(
    "/api/tasks",
    response_model=TaskSearchResult,
    tags=["tasks"],
    openapi_extra={"security": [{"bearer": []}]},
)
async def search_tasks(
    caller: CurrentCaller,
    server: ChatServerDep,
    query: Annotated[
        str, Query(max_length=MAX_QUERY_CHARS, description="Text the title contains (any case).")
    ] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many tasks.")] = 20,
) -> TaskSearchResult:
    """The caller's tasks whose title contains `query`, read through the TODO MCP server."""
    user_id_var.set(caller.user_id)
    tasks = await server.tasks.search(caller, query=query, limit=limit)
    return TaskSearchResult(
        data=[TaskEntry(id=task.id, title=task.title, completed=task.completed) for task in tasks]
    )
