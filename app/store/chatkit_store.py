"""The ChatKit Store on SQL: every query scoped to the caller's user id.

Times: the SDK makes naive `datetime.now()` values, the local time of the process. The store
keeps UTC (naive UTC columns, `+00:00` in the JSON) and hands every time back as the naive local
time of the process reading it, so processes in different time zones agree on order and the SDK's
own arithmetic (`datetime.now() - created_at`) stays right. A row's `created_at` column is the
source of truth for its time; the rest of what is returned comes from its JSON.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from chatkit.errors import CustomStreamError
from chatkit.store import (
    AttachmentStore,
    NotFoundError,
    Store,
    StoreItemType,
    default_generate_id,
)
from chatkit.types import (
    Attachment,
    AttachmentCreateParams,
    FeedbackKind,
    Page,
    ThreadItem,
    ThreadMetadata,
    UserMessageItem,
)
from pydantic import TypeAdapter
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Executable,
    Integer,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    or_,
    select,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.context import RequestContext
from app.db_errors import DatabaseFailure, database_failure_message, sqlstate_of
from app.store.database import autocommit, once_more_if_disconnected
from app.store.sql import Insert, insert_for, utcnow
from app.store.tables import AttachmentRow, FeedbackRow, ItemRow, ThreadRow

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 100
SAVE_FAILED_MESSAGE = "Your conversation could not be saved. Please try again."
THREAD_GONE_MESSAGE = "This conversation was deleted, so the answer was not saved."


class StoreWriteError(DatabaseFailure, CustomStreamError):
    """Saving into a thread failed; mid-turn the SDK shows `message` as the stream's error event."""

    def __init__(self, message: str, *, unavailable: bool, sqlstate: str | None) -> None:
        CustomStreamError.__init__(self, message, allow_retry=True)
        self.unavailable = unavailable
        self.sqlstate = sqlstate

    def __str__(self) -> str:
        return f"{self.message} (sqlstate {self.sqlstate or '-'})"


class ThreadGoneError(NotFoundError, CustomStreamError):
    """The thread is not the caller's (or was deleted mid-turn) while saving into it."""

    def __init__(self, thread_id: str) -> None:
        NotFoundError.__init__(self, f"Thread {thread_id} not found")
        self.message = THREAD_GONE_MESSAGE
        self.allow_retry = False


_threads: Table = ThreadRow.__table__  # type: ignore[attr-defined]
_items: Table = ItemRow.__table__  # type: ignore[attr-defined]
_attachments: Table = AttachmentRow.__table__  # type: ignore[attr-defined]
_feedback: Table = FeedbackRow.__table__  # type: ignore[attr-defined]

_item_adapter: TypeAdapter[ThreadItem] = TypeAdapter(ThreadItem)
_attachment_adapter: TypeAdapter[Attachment] = TypeAdapter(Attachment)


def new_id(prefix: str) -> str:
    """A 128-bit random id: collisions are not a practical concern at any table size."""
    return f"{prefix}_{uuid.uuid4().hex}"


def new_item_id(item_type: StoreItemType) -> str:
    """The SDK's prefix for `item_type` (from its public generator) on a 128-bit id."""
    return new_id(default_generate_id(item_type).rsplit("_", 1)[0])


DEFAULT_PAGE_SIZE = 20


def clamp_limit(limit: int | None) -> int:
    """Keep a client's page size within 1..MAX_PAGE_SIZE."""
    if limit is None:
        return DEFAULT_PAGE_SIZE
    return max(1, min(limit, MAX_PAGE_SIZE))


def _known_ids(*ids: str | None) -> None:
    """Ids come from clients: one with a NUL can match no row (and Postgres refuses NUL)."""
    for value in ids:
        if value is not None and "\x00" in value:
            raise NotFoundError("Not found")


def _column_time(value: datetime) -> datetime:
    """Naive UTC for a column; a naive value is the local time of this process (the SDK's)."""
    return value.astimezone(UTC).replace(tzinfo=None)


def _local_time(column_value: datetime) -> datetime:
    """A naive UTC column value as the naive local time of this process, as the SDK expects."""
    return column_value.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)


def _thread_json(thread: ThreadMetadata, created_at: datetime) -> str:
    # A `Thread` may arrive carrying its items: only the metadata fields are stored.
    fields = {name: getattr(thread, name) for name in ThreadMetadata.model_fields}
    fields["created_at"] = created_at.replace(tzinfo=UTC)
    return ThreadMetadata(**fields).model_dump_json()


