"""What the store wrote, read straight from its tables (checks the app itself never needs)."""

from __future__ import annotations

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.tables import FeedbackRow, ItemRow

_items: Table = ItemRow.__table__  # type: ignore[attr-defined]
_feedback: Table = FeedbackRow.__table__  # type: ignore[attr-defined]


async def count_items(engine: AsyncEngine, thread_id: str, user_id: str) -> int:
    """How many items (hidden ones included) the user's thread holds."""
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).where(_items.c.thread_id == thread_id, _items.c.user_id == user_id)
        )
    return int(count or 0)


async def feedback_of(engine: AsyncEngine, thread_id: str, user_id: str) -> dict[str, str]:
    """The user's votes on items of one thread, by item id."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(_feedback.c.item_id, _feedback.c.kind).where(
                    _feedback.c.thread_id == thread_id, _feedback.c.user_id == user_id
                )
            )
        ).all()
    return {row.item_id: row.kind for row in rows}
