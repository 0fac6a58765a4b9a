"""Assertions and database probes shared by the security tests."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import httpx2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

ERROR_KEYS = {"type", "message", "status_code"}
# Every table that holds something of a user; each has a user_id column.
USER_TABLES = (
    "chat_threads",
    "chat_items",
    "chat_feedback",
    "chat_attachments",
    "chat_attachment_blobs",
    "todo_tasks",
)
_ORDER = {
    "chat_threads": "seq",
    "chat_items": "seq",
    "chat_feedback": "thread_id, item_id",
    "chat_attachments": "id",
    "chat_attachment_blobs": "attachment_id",
    "todo_tasks": "id",
}

RowSnapshot = dict[str, list[tuple[Any, ...]]]


def assert_json_error(response: httpx2.Response, statuses: Collection[int]) -> dict[str, Any]:
    """The response is one of `statuses` with the `{type, message, status_code}` JSON body."""
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, body
    assert body["status_code"] == response.status_code, body
    assert isinstance(body["type"], str) and body["type"], body
    assert isinstance(body["message"], str) and body["message"], body
    return body


async def count_rows(engine: AsyncEngine, user_id: str) -> dict[str, int]:
    """How many rows of each user table belong to `user_id` (one round trip)."""
    columns = ", ".join(
        f"(select count(*) from {table} where user_id = :u) as {table}" for table in USER_TABLES
    )
    async with engine.connect() as conn:
        row = (await conn.execute(text(f"select {columns}"), {"u": user_id})).one()
    return {table: int(value) for table, value in zip(USER_TABLES, row, strict=True)}


async def snapshot_rows(
    engine: AsyncEngine, user_id: str, thread_ids: Iterable[str] = ()
) -> RowSnapshot:
    """Every row of `user_id`, plus any row of anyone that points into `thread_ids`, in order."""
    threads = list(thread_ids)
    snapshot: RowSnapshot = {}
    async with engine.connect() as conn:
        for table in USER_TABLES:
            where = "user_id = :u"
            if threads and table in {"chat_threads"}:
                where += " or id = any(:t)"
            elif threads and table in {"chat_items", "chat_feedback", "chat_attachments"}:
                where += " or thread_id = any(:t)"
            result = await conn.execute(
                text(f"select * from {table} where {where} order by {_ORDER[table]}"),
                {"u": user_id, "t": threads},
            )
            snapshot[table] = [tuple(row) for row in result.all()]
    return snapshot