def _item_json(item: ThreadItem, created_at: datetime) -> str:
    return item.model_copy(update={"created_at": created_at.replace(tzinfo=UTC)}).model_dump_json()


def _thread_from_row(data: str, created_at: datetime) -> ThreadMetadata:
    thread = ThreadMetadata.model_validate_json(data)
    thread.created_at = _local_time(created_at)
    return thread


def _item_from_row(data: str, created_at: datetime) -> ThreadItem:
    item = _item_adapter.validate_json(data)
    item.created_at = _local_time(created_at)
    return item


def _write_failed(operation: str, exc: SQLAlchemyError) -> StoreWriteError:
    """The error to raise instead of `exc`, whose text may quote the user's data; logged here."""
    sqlstate = sqlstate_of(exc)
    logger.warning(
        "store.write_failed",
        extra={"operation": operation, "error": type(exc).__name__, "sqlstate": sqlstate},
    )
    unavailable_message = database_failure_message(exc)
    return StoreWriteError(
        unavailable_message or SAVE_FAILED_MESSAGE,
        unavailable=unavailable_message is not None,
        sqlstate=sqlstate,
    )


def _after_clause(table: Table, created_at: datetime, seq: int, order: str) -> ColumnElement[bool]:
    if order == "desc":
        return or_(
            table.c.created_at < created_at,
            and_(table.c.created_at == created_at, table.c.seq < seq),
        )
    return or_(
        table.c.created_at > created_at,
        and_(table.c.created_at == created_at, table.c.seq > seq),
    )


def _order_by(table: Table, order: str) -> list[Any]:
    if order == "desc":
        return [table.c.created_at.desc(), table.c.seq.desc()]
    return [table.c.created_at.asc(), table.c.seq.asc()]


def new_thread_id() -> str:
    return new_item_id("thread")


class _HotStatements:
    """The statements every turn runs, built once with bound parameters: no statement objects
    and cache keys to make on each call (half a millisecond each, several per turn)."""

    def __init__(self, insert: Insert) -> None:
        thread = insert(_threads).values(
            id=bindparam("id"),
            user_id=bindparam("user_id"),
            created_at=bindparam("created_at"),
            updated_at=bindparam("updated_at"),
            data=bindparam("data"),
        )
        self.save_thread: Executable = thread.on_conflict_do_update(
            index_elements=[_threads.c.id],
            set_={"data": thread.excluded.data, "updated_at": thread.excluded.updated_at},
            # An id that belongs to another user is not touched (no row: ThreadGoneError).
            where=_threads.c.user_id == thread.excluded.user_id,
        )
        self.load_thread: Executable = select(_threads.c.data, _threads.c.created_at).where(
            _threads.c.id == bindparam("id"), _threads.c.user_id == bindparam("user_id")
        )
        # Written only into a thread of the caller's (checked in the same statement); the same
        # id again (client tool output, workflows, retries) replaces the JSON in place.
        names = ("id", "thread_id", "user_id", "type", "created_at", "data")
        owned_thread = exists().where(
            _threads.c.id == bindparam("thread_id"), _threads.c.user_id == bindparam("user_id")
        )
        item_row = select(*(bindparam(name, type_=_items.c[name].type) for name in names))
        item = insert(_items).from_select(list(names), item_row.where(owned_thread))
        self.upsert_item: Executable = item.on_conflict_do_update(
            index_elements=[_items.c.thread_id, _items.c.id],
            set_={"data": item.excluded.data, "type": item.excluded.type},
            where=_items.c.user_id == item.excluded.user_id,
        )
        owned_items = select(_items.c.id, _items.c.data, _items.c.created_at).where(
            _items.c.thread_id == bindparam("thread_id"),
            _items.c.user_id == bindparam("user_id"),
        )
        limit = bindparam("limit", type_=Integer())
        self.newest_items: Executable = owned_items.order_by(*_order_by(_items, "desc")).limit(
            limit
        )
        self.oldest_items: Executable = owned_items.order_by(*_order_by(_items, "asc")).limit(limit)


# How a stored attachment is shown to its owner (e.g. a fresh signed preview link).
AttachmentView = Callable[[Attachment, RequestContext], Awaitable[Attachment]]


