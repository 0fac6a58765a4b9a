"""Attachment bytes in the database (Postgres and SQLite): scoped, cascaded, swept; keys."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from chatkit.types import FileAttachment, ThreadMetadata
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.context import RequestContext
from app.store.attachment_blobs import Blob, SqlAttachmentBlobs
from app.store.chatkit_store import SqlStore, new_id
from app.store.signing_keys import load_signing_key
from tests.store.conftest import make_context


@pytest.fixture
def engine(store_engine: AsyncEngine) -> AsyncEngine:
    """The package's migrated Postgres and SQLite databases (tests/store/conftest.py)."""
    return store_engine


async def saved(store: SqlStore, context: RequestContext, thread_id: str | None = None) -> str:
    attachment = FileAttachment(
        id=new_id("atc"), name="a.bin", mime_type="text/plain", thread_id=thread_id
    )
    await store.save_attachment(attachment, context)
    return attachment.id


async def blob_count(engine: AsyncEngine, attachment_id: str) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            text("select count(*) from chat_attachment_blobs where attachment_id = :a"),
            {"a": attachment_id},
        )
    return int(count or 0)


async def test_bytes_round_trip_per_owner(engine: AsyncEngine) -> None:
    store, blobs = SqlStore(engine), SqlAttachmentBlobs(engine)
    alice, bob = make_context(), make_context()
    attachment_id = await saved(store, alice)
    data = bytes(range(256)) * 100  # every byte value, NUL included
    await blobs.put(attachment_id, Blob("image/png", data), user_id=alice.user_id)

    assert await blobs.get(attachment_id, user_id=alice.user_id) == Blob("image/png", data)
    assert await blobs.get(attachment_id, user_id=None) == Blob("image/png", data)
    assert await blobs.get(attachment_id, user_id=bob.user_id) is None

    # Bob can neither overwrite nor delete them.
    await blobs.put(attachment_id, Blob("text/plain", b"pwned"), user_id=bob.user_id)
    await blobs.delete(attachment_id, user_id=bob.user_id)
    assert await blobs.get(attachment_id, user_id=alice.user_id) == Blob("image/png", data)

    await blobs.delete(attachment_id, user_id=alice.user_id)
    assert await blobs.get(attachment_id, user_id=alice.user_id) is None


async def test_deleting_metadata_or_thread_deletes_bytes(engine: AsyncEngine) -> None:
    store, blobs = SqlStore(engine), SqlAttachmentBlobs(engine)
    alice = make_context()
    lone = await saved(store, alice)
    await blobs.put(lone, Blob("text/plain", b"x"), user_id=alice.user_id)
    await store.delete_attachment(lone, alice)
    assert await blob_count(engine, lone) == 0

    thread = ThreadMetadata(id=new_id("thr"), created_at=datetime.now())
    await store.save_thread(thread, alice)
    in_thread = await saved(store, alice, thread.id)
    await blobs.put(in_thread, Blob("text/plain", b"y"), user_id=alice.user_id)
    await store.delete_thread(thread.id, alice)
    assert await blob_count(engine, in_thread) == 0


async def test_unused_uploads_are_swept(engine: AsyncEngine) -> None:
    store, blobs = SqlStore(engine), SqlAttachmentBlobs(engine)
    alice, bob = make_context(), make_context()
    thread = ThreadMetadata(id=new_id("thr"), created_at=datetime.now())
    await store.save_thread(thread, alice)
    unused, used, bobs = (
        await saved(store, alice),
        await saved(store, alice, thread.id),
        await saved(store, bob),
    )
    for attachment_id, owner in [(unused, alice), (used, alice), (bobs, bob)]:
        await blobs.put(attachment_id, Blob("text/plain", b"z"), user_id=owner.user_id)
    later = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=5)

    assert await store.delete_unused_attachments(created_before=later, user_id=alice.user_id) == 1
    assert await blob_count(engine, unused) == 0
    assert await blob_count(engine, used) == 1 and await blob_count(engine, bobs) == 1
    earlier = later - timedelta(hours=1)
    assert await store.delete_unused_attachments(created_before=earlier) == 0
    assert await store.delete_unused_attachments(created_before=later) >= 1  # everyone's
    assert await blob_count(engine, bobs) == 0 and await blob_count(engine, used) == 1


async def test_signing_key_is_created_once_and_shared(engine: AsyncEngine) -> None:
    name = new_id("test-key")[:60]
    keys = await asyncio.gather(*(load_signing_key(engine, name) for _ in range(5)))
    assert len(set(keys)) == 1 and len(keys[0]) >= 32
    assert await load_signing_key(engine, name) == keys[0]
    assert await load_signing_key(engine, name + "x") != keys[0]
