"""Where attachment bytes live: a small interface, and its default in the database.

The database default works across processes and machines with no shared disk. Another
backend (an object store) implements `AttachmentBlobs`; it must also remove the bytes of
attachments whose metadata row is gone, which the SQL table gets from its foreign key's cascade
(a deleted thread deletes its attachment rows, and with them their bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Table, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.sql import insert_for, utcnow
from app.store.tables import AttachmentBlobRow

_blobs: Table = AttachmentBlobRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Blob:
    """The bytes of one attachment and the media type they were checked as."""

    mime_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


class AttachmentBlobs(Protocol):
    """Stores the bytes of attachments, each owned by one user."""

    async def put(self, attachment_id: str, blob: Blob, *, user_id: str) -> None:
        """Store (or replace) the bytes of the caller's attachment."""

    async def get(self, attachment_id: str, *, user_id: str | None) -> Blob | None:
        """The bytes, if stored and owned by `user_id` (None: by anyone, for signed links)."""

    async def delete(self, attachment_id: str, *, user_id: str) -> None:
        """Remove the bytes of the caller's attachment, if any."""


class SqlAttachmentBlobs:
    """Attachment bytes in `chat_attachment_blobs` (BYTEA on Postgres, BLOB on SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert = insert_for(engine)

    async def put(self, attachment_id: str, blob: Blob, *, user_id: str) -> None:
        statement = self._insert(_blobs).values(
            attachment_id=attachment_id,
            user_id=user_id,
            mime_type=blob.mime_type,
            size=blob.size,
            created_at=utcnow(),
            data=blob.data,
        )
        statement = statement.on_conflict_do_update(
            index_elements=[_blobs.c.attachment_id],
            set_={
                "mime_type": statement.excluded.mime_type,
                "size": statement.excluded.size,
                "data": statement.excluded.data,
            },
            where=_blobs.c.user_id == statement.excluded.user_id,
        )
        async with self._engine.begin() as conn:
            await conn.execute(statement)

    async def get(self, attachment_id: str, *, user_id: str | None) -> Blob | None:
        query = select(_blobs.c.mime_type, _blobs.c.data).where(
            _blobs.c.attachment_id == attachment_id
        )
        if user_id is not None:
            query = query.where(_blobs.c.user_id == user_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else Blob(mime_type=row.mime_type, data=bytes(row.data))

    async def delete(self, attachment_id: str, *, user_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(_blobs).where(
                    _blobs.c.attachment_id == attachment_id, _blobs.c.user_id == user_id
                )
            )