class SqlStore(Store[RequestContext], AttachmentStore[RequestContext]):
    """ChatKit Store on Postgres or SQLite; a short transaction per method."""

    def __init__(
        self, engine: AsyncEngine, *, attachment_view: AttachmentView | None = None
    ) -> None:
        self._engine = engine
        # Reads and one-statement writes run outside a transaction: no BEGIN/COMMIT (or
        # ROLLBACK) round trips around them. Work of several statements uses `_engine.begin()`.
        self._autocommit = autocommit(engine)
        self._insert = insert_for(engine)
        self._attachment_view = attachment_view
        self._hot = _HotStatements(self._insert)

    async def _present(self, item: ThreadItem, context: RequestContext) -> ThreadItem:
        """A loaded item as its owner sees it: attachments through the attachment view."""
        if self._attachment_view is None or not isinstance(item, UserMessageItem):
            return item
        if not item.attachments:
            return item
        item.attachments = [
            await self._attachment_view(attachment, context) for attachment in item.attachments
        ]
        return item

    @asynccontextmanager
    async def _writing(self, operation: str) -> AsyncIterator[AsyncConnection]:
        """One write transaction; a database failure leaves as StoreWriteError, values unlogged."""
        try:
            async with self._engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise _write_failed(operation, exc) from None

    async def _write_one(
        self, operation: str, statement: Executable, values: dict[str, Any] | None = None
    ) -> CursorResult[Any]:
        """One write statement on its own (atomic by itself); failures as in `_writing`."""

        async def run() -> CursorResult[Any]:
            async with self._autocommit.begin() as conn:
                return await conn.execute(statement, values)

        try:
            return await once_more_if_disconnected(run)
        except SQLAlchemyError as exc:
            raise _write_failed(operation, exc) from None

    # ids ---------------------------------------------------------------------------------
    def generate_thread_id(self, context: RequestContext) -> str:
        return context.new_thread_id or new_thread_id()

    def generate_item_id(
        self, item_type: StoreItemType, thread: ThreadMetadata, context: RequestContext
    ) -> str:
        return new_item_id(item_type)

    def generate_attachment_id(self, mime_type: str, context: RequestContext) -> str:
        return new_item_id("attachment")

    # threads -----------------------------------------------------------------------------
    async def load_thread(self, thread_id: str, context: RequestContext) -> ThreadMetadata:
        _known_ids(thread_id)
        async with self._autocommit.connect() as conn:
            row = (
                await conn.execute(
                    self._hot.load_thread, {"id": thread_id, "user_id": context.user_id}
                )
            ).first()
        if row is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        return _thread_from_row(row.data, row.created_at)

    async def save_thread(self, thread: ThreadMetadata, context: RequestContext) -> None:
        _known_ids(thread.id)
        now = utcnow()
        created_at = _column_time(thread.created_at)
        values = {
            "id": thread.id,
            "user_id": context.user_id,
            "created_at": created_at,
            "updated_at": now,
            "data": _thread_json(thread, created_at),
        }
        result = await self._write_one("save_thread", self._hot.save_thread, values)
        if result.rowcount == 0:  # the id belongs to another user
            raise ThreadGoneError(thread.id)

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: RequestContext
    ) -> Page[ThreadMetadata]:
        owned = _threads.c.user_id == context.user_id
        rows, has_more = await self._page_rows(_threads, owned, after, limit, order, "Thread")
        return Page(
            data=[_thread_from_row(row.data, row.created_at) for row in rows],
            has_more=has_more,
            after=rows[-1].id if has_more and rows else None,
        )

    async def delete_thread(self, thread_id: str, context: RequestContext) -> None:
        _known_ids(thread_id)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(_threads).where(
                    _threads.c.id == thread_id, _threads.c.user_id == context.user_id
                )
            )
            if result.rowcount == 0:
                raise NotFoundError(f"Thread {thread_id} not found")
            # Items go by the foreign key's cascade; this also covers a database without it.
            await conn.execute(
                delete(_items).where(
                    _items.c.thread_id == thread_id, _items.c.user_id == context.user_id
                )
            )
            await conn.execute(
                delete(_attachments).where(
                    _attachments.c.thread_id == thread_id,
                    _attachments.c.user_id == context.user_id,
                )
            )

    # items -------------------------------------------------------------------------------
    async def load_thread_items(
        self,
        thread_id: str,
        after: str | None,
        limit: int,
        order: str,
        context: RequestContext,
    ) -> Page[ThreadItem]:
        _known_ids(thread_id)
        recent = context.recent_items if after is None and order == "desc" else None
        known = recent.newest(thread_id, clamp_limit(limit)) if recent is not None else None
        if recent is not None and known is not None:
            more = len(recent.items) > len(known) or not recent.complete
            return Page(data=known, has_more=more, after=known[-1].id if more and known else None)
        if after is None:  # a turn's history, the newest items of a page
            async with self._autocommit.connect() as conn:
                found = (
                    await conn.execute(
                        self._hot.newest_items if order == "desc" else self._hot.oldest_items,
                        {
                            "thread_id": thread_id,
                            "user_id": context.user_id,
                            "limit": clamp_limit(limit) + 1,
                        },
                    )
                ).all()
            rows, has_more = found[: clamp_limit(limit)], len(found) > clamp_limit(limit)
        else:
            owned = and_(_items.c.thread_id == thread_id, _items.c.user_id == context.user_id)
            rows, has_more = await self._page_rows(_items, owned, after, limit, order, "Item")
        page: Page[ThreadItem] = Page(
            data=[
                await self._present(_item_from_row(row.data, row.created_at), context)
                for row in rows
            ],
            has_more=has_more,
            after=rows[-1].id if has_more and rows else None,
        )
        if recent is not None:
            recent.remember(thread_id, page.data, complete=not has_more)
        return page

    async def _page_rows(
        self,
        table: Table,
        owned: ColumnElement[bool],
        after: str | None,
        limit: int,
        order: str,
        kind: str,
    ) -> tuple[list[Any], bool]:
        """A page of (id, data, created_at) rows among `owned`, strictly after row `after`."""
        _known_ids(after)
        limit = clamp_limit(limit)
        query = select(table.c.id, table.c.data, table.c.created_at).where(owned)
        async with self._autocommit.connect() as conn:
            if after:
                cursor = (
                    await conn.execute(
                        select(table.c.created_at, table.c.seq).where(owned, table.c.id == after)
                    )
                ).first()
                if cursor is None:
                    raise NotFoundError(f"{kind} {after} not found")
                query = query.where(_after_clause(table, cursor[0], cursor[1], order))
            rows = (
                await conn.execute(query.order_by(*_order_by(table, order)).limit(limit + 1))
            ).all()
        return list(rows[:limit]), len(rows) > limit

    async def add_thread_item(
        self, thread_id: str, item: ThreadItem, context: RequestContext
    ) -> None:
        await self._upsert_item(thread_id, item, context)

    async def save_item(self, thread_id: str, item: ThreadItem, context: RequestContext) -> None:
        await self._upsert_item(thread_id, item, context)

    async def _upsert_item(self, thread_id: str, item: ThreadItem, context: RequestContext) -> None:
        _known_ids(thread_id, item.id)
        created_at = _column_time(item.created_at)
        values = {
            "id": item.id,
            "thread_id": thread_id,
            "user_id": context.user_id,
            "type": item.type,
            "created_at": created_at,
            "data": _item_json(item, created_at),
        }
        if context.recent_items is not None:
            context.recent_items.forget()
        result = await self._write_one("save_item", self._hot.upsert_item, values)
        if result.rowcount == 0:
            async with self._autocommit.connect() as conn:
                try:
                    await self._require_thread(conn, thread_id, context)
                except NotFoundError:
                    raise ThreadGoneError(thread_id) from None
            raise NotFoundError(f"Item {item.id} not found")

    async def load_item(self, thread_id: str, item_id: str, context: RequestContext) -> ThreadItem:
        _known_ids(thread_id, item_id)
        async with self._autocommit.connect() as conn:
            row = (
                await conn.execute(
                    select(_items.c.data, _items.c.created_at).where(
                        _items.c.thread_id == thread_id,
                        _items.c.id == item_id,
                        _items.c.user_id == context.user_id,
                    )
                )
            ).first()
        if row is None:
            raise NotFoundError(f"Item {item_id} not found")
        return await self._present(_item_from_row(row.data, row.created_at), context)

    async def delete_thread_item(
        self, thread_id: str, item_id: str, context: RequestContext
    ) -> None:
        _known_ids(thread_id, item_id)
        if context.recent_items is not None:
            context.recent_items.forget()
        await self._write_one(
            "delete_item",
            delete(_items).where(
                _items.c.thread_id == thread_id,
                _items.c.id == item_id,
                _items.c.user_id == context.user_id,
            ),
        )

    @staticmethod
    async def _require_thread(
        conn: AsyncConnection, thread_id: str, context: RequestContext
    ) -> None:
        owner = await conn.scalar(select(_threads.c.user_id).where(_threads.c.id == thread_id))
        if owner != context.user_id:
            raise NotFoundError(f"Thread {thread_id} not found")

    # feedback ----------------------------------------------------------------------------
    async def save_feedback(
        self,
        thread_id: str,
        item_ids: Sequence[str],
        kind: FeedbackKind,
        context: RequestContext,
    ) -> None:
        """Record the caller's vote on items of their thread; a new vote replaces the old."""
        _known_ids(thread_id, *item_ids)
        now = utcnow()
        async with self._engine.begin() as conn:
            await self._require_thread(conn, thread_id, context)
            known = set(
                (
                    await conn.scalars(
                        select(_items.c.id).where(
                            _items.c.thread_id == thread_id,
                            _items.c.user_id == context.user_id,
                            _items.c.id.in_(list(item_ids)),
                        )
                    )
                ).all()
            )
            missing = [item_id for item_id in item_ids if item_id not in known]
            if missing:
                raise NotFoundError(f"Item {missing[0]} not found")
            for item_id in dict.fromkeys(item_ids):
                statement = self._insert(_feedback).values(
                    user_id=context.user_id,
                    thread_id=thread_id,
                    item_id=item_id,
                    kind=kind,
                    updated_at=now,
                )
                statement = statement.on_conflict_do_update(
                    index_elements=[
                        _feedback.c.user_id,
                        _feedback.c.thread_id,
                        _feedback.c.item_id,
                    ],
                    set_={"kind": statement.excluded.kind, "updated_at": now},
                )
                await conn.execute(statement)

    # attachments -------------------------------------------------------------------------
    async def create_attachment(
        self, input: AttachmentCreateParams, context: RequestContext
    ) -> Attachment:
        # Uploads are made by app.chat.attachments when ATTACHMENTS is on (and refused before
        # they get here when it is off); the SDK's own "not offered" error, answered as a 400.
        raise NotImplementedError("attachments are created by the attachment service")

    async def save_attachment(self, attachment: Attachment, context: RequestContext) -> None:
        _known_ids(attachment.id, attachment.thread_id)
        statement = self._insert(_attachments).values(
            id=attachment.id,
            user_id=context.user_id,
            thread_id=attachment.thread_id,
            created_at=utcnow(),
            data=attachment.model_dump_json(),
        )
        statement = statement.on_conflict_do_update(
            index_elements=[_attachments.c.id],
            set_={"data": statement.excluded.data, "thread_id": statement.excluded.thread_id},
            where=_attachments.c.user_id == statement.excluded.user_id,
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(statement)
        if result.rowcount == 0:
            raise NotFoundError(f"Attachment {attachment.id} not found")

    async def load_attachment(self, attachment_id: str, context: RequestContext) -> Attachment:
        _known_ids(attachment_id)
        async with self._autocommit.connect() as conn:
            data = await conn.scalar(
                select(_attachments.c.data).where(
                    _attachments.c.id == attachment_id,
                    _attachments.c.user_id == context.user_id,
                )
            )
        if data is None:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        attachment = _attachment_adapter.validate_json(data)
        if self._attachment_view is not None:
            return await self._attachment_view(attachment, context)
        return attachment

    async def delete_attachment(self, attachment_id: str, context: RequestContext) -> None:
        _known_ids(attachment_id)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(_attachments).where(
                    _attachments.c.id == attachment_id,
                    _attachments.c.user_id == context.user_id,
                )
            )
        if result.rowcount == 0:
            raise NotFoundError(f"Attachment {attachment_id} not found")

    async def delete_unused_attachments(
        self, *, created_before: datetime, user_id: str | None = None
    ) -> int:
        """Delete attachments never sent in a message, created before a naive UTC time.

        Scoped to `user_id` when given; their bytes go with them (the blob table's cascade).
        """
        unused = and_(
            _attachments.c.thread_id.is_(None), _attachments.c.created_at < created_before
        )
        if user_id is not None:
            unused = and_(unused, _attachments.c.user_id == user_id)
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(_attachments).where(unused))
        return int(result.rowcount or 0)
